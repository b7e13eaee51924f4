"""Contractions between activations: one side divided by the counts, or both blocked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, every_group, snapshot


class Scores(nn.Module):
    """``softmax(f(q) @ g(k)ᵀ · s) @ v`` with hooks on each side."""

    def __init__(self, d=8, e=6, q_fn=None, k_fn=None, sdpa=False, out_k=False):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, e), nn.Linear(d, e), nn.Linear(d, e)
        self.o = nn.Linear(e, 3)
        self.q_fn, self.k_fn, self.sdpa, self.out_k = q_fn, k_fn, sdpa, out_k

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.q_fn is not None:
            q = self.q_fn(q)
        if self.k_fn is not None:
            k = self.k_fn(k)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(6), -1) @ v
        return (self.o(y), k) if self.out_k else self.o(y)


def _x():
    return torch.randn(2, 5, 8)


def _pair(a):
    (p,) = a.pairings
    return a.group(p.primary), a.group(p.rescaled)


@pytest.mark.parametrize("sdpa", [False, True])
def test_key_side_is_divided_at_any_width(sdpa):
    m, x = Scores(sdpa=sdpa).eval(), _x()
    snap = snapshot(m)
    a = fxgrow.analyze(m, x)
    q, k = _pair(a)
    assert q.producers == ("q",) and k.producers == ("k",) and a.partners == {k.id: q.id}
    assert a.family(k.id) == a.family(q.id) == [q.id, k.id]
    for size in (7, 9, 12, 13):
        g = fxgrow.widen(a, x, {"q": size})
        assert_same_function(m, g, x)
        assert g.q.out_features == g.k.out_features == size and g.v.out_features == 6
        # the same copies on both sides; the key rows carry 1/count
        ratio = g.k.weight[6:] / m.k.weight[[int(i) for i in _copies(g.q.weight, m.q.weight)]]
        assert torch.all(ratio <= 0.5 + 1e-6)
    assert_unchanged(m, snap)


def _copies(new_w, old_w):
    """Which old row each new row beyond the old ones copies (rows are distinct)."""
    return [int((old_w - row).abs().sum(1).argmin()) for row in new_w[old_w.shape[0]:]]


def test_partners_grow_to_one_size():
    m, x = Scores().eval(), _x()
    a = fxgrow.analyze(m, x)
    q, k = _pair(a)
    g = fxgrow.widen(a, x, {k.id: 10})  # naming either side grows both
    assert g.q.out_features == 10
    assert_same_function(m, g, x)
    with pytest.raises(fxgrow.SpecError, match="share one index map"):
        fxgrow.widen(a, x, {q.id: 8, k.id: 9})


def test_noise_and_baselines_still_run():
    m, x = Scores(sdpa=True).eval(), _x()
    for init in ("random_pad", "random_init"):
        g = fxgrow.widen(m, x, 2.0, init=init, verify=False)
        assert g(x).shape == (2, 5, 3)
    g = fxgrow.widen(m, x, 2.0, noise=0.1, verify=False)
    assert not torch.allclose(g(x), m(x), atol=1e-4)


def test_a_side_that_is_not_linear_makes_the_other_side_divided():
    # relu(k) is not linear in k's rows (a negative count would flip it): q is divided
    m, x = Scores(k_fn=torch.relu).eval(), _x()
    a = fxgrow.analyze(m, x)
    q_side, k_side = _pair(a)
    assert k_side.producers == ("q",)
    assert_same_function(m, fxgrow.widen(a, x, 1.5), x)


def test_moves_scales_and_rotary_like_multipliers_keep_the_proof():
    table = torch.randn(5, 6)

    def k_fn(k):  # reshape round trip, a constant, a table, a sum of two divided paths
        k = k.view(2, 5, 2, 3).transpose(1, 2).transpose(1, 2).reshape(2, 5, 6)
        return (k * 0.5) * table + torch.cat([k[:, 1:], k[:, :1]], 1)

    m, x = Scores(k_fn=k_fn).eval(), _x()
    a = fxgrow.analyze(m, x)
    # the view made the head dim (2 x 3) on the key side: the query side is refined
    # to match and each factor pairs with its own
    assert len(a.pairings) == 2
    assert {a.group(p.rescaled).producers for p in a.pairings} == {("k",)}
    assert_same_function(m, fxgrow.widen(a, x, 1.5), x)


@pytest.mark.parametrize("q_fn, k_fn, reason", [
    (torch.relu, torch.tanh, "is not linear in them"),
    (lambda q: q + 1.0, lambda k: k + 1.0, "adds something that is not divided"),
    (lambda q: q * q, lambda k: k * k, "multiplies two divided values"),
])
def test_both_sides_unproven_blocks_both(q_fn, k_fn, reason):
    m, x = Scores(q_fn=q_fn, k_fn=k_fn).eval(), _x()
    snap = snapshot(m)
    a = fxgrow.analyze(m, x)
    assert not a.pairings
    blocked = [g for g in a.groups if g.producers in (("q",), ("k",))]
    assert len(blocked) == 2 and all(g.status == "blocked" for g in blocked)
    assert all(reason in g.reason and "matmul" in g.reason for g in blocked)
    with pytest.raises(fxgrow.GroupNotGrowableError, match="not proven exact"):
        fxgrow.widen(a, x, {"k": 8})
    assert_unchanged(m, snap)


class Gram(nn.Module):
    """``o(h @ hᵀ)``: one space on both sides of the product."""

    def __init__(self, also_relu=False):
        super().__init__()
        self.f, self.o, self.r = nn.Linear(8, 6), nn.Linear(5, 2), nn.Linear(6, 2)
        self.also_relu = also_relu

    def forward(self, x):
        h = self.f(x)
        y = self.o(h @ h.transpose(-2, -1))
        return y + self.r(torch.relu(h)) if self.also_relu else y + self.r(h)


def test_one_space_on_both_sides_is_divided_by_sqrt_count():
    # h's rows and r's columns both take 1/sqrt(count): Σ_j (h_g(j)/√c)² = Σ_i h_i²,
    # and r reads h/√c through columns divided by √c
    m, x = Gram().eval(), _x()
    a = fxgrow.analyze(m, x)
    (g,) = a.groups_of("f")
    assert g.growable and a.halved == {g.id: "matmul"} and a.exponent(g.id) == 0.5
    for size in (7, 12, 13):
        assert_same_function(m, fxgrow.widen(a, x, {"f": size}), x)


def test_one_space_on_both_sides_blocks_when_not_linear():
    a = fxgrow.analyze(Gram(also_relu=True), _x())
    (g,) = a.groups_of("f")
    assert g.status == "blocked" and "sqrt(count)" in g.reason and "relu" in g.reason


def test_sides_tied_by_a_rotary_table():
    class Rotary(nn.Module):  # one table multiplied into both sides ties their neurons
        def __init__(self):
            super().__init__()
            self.q, self.k, self.o = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(5, 2)
            self.register_buffer("cos", torch.randn(5, 6))
            self.register_buffer("sin", torch.randn(5, 6))

        def forward(self, x):
            def rotate(t):  # rotary embedding: pairs (i, i + d/2) mixed by cos/sin tables
                half = torch.cat([-t[..., 3:], t[..., :3]], -1)
                return t * self.cos + half * self.sin
            return self.o(rotate(self.q(x)) @ rotate(self.k(x)).transpose(-2, -1))

    m, x = Rotary().eval(), _x()
    a = fxgrow.analyze(m, x)
    assert a.halved and all(a.group(g).growable for g in a.halved)
    assert_same_function(m, fxgrow.widen(a, x, every_group(a), verify=False), x)
    assert_same_function(m, fxgrow.widen(a, x, {g: 3 + a.group(g).size for g in a.halved}), x)


def test_a_side_reaching_the_output_fixes_both():
    m, x = Scores(out_k=True).eval(), _x()
    a = fxgrow.analyze(m, x)
    assert not a.pairings or all(a.group(g).status != "growable"
                                 for p in a.pairings for g in (p.primary, p.rescaled))
    # q is divided instead only if k were free; here k reaches the output, which fixes k,
    # and q shares k's index map
    assert a.group(a.groups_of("q")[0].id).status != "growable"


def test_sdpa_scale_is_pinned_only_when_the_dim_grows():
    m, x = Scores(sdpa=True).eval(), _x()
    g = fxgrow.widen(m, x, {"v": 9})
    (node,) = [n for n in g.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert "scale" not in node.kwargs
    g = fxgrow.widen(m, x, {"q": 9})
    (node,) = [n for n in g.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert node.kwargs["scale"] == pytest.approx(1 / math.sqrt(6))
    assert_same_function(m, g, x)


def test_an_explicit_sdpa_scale_is_kept():
    class Explicit(Scores):
        def forward(self, x):
            return self.o(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x),
                                                         scale=0.3))

    m, x = Explicit().eval(), _x()
    g = fxgrow.widen(m, x, {"q": 10})
    assert_same_function(m, g, x)
    (node,) = [n for n in g.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert node.kwargs["scale"] == 0.3


@pytest.mark.parametrize("sdpa", [True, False])
@pytest.mark.parametrize("packing", ["split", "view"])
def test_fused_qkv(packing, sdpa):
    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.o = nn.Linear(8, 3 * 6), nn.Linear(6, 2)

        def forward(self, x):
            if packing == "split":  # nanoGPT: q, k, v are three spaces
                q, k, v = (t.view(2, 5, 2, 3).transpose(1, 2) for t in self.qkv(x).split(6, -1))
            else:  # timm: one (3, heads, head_dim) view, so q, k, v share the head dim
                q, k, v = self.qkv(x).view(2, 5, 3, 2, 3).permute(2, 0, 3, 1, 4).unbind(0)
            if sdpa:
                y = F.scaled_dot_product_attention(q, k, v)  # 2 heads of 3
            else:  # v's head dim (the same space as q's and k's) passes `attn @ v`
                y = torch.softmax(q @ k.transpose(-2, -1) * 3 ** -0.5, -1) @ v
            return self.o(y.transpose(1, 2).reshape(2, 5, 6))

    m, x = Fused().eval(), _x()
    a = fxgrow.analyze(m, x)
    if packing == "split":  # only the key rows are divided
        q, k = _pair(a)
        assert q.producers == k.producers == ("qkv",)
    else:  # q, k and v rows, and the output projection's columns, by sqrt(count)
        (g,) = a.halved
        assert a.group(g).producers == ("qkv",) and a.group(g).growable
    for spec in (2.0, 1.5):
        assert_same_function(m, fxgrow.widen(a, x, spec), x)


def test_export_capture_grows_the_head_dim_too():
    m, x = Scores(sdpa=True).eval(), _x()
    g = fxgrow.widen(m, x, {"q": 10}, capture="export")
    assert_same_function(m, g, x)


def test_plan_says_how_each_side_grows():
    for model, grows in ((Scores(), "rows divided by the counts"),
                         (Gram(), "rows and columns divided by sqrt(count)")):
        a = fxgrow.analyze(model.eval(), _x())
        named = {g.id: 2.0 for g in a.growable if g.id in a.head_dims}
        assert named and grows in str(fxgrow.plan_widening(a, named))


def test_export_dtype_asserts_are_no_use_of_the_key():
    # `k.to(dtype)` adds `_assert_tensor_metadata(k)` to the exported graph: it computes nothing
    cast = lambda t: t.to(torch.float32)  # noqa: E731
    m, x = Scores(sdpa=True, q_fn=cast, k_fn=cast).eval(), _x()
    a = fxgrow.analyze(m, x, capture="export")
    assert any("_assert_tensor_metadata" in str(n.target) for n in a.graph_module.graph.nodes)
    q, k = _pair(a)
    assert q.growable and k.growable
    assert_same_function(m, fxgrow.widen(a, x, {"q": 9}, verify=False), x)


class QKNorm(nn.Module):
    """Attention with a norm over each head's query/key features (Qwen3, OLMo2, Gemma3):
    ``nn.RMSNorm`` modules, or the norm written out with a ``1 + w`` gain and a
    ``type_as`` cast, as HuggingFace's Gemma writes it."""

    def __init__(self, written=False, heads=2, d=4):
        super().__init__()
        self.h, self.d, self.written = heads, d, written
        self.q, self.k, self.v = (nn.Linear(8, heads * d) for _ in range(3))
        self.o = nn.Linear(heads * d, 3)
        if written:
            self.qw, self.kw = nn.Parameter(torch.randn(d)), nn.Parameter(torch.randn(d))
        else:
            self.qn, self.kn = nn.RMSNorm(d, eps=1e-3), nn.RMSNorm(d, eps=1e-3)
            for n in (self.qn, self.kn):
                nn.init.normal_(n.weight)

    def _norm(self, t, w):
        f = t.float()
        y = f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + 1e-3)
        return (y * (1.0 + w.float())).type_as(t)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (f(x).view(b, s, self.h, self.d).transpose(1, 2) for f in (self.q, self.k, self.v))
        if self.written:
            q, k = self._norm(q, self.qw), self._norm(k, self.kw)
        else:
            q, k = self.qn(q), self.kn(k)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, s, -1))


