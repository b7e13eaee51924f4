"""Grad-mode and autocast regions kept in the grown graph (fxgrow.capture.regions)."""

import pytest
import torch
from torch import nn

from helpers import grow_exactly


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        with torch.no_grad():
            h = torch.relu(self.a(x))  # a frozen feature extractor
        with torch.autocast("cpu", enabled=False):
            h = self.b(h)
        with torch.enable_grad():
            return self.c(h)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_no_grad_regions_are_kept(capture):
    m, x = Frozen().double(), torch.randn(3, 4, dtype=torch.float64)
    grown = grow_exactly(m, x, 2.0, capture=capture)
    grown(x).sum().backward()
    assert grown.get_parameter("a.weight").grad is None       # frozen, as in the original
    assert grown.get_parameter("b.weight").grad is not None
    with torch.no_grad():
        if capture == "fx":  # under a caller's no_grad, as the original: enable_grad inside wins
            assert grown(x).requires_grad == m(x).requires_grad
        else:  # torch.export records only regions that change the mode it traces in
            grown(x)
        assert not torch.is_grad_enabled()  # the caller's mode is restored after
    assert torch.is_grad_enabled()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return x + self.fc(x)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_region_nodes_belong_to_the_module_that_opens_them(capture):
    import fxgrow
    from torch.amp import autocast_mode
    m = nn.Sequential(nn.Linear(3, 4), Block(), nn.Linear(4, 2))
    gm = fxgrow.analyze(m, torch.randn(2, 3), capture=capture).graph_module
    marks = [n for n in gm.graph.nodes if n.target in (
        autocast_mode._enter_autocast, autocast_mode._exit_autocast)]
    assert len(marks) == 2
    for n in marks:  # so a pass that takes module "1" apart (grow_into's new blocks) takes them
        paths = [v[0] if isinstance(v, tuple) else v for v in n.meta["nn_module_stack"].values()]
        assert "1" in paths
