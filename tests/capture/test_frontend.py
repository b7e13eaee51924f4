"""fxgrow.capture: capture, input normalisation and trace errors."""

import pytest
import torch
from torch import fx, nn

import fxgrow
from fxgrow.capture import CaptureOptions, capture, normalize_input


def test_normalize_input_forms():
    x = torch.randn(2)
    assert normalize_input(x) == ((x,), {})
    assert normalize_input([x, x])[0] == (x, x)
    assert normalize_input({"a": x}) == ((), {"a": x})
    with pytest.raises(fxgrow.ExampleInputError):
        normalize_input(3)
    with pytest.raises(fxgrow.ExampleInputError):
        normalize_input({1: x})


def test_known_layers_stay_leaves_and_shapes_are_recorded():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
    cap = capture(m, torch.randn(1, 1, 5, 5))
    ops = [n.op for n in cap.graph_module.graph.nodes]
    assert ops == ["placeholder", "call_module", "call_module", "call_module", "output"]
    shapes = [n.meta["fxgrow.shape"].shape for n in cap.graph_module.graph.nodes][:4]
    assert shapes == [(1, 1, 5, 5), (1, 2, 3, 3), (1, 2, 3, 3), (1, 18)]


def test_training_mode_capture_does_not_touch_running_stats():
    bn = nn.Sequential(nn.BatchNorm1d(3)).train()
    capture(bn, torch.randn(8, 3) * 5 + 2)
    assert torch.equal(bn[0].running_mean, torch.zeros(3))
    assert int(bn[0].num_batches_tracked) == 0


def test_unprovided_keyword_arguments_are_specialised():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x, mask=None):
            if mask is not None:
                x = x * mask
            return self.fc(x)

    cap = capture(M(), torch.randn(1, 2))
    assert isinstance(cap.graph_module, fx.GraphModule)


def test_leaf_modules_by_name():
    m = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 1))
    cap = capture(m, torch.randn(1, 2), CaptureOptions(leaf_modules=["0"]))
    targets = [n.target for n in cap.graph_module.graph.nodes if n.op == "call_module"]
    assert targets == ["0", "1"]


def test_trace_error_points_at_user_code():
    class Loop(nn.Module):
        def forward(self, x):
            for _ in range(int(x.shape[0] > 1 and x.max())):  # data-dependent
                x = x + 1
            return x

    with pytest.raises(fxgrow.TraceError, match="test_frontend.py"):
        capture(Loop(), torch.randn(2, 2))


def test_missing_input_is_reported():
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    with pytest.raises(fxgrow.ExampleInputError, match="`b`"):
        capture(Two(), torch.randn(1))


def test_the_graph_module_keeps_every_state_dict_key():
    class Alias(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.unused = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(3, 3)
            self.alias = self.a  # one module under two names

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    m = Alias()
    gm = capture(m, torch.randn(2, 4)).graph_module
    assert sorted(gm.state_dict()) == sorted(m.state_dict())
    grown = fxgrow.widen(m, torch.randn(2, 4), 2.0)
    assert sorted(grown.state_dict()) == sorted(m.state_dict())
    assert grown.get_parameter("alias.weight") is grown.get_parameter("a.weight")
    assert grown.get_parameter("a.weight").shape == (16, 4)