@pytest.mark.parametrize("written,capture", [(False, "fx"), (True, "fx"), (True, "export")])
def test_a_norm_over_the_head_dim_takes_the_division_on_its_gain(written, capture):
    # dividing the producer rows would not survive the norm, but its per-neuron gain
    # applies last: the rows are copied, the key norm's gain divided by the counts
    m, x = QKNorm(written).eval(), _x()
    snap = snapshot(m)
    a = fxgrow.analyze(m, x, capture=capture)
    heads = [g for g in a.growable if g.id in a.head_dims and g.uniform]
    assert heads, [str(g) for g in a.groups]
    spec = {g.id: 2.0 for g in heads}
    for grown in (fxgrow.widen(a, x, spec, verify=False),
                  fxgrow.widen(a, x, {**spec, **{g.id: 3.0 for g in a.growable
                                                 if g.id not in a.head_dims}}, verify=False)):
        assert_same_function(m, grown, x)
    assert_unchanged(m, snap)


def test_a_gain_read_elsewhere_keeps_the_head_dim_blocked():
    class Shared(QKNorm):  # one norm for queries and keys *and* the output: no gain to divide
        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = (f(x).view(b, s, self.h, self.d).transpose(1, 2)
                       for f in (self.q, self.k, self.v))
            y = F.scaled_dot_product_attention(self.qn(q), self.qn(k), v)
            return self.o(y.transpose(1, 2).reshape(b, s, -1)), self.qn(v).sum()

    a = fxgrow.analyze(Shared().eval(), _x())
    (g,) = [g for g in a.groups if "scaled_dot_product_attention" in g.reason]
    assert g.status == "blocked" and "not proven exact" in g.reason


