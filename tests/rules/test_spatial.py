"""Padding, permutes around spatial ops (fxgrow.rules.spatial)."""

import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import grow_exactly


def test_pad_permute_unsqueeze_squeeze():
    class P(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(2, 4, 1)
            self.b = nn.Linear(6, 3)

        def forward(self, x):
            h = F.pad(self.a(x), (0, 0, 1, 1))  # pads the channel dim with zeros
            h = h.permute(0, 2, 1).unsqueeze(1).squeeze(1)
            return self.b(h)

    m, x = P(), torch.randn(2, 2, 5)
    a = fxgrow.analyze(m, x)
    assert a.group("a").growable
    grow_exactly(m, x, {"a": 7})
