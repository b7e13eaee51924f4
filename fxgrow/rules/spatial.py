"""Ops over spatial dims: pooling, resizing, padding, rolling, im2col (unfold/fold).

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

__all__ = ["RULES", "spatial", "resize", "pad", "pad_module", "roll", "unfold", "fold",
           "tensor_unfold"]

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


# -- im2col: F.unfold / nn.Unfold, F.fold / nn.Fold, Tensor.unfold -----------------
def _kernel_positions(ctx, kernel) -> int:
    sizes = kernel if isinstance(kernel, (tuple, list)) else (kernel, kernel)
    if not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in sizes):
        raise RuleError("non-literal kernel size")
    n = 1
    for k in sizes:
        n *= k
    return n


def _unfold(ctx, x: TV, kernel) -> TV:
    """``(B, C, H, W) -> (B, C·kh·kw, L)``: each block's values are channel-major,
    so the output channels are ``Prod(C, K)`` with ``K`` the kernel positions, a
    fixed extent; copies of a channel give copies of its ``K`` values.  The
    blocks are read along the spatial dims, which must be free."""
    if x.ndim not in (3, 4):
        raise RuleError("unfold of a tensor that is not (B, C, H, W) or (C, H, W)")
    for d in x.dims[-2:]:
        ctx.mixes(d, "unfold reads sliding blocks of positions along a dim that holds neurons")
    k = ctx.free(_kernel_positions(ctx, kernel))
    out_shape = ctx.out_shape
    return TV(x.dims[:-3] + (ctx.prod([x.dims[-3], k]), ctx.free(out_shape[-1])))


def _fold(ctx, x: TV, kernel) -> TV:
    """``(B, C·kh·kw, L) -> (B, C, H, W)``, the inverse layout of :func:`_unfold`:
    dim 1 factors as ``Prod(C, K)`` with ``K`` fixed; the blocks are summed into
    positions, so ``L`` must be free; each channel is summed on its own."""
    if x.ndim not in (2, 3):
        raise RuleError("fold of a tensor that is not (B, C·K, L) or (C·K, L)")
    n = _kernel_positions(ctx, kernel)
    size = ctx.norm(x.dims[-2]).size
    if size % n:
        raise RuleError("fold's channels are not a multiple of the kernel positions")
    c, k = ctx.factor(x.dims[-2], [size // n, n])
    ctx.fix(k, "the kernel positions of a fold")
    ctx.mixes(x.dims[-1], "fold sums blocks into positions along a dim that holds neurons")
    out_shape = ctx.out_shape
    return TV(x.dims[:-2] + (c, ctx.free(out_shape[-2]), ctx.free(out_shape[-1])))


@RULES.rule(F.unfold, nn.Unfold)
def unfold(ctx) -> TV:
    """``F.unfold`` / ``nn.Unfold`` (im2col), see :func:`_unfold`."""
    kernel = ctx.module.kernel_size if ctx.module is not None else ctx.arg(1, "kernel_size")
    return _unfold(ctx, ctx.tensor(ctx.arg(0, "input")), kernel)


@RULES.rule(F.fold, nn.Fold)
def fold(ctx) -> TV:
    """``F.fold`` / ``nn.Fold`` (col2im), see :func:`_fold`."""
    kernel = ctx.module.kernel_size if ctx.module is not None else ctx.arg(2, "kernel_size")
    return _fold(ctx, ctx.tensor(ctx.arg(0, "input")), kernel)


@RULES.rule("unfold", accepts_sizes=True)
def tensor_unfold(ctx) -> TV:
    """``x.unfold(d, size, step)``: windows along dim ``d``, which must be free; it
    becomes the window count and a new last dim the window positions (both free,
    new extents); the other dims pass.  ``size`` and ``step`` may be read from the
    sizes of free extents (which never grow)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    d = dim_index(ctx.arg(1, "dimension"), x.ndim)
    for raw in (ctx.arg(2, "size"), ctx.arg(3, "step")):
        for sz in iter_sizes(ctx.value(raw)):
            for lay in sz.layouts:
                ctx.mixes(lay, "an unfold window read from the size of a dim that holds "
                               "neurons would change with the width")
    ctx.mixes(x.dims[d], "unfold reads windows of positions along a dim that holds neurons")
    out_shape = ctx.out_shape
    dims = list(x.dims)
    dims[d] = ctx.free(out_shape[d])
    return TV(tuple(dims) + (ctx.free(out_shape[-1]),))
