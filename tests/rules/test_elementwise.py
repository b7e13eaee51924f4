"""Elementwise rules (fxgrow.rules.elementwise)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import grow_exactly


def test_dropout_in_training_mode_blocks_what_it_masks():
    m = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    assert "call model.eval()" in fxgrow.analyze(m.train(), x).group("0").reason
    grow_exactly(m.eval(), x, 2.0)


@pytest.mark.parametrize("make", [torch.zeros_like, torch.ones_like,
                                  lambda h: torch.full_like(h, 0.5)])
def test_constants_shaped_like_a_tensor_follow_its_layout(make):
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(F.relu(h) + make(h))

    grow_exactly(Const().double(), torch.randn(5, 4, dtype=torch.float64), 2.0)


class _TrailingPositions(nn.Module):
    """A per-position, per-feature table cut to the last ``t`` positions,
    ``max(0, 16 - t):`` (ALiBi-style): exported, the bound is a ``sym_max`` of a size."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.register_buffer("table", torch.randn(16, 4))

    def forward(self, x):
        t = x.shape[1]
        return self.b(torch.tanh(self.a(x)) + self.table[max(0, 16 - t):])


def test_sym_max_of_sizes_is_a_size():
    m, x = _TrailingPositions().double(), torch.randn(2, 5, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture="export")
    assert any(n.target is torch.sym_max for n in a.graph_module.graph.nodes)
    assert a.group("a").growable
    grow_exactly(m, x, 2.0, capture="export")


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("how", ["function", "module"])
def test_glu_halves_grow_alike(how, capture):
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 8), nn.Linear(4, 2)
            self.glu = nn.GLU(dim=-1)

        def forward(self, x):
            h = self.a(x)
            return self.b(F.glu(h, -1) if how == "function" else self.glu(h))

    m, x = G().double(), torch.randn(2, 5, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert [g.size for g in a.groups_of("a") if g.growable] == [4]  # a half, both halves
    grow_exactly(m, x, 1.5, capture=capture)
    grow_exactly(m, x, {"a": 7}, capture=capture)
