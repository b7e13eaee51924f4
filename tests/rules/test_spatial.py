"""Padding, permutes around spatial ops (fxgrow.rules.spatial)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import blocked, exact_or_refused, grow_exactly


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


class _Mixer(nn.Module):
    """Linear -> an op along a dim that holds the Linear's neurons -> Linear."""

    def __init__(self, op, out):
        super().__init__()
        self.a, self.op, self.b = nn.Linear(4, 16), op, nn.Linear(out, 3)

    def forward(self, x):
        return self.b(self.op(self.a(x).unsqueeze(1)).flatten(1))


@pytest.mark.parametrize("op, out", [
    (lambda h: F.avg_pool1d(h, 2), 8), (lambda h: F.max_pool1d(h, 2), 8),
    (lambda h: F.adaptive_avg_pool1d(h, 4), 4), (nn.AvgPool1d(2), 8),
    (lambda h: F.interpolate(h, scale_factor=2.0), 32),
    (lambda h: F.conv1d(h, torch.ones(1, 1, 3, dtype=torch.float64), padding=1), 16),
])
def test_ops_mixing_positions_along_neurons_block_them(op, out):
    m = _Mixer(op, out).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    assert "mixes positions" in blocked(m, x, "a")
    assert exact_or_refused(m, x, 2.0) is not None  # nothing else may go wrong


def test_pooling_over_space_still_grows_channels():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(2), nn.Upsample(scale_factor=2.0),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).double().eval()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert fxgrow.analyze(m, x).group("0").growable
    grow_exactly(m, x, 1.5)
