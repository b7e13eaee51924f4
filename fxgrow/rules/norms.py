"""Normalisations: per-neuron parameters in place, statistics over neurons or not.

Norms apply per-neuron parameters in place (pass-through members).
BatchNorm and InstanceNorm compute statistics per neuron, and copies have
identical statistics, so any replication is exact; LayerNorm, RMSNorm and
GroupNorm average over neurons, which uniform replication (every neuron the
same number of times) preserves, so they add a uniform constraint (and
LayerNorm/RMSNorm residual streams can take any width by padding, see
:mod:`fxgrow.analysis.padding`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuleError
from ..ir.roles import FIXED, PASS
from ..ir.values import TV, SizeOf
from .common import dim_index
from .linear import WeightFn, functional_weight, module_weight
from .registry import RuleSet

__all__ = ["RULES", "batch_norm", "instance_norm", "layer_norm", "rms_norm", "group_norm",
           "normalize", "vector_norm"]

RULES = RuleSet()


def _per_channel(ctx, x: TV, c: int, weight: WeightFn, names) -> TV:
    for name in names:
        lay = weight(name, 0, PASS)
        if lay is not None:
            ctx.unify(lay, x.dims[c])
    return x


_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _batch_statistics(ctx, x: TV, c: int, what: str) -> None:
    """Statistics computed from the input average over every dim but the channel
    dim ``c``: neurons held there must be replicated uniformly."""
    for i, d in enumerate(x.dims):
        if i != c:
            ctx.averages(d, f"{what} takes its statistics over this dimension")


@RULES.rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def batch_norm(ctx) -> TV:
    """BatchNorm: per-channel statistics; copies have identical ones.

    In training mode (or without running statistics) the statistics are the
    batch's, a mean over the batch and spatial dims.
    """
    m = ctx.module
    x = ctx.tensor(ctx.arg(0, "input"))
    if m.training or m.running_mean is None:
        _batch_statistics(ctx, x, 1, "BatchNorm in training mode")
    y = _per_channel(ctx, x, 1, module_weight(ctx), _BN_TENSORS)
    ctx.module_attr("num_features", ctx.size(x.dims[1]))
    return y


_INSTANCE_NORMS = ((nn.InstanceNorm1d, 1), (nn.InstanceNorm2d, 2), (nn.InstanceNorm3d, 3))


@RULES.rule(*(cls for cls, _ in _INSTANCE_NORMS))
def instance_norm(ctx) -> TV:
    """InstanceNorm: per-sample, per-channel statistics over the spatial dims.

    The channel dim is the one before the ``nd`` spatial dims, as PyTorch reads
    it: an input with ``nd + 1`` dims is unbatched, ``(C, *spatial)``.
    """
    m = ctx.module
    x = ctx.tensor(ctx.arg(0, "input"))
    nd = next(n for cls, n in _INSTANCE_NORMS if isinstance(m, cls))
    c = len(x.dims) - nd - 1
    if c < 0:
        raise RuleError("input has too few dims for the InstanceNorm")
    if m.training or not m.track_running_stats:
        for d in x.dims[c + 1:]:
            ctx.averages(d, "InstanceNorm takes its statistics over this dimension")
    y = _per_channel(ctx, x, c, module_weight(ctx), _BN_TENSORS)
    ctx.module_attr("num_features", ctx.size(x.dims[c]))
    return y


@RULES.rule(F.batch_norm)
def batch_norm_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    weight = functional_weight(ctx, {"running_mean": (1, "running_mean"),
                                      "running_var": (2, "running_var"),
                                      "weight": (3, "weight"), "bias": (4, "bias")})
    if ctx.arg(5, "training", False) is not False or ctx.arg(1, "running_mean", None) is None:
        _batch_statistics(ctx, x, 1, "batch_norm with training=True")
    return _per_channel(ctx, x, 1, weight, _BN_TENSORS)


def _layer_norm(ctx, x: TV, k: int, weight: WeightFn, what: str = "LayerNorm") -> TV:
    dims = x.dims[len(x.dims) - k:]
    for i, d in enumerate(dims):
        ctx.uniform(d, f"{what} averages over this dimension")
        for name in ("weight", "bias"):
            lay = weight(name, i, PASS)
            if lay is not None:
                ctx.unify(lay, d)
    return x


@RULES.rule(*([nn.RMSNorm] if hasattr(nn, "RMSNorm") else []))
def rms_norm(ctx) -> TV:
    """RMSNorm: the mean of squares over the normalised dims survives uniform replication."""
    x = ctx.tensor(ctx.arg(0, "x"))
    k = len(ctx.module.normalized_shape)
    y = _layer_norm(ctx, x, k, module_weight(ctx), "RMSNorm")
    dims = x.dims[len(x.dims) - k:]
    ctx.module_attr("normalized_shape", tuple(ctx.size(d) for d in dims))
    return y


def _normalized(ctx, x: TV, what: str) -> int:
    """How many trailing dims the functional norm's ``normalized_shape`` covers,
    recording how it follows growth.

    A literal is rewritten with the new sizes; sizes read from the input itself
    (``F.layer_norm(h, h.shape[-1:])``) follow it by themselves; sizes read from
    anything else would not, and block.
    """
    raw = ctx.arg(1, "normalized_shape")
    value = ctx.value(raw)
    entries = value if isinstance(value, (tuple, list)) else (value,)
    k = len(entries)
    if k == 0 or k > x.ndim:
        raise RuleError(f"unexpected normalized_shape of {what}")
    dims = x.dims[x.ndim - k:]
    read = [e for e in entries if isinstance(e, SizeOf)]
    if read:
        if len(read) != k or any(tuple(ctx.norm(l) for l in e.layouts) != (ctx.norm(d),)
                                 for e, d in zip(entries, dims)):
            raise RuleError(f"the normalized_shape of {what} is read from another tensor")
        return k  # recomputed from the input's own sizes
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in entries):
        raise RuleError(f"non-literal normalized_shape of {what}")
    as_type = type(raw) if isinstance(raw, (list, tuple)) else tuple
    ctx.rewrite_arg(1, "normalized_shape", as_type(ctx.size(d) for d in dims))
    return k


if hasattr(F, "rms_norm"):
    @RULES.rule(F.rms_norm, accepts_sizes=True)
    def rms_norm_functional(ctx) -> TV:
        x = ctx.tensor(ctx.arg(0, "input"))
        k = _normalized(ctx, x, "rms_norm")
        return _layer_norm(ctx, x, k, functional_weight(
            ctx, {"weight": (2, "weight"), "bias": (None, "bias")}), "RMSNorm")


@RULES.rule(nn.LayerNorm)
def layer_norm(ctx) -> TV:
    """LayerNorm: mean and variance over the normalised dims survive uniform replication."""
    x = ctx.tensor(ctx.arg(0, "input"))
    k = len(ctx.module.normalized_shape)
    y = _layer_norm(ctx, x, k, module_weight(ctx))
    dims = x.dims[len(x.dims) - k:]
    ctx.module_attr("normalized_shape", tuple(ctx.size(d) for d in dims))
    return y


@RULES.rule(F.layer_norm, accepts_sizes=True)
def layer_norm_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    k = _normalized(ctx, x, "layer_norm")
    weight = functional_weight(ctx, {"weight": (2, "weight"), "bias": (3, "bias")})
    # weights are 1-D per normalised dim only when k == 1; for k > 1 dim i is dim i
    return _layer_norm(ctx, x, k, weight)


def _group_norm(ctx, x: TV, groups: int, weight: WeightFn) -> TV:
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise RuleError("non-literal group count")
    c = x.dims[1]
    for d in x.dims[2:]:
        ctx.averages(d, "GroupNorm takes its statistics over this dimension")
    g = ctx.table.fresh(groups, status=FIXED,
                        reason=f"the group count of GroupNorm `{ctx.node.name}`")
    ctx.unify(c, ctx.prod([g, ctx.fresh(ctx.norm(c).size // groups)]))
    ctx.uniform(c, "GroupNorm averages over the channels of each group")
    return _per_channel(ctx, x, 1, weight, ("weight", "bias"))


@RULES.rule(nn.GroupNorm)
def group_norm(ctx) -> TV:
    """GroupNorm: channels factor as (groups, per-group); per-group widened uniformly."""
    x = ctx.tensor(ctx.arg(0, "input"))
    y = _group_norm(ctx, x, ctx.module.num_groups, module_weight(ctx))
    ctx.module_attr("num_channels", ctx.size(x.dims[1]))
    return y


@RULES.rule(F.group_norm)
def group_norm_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    groups = ctx.arg(1, "num_groups")
    weight = functional_weight(ctx, {"weight": (2, "weight"), "bias": (3, "bias")})
    return _group_norm(ctx, x, groups, weight)


@RULES.rule(F.normalize)
def normalize(ctx) -> TV:
    """``F.normalize(x, p, dim)``: ``x / max(‖x‖_p, eps)`` with the norm over ``dim``.

    Over a free extent (tokens: XCA's cross-covariance attention) each neuron is
    divided by a norm of its own values, which its copies share, so every other
    dim passes.  Over a dim that holds neurons the norm counts every copy
    (``‖x'‖₂ = √k·‖x‖₂`` under uniform replication by ``k``, and ``eps`` does not
    scale with it), so those neurons are blocked -- except for ``p = inf``:
    a maximum over copies is the maximum.
    """
    x = ctx.tensor(ctx.arg(0, "input"))
    p, d = ctx.arg(1, "p", 2.0), ctx.arg(2, "dim", 1)
    if not isinstance(p, (int, float)) or isinstance(p, bool):
        raise RuleError("non-literal p")
    dims = d if isinstance(d, (tuple, list)) else (d,)
    for i in dims:
        if p != float("inf"):
            ctx.mixes(x.dims[dim_index(i, x.ndim)],
                      f"F.normalize divides by a {p:g}-norm over this dim, which counts every copy")
    return x


@RULES.rule(torch.linalg.vector_norm)
def vector_norm(ctx) -> TV:
    """``torch.linalg.vector_norm(x, ord, dim, keepdim)`` (what ``F.normalize`` becomes
    under ``torch.export``): a norm over free extents leaves the neuron dims alone; over
    a dim that holds neurons it counts copies and blocks them, except for
    ``ord = ±inf`` (a maximum or minimum over copies is unchanged)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    p, d, keep = ctx.arg(1, "ord", 2), ctx.arg(2, "dim", None), ctx.arg(3, "keepdim", False)
    if not isinstance(p, (int, float)) or isinstance(p, bool):
        raise RuleError("non-literal ord")
    dims = range(x.ndim) if d is None else d if isinstance(d, (tuple, list)) else (d,)
    reduced = {dim_index(i, x.ndim) for i in dims}
    for i in reduced:
        if abs(p) != float("inf"):
            ctx.mixes(x.dims[i], f"a {p:g}-norm over this dim counts every copy")
    return TV(tuple(ctx.free(1) if i in reduced else lay for i, lay in enumerate(x.dims)
                    if keep or i not in reduced))
