"""Rules for reshapes, concatenation, splitting and slicing (fxgrow.rules.shape_ops)."""

import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from conftest import assert_same_function


def _grow(m, x, spec=2.0):
    g = fxgrow.widen(m, x, spec, verify=False)
    assert_same_function(m, g, x)
    return g


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
    grown = _grow(m, x, {per_group.id: 7})
    assert grown.get_submodule("a").out_channels == 14
    _grow(m, x, {groups.id: 3, per_group.id: 5})


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
    _grow(m, x, 2.0)
    _grow(m, x, {g.id: g.size + 1 for g in a.growable})


def test_uneven_split_getitem_and_chunk_are_rewritten():
    class S(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.a = nn.Linear(2, 3)
            self.b = nn.Linear(4, 3)

        def forward(self, x):
            h = self.fc(x)
            p, q = h.chunk(2, dim=-1)
            return self.a(p[:, 1:3]) + self.b(q) + h[:, -1:] * 0.5

    m, x = S(), torch.randn(3, 4)
    a = fxgrow.analyze(m, x)
    sizes = sorted(g.size for g in a.growable)
    # h = [p0 | p[1:3] | p3 | q[0:3] | q[3]]; q[3] is broadcast against 3 neurons: fixed
    assert sizes == [1, 1, 2, 3]
    _grow(m, x, {g.id: g.size + 2 for g in a.growable})


def test_flatten_then_linear_gathers_whole_channels():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    g = _grow(m, torch.randn(2, 2, 6, 6), 1.7)
    assert g.get_submodule("3").in_features == 5 * 16


def test_cat_of_branches_and_stack():
    class C(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(3, 5)
            self.c = nn.Linear(9, 2)

        def forward(self, x):
            y = torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)
            z = torch.stack([y, y * 2], dim=0).mean(0)
            return self.c(z)

    _grow(C(), torch.randn(2, 3), 1.5)


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
    _grow(m, x, {"a": 7})
