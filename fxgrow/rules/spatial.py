"""Ops over spatial dims: pooling, resizing, padding, rolling.

They mix or move positions along the dims they act on, so those dims must
carry no neurons (a dim that does is blocked, or fixed where positions only
move); the other dims pass through.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.values import TV, SizeOf, iter_sizes
from .common import dim_index
from .registry import RuleSet

__all__ = ["RULES", "spatial", "resize", "pad", "pad_module", "roll"]

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


def _pad(ctx, x: TV, amounts: Sequence[Any], mode: str) -> TV:
    """Pad (or, with negative amounts, crop) the last ``len(amounts) // 2`` dims.

    Literal non-negative constant padding adds fixed positions around a layout,
    ``Cat(P, L, Q)``, which is exact whatever ``L`` holds: copies stay copies
    and the padding is the same constant.  Anything else acts on positions --
    a crop, amounts read from sizes (window padding ``(ws - W % ws) % ws``), a
    reflection or replication copying border positions -- so the dim must be
    a free extent (a dim holding neurons is blocked, :meth:`mixes`) and the
    output dim is a new one.  Amounts read from sizes stay in the graph and are
    recomputed at run time: read from free extents they never change with
    growth; read from a dim that holds neurons they would, so those block.
    """
    if len(amounts) % 2 or len(amounts) // 2 > x.ndim:
        raise RuleError("unexpected padding amounts")
    dims = list(x.dims)
    out_shape = ctx.out_shape
    for k in range(len(amounts) // 2):
        d = x.ndim - 1 - k
        pair = amounts[2 * k:2 * k + 2]
        read = [l for v in pair for sz in iter_sizes(v) for l in sz.layouts]
        lo, hi = (v.value if isinstance(v, SizeOf) else v for v in pair)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
            raise RuleError("non-literal padding")
        for lay in read:
            ctx.mixes(lay, "a padding amount is read from the size of a dim that holds "
                           "neurons, and would change with the width")
        if lo == hi == 0:
            continue
        if mode == "constant" and lo >= 0 and hi >= 0 and not read:
            parts = ([ctx.free(lo)] if lo else []) + [dims[d]] + ([ctx.free(hi)] if hi else [])
            dims[d] = ctx.cat(parts)
            continue
        what = ("crops" if min(lo, hi) < 0 else "pads by amounts read from sizes" if read
                else f"{mode}-pads")
        ctx.mixes(dims[d], f"{what} positions along a dim that holds neurons")
        dims[d] = ctx.free(out_shape[d])
    return TV(tuple(dims))


def _amounts(ctx, raw: Any) -> Tuple[Any, ...]:
    v = ctx.value(raw)
    if not isinstance(v, (tuple, list)):
        raise RuleError("padding amounts that are not a sequence")
    return tuple(v)


@RULES.rule(F.pad, accepts_sizes=True)
def pad(ctx) -> TV:
    """``F.pad``, constant or not, with literal amounts or amounts read from sizes
    (see :func:`_pad`)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    value = ctx.arg(3, "value", None)
    if any(True for _ in iter_sizes(ctx.value(value))):
        raise RuleError("a padding value read from a size")
    return _pad(ctx, x, _amounts(ctx, ctx.arg(1, "pad")), ctx.arg(2, "mode", "constant"))


_PAD_MODULES = {nn.ZeroPad1d: "constant", nn.ZeroPad2d: "constant", nn.ZeroPad3d: "constant",
                nn.ConstantPad1d: "constant", nn.ConstantPad2d: "constant",
                nn.ConstantPad3d: "constant", nn.ReflectionPad1d: "reflect",
                nn.ReflectionPad2d: "reflect", nn.ReflectionPad3d: "reflect",
                nn.ReplicationPad1d: "replicate", nn.ReplicationPad2d: "replicate",
                nn.ReplicationPad3d: "replicate", nn.CircularPad1d: "circular",
                nn.CircularPad2d: "circular", nn.CircularPad3d: "circular"}


@RULES.rule(*_PAD_MODULES)
def pad_module(ctx) -> TV:
    """``nn.ZeroPad2d((-1, 1, -1, 1))`` and the other padding modules, as :func:`pad`."""
    x = ctx.tensor(ctx.arg(0, "input"))
    cls = next((c for c in _PAD_MODULES if isinstance(ctx.module, c)), None)
    if cls is None or type(ctx.module).forward is not cls.forward:
        raise RuleError("a padding module whose forward is its own")
    mode = _PAD_MODULES[cls]
    return _pad(ctx, x, tuple(ctx.module.padding), mode)


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
