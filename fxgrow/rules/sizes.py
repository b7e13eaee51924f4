"""Ops that read sizes: ``size()``, ``shape``, ``numel``, ``dim``.

Their results are ints that remember which layouts they were read from
(:class:`~fxgrow.ir.values.SizeOf`), so a rule that bakes one into the
computation can be caught, and a view that uses one can be rewritten.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import RuleError
from ..ir.values import TV, SizeOf
from .common import dim_index
from .registry import RuleSet

__all__ = ["RULES", "size", "numel", "getattr_rule"]

RULES = RuleSet()


def _sizes(ctx, x: TV, shape) -> tuple:
    return tuple(SizeOf((lay,), n) for lay, n in zip(x.dims, shape))


@RULES.rule("size")
def size(ctx) -> Any:
    """``size()``: ints that remember which layouts they were read from."""
    x = ctx.tensor(ctx.arg(0))
    shape = ctx.spec(ctx.arg(0)).shape
    d = ctx.arg(1, "dim", None)
    if d is None:
        return _sizes(ctx, x, shape)
    d = dim_index(d, x.ndim)
    return SizeOf((x.dims[d],), shape[d])


@RULES.rule("dim", "ndimension")
def ndim(ctx) -> int:
    return ctx.out_spec  # the rank never changes


@RULES.rule("numel", torch.numel)
def numel(ctx) -> SizeOf:
    x = ctx.tensor(ctx.arg(0))
    return SizeOf(tuple(x.dims), ctx.out_spec)


@RULES.rule(getattr)
def getattr_rule(ctx) -> Any:
    """Tensor attributes: ``shape`` is tracked like ``size()``; dtype/device are plain."""
    base = ctx.value(ctx.arg(0))
    attr = ctx.arg(1)
    if not isinstance(base, TV):
        return ctx.out_spec
    if attr == "shape":
        return _sizes(ctx, base, ctx.spec(ctx.arg(0)).shape)
    if attr in ("dtype", "device", "ndim", "is_cuda", "requires_grad"):
        return ctx.out_spec
    if attr == "T":
        return TV(tuple(reversed(base.dims)))
    if attr == "mT" and base.ndim >= 2:
        return TV(base.dims[:-2] + (base.dims[-1], base.dims[-2]))
    raise RuleError(f"tensor attribute {attr!r}")
