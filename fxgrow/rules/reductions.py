"""Reductions and normalisations along a dimension.

Reducing over free dims (batch, time, space) leaves neuron dims alone.
Reducing over a neuron dim depends on the reduction: a mean (and a
population variance) is unchanged when every neuron is replicated the same
number of times, so it adds a *uniform* constraint; a max over copies is the
max, so it needs nothing; a sum, an unbiased variance, a softmax or an argmax
changes with the number of copies (or their positions), so it blocks.
"""

from __future__ import annotations

import operator
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuleError
from ..ir.values import TV
from .common import dim_index
from .elementwise import elementwise
from .registry import RuleSet

__all__ = ["RULES", "reduce_mean", "reduce_sum", "reduce_max", "softmax", "topk", "sort",
           "max_min", "histc"]

RULES = RuleSet()


def _reduced(ctx, x: TV) -> List[int]:
    # torch.norm(x, p, dim, keepdim): the dim comes after the order
    d = ctx.arg(2, "dim", None) if _is_norm(ctx) else ctx.arg(1, "dim", None)
    if d is None:
        return list(range(x.ndim))
    ds = d if isinstance(d, (tuple, list)) else (d,)
    return sorted({dim_index(i, x.ndim) for i in ds})


def _reduce(ctx, why: Optional[str], constraint: str) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    dims = _reduced(ctx, x)
    keep = bool(ctx.arg(3, "keepdim", False) if _is_norm(ctx) else ctx.arg(2, "keepdim", False))
    for i in dims:
        # reducing over positions (batch, tokens, space) is what reductions are for:
        # only neurons are constrained
        if constraint == "uniform":
            ctx.averages(x.dims[i], why)
        elif constraint == "block":
            ctx.mixes(x.dims[i], why)
    out = [ctx.free(1) if i in dims else lay for i, lay in enumerate(x.dims)
           if keep or i not in dims]
    if len(out) != len(ctx.out_shape):
        raise RuleError("unexpected output rank")
    return TV(tuple(out))


def _is_norm(ctx) -> bool:
    return ctx.node.target in (torch.norm, "norm")


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
        ctx.mixes(x.dims[dim_index(ctx.arg(1, "dim"), x.ndim)], "a cumulative sum over neurons")
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
    ctx.mixes(x.dims[_softmaxdim_index(ctx, x)], "a softmax over this dimension")
    return x


# -- selections by value ---------------------------------------------------------------
_PICKS = "picks positions along this dimension by their values"


def _selection(ctx, x: TV, d: int, k: int) -> TV:
    """``x`` with dim ``d`` replaced by ``k`` positions chosen by value (a new fixed dim);
    ``x``'s dim ``d`` is fixed, since copies of a neuron would be chosen as well."""
    ctx.fix(x.dims[d], _PICKS)
    return TV(x.dims[:d] + (ctx.free(k),) + x.dims[d + 1:])


@RULES.rule(torch.topk, "topk")
def topk(ctx) -> tuple:
    """``topk(x, k, dim)``: values and indices of the ``k`` largest entries along ``dim``
    (an MoE router's experts): the other dims pass."""
    x = ctx.tensor(ctx.arg(0, "input"))
    d = dim_index(ctx.arg(2, "dim", -1), x.ndim)
    k = ctx.arg(1, "k")
    if not isinstance(k, int):
        raise RuleError("a non-literal k")
    out = _selection(ctx, x, d, k)
    return out, out


@RULES.rule(torch.sort, "sort", torch.argsort, "argsort")
def sort(ctx) -> tuple:
    """``sort(x, dim)``/``argsort``: the entries along ``dim`` reordered by value."""
    x = ctx.tensor(ctx.arg(0, "input"))
    d = dim_index(ctx.arg(1, "dim", -1), x.ndim)
    out = _selection(ctx, x, d, ctx.spec(ctx.arg(0, "input")).shape[d])
    return out if ctx.node.target in (torch.argsort, "argsort") else (out, out)


def _reads_indices(ctx) -> bool:
    """Whether anything reads the indices of a ``(values, indices)`` result."""
    for user in ctx.node.users:
        if user.target is operator.getitem and len(user.args) > 1 and \
                (user.args[1] == 0 or not user.users):
            continue
        if user.target is getattr and len(user.args) > 1 and user.args[1] == "values":
            continue
        return True
    return False


# named like :func:`reduce_max`: mean- and zero-padding look for a max over a group by
# that name (:mod:`fxgrow.analysis.padding`)
@RULES.rule(torch.max, "max", torch.min, "min", name="reduce_max_min")
def max_min(ctx):
    """``max``/``min``: of two tensors elementwise; over all entries, or along ``dim``
    with indices.  The max over copies is the max (nothing to constrain), but its
    index is a position: if anything reads the indices, the dim is fixed."""
    other = ctx.arg(1, "other", None)
    if isinstance(ctx.value(other), TV):
        return elementwise(ctx)
    x = ctx.tensor(ctx.arg(0, "input"))
    d = ctx.arg(1, "dim", None)
    if d is None:
        if ctx.node.kwargs or len(ctx.node.args) > 1:
            raise RuleError("unexpected arguments of max/min")
        return TV(())
    d = dim_index(d, x.ndim)
    keep = bool(ctx.arg(2, "keepdim", False))
    if _reads_indices(ctx):
        ctx.fix(x.dims[d], "the position of its max or min is read")
    out = TV(x.dims[:d] + ((ctx.free(1),) if keep else ()) + x.dims[d + 1:])
    return out, out


@RULES.rule(torch.histc, "histc")
def histc(ctx) -> TV:
    """``histc(x, bins)``: counts entries, so neurons of ``x`` would be counted once per
    copy (blocked); the bins are a new fixed dim."""
    x = ctx.tensor(ctx.arg(0, "input"))
    for lay in x.dims:
        ctx.mixes(lay, "a histogram counts every copy")
    return TV((ctx.free(ctx.out_shape[0]),))
