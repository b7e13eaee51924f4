"""Transformers (issue 5): residual width, MLP width and heads grow exactly."""

from __future__ import annotations

import pytest
import torch

import fxgrow
from helpers import assert_same_function, every_group, grow_exactly
from transformer_models import GPT, Bert, EncoderClassifier, MHANet


def _groups_by(a, *tensors):
    """The group(s) of dim `dim` of a tensor: [(tensor, dim), ...] -> groups."""
    out = []
    for t, d in tensors:
        lay = a.members[(t, d)].layout
        from fxgrow.ir.layout import leaves
        out += [a.group(leaf.space) for leaf in leaves(lay)]
    return out


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_transformer_encoder(norm_first, batch_first):
    m = EncoderClassifier(norm_first, batch_first).eval()
    x = torch.randn(3, 5, 6)
    a = fxgrow.analyze(m, x)
    # nn.MultiheadAttention ties the model dim to (heads x head dim); the key rows'
    # head dim is the head dim's contraction partner: both grow, by integer factors
    # (the LayerNorms average over them)
    heads, head_dim = a.groups_of("inp")
    assert heads.growable and heads.size == 4 and heads.uniform
    assert head_dim.growable and head_dim.uniform
    key_dims = [g for g, p in a.partners.items() if p == head_dim.id]
    assert len(key_dims) == 2  # one per layer's self-attention
    # a plain factor grows the heads and keeps their width (HyperCloning, LEMON)
    assert {head_dim.id, *key_dims} <= a.head_dims
    g = grow_exactly(m, x, 2.0)
    enc = g.get_submodule("enc.layers.0")
    assert (enc.self_attn.num_heads, enc.self_attn.head_dim, enc.self_attn.embed_dim) == (8, 4, 32)
    assert enc.linear1.out_features == 64
    # naming the module that makes the model dim grows heads and head dim
    g = grow_exactly(m, x, {"inp": 2.0})
    enc = g.get_submodule("enc.layers.0")
    assert (enc.self_attn.num_heads, enc.self_attn.head_dim, enc.self_attn.embed_dim) == (8, 8, 64)
    # the head dim alone: 4 heads of 12; MultiheadAttention reads 1/sqrt(12) at run time
    g = fxgrow.widen(a, x, {head_dim.id: 12})
    assert_same_function(m, g, x)
    assert (g.get_submodule("enc.layers.1.self_attn").num_heads,
            g.get_submodule("enc.layers.1.self_attn").head_dim) == (4, 12)
    # MLP widths are free: any size
    g = fxgrow.widen(a, x, {"enc.layers.0.linear1": 45, "enc.layers.1.linear1": 33})
    assert g.meta["fxgrow.report"].ok


def test_multihead_attention_with_averaged_weights():
    m = MHANet().eval()
    x = torch.randn(2, 4, 5)
    a = fxgrow.analyze(m, x)
    g = fxgrow.widen(a, x, 3)
    assert g.get_submodule("mha").num_heads == 9
    assert_same_function(m, g, x)


