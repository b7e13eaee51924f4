"""Reductions and normalisations along a dimension.

Reducing over free dims (batch, time, space) leaves neuron dims alone.
Reducing over a neuron dim depends on the reduction: a mean (and a
population variance) is unchanged when every neuron is replicated the same
number of times, so it adds a *uniform* constraint; a max over copies is the
max, so it needs nothing; a sum, an unbiased variance, a softmax or an argmax
changes with the number of copies (or their positions), so it blocks.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuleError
from ..ir.values import TV
from .common import dim_index
from .registry import RuleSet

__all__ = ["RULES", "reduce_mean", "reduce_sum", "reduce_max", "softmax"]

RULES = RuleSet()


def _reduced(ctx, x: TV) -> List[int]:
    d = ctx.arg(1, "dim", None)
    if d is None:
        return list(range(x.ndim))
    ds = d if isinstance(d, (tuple, list)) else (d,)
    return sorted({dim_index(i, x.ndim) for i in ds})


def _reduce(ctx, why: Optional[str], constraint: str) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    dims = _reduced(ctx, x)
    keep = bool(ctx.arg(2, "keepdim", False))
    for i in dims:
        if constraint == "uniform":
            ctx.uniform(x.dims[i], why)
        elif constraint == "block":
            ctx.block(x.dims[i], why)
    out = [ctx.free(1) if i in dims else lay for i, lay in enumerate(x.dims)
           if keep or i not in dims]
    if len(out) != len(ctx.out_shape):
        raise RuleError("unexpected output rank")
    return TV(tuple(out))


@RULES.rule(torch.mean, "mean", torch.nanmean, "nanmean")
def reduce_mean(ctx) -> TV:
    """Mean: exact over neuron dims under uniform replication."""
    return _reduce(ctx, "a mean over this dimension", "uniform")


@RULES.rule(torch.sum, "sum", torch.nansum, "nansum", torch.logsumexp, "logsumexp",
               torch.prod, "prod", torch.norm, "norm", torch.cumsum, "cumsum")
def reduce_sum(ctx) -> TV:
    """Sums (and norms) count copies, so they block the reduced neuron dims."""
    if ctx.node.target in ("cumsum", torch.cumsum):
        x = ctx.tensor(ctx.arg(0, "input"))
        ctx.block(x.dims[dim_index(ctx.arg(1, "dim"), x.ndim)], "a cumulative sum over neurons")
        return x
    return _reduce(ctx, "a sum over this dimension counts every copy", "block")


@RULES.rule(torch.amax, "amax", torch.amin, "amin")
def reduce_max(ctx) -> TV:
    """The max over copies is the max: nothing to constrain."""
    return _reduce(ctx, None, "none")


@RULES.rule(torch.var, "var", torch.std, "std")
def reduce_var(ctx) -> TV:
    """Population variance survives uniform replication; the unbiased one does not."""
    correction = ctx.node.kwargs.get("correction", ctx.node.kwargs.get("unbiased", 1))
    if correction in (0, False):
        return _reduce(ctx, "a variance over this dimension", "uniform")
    return _reduce(ctx, "an unbiased variance depends on the neuron count", "block")


@RULES.rule(torch.argmax, "argmax", torch.argmin, "argmin")
def argmax(ctx) -> TV:
    """Indices into a neuron dim change when copies are inserted."""
    return _reduce(ctx, "an argmax returns positions of neurons", "block")


def _softmaxdim_index(ctx, x: TV) -> int:
    if ctx.module is not None:
        d = ctx.module.dim
    else:
        d = ctx.arg(1, "dim", None)
    if d is None:
        raise RuleError("softmax without an explicit dim")
    return dim_index(d, x.ndim)


@RULES.rule(nn.Softmax, nn.LogSoftmax, nn.Softmin, F.softmax, F.log_softmax, F.softmin,
               torch.softmax, torch.log_softmax, "softmax", "log_softmax")
def softmax(ctx) -> TV:
    """A softmax normalises over copies, so its dim cannot grow by replication."""
    x = ctx.tensor(ctx.arg(0, "input"))
    ctx.block(x.dims[_softmaxdim_index(ctx, x)], "a softmax over this dimension")
    return x
