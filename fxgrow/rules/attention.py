"""Matrix products and attention.

A product between activations contracts a dimension: the result sums over
it, so widening that dimension by copies would count each copy (and the
default attention scale ``1/sqrt(E)`` would change with it).  The rules
record the two sides as contraction partners (``ctx.contract``);
:mod:`fxgrow.analysis.contraction` then proves one side can be divided by the
counts, or blocks both with the reason, and SDPA's default scale is pinned
to its old value when the dim grows.  The other dims are batch-like and pass through:
attention *heads* are a batch dim of ``q @ k^T`` and ``attn @ v``, so heads
grow exactly (each new head copies an old head; the output projection,
reading ``Prod(H, D)``, divides by the head counts).

A product with a parameter (``x @ W``) is a linear layer and gets the
producer/consumer roles of one.

``nn.MultiheadAttention`` is a leaf module: its packed ``in_proj_weight``
produces ``Cat(Prod(H, D), Prod(H, K), Prod(H, D))`` and its ``embed_dim``
ties the input, the projections and the output to ``Prod(H, D)``.  The key
head dim ``K`` is the contraction partner of ``D`` (one index map; the key
rows are divided by the counts and multiplied by ``sqrt(D'/D)``, undoing the
``1/sqrt(head_dim)`` the module reads at run time), so its width grows by
heads and by head dim.
``nn.TransformerEncoderLayer``/``nn.TransformerEncoder`` (leaves too, since
their fast-path checks cannot be traced) combine it with their feed-forward
layers and LayerNorms.
"""

from __future__ import annotations

import math
import operator
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.roles import CONSUMER, FIXED, PASS, PRODUCER
from ..ir.values import TV
from .common import broadcast
from .registry import RuleSet

__all__ = ["RULES", "matmul", "baddbmm", "outer", "sdpa", "multihead_attention",
           "transformer_encoder_layer"]

RULES = RuleSet()

_CONTRACT = ("contracted by a product between activations: copies would be counted "
             "twice unless one side were rescaled")


@RULES.rule(torch.matmul, operator.matmul, torch.bmm, torch.mm, "matmul", "bmm", "mm",
               "__matmul__")
def matmul(ctx) -> TV:
    """``a @ b``: batch dims broadcast, the contracted dim is unified and (between
    activations) blocked; with a 2-D parameter it is a linear layer."""
    return _product(ctx, ctx.arg(0, "input"), ctx.arg(1, "other"))


def _product(ctx, a_node, b_node) -> TV:
    a, b = ctx.tensor(a_node), ctx.tensor(b_node)
    sa, sb = ctx.spec(a_node).shape, ctx.spec(b_node).shape
    if len(sa) < 2 or len(sb) < 2:
        raise RuleError("matmul with a 1-D operand")
    w_b = ctx.weight(b_node, 0, CONSUMER) if len(sb) == 2 else None
    w_a = ctx.weight(a_node, 1, CONSUMER) if w_b is None and len(sa) == 2 else None
    if w_b is not None:  # x @ W, W: (in, out)
        ctx.unify(a.dims[-1], w_b)
        out_last, out_row = ctx.weight(b_node, 1, PRODUCER), a.dims[-2]
    elif w_a is not None:  # W @ x, W: (out, in)
        ctx.unify(b.dims[-2], w_a)
        out_last, out_row = b.dims[-1], ctx.weight(a_node, 0, PRODUCER)
    else:
        ctx.contract(a.dims[-1], b.dims[-2], _CONTRACT, operands=(a_node, b_node))
        out_last, out_row = b.dims[-1], a.dims[-2]
    out_shape = ctx.out_shape
    batch = broadcast(ctx, [a.dims[:-2], b.dims[:-2]], [sa[:-2], sb[:-2]], out_shape[:-2])
    if w_a is None and w_b is None:  # `attn @ v` with heads in the batch: v's head dim
        ctx.head_dim(out_last, batch)
    return TV(tuple(batch) + (out_row, out_last))


