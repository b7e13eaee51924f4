"""fxgrow.widen.fresh: where a fresh neuron is harmless, proved from the graph."""

import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from fxgrow.widen.fresh import fresh_problem
import transformer_models as tm


def _problems(model, x):
    a = fxgrow.analyze(model.eval(), x)
    return {g.id: fresh_problem(a, g.id) for g in a.growable}


class Readers(nn.Module):
    """A hidden group read by position-wise ops, a mean over time, a max over time."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.out = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)

    def forward(self, x):  # x: (N, T, 4)
        h = F.gelu(self.fc(x)) * 2 + 1
        h = self.bn(h.transpose(1, 2)).transpose(1, 2)
        return self.out(h.mean(1) + h.amax(1))


def test_position_wise_readers_and_reductions_over_other_dims_are_harmless():
    assert set(_problems(Readers(), torch.randn(3, 5, 4)).values()) == {None}


def test_attention_head_dims_and_heads_are_harmless():
    # q/k are paired (the key side's new rows are 0), v passes softmax(qkᵀ) @ v
    problems = _problems(tm.GPT(norm="ln"), torch.randint(0, 50, (2, 12)))
    a = fxgrow.analyze(tm.GPT(norm="ln").eval(), torch.randint(0, 50, (2, 12)))
    stream = a.members[("wte.weight", 1)].layout.space
    assert problems[stream] is not None and "averages over the group" in problems[stream]
    assert all(p is None for g, p in problems.items() if g != stream)


class Outer(nn.Module):
    def __init__(self, reader):
        super().__init__()
        self.fc, self.out, self.reader = nn.Linear(4, 8), nn.Linear(8, 2), reader

    def forward(self, x):
        return self.out(self.reader(self.fc(x)))


def test_a_max_or_min_over_the_group_is_a_problem():
    for reader in (lambda h: h - h.amax(-1, keepdim=True), lambda h: h * h.amin(-1, keepdim=True)):
        (problem,) = _problems(Outer(reader), torch.randn(3, 4)).values()
        assert "takes a max or min over the group" in problem
