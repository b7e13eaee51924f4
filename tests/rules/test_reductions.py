"""Rules for reductions and softmax (fxgrow.rules.reductions)."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_same_function


class Reduce(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op
        self.a = nn.Linear(3, 6)
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) + self.op(h)


def test_mean_over_neurons_is_uniform():
    m, x = Reduce(lambda h: h.mean(-1, keepdim=True)), torch.randn(4, 3)
    a = fxgrow.analyze(m, x)
    assert a.group("a").uniform
    assert_same_function(m, fxgrow.widen(a, x, 2.0), x)
    with pytest.raises(fxgrow.ConstraintError):
        fxgrow.widen(a, x, {"a": 7})


def test_max_over_neurons_needs_nothing():
    m, x = Reduce(lambda h: h.amax(-1, keepdim=True)), torch.randn(4, 3)
    assert_same_function(m, fxgrow.widen(m, x, {"a": 7}), x)


@pytest.mark.parametrize("op", [lambda h: h.sum(-1, keepdim=True),
                                lambda h: torch.softmax(h, -1)[:, :2],
                                lambda h: h.var(-1, keepdim=True),
                                lambda h: h.argmax(-1, keepdim=True).float()])
def test_count_dependent_reductions_block(op):
    a = fxgrow.analyze(Reduce(op), torch.randn(4, 3))
    assert all(g.status == "blocked" for g in a.groups_of("a"))


def test_mean_over_spatial_dims_passes_channels():
    m = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU())
    x = torch.randn(2, 3, 6, 6)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = m
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(self.body(x).mean(dim=(2, 3)))

    h = Head()
    a = fxgrow.analyze(h, x)
    assert a.group("body.0").growable and not a.group("body.0").uniform
    assert_same_function(h, fxgrow.widen(a, x, {"body.0": 9}), x)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_max_values_pass_and_read_indices_fix(capture):
    class Picks(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c, self.b = nn.Linear(3, 6), nn.Linear(3, 6), nn.Linear(6, 2)

        def forward(self, x):
            h, g = torch.relu(self.a(x)), self.c(x)
            best = h.max(-1, keepdim=True)[0] + torch.max(h)     # values only: copies agree
            top = torch.topk(g, 2, -1)[0].sum(-1, keepdim=True)  # picks neurons by value
            idx = torch.max(g, -1)[1].unsqueeze(-1).double()     # reads a neuron position
            return self.b(h) + best + top + idx + torch.sort(g, -1)[0][:, :1]

    m, x = Picks().double(), torch.randn(4, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable
    assert a.group("c").status == "fixed" and "positions" in a.group("c").reason
    assert_same_function(m, fxgrow.widen(a, x, {"a": 11}, verify=False), x)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_logsumexp_over_positions_passes_neurons_and_over_neurons_blocks(capture):
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    class OverPositions(Reduce):
        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h - torch.logsumexp(h, 1, keepdim=True))

    over_positions = OverPositions(None).double()
    grown = fxgrow.widen(over_positions, x, {"a": 9}, capture=capture, verify=False)
    assert_same_function(over_positions, grown, x)
    over_neurons = Reduce(lambda h: torch.logsumexp(h, -1, keepdim=True)).double()
    a = fxgrow.analyze(over_neurons, x, capture=capture)
    assert all(g.status == "blocked" for g in a.groups_of("a"))
    assert "counts every copy" in a.group("a").reason
