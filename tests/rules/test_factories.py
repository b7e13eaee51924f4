"""Rules for tensors made in forward (fxgrow.rules.factories)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from fxgrow.capture.shapes import propagate
from fxgrow.rules.factories import is_constant
from helpers import blocked, exact_or_refused, grow_exactly

CAPTURES = ["fx", "export"]


class State(nn.Module):
    """Mamba's initial state, T5's position-bias init: constants sized like the stream,
    by literals (``zeros(B, 8)``: under export every static size is one) and by sizes
    read from a tensor (``new_ones(h.shape)``, ``full((B, C), 0.5)``)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        state = torch.zeros((x.shape[0], 8), dtype=x.dtype)
        ones = h.new_ones(h.shape)
        half = torch.full((x.shape[0], h.shape[1]), 0.5, dtype=x.dtype)
        return self.b(h + state) * ones[:, :3] + self.b(half)


@pytest.mark.parametrize("capture", CAPTURES)
def test_constants_take_the_layout_they_are_combined_with(capture):
    m, x = State().double(), torch.randn(2, 4, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


def test_a_neuron_count_as_a_fill_value_blocks():
    class Count(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(h / torch.full((1,), h.size(-1)))

    assert "fills a tensor" in blocked(Count(), torch.randn(2, 4), "a")


@pytest.mark.parametrize("capture", CAPTURES)
def test_positions_keep_their_size(capture):
    class Positions(nn.Module):   # positions from arange, one-hot position ids, an eye
        def __init__(self):
            super().__init__()
            self.a, self.b, self.pos = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(5, 8)

        def forward(self, x):      # x: (B, T, 4)
            t = torch.arange(x.shape[1])
            p = F.one_hot(t, 5).to(x.dtype) + torch.eye(x.shape[1], 5, dtype=x.dtype)
            return self.b(torch.relu(self.a(x)) + self.pos(p))

    m, x = Positions().double(), torch.randn(2, 5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable
    grow_exactly(m, x, 2.0, capture=capture)


def test_an_arange_over_neurons_fixes_them():
    class Ramp(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(h * torch.arange(h.size(-1), dtype=x.dtype))

    a = fxgrow.analyze(Ramp(), torch.randn(2, 4))
    assert a.group("a").status == "fixed"
    assert "positions of an arange" in a.group("a").reason


def test_is_constant_follows_moves_of_filled_tensors():
    class Graph(nn.Module):
        def forward(self, x):
            z = torch.zeros_like(x).view(-1)[:3].float()
            return z, x.view(-1)

    gm = torch.fx.symbolic_trace(Graph())
    nodes = {n.name: n for n in gm.graph.nodes}
    propagate(gm, (torch.randn(2, 3),))
    assert is_constant(nodes["float_1"]) and not is_constant(nodes["view_1"])


def test_a_constant_written_in_place_is_not_constant():
    class Graph(nn.Module):
        def forward(self, x):
            z = torch.zeros_like(x)
            z.view(-1)[:2].add_(1.0)           # through a view
            w = torch.ones_like(x)
            w.copy_(x)                         # a copy into it
            d = F.dropout(torch.ones_like(x))  # random in training
            return z[:, 0], w[:, 0], d[:, 0]

    gm = torch.fx.symbolic_trace(Graph())
    propagate(gm, (torch.randn(2, 3),))
    outs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    assert not any(is_constant(n) for n in outs)


@pytest.mark.parametrize("capture", CAPTURES)
def test_slicing_a_filled_tensor_written_in_place_stays_exact(capture):
    class Written(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            z = torch.zeros_like(h)
            z.add_(h)                          # z is h now
            return self.b(h) + z[:, 5:6]       # one neuron of h

    m, x = Written().double(), torch.randn(3, 4, dtype=torch.float64)
    exact_or_refused(m, x, 2.0, capture=capture)
    exact_or_refused(m, x, {"a": 11}, capture=capture)