@RULES.rule(torch.baddbmm, "baddbmm", torch.addbmm, "addbmm")
def baddbmm(ctx) -> TV:
    """``beta * M + alpha * (b1 @ b2)`` (BLOOM's ALiBi scores): the product is
    :func:`matmul`'s (a contraction between activations), ``M`` an addend that
    broadcasts against it like an elementwise operand.  ``addbmm`` also sums over
    the batch, which is blocked where it holds neurons (heads)."""
    mn = ctx.arg(0, "input")
    out = _product(ctx, ctx.arg(1, "batch1"), ctx.arg(2, "batch2"))
    if ctx.node.target in (torch.addbmm, "addbmm"):
        ctx.mixes(out.dims[0], "a sum over the batch of products")
        out = TV(out.dims[1:])
    if isinstance(mn, fx.Node):
        m = ctx.tensor(mn)
        shape = tuple(ctx.norm(d).size for d in out.dims)
        return TV(tuple(broadcast(ctx, [out.dims, m.dims], [shape, ctx.spec(mn).shape], shape)))
    return out


@RULES.rule(torch.outer, torch.ger, "outer", "ger")
def outer(ctx) -> TV:
    """``outer(a, b)[i, j] = a[i] * b[j]``: both dims pass through (copies give copies),
    as in a rotary table ``outer(positions, inv_freq)``."""
    a, b = ctx.tensor(ctx.arg(0, "input")), ctx.tensor(ctx.arg(1, "vec2"))
    if a.ndim != 1 or b.ndim != 1:
        raise RuleError("outer of tensors that are not vectors")
    return TV((a.dims[0], b.dims[0]))


@RULES.rule(F.scaled_dot_product_attention)
def sdpa(ctx) -> TV:
    """SDPA: heads and other leading dims are batch dims; the query/key dim is
    contracted (and sets the default scale), so it is blocked.

    ``enable_gqa=True`` shares each key/value head among ``G = Hq / Hkv`` query
    heads, as ``repeat_interleave(G, dim=-3)`` of the keys and values would
    (HuggingFace's ``repeat_kv``): the key/value heads read as
    ``Prod(Hkv, G)`` with ``G`` a fixed extent (:func:`_grouped_heads`), so
    the query heads grow only by whole groups, together with the key/value
    heads, and SDPA reads the same ``G`` after growth.
    """
    qn, kn, vn = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    q, k, v = ctx.tensor(qn), ctx.tensor(kn), ctx.tensor(vn)
    sq, sk, sv = ctx.spec(qn).shape, ctx.spec(kn).shape, ctx.spec(vn).shape
    gqa = ctx.arg(7, "enable_gqa", False)
    if not isinstance(gqa, bool):
        raise RuleError("enable_gqa that is not a literal bool")
    if gqa:
        (k, sk), (v, sv) = _grouped_heads(ctx, sq, (k, sk), (v, sv))
    ctx.contract(q.dims[-1], k.dims[-1], "the query/key dim of scaled_dot_product_attention "
                                         "is contracted", operands=(qn, kn))
    _pin_scale(ctx, q.dims[-1], sq[-1])
    ctx.unify(k.dims[-2], v.dims[-2])
    out_shape = ctx.out_shape
    batch = broadcast(ctx, [q.dims[:-2], k.dims[:-2], v.dims[:-2]],
                       [sq[:-2], sk[:-2], sv[:-2]], out_shape[:-2])
    mask = ctx.arg(3, "attn_mask", None)
    if isinstance(mask, fx.Node):
        m = ctx.tensor(mask)
        broadcast(ctx, [m.dims, tuple(batch) + (q.dims[-2], k.dims[-2])],
                   [ctx.spec(mask).shape, tuple(out_shape[:-2]) + (sq[-2], sk[-2])],
                   tuple(out_shape[:-2]) + (sq[-2], sk[-2]))
    ctx.head_dim(v.dims[-1], batch)
    return TV(tuple(batch) + (q.dims[-2], v.dims[-1]))