def test_gpt_tied_rmsnorm_sdpa_swiglu():
    m = GPT().eval()
    idx = torch.randint(0, 50, (2, 12))
    a = fxgrow.analyze(m, idx)
    (residual,) = _groups_by(a, ("wte.weight", 1))
    assert residual.growable and residual.uniform
    # tied embeddings: grown once; the final RMSNorm's weight takes the 1/count scaling
    roles = {(mm.tensor, mm.role) for mm in residual.members}
    assert ("wte.weight", "producer") in roles and ("ln_f.weight", "consumer") in roles
    # the output projection reads (heads x value head dim): both grow; the
    # query and key head dims are the two sides of SDPA's contraction
    heads, v_dim = _groups_by(a, ("blocks.0.attn.proj.weight", 1))
    assert (heads.size, v_dim.size) == (4, 4) and heads.growable and v_dim.growable
    assert not [g for g in a.groups if g.status == "blocked"]
    assert len(a.pairings) == 2 and all(p.node.startswith("scaled_dot") for p in a.pairings)
    q_dim, k_dim = a.group(a.pairings[0].primary), a.group(a.pairings[0].rescaled)
    assert q_dim.growable and k_dim.growable and q_dim.producers == k_dim.producers == (
        "blocks.0.attn.qkv",)
    # a factor grows heads, not head dims (HyperCloning, LEMON): 8 heads of 4
    assert {q_dim.id, k_dim.id, v_dim.id} <= a.head_dims and heads.id not in a.head_dims
    g = grow_exactly(m, idx, 2.0)
    assert g.lm_head.weight is g.wte.weight and g.wte.weight.shape == (50, 32)
    assert g.get_submodule("blocks.0.mlp.w1").out_features == 48
    assert g.get_submodule("blocks.0.attn.qkv").out_features == 3 * 8 * 4
    # named, the head dims grow: the query side takes the key side along
    g = grow_exactly(m, idx, {q_dim.id: 2.0, v_dim.id: 6})
    assert g.meta["fxgrow.plan"] == {q_dim.id: (4, 8), k_dim.id: (4, 8), v_dim.id: (4, 6)}
    assert g.get_submodule("blocks.0.attn.qkv").out_features == 4 * (8 + 8 + 6)
    g = fxgrow.widen(a, idx, {heads.id: 6})
    assert_same_function(m, g, idx)
    assert g.get_submodule("blocks.0.attn.qkv").out_features == 3 * 6 * 4  # 6 heads of 4
    # x1.5 for heads, head dims and MLP; the residual (uniform) stays
    spec = {gr.id: 1.5 for gr in a.growable if not gr.uniform}
    assert {q_dim.id, k_dim.id} <= set(spec)
    g = fxgrow.widen(a, idx, spec)
    assert_same_function(m, g, idx)
    # 6 query/key neurons per head: SDPA's default 1/sqrt(E) is pinned to the old E
    sdpa = [n for n in g.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert sdpa and all(n.kwargs.get("scale") == pytest.approx(0.5) for n in sdpa)
    # the written-out RMSNorm is zero-padded: the residual grows to any width too
    assert_same_function(m, fxgrow.widen(a, idx, {residual.id: 20}), idx)


def test_bert_post_ln_with_mask():
    m = Bert().eval()
    ids = torch.randint(0, 40, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    a = fxgrow.analyze(m, inputs)
    (residual,) = a.groups_of("tok")
    assert residual.growable and residual.uniform
    g = grow_exactly(m, inputs, 2.0)
    assert g.tok.embedding_dim == 32 and g.get_submodule("layers.0.ff1").out_features == 64
    assert g.get_submodule("layers.0.k").out_features == 8 * 4  # 8 heads of 4
    # separate q/k Linears and an explicit `q @ kᵀ * const`: the k Linear's rows are divided
    assert {a.group(p.rescaled).producers for p in a.pairings} == {("layers.0.k",), ("layers.1.k",)}
    spec = {gr.id: 1.5 for gr in a.growable if not gr.uniform}
    g = fxgrow.widen(a, inputs, spec)
    assert_same_function(m, g, inputs)
    assert g.get_submodule("layers.0.k").out_features == 6 * 6  # 6 heads of 6


def test_scale_read_from_the_width_blocks_it():
    m = Bert(scale_from_size=True).eval()
    a = fxgrow.analyze(m, {"input_ids": torch.randint(0, 40, (1, 4)),
                           "attention_mask": torch.ones(1, 4, dtype=torch.long)})
    (residual,) = a.groups_of("tok")
    assert residual.status == "blocked" and "sqrt" in residual.reason


def test_multihead_attention_head_dim_alone():
    m = MHANet().eval()
    x = torch.randn(2, 4, 5)
    a = fxgrow.analyze(m, x)
    heads, head_dim = a.groups_of("inp")
    # averaged attention weights constrain the heads only; the LayerNorm both
    assert "averaged over heads" in heads.uniform[0]
    g = fxgrow.widen(a, x, {head_dim.id: 8})
    assert_same_function(m, g, x)
    assert (g.mha.num_heads, g.mha.head_dim, g.mha.embed_dim) == (3, 8, 24)


class Alibi(torch.nn.Module):
    """BLOOM's scores: ``baddbmm(alibi, q, kᵀ, beta=1, alpha=1/√d)`` per head."""

    def __init__(self, d=8, heads=2):
        super().__init__()
        self.h, self.qkv = heads, torch.nn.Linear(d, 3 * d)
        self.out = torch.nn.Linear(d, d)
        self.alibi = torch.nn.Parameter(torch.randn(heads, 1, 5))

    def forward(self, x):                                  # (B, T, d)
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, -1)
        q, k, v = (z.reshape(b, t, self.h, -1).transpose(1, 2).reshape(b * self.h, t, -1)
                   for z in (q, k, v))
        alibi = self.alibi.expand(b, -1, -1, -1).reshape(b * self.h, 1, t)
        s = torch.baddbmm(alibi, q, k.transpose(1, 2), beta=1.0, alpha=0.5)
        y = torch.bmm(torch.softmax(s, -1), v).reshape(b, self.h, t, -1).transpose(1, 2)
        return self.out(y.reshape(b, t, d))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_baddbmm_scores_are_a_product_between_activations(capture):
    m, x = Alibi().double().eval(), torch.randn(2, 5, 8, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.pairings and all(a.group(p.rescaled).growable for p in a.pairings)
    assert {g.size for g in a.growable} == {2, 4}          # heads, q/k and v head dims
    for spec in (2.0, 1.5):
        assert_same_function(m, fxgrow.widen(a, x, spec, verify=False), x)


torchvision = pytest.importorskip("torchvision")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "maxvit_t"])
def test_torchvision_transformers(name):
    from fxgrow.testing import zoo
    model, x = zoo.build(name, batch=1)
    a = fxgrow.analyze(model, x)
    mlp = [g for g in a.growable if not g.uniform]
    residual = [g for g in a.growable if g.uniform]
    assert mlp and residual
    # the query/key head dims (MultiheadAttention, Swin's window attention, MaxViT's einsum)
    assert a.pairings and all(a.group(p.rescaled).growable for p in a.pairings)
    assert fxgrow.widen(a, x, 2.0, trials=1).meta["fxgrow.report"].ok
    spec = {g.id: (2.0 if g.uniform else 1.5) for g in a.growable}
    assert fxgrow.widen(a, x, spec, trials=1).meta["fxgrow.report"].ok


