"""Ops over spatial dims: pooling, resizing, padding, rolling.

They mix or move positions along the dims they act on, so those dims must
carry no neurons (a dim that does is blocked, or fixed where positions only
move); the other dims pass through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.values import TV
from .common import dim_index
from .registry import RuleSet

__all__ = ["RULES", "spatial", "resize", "pad", "roll"]

RULES = RuleSet()


def spatial(nd: int):
    """Rule for an op over the last ``nd`` dims: the others pass through.

    The op mixes positions along those dims (a pooling window, an
    interpolation), so they must hold no neurons: a dim that does -- a channel
    dim moved last, ``h.unsqueeze(1)`` pooled -- is blocked.
    """
    def rule(ctx) -> TV:
        x = ctx.tensor(ctx.arg(0, "input"))
        if not isinstance(ctx.out_spec, TensorSpec):
            raise RuleError("returns more than one tensor (return_indices?)")
        out_shape = ctx.out_shape
        if len(out_shape) != x.ndim or x.ndim < nd + 1:
            raise RuleError("unexpected rank")
        for d in x.dims[-nd:]:
            ctx.mixes(d, "mixes positions along a dim that holds neurons")
        return TV(x.dims[:-nd] + tuple(ctx.free(n) for n in out_shape[-nd:]))
    rule.__name__ = f"spatial{nd}d"
    return rule


def _nd_of(cls_or_fn) -> int:
    name = cls_or_fn.__name__
    return int(name[-2]) if name[-1] == "d" and name[-2].isdigit() else 2


for _m in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
           nn.LPPool1d, nn.LPPool2d, nn.FractionalMaxPool2d,
           F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
           F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
           F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
           F.lp_pool1d, F.lp_pool2d):
    RULES.rule(_m)(spatial(_nd_of(_m)))


@RULES.rule(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, F.interpolate,
               F.upsample)
def resize(ctx) -> TV:
    """Upsampling resizes the dims after the channel dim (dim 1)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    nd = x.ndim - 2
    if nd < 1:
        raise RuleError("unexpected rank")
    return spatial(nd)(ctx)


@RULES.rule(F.pad)
def pad(ctx) -> TV:
    """Constant padding adds fixed positions around a layout: ``Cat(P, L, Q)``."""
    x = ctx.tensor(ctx.arg(0, "input"))
    amounts = ctx.arg(1, "pad")
    mode = ctx.arg(2, "mode", "constant")
    if not all(isinstance(p, int) and p >= 0 for p in amounts):
        raise RuleError("non-literal or negative padding")
    dims = list(x.dims)
    for k in range(len(amounts) // 2):
        lo, hi = amounts[2 * k], amounts[2 * k + 1]
        d = x.ndim - 1 - k
        if lo == hi == 0:
            continue
        if mode == "constant":
            parts = ([ctx.free(lo)] if lo else []) + [dims[d]] + ([ctx.free(hi)] if hi else [])
            dims[d] = ctx.cat(parts)
        else:
            ctx.fix(dims[d], f"{mode} padding copies border neurons")
            dims[d] = ctx.free(ctx.out_shape[d])
    return TV(tuple(dims))


@RULES.rule(torch.roll, "roll")
def roll(ctx) -> TV:
    """``roll`` moves positions along its dims: those are fixed, the rest pass."""
    x = ctx.tensor(ctx.arg(0, "input"))
    dims = ctx.arg(2, "dims", None)
    if dims is None:
        raise RuleError("roll over the flattened tensor")
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    for d in dims:
        ctx.fix(x.dims[dim_index(d, x.ndim)], "rolled")
    return x