def _grouped_heads(ctx, sq: Tuple[int, ...], *kv: Tuple[TV, Tuple[int, ...]]) -> list:
    """Keys and values as ``enable_gqa`` reads them: head dim ``-3`` repeated ``G`` times
    per head, ``Prod(Hkv, G)``, one fixed ``G`` for both (``repeat_interleave``).

    Exact: query head ``h`` reads key/value head ``h // G``; in the grown model
    the query heads are ``Prod(Hkv', G)`` and SDPA computes the same ``G`` from
    the grown counts, so every query head still reads the copy of its own
    key/value head.
    """
    if len(sq) < 3 or any(len(s) < 3 for _, s in kv):
        raise RuleError("enable_gqa with tensors of fewer than 3 dims")
    hq, hkv = sq[-3], kv[0][1][-3]
    if any(s[-3] != hkv for _, s in kv) or hkv == 0 or hq % hkv:
        raise RuleError(f"enable_gqa with {hq} query heads and key/value heads "
                        f"{[s[-3] for _, s in kv]}")
    if hq == hkv:
        return list(kv)
    group = ctx.table.fresh(hq // hkv, free=True, status=FIXED,
                            reason=f"query heads per key/value head of `{ctx.node.name}` "
                                   "(enable_gqa)")
    return [(TV(t.dims[:-3] + (ctx.prod([t.dims[-3], group]),) + t.dims[-2:]),
             tuple(s[:-3]) + (hq,) + tuple(s[-2:])) for t, s in kv]


def _pin_scale(ctx, qk: Layout, old: int) -> None:
    """SDPA's default scale is ``1/sqrt(E)`` of the *current* query width: once
    the query/key dim grows, pass the old value explicitly."""
    given = ctx.arg(6, "scale", None)
    if isinstance(given, fx.Node):
        return  # a scale computed in the graph: its own rule decides
    pinned = given if given is not None else 1.0 / math.sqrt(old)
    args, kwargs = ctx.node.args, dict(ctx.node.kwargs)
    if len(args) > 6:
        args = args[:6] + (pinned,) + args[7:]
    else:
        kwargs["scale"] = pinned
    ctx.rewrite(args, kwargs, when=(qk,))


# -- nn.MultiheadAttention and the torch.nn transformer layers ---------------------
def _mha(ctx, prefix: str, mha: nn.MultiheadAttention, e_in: Layout,
         kv: Optional[List[Layout]] = None) -> Tuple[Layout, Layout]:
    """Constrain one packed MultiheadAttention; return its output's embedding layout
    (``Prod(heads, head_dim)``) and its heads."""
    if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
        raise RuleError("only packed-projection MultiheadAttention has a rule")
    heads = ctx.fresh(mha.num_heads)
    head_dim, key_dim = ctx.fresh(mha.head_dim), ctx.fresh(mha.head_dim)
    # scores sum over the head dim and are divided by sqrt(head_dim) read at run
    # time: the key rows take 1/count and sqrt(new/old) (fxgrow.analysis.contraction)
    ctx.contract(head_dim, key_dim, f"the head dim of `{ctx.node.target}{prefix and '.' + prefix}` "
                                    "is contracted by attention", vouched=True, sqrt_scale=True)
    hd = ctx.prod([heads, head_dim])
    ctx.unify(e_in, hd)  # embed_dim is one number: input, projections and output
    for other in kv or []:
        ctx.unify(other, hd)
    p = f"{prefix}." if prefix else ""
    packed = ctx.cat([hd, ctx.prod([heads, key_dim]), hd])
    ctx.unify(ctx.param(p + "in_proj_weight", 0, PRODUCER), packed)
    ctx.unify(ctx.param(p + "in_proj_weight", 1, CONSUMER), hd)
    if mha.in_proj_bias is not None:
        ctx.unify(ctx.param(p + "in_proj_bias", 0, PRODUCER), packed)
    ctx.unify(ctx.param(p + "out_proj.weight", 1, CONSUMER), hd)
    ctx.unify(ctx.param(p + "out_proj.weight", 0, PRODUCER), hd)
    if mha.out_proj.bias is not None:
        ctx.unify(ctx.param(p + "out_proj.bias", 0, PRODUCER), hd)
    for attr in ("embed_dim", "kdim", "vdim", "out_proj.in_features", "out_proj.out_features"):
        ctx.module_attr(p + attr, ctx.size(hd))
    ctx.module_attr(p + "num_heads", ctx.size(heads))
    ctx.module_attr(p + "head_dim", ctx.size(head_dim))
    return hd, heads


