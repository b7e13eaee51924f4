"""Tensors read in conflicting roles (fxgrow.analysis.ties)."""

import torch
from torch import nn

import fxgrow


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
