"""Rules for views, flatten, permute and friends (fxgrow.rules.views)."""

import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import grow_exactly


class ChannelShuffle(nn.Module):
    def __init__(self, c=8, groups=2):
        super().__init__()
        self.g = groups
        self.a = nn.Conv2d(3, c, 1)
        self.b = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.size()
        x = x.view(n, self.g, c // self.g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.b(F.relu(x))


def test_channel_shuffle_is_product_algebra():
    m, x = ChannelShuffle(), torch.randn(2, 3, 4, 4)
    a = fxgrow.analyze(m, x)
    # conv `a` makes (groups=2) x (per group=4); the shuffle reads them as (4 x 2).
    # Both factors can grow: the view literal `self.g` is rewritten with the new count.
    groups, per_group = sorted(a.growable, key=lambda g: g.size)
    assert (groups.size, per_group.size) == (2, 4)
    grown = grow_exactly(m, x, {per_group.id: 7})
    assert grown.get_submodule("a").out_channels == 14
    grow_exactly(m, x, {groups.id: 3, per_group.id: 5})


def test_view_into_heads_and_back():
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(6, 12)
            self.o = nn.Linear(12, 2)

        def forward(self, x):
            b, t, _ = x.shape
            h = torch.tanh(self.q(x)).view(b, t, 3, 4).transpose(1, 2)
            h = h * 2.0
            return self.o(h.transpose(1, 2).reshape(b, t, 12))

    m, x = Heads(), torch.randn(2, 5, 6)
    a = fxgrow.analyze(m, x)
    assert sorted(g.size for g in a.growable) == [3, 4]  # heads and head dim
    grow_exactly(m, x, 2.0)
    grow_exactly(m, x, {g.id: g.size + 1 for g in a.growable})


def test_flatten_then_linear_gathers_whole_channels():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    g = grow_exactly(m, torch.randn(2, 2, 6, 6), 1.7)
    assert g.get_submodule("3").in_features == 5 * 16


def test_a_view_as_another_dtype_blocks():
    class Bits(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 16), nn.Linear(32, 3)

        def forward(self, x):
            return self.b(self.a(x).view(torch.float32).double())

    m = Bits().double()
    assert "another dtype" in fxgrow.analyze(m, torch.randn(3, 4, dtype=torch.float64)).group(
        "a").reason