@RULES.rule(nn.MultiheadAttention)
def multihead_attention(ctx):
    """``nn.MultiheadAttention`` (packed projections): grows by adding heads."""
    m: nn.MultiheadAttention = ctx.module
    q = ctx.tensor(ctx.arg(0, "query"))
    k = ctx.tensor(ctx.arg(1, "key"))
    v = ctx.tensor(ctx.arg(2, "value"))
    hd, heads = _mha(ctx, "", m, q.dims[-1], [k.dims[-1], v.dims[-1]])
    out_spec = ctx.out_spec
    if not isinstance(out_spec, tuple) or len(out_spec) != 2:
        raise RuleError("unexpected output")
    out = TV(q.dims[:-1] + (hd,))
    w_spec = out_spec[1]
    if w_spec is None:
        return (out, None)
    if not isinstance(w_spec, TensorSpec):
        raise RuleError("unexpected attention weights")
    average = ctx.arg(6, "average_attn_weights", True)
    if average:
        ctx.uniform(heads, "attention weights averaged over heads")
        return (out, TV(tuple(ctx.free(n) for n in w_spec.shape)))
    ctx.block(heads, "per-head attention weights are returned")
    return (out, TV(tuple(ctx.free(n) for n in w_spec.shape)))


def _encoder_layer(ctx, prefix: str, layer: nn.TransformerEncoderLayer, e: Layout) -> None:
    p = f"{prefix}." if prefix else ""
    _mha(ctx, p + "self_attn", layer.self_attn, e)
    ffn = ctx.param(p + "linear1.weight", 0, PRODUCER)
    ctx.unify(ctx.param(p + "linear1.weight", 1, CONSUMER), e)
    ctx.unify(ctx.param(p + "linear2.weight", 1, CONSUMER), ffn)
    ctx.unify(ctx.param(p + "linear2.weight", 0, PRODUCER), e)
    if layer.linear1.bias is not None:
        ctx.unify(ctx.param(p + "linear1.bias", 0, PRODUCER), ffn)
    if layer.linear2.bias is not None:
        ctx.unify(ctx.param(p + "linear2.bias", 0, PRODUCER), e)
    for norm in ("norm1", "norm2"):
        ln = getattr(layer, norm)
        if not isinstance(ln, nn.LayerNorm):
            raise RuleError(f"{norm} is not a LayerNorm")
        _norm(ctx, p + norm, ln, e)
    ctx.module_attr(p + "linear1.in_features", ctx.size(e))
    ctx.module_attr(p + "linear1.out_features", ctx.size(ffn))
    ctx.module_attr(p + "linear2.in_features", ctx.size(ffn))
    ctx.module_attr(p + "linear2.out_features", ctx.size(e))


def _norm(ctx, name: str, ln: nn.LayerNorm, e: Layout) -> None:
    ctx.uniform(e, f"LayerNorm `{ctx.node.target}.{name}` averages over this dimension")
    for t in ("weight", "bias"):
        if getattr(ln, t, None) is not None:
            ctx.unify(ctx.param(f"{name}.{t}", 0, PASS), e)
    ctx.module_attr(f"{name}.normalized_shape", (ctx.size(e),))


@RULES.rule(nn.TransformerEncoderLayer)
def transformer_encoder_layer(ctx) -> TV:
    """``nn.TransformerEncoderLayer``: the model dim is ``Prod(heads, head_dim)``;
    the feed-forward width is a fresh space."""
    x = ctx.tensor(ctx.arg(0, "src"))
    _encoder_layer(ctx, "", ctx.module, x.dims[-1])
    return x


@RULES.rule(nn.TransformerEncoder)
def transformer_encoder(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "src"))
    for i, layer in enumerate(ctx.module.layers):
        _encoder_layer(ctx, f"layers.{i}", layer, x.dims[-1])
    if ctx.module.norm is not None:
        if not isinstance(ctx.module.norm, nn.LayerNorm):
            raise RuleError("final norm is not a LayerNorm")
        _norm(ctx, "norm", ctx.module.norm, x.dims[-1])
    return x