class EinsumAttention(torch.nn.Module):
    """Attention written with einsum: ``bhid,bhjd->bhij`` then ``bhij,bhjd->bhid``."""

    def __init__(self, d=8, heads=2):
        super().__init__()
        self.h, self.q, self.k, self.v = heads, *(torch.nn.Linear(d, d) for _ in range(3))
        self.o = torch.nn.Linear(d, 3)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (f(x).view(b, t, self.h, d // self.h).transpose(1, 2)
                   for f in (self.q, self.k, self.v))
        s = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * 0.5, -1)
        y = torch.einsum("bhij,bhjd->bhid", s, v)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


def test_einsum_attention_grows_by_heads():
    m, x = EinsumAttention().eval(), torch.randn(2, 5, 8)
    a = fxgrow.analyze(m, x)
    heads, v_dim = _groups_by(a, ("o.weight", 1))
    (_, q_dim), (_, k_dim) = _groups_by(a, ("q.weight", 0)), _groups_by(a, ("k.weight", 0))
    assert {q_dim.id, k_dim.id, v_dim.id} == a.head_dims & {g.id for g in a.growable}
    g = grow_exactly(m, x, 2.0)
    assert g.meta["fxgrow.plan"] == {heads.id: (2, 4)}
    assert g.q.out_features == g.v.out_features == 16  # 4 heads of 4
    g = grow_exactly(m, x, {v_dim.id: 6, q_dim.id: 5})  # named, the head dims grow
    assert (g.q.out_features, g.k.out_features, g.v.out_features) == (10, 10, 12)


def test_vit_b_16_grows_by_heads():
    # torchvision's ViT: the model dim is nn.MultiheadAttention's (heads x head dim), so a
    # factor that grew head dims too would quadruple it (10.5x the parameters at x2)
    from fxgrow.testing import zoo
    model, x = zoo.build("vit_b_16", batch=1)
    a = fxgrow.analyze(model, x)
    assert {a.group(p.primary).size for p in a.pairings} == {64}
    g = fxgrow.widen(a, x, 2.0, verify=False)
    assert_same_function(model, g, x, trials=1)
    attn = g.get_submodule("encoder.layers.encoder_layer_0.self_attention")
    assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (24, 64, 1536)
    ratio = sum(p.numel() for p in g.parameters()) / sum(p.numel() for p in model.parameters())
    assert 3.8 < ratio < 4.1


