"""The rule context (fxgrow.analysis.context): reading weights through the graph."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_unchanged, exact_or_refused, grow_exactly, snapshot


class _ScaledTransposedWeight(nn.Module):
    """``x @ (s * w).t()`` with a 0-d ``s``: the weight is looked for through the
    transpose and the product, whose first operand has no dims."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.w = nn.Parameter(torch.randn(5, 4))
        self.s = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        return torch.relu(self.a(x)) @ (self.s * self.w).t()


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_0d_operand_on_the_way_to_a_weight_is_no_transpose(capture):
    m, x = _ScaledTransposedWeight().double(), torch.randn(2, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)  # used to fail: integer modulo by zero
    assert a.group("a") is not None
    exact_or_refused(m, x, 2.0, capture=capture)


class _Experts(nn.Module):
    """``F.linear(h, self.w[i])`` per expert: each piece of a parameter read as a weight."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.w = nn.Parameter(torch.randn(3, 6, 8))
        self.w2 = nn.Parameter(torch.randn(3, 8, 6))
        self.o = nn.Linear(8, 3)

    def forward(self, x):
        h, out = torch.relu(self.a(x)), 0
        for i in range(3):
            out = out + nn.functional.linear(torch.tanh(nn.functional.linear(h, self.w[i])),
                                             self.w2[i])
        return self.o(out)


class _Chunked(nn.Module):
    """One weight and one bias chunked in two, each half read by its own F.linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.w = nn.Parameter(torch.randn(12, 8))
        self.b = nn.Parameter(torch.randn(12))
        self.o = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        w1, w2 = self.w.chunk(2, 0)
        b1, b2 = self.b.chunk(2)
        return self.o(torch.tanh(nn.functional.linear(h, w1, b1)) * nn.functional.linear(h, w2, b2))


class _CrossAttention(nn.Module):
    """nn.MultiheadAttention with a query unlike its keys: under export its packed
    in_proj weight and bias are split into q, k, v pieces (SigLIP's pooling head)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.probe = nn.Parameter(torch.randn(1, 1, 8))
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.o = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.o(self.att(self.probe.repeat(x.shape[0], 1, 1), h, h)[0])[:, 0]


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("model", [_Experts, _Chunked, _CrossAttention])
def test_pieces_of_a_parameter_read_as_weights_grow(model, capture):
    m, x = model().eval(), torch.randn(2, 5, 4)
    snap = snapshot(m)
    a = fxgrow.analyze(m, x, capture=capture)
    rows = [g for g in a.groups if ("a.weight", 0) in {(mm.tensor, mm.dim) for mm in g.members}]
    assert rows and all(g.growable for g in rows)
    assert not [r for g in a.groups for r in g.reasons if "computed in the graph" in r]
    grow_exactly(m, x, capture=capture)
    assert_unchanged(m, snap)


class _PieceAsActivation(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.w = nn.Parameter(torch.randn(2, 8, 8))
        self.o = nn.Linear(8, 3)

    def forward(self, x):
        return self.o(nn.functional.linear(torch.relu(self.a(x)), self.w[0]) + self.w[1].sum(0))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_piece_read_otherwise_keeps_the_parameter_from_being_rescaled(capture):
    # w[1] is added as a value: dividing w's columns for w[0]'s sake would change it
    m, x = _PieceAsActivation().eval(), torch.randn(2, 5, 4)
    a = fxgrow.analyze(m, x, capture=capture)
    assert not a.group("a").growable
    exact_or_refused(m, x, 2.0, capture=capture)
