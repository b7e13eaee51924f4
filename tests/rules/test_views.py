"""Rules for views, flatten, permute and friends (fxgrow.rules.views)."""

import pytest
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


# -- repeats with counts read from sizes; merged fixed extents ------------------
import pytest  # noqa: E402

from helpers import blocked, exact_or_refused  # noqa: E402


class _Repeat(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.a, self.b = how, nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)  # (B, T, C)
        B, T, C = h.shape
        g = h.mean(1, keepdim=True)  # a global token, repeated over the T positions
        if self.how == "repeat":
            g = g.repeat(1, T, 1)
        elif self.how == "tile":
            g = g.tile(T, 1)
        elif self.how == "tile_short":
            g = torch.tile(g, (1, T, 1))
        else:
            g = g.repeat_interleave(T, dim=1)
        return self.b(torch.relu(h + g))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("how", ["repeat", "tile", "tile_short", "repeat_interleave"])
def test_repeats_counted_by_the_size_of_a_free_dim_grow(how, capture):
    m, x = _Repeat(how).double(), torch.randn(2, 5, 3, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


def test_a_repeat_counted_by_a_neuron_dim_blocks():
    class R(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)  # (B, 4): repeat the batch by the number of features
            return self.b(h.repeat(h.shape[1], 1)).sum(0)

    m, x = R().double(), torch.randn(2, 3, dtype=torch.float64)
    assert "repeat count read from the size of a neuron dimension" in blocked(m, x, "a")
    exact_or_refused(m, x)


def test_merged_fixed_extents_are_cut_freely():
    class Windows(nn.Module):  # (B, 2, 4) windows merged back to 8 positions, cropped to 6
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x).view(2, 2, 4, 8).reshape(2, 8, 8)[:, :6]
            return self.b(h)

    m, x = Windows().double(), torch.randn(2, 8, 3, dtype=torch.float64)
    assert fxgrow.analyze(m, x).group("a").growable
    grow_exactly(m, x, 1.5)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_reshape_as_and_expand_as_follow_the_other_tensor(capture):
    class As(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)  # (B, T, C)
            flat = self.b(h.reshape(-1, 8)).reshape_as(h)
            gate = h.mean(1, keepdim=True).expand_as(h)
            return self.c(torch.relu(flat * gate))

    m, x = As().double(), torch.randn(2, 5, 3, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


class _HeadsAttention(nn.Module):
    """Attention whose output is merged back with ``.contiguous().view(b, t, -1)``.

    At trace time the attention output has the strides of its query (heads
    transposed from ``(b, t, h, d)``), so export drops the ``.contiguous()``;
    once the query/key and the value head dims differ, the output is laid out
    ``(b, h, t, d)`` and an unchanged ``view`` of its transpose cannot run --
    also when only the query/key head dim grew, which the view never sees.
    """

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, -1, 4).transpose(1, 2)
        k = self.k(x).view(b, t, -1, 4).transpose(1, 2)
        v = self.v(x).view(b, t, -1, 4).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.o(o.transpose(1, 2).contiguous().view(b, t, -1))


@pytest.mark.parametrize("grow", [("v",), ("q", "k")])
def test_a_view_of_a_grown_computation_becomes_a_reshape(grow):
    m, x = _HeadsAttention().eval(), torch.randn(2, 5, 16)
    a = fxgrow.analyze(m, x, capture="export")
    spec = {g.id: 2.0 for g in a.growable if len(g.producers) == 1 and g.producers[0] in grow}
    assert len(spec) == len(grow)  # the head dims, which grow alone
    grown = grow_exactly(m, x, spec, capture="export")
    merge = [n for n in grown.graph.nodes if n.args and isinstance(n.args[0], torch.fx.Node)
             and n.args[0].target is torch.ops.aten.transpose.int
             and n.args[0].args[0].target is torch.ops.aten.scaled_dot_product_attention.default]
    assert [n.target for n in merge] == [torch.ops.aten.reshape.default]


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_repeat_interleave_output_size_grows_with_the_dim(capture):
    class R(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.tanh(self.a(x))  # (B, T, 4) -> (B, T, 8), each neuron twice
            return self.b(h.repeat_interleave(2, dim=-1, output_size=8))

    m, x = R().double(), torch.randn(2, 5, 3, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


class ShapeBack(nn.Module):
    """``y.reshape(h.shape)``: a whole size tuple read from the graph."""

    def __init__(self, mix):
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.lin, self.mix = nn.Linear(8, 8), mix

    def forward(self, x):
        h = torch.tanh(self.c(x))
        if self.mix == "same":  # each entry is the size of the dim it shapes
            y = h.reshape(h.shape[0], -1).reshape(h.shape)
        elif self.mix == "linear":  # channels through another group: entries differ
            y = self.lin(h.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(h.shape)
        else:  # a channel shuffle: the shape's channel entry counts other neurons
            b, _, hh, ww = h.shape
            return self.d(h.view(b, 2, 4, hh, ww).transpose(1, 2).reshape(h.shape))
        return self.d(h + y)


@pytest.mark.parametrize("mix", ["same", "linear", "shuffle"])
def test_a_whole_shape_read_from_the_graph_keeps_batch_and_spatial_dynamic(mix):
    m, x = ShapeBack(mix).double(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    grown = grow_exactly(m, x)
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in m.parameters())
    for shape in [(5, 3, 8, 8), (1, 3, 6, 10)]:  # another batch, other spatial sizes
        z = torch.randn(shape, dtype=torch.float64)
        torch.testing.assert_close(grown(z), m(z), rtol=1e-9, atol=1e-9)
