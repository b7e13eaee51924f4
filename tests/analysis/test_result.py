"""fxgrow.analysis.result: the Analysis result object."""

import pytest
import torch
from torch import nn

import fxgrow
from models import resnet


def test_table_lists_every_group_and_reasons():
    m, x = resnet()
    a = fxgrow.analyze(m, x)
    text = str(a)
    assert "group" in text and "growable" in text and "model input" in text
    assert len(text.splitlines()) == len(a.groups) + 2
    assert repr(a).startswith("<Analysis")


def test_lookup_by_module_and_id():
    m, x = resnet()
    a = fxgrow.analyze(m, x)
    g = a.group("layer1.0.conv1")
    assert a.group(g.id) is g
    # a BatchNorm produces nothing but passes its conv's group through
    assert a.groups_of("layer1.0.bn1") == [g]
    shortcut = a.group("layer2.0.downsample.0")
    assert {"layer2.0.conv2", "layer2.0.downsample.0"} <= set(shortcut.producers)
    roles = {(mm.tensor, mm.role) for mm in shortcut.members}
    assert ("layer2.0.bn2.running_var", "pass-through") in roles
    assert ("layer2.1.conv1.weight", "consumer") in roles
    with pytest.raises(fxgrow.UnknownTargetError):
        a.group("nope")


def test_group_ids_are_deterministic():
    m, x = resnet()
    a, b = fxgrow.analyze(m, x), fxgrow.analyze(m, x)
    assert [(g.id, g.size, g.status, g.producers) for g in a.groups] == \
           [(g.id, g.size, g.status, g.producers) for g in b.groups]


def test_a_module_producing_several_groups_names_the_growable_one():
    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(5, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h[:, :5]), h[:, 5:].softmax(-1)

    a = fxgrow.analyze(Split(), torch.randn(2, 4))
    with pytest.raises(fxgrow.UnknownTargetError, match=r"growable one is group \d+"):
        a.group("a")
