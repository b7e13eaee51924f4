"""Which source module each target module continues (fxgrow.grow.names)."""

import pytest

from fxgrow.errors import SpecError
from fxgrow.grow.names import LayerMap

SOURCE = {"", "model", "model.layers", "model.layers.0", "model.layers.0.mlp", "model.layers.1",
          "model.layers.1.mlp", "model.norm"}


def test_names_continue_their_namesakes_and_the_rest_is_new():
    m = LayerMap(None, SOURCE)
    assert m.source_of("model.layers.1.mlp") == "model.layers.1.mlp"
    assert m.is_new("model.layers.2") and m.is_new("model.layers.2.mlp")
    assert m.new_root("model.layers.2.mlp") == "model.layers.2"
    assert m.tensor("model.norm.weight") == "model.norm.weight"
    assert m.tensor("model.layers.3.mlp.weight") is None


def test_a_moved_module_leaves_its_namesake_new():
    m = LayerMap({"model.layers.2": "model.layers.1", "model.layers.3": None}, SOURCE)
    assert m.source_of("model.layers.1") is None  # source layer 1 moved to 2
    assert m.tensor("model.layers.2.mlp.weight") == "model.layers.1.mlp.weight"
    assert m.is_new("model.layers.3")
    # mapping a module onto itself keeps it there
    assert LayerMap({"model.layers.1": "model.layers.1"}, SOURCE).source_of("model.layers.1") \
        == "model.layers.1"


@pytest.mark.parametrize("layers, match", [
    ([("a", "b")], "dict"),
    ({"model.layers.2": 3}, "source module name or None"),
    ({"model.layers.2": "model.layers.9"}, "no module"),
    ({"model.layers.2": "model.layers.1", "model.layers.3": "model.layers.1"}, "two places"),
])
def test_bad_maps_are_spec_errors(layers, match):
    with pytest.raises(SpecError, match=match):
        LayerMap(layers, SOURCE)