def test_explicit_causal_mask_buffer():
    from transformer_models import NanoGPTAttention
    m, x = NanoGPTAttention().eval(), torch.randn(2, 6, 16)
    a = fxgrow.analyze(m, x)
    heads = [g for g in a.growable if g.size == 4 and "c_attn" in g.producers]
    assert heads, str(a)
    g = fxgrow.widen(a, x, {h.id: 7 for h in heads})
    assert_same_function(m, g, x)
    assert_same_function(m, fxgrow.widen(a, x, 2.0), x)
    assert_same_function(m, fxgrow.widen(a, x, 1.5), x)  # 1/sqrt(4) is a literal: unchanged


class GroupedQueryAttention(torch.nn.Module):
    """Linear q/k/v viewed as (B, T, heads, head dim) and transposed; SDPA shares each
    key/value head among ``heads // kv_heads`` query heads, with ``enable_gqa=True`` or
    with HuggingFace's ``repeat_kv`` (expand + reshape) written out."""

    def __init__(self, d=16, heads=4, kv_heads=2, hd=4, explicit=False):
        super().__init__()
        self.h, self.kv, self.hd, self.explicit = heads, kv_heads, hd, explicit
        self.q = torch.nn.Linear(d, heads * hd)
        self.k = torch.nn.Linear(d, kv_heads * hd)
        self.v = torch.nn.Linear(d, kv_heads * hd)
        self.o = torch.nn.Linear(heads * hd, d)

    def repeat_kv(self, t):
        b, _, n, _ = t.shape
        r = self.h // self.kv
        return t[:, :, None].expand(b, self.kv, r, n, self.hd).reshape(b, self.h, n, self.hd)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, n, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, n, self.kv, self.hd).transpose(1, 2)
        if self.explicit:
            y = torch.nn.functional.scaled_dot_product_attention(
                q, self.repeat_kv(k), self.repeat_kv(v), is_causal=True)
        else:
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                 enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(b, n, -1)) + x


def _widths(g):
    return tuple(g.get_parameter(f"{n}.weight").shape[0] for n in "qkv")


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_sdpa_enable_gqa_grows_key_value_heads_with_their_query_groups(capture):
    torch.manual_seed(0)
    m, x = GroupedQueryAttention().double().eval(), torch.randn(2, 5, 16, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    # query head h reads key/value head h // 2: the query heads are (kv heads x 2),
    # the 2 fixed, so heads grow by whole groups -- what repeat_kv written out gives
    heads, group, q_dim = _groups_by(a, ("q.weight", 0))
    assert _groups_by(a, ("k.weight", 0))[0] == _groups_by(a, ("o.weight", 1))[0] == heads
    assert heads.growable and heads.size == 2 and set(heads.producers) == {"q", "k", "v"}
    assert group.size == 2 and not group.growable and "enable_gqa" in group.reason
    explicit = fxgrow.analyze(GroupedQueryAttention(explicit=True), x.float(), capture=capture)
    assert sorted((g.size, g.status) for g in a.groups) == \
        sorted((g.size, g.status) for g in explicit.groups)
    assert q_dim.id in a.head_dims and heads.id not in a.head_dims
    assert _widths(grow_exactly(m, x, 2.0, capture=capture)) == (32, 16, 16)
    assert _widths(grow_exactly(m, x, 1.5, capture=capture)) == (24, 12, 12)
    assert _widths(grow_exactly(m, x, {heads.id: 3}, capture=capture)) == (24, 12, 12)
    # head dims too: the query/key dim pins SDPA's default scale
    assert _widths(grow_exactly(m, x, every_group(a, 2.0), capture=capture)) == (64, 32, 32)


def test_sdpa_enable_gqa_with_one_key_value_head():
    # multi-query attention: every query head reads the one key/value head, so the
    # heads cannot grow; the head dims still can
    m = GroupedQueryAttention(heads=4, kv_heads=1).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    heads = _groups_by(a, ("o.weight", 1))[0]
    assert not heads.growable and "enable_gqa" in heads.reason
    assert _widths(grow_exactly(m, x, every_group(a, 1.5))) == (24, 6, 6)