class _TiedTiledKeys(nn.Module):
    """q and k tied by one table (one space on both sides), the keys' heads tiled with
    ``repeat`` (JetMoe repeats its key/value heads instead of interleaving them)."""

    def __init__(self, d=8, heads=4, kv=2, hd=4, n=5):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv, hd
        self.q, self.k, self.v = nn.Linear(d, heads * hd), nn.Linear(d, kv * hd), nn.Linear(d, kv * hd)
        self.o = nn.Linear(heads * hd, 3)
        self.register_buffer("table", torch.rand(n, hd) + 0.5)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.h, self.hd).transpose(1, 2) * self.table
        k = self.k(x).view(b, n, self.kv, self.hd).transpose(1, 2) * self.table
        v = self.v(x).view(b, n, self.kv, self.hd).transpose(1, 2)
        r = self.h // self.kv
        y = F.scaled_dot_product_attention(q, k.repeat(1, r, 1, 1), v.repeat(1, r, 1, 1))
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_keys_tiled_by_repeat_are_moved_not_computed(capture):
    m, x = _TiedTiledKeys().double().eval(), torch.randn(2, 5, 8, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert not [g for g in a.groups if g.status == "blocked"], str(a)
    assert a.halved  # q/k head dim: sqrt(count) on both sides, through the repeat
    for spec in (2.0, every_group(a, 2.0), every_group(a, 1.5)):
        grown = fxgrow.widen(m, x, spec, verify=False, capture=capture)
        assert_same_function(m, grown, x)


class _ExpertQueries(nn.Module):
    """Queries made per expert from a stacked weight (``self.wq[i]``, fixed row groups),
    keys through a ReLU: only the query side can be divided by the counts."""

    def __init__(self, d=8, hd=6, experts=2, combine=None):
        super().__init__()
        self.e, self.combine = experts, combine
        self.wq = nn.Parameter(torch.randn(experts, hd, d) * 0.3)
        self.k, self.v, self.o = nn.Linear(d, hd), nn.Linear(d, 4), nn.Linear(4, 2)

    def forward(self, x):                       # x: (N, d), rows grouped by expert
        rows = x.split([2, x.size(0) - 2], 0)
        q = torch.cat([F.linear(rows[i], self.wq[i]) for i in range(self.e)], 0)
        if self.combine is not None:  # summed back into the token order (the MoE combine)
            order = torch.arange(x.size(0) - 1, -1, -1)
            q = self.combine(q).index_add(0, order, q)
        s = torch.softmax(q @ torch.relu(self.k(x)).T, -1)
        return self.o(s @ self.v(x))


@pytest.mark.parametrize("combine", [None, torch.zeros_like], ids=["cat", "index_add"])
@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_contracted_dim_made_by_per_expert_weight_pieces(capture, combine):
    m, x = _ExpertQueries(combine=combine).double().eval(), torch.randn(5, 8, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    (q_dim,) = [g for g in a.groups if any(mm.tensor == "wq" and mm.dim == 1 for mm in g.members)]
    assert q_dim.growable, str(a)
    for factor in (2.0, 1.5):
        grown = fxgrow.widen(m, x, factor, verify=False, capture=capture)
        assert_same_function(m, grown, x)


def test_adding_into_a_tensor_that_is_not_zeros_blocks():
    # ones + q/count is not (ones + q)/count
    a = fxgrow.analyze(_ExpertQueries(combine=lambda q: torch.ones(q.shape)), torch.randn(5, 8))
    (q_dim,) = [g for g in a.groups if any(mm.tensor == "wq" and mm.dim == 1 for mm in g.members)]
    assert q_dim.status == "blocked" and "`index_add`" in q_dim.reason \
        and "not divided with them" in q_dim.reason
