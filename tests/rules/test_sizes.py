"""Sizes read from tensors (fxgrow.rules.sizes)."""

import torch
from torch import nn

import fxgrow


def test_size_read_into_arithmetic_blocks():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h / h.size(-1))

    a = fxgrow.analyze(Scaled(), torch.randn(2, 3))
    assert a.group("a").status == "blocked" and "size" in a.group("a").reason
