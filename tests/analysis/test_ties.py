"""Tensors read in conflicting roles (fxgrow.analysis.ties)."""

import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import exact_or_refused, grow_exactly


def test_tied_weights_are_blocked_not_broken():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    a = fxgrow.analyze(Tied(), torch.randint(0, 10, (2, 3)))
    (g,) = [g for g in a.groups if g.size == 4]
    assert g.status == "blocked" and "tied" in g.reason


def test_a_consumer_weight_read_as_a_tensor_too_is_blocked():
    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.b(torch.tanh(self.a(x)))
            return self.c(h * self.b.weight[0])  # a weight row used as a scale

    m = Reused().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    reasons = [g.reason for g in fxgrow.analyze(m, x).groups if g.size in (1, 7, 8)]
    assert any("both as a consumer" in r for r in reasons)
    assert exact_or_refused(m, x, 2.0) is not None


def test_tied_output_layer_scaling_moves_only_onto_a_gain_read_once():
    class Tied(nn.Module):
        def __init__(self, shared_gain):
            super().__init__()
            self.emb, self.ln1, self.lnf = nn.Embedding(10, 8), nn.LayerNorm(8), nn.LayerNorm(8)
            if shared_gain:
                self.lnf.weight = self.ln1.weight  # one tensor, two norms

        def forward(self, ids):
            h = self.emb(ids)
            h = h + torch.tanh(self.ln1(h))
            return F.linear(self.lnf(h), self.emb.weight)

    ids = torch.randint(0, 10, (2, 5))
    grow_exactly(Tied(False).double().eval(), ids, 2.0)  # the scaling moves onto lnf
    shared = Tied(True).double().eval()
    width = [g for g in fxgrow.analyze(shared, ids).groups
             if any((m.tensor, m.dim) == ("emb.weight", 1) for m in g.members)]
    assert width and all(not g.growable and "both as a consumer" in g.reason for g in width)
    assert exact_or_refused(shared, ids, 2.0) is not None
