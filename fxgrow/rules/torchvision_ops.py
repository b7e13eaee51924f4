"""Rules for functions torchvision wraps as fx leaves (``torch.fx.wrap``).

They are registered by qualified name, so fxgrow does not import
torchvision.  Swin's ``shifted_window_attention`` projects the channels ``C``
into ``heads x head_dim`` and reshapes with ``C // num_heads``, so ``C`` is
tied to ``Prod(heads, head_dim)`` as in ``nn.MultiheadAttention``; the key
head dim is the contraction partner of the head dim (Swin V1; Swin V2's
cosine attention blocks it), and the channels grow by heads and head dim,
with ``num_heads`` rewritten.
"""

from __future__ import annotations

from ..errors import RuleError
from ..ir.roles import CONSUMER, PRODUCER
from ..ir.values import TV
from .linear import functional_weight
from .registry import RuleSet

__all__ = ["RULES"]

RULES = RuleSet()

_SWIN = "torchvision.models.swin_transformer."


def _weight(ctx, index, name, dim, role):
    """The layout of a weight argument (None if absent), as the functional layer rules read it."""
    return functional_weight(ctx, {name: (index, name)})(name, dim, role)


@RULES.rule(_SWIN + "shifted_window_attention")
def shifted_window_attention(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    num_heads = ctx.arg(5, "num_heads")
    c = x.dims[-1]
    size_c = ctx.norm(c).size
    if not isinstance(num_heads, int) or size_c % num_heads:
        raise RuleError("non-literal num_heads")
    heads = ctx.fresh(num_heads)
    head_dim, key_dim = ctx.fresh(size_c // num_heads), ctx.fresh(size_c // num_heads)
    scale = ctx.arg(11, "logit_scale", None)
    if scale is None:
        # q is multiplied by (C // num_heads) ** -0.5 read at run time: the key
        # rows take 1/count and sqrt(new/old) (fxgrow.analysis.contraction)
        ctx.contract(head_dim, key_dim, "the head dim of shifted window attention is "
                                        "contracted", vouched=True, sqrt_scale=True)
    else:
        ctx.unify(head_dim, key_dim)
        ctx.block(head_dim, "Swin V2's cosine attention normalises and contracts the head dim")
    hd = ctx.prod([heads, head_dim])
    ctx.unify(c, hd)
    qkv = ctx.cat([hd, ctx.prod([heads, key_dim]), hd])
    ctx.unify(_weight(ctx, 1, "qkv_weight", 0, PRODUCER), qkv)
    ctx.unify(_weight(ctx, 1, "qkv_weight", 1, CONSUMER), c)
    bias = _weight(ctx, 9, "qkv_bias", 0, PRODUCER)
    if bias is not None:
        ctx.unify(bias, qkv)
    ctx.unify(_weight(ctx, 2, "proj_weight", 1, CONSUMER), hd)
    out = _weight(ctx, 2, "proj_weight", 0, PRODUCER)
    pbias = _weight(ctx, 10, "proj_bias", 0, PRODUCER)
    if pbias is not None:
        ctx.unify(pbias, out)
    rel = ctx.tensor(ctx.arg(3, "relative_position_bias"))
    ctx.unify(rel.dims[-3], heads)
    if scale is not None:
        ctx.unify(ctx.tensor(scale).dims[0], heads)
    ctx.rewrite_arg(5, "num_heads", ctx.size(heads))
    return TV(x.dims[:-1] + (out,))


@RULES.rule(_SWIN + "_get_relative_position_bias")
def relative_position_bias(ctx) -> TV:
    table = ctx.tensor(ctx.arg(0, "relative_position_bias_table"))
    ctx.fix(table.dims[0], "relative positions are indexed")
    for d in ctx.tensor(ctx.arg(1, "relative_position_index")).dims:
        ctx.fix(d, "an index of positions")
    shape = ctx.out_shape
    return TV((ctx.free(shape[0]), table.dims[1], ctx.free(shape[2]), ctx.free(shape[3])))


@RULES.rule(_SWIN + "_patch_merging_pad")
def patch_merging_pad(ctx) -> TV:
    """Pads H and W to even, takes the four 2x2-strided sub-grids and concatenates them
    along channels: the output channels are ``Cat(C, C, C, C)``, one space four times."""
    x = ctx.tensor(ctx.arg(0, "x"))
    shape = ctx.out_shape
    c = x.dims[-1]
    if shape[-1] != 4 * ctx.norm(c).size:
        raise RuleError("unexpected channel count")
    return TV(x.dims[:-3] + (ctx.free(shape[-3]), ctx.free(shape[-2]), ctx.cat([c, c, c, c])))
