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
