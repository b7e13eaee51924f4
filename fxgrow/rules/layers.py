"""Layers with weights: linear maps, convolutions, norms, embeddings.

A linear map's output dimension is a *fresh* space produced by its weight
rows (and bias); its input dimension is unified with its weight columns,
which consume the input's space.  Under Net2WiderNet new output neurons copy
rows, and every consumer divides the columns of all copies by the
replication count, so the sum over copies equals the old sum.

Norms apply per-neuron parameters in place (pass-through).  BatchNorm and
InstanceNorm compute statistics per neuron, and copies have identical
statistics, so any replication is exact; LayerNorm and GroupNorm average
over neurons, which uniform replication (every neuron the same number of
times) preserves, so they add a uniform constraint.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuleError
from ..layout import Layout
from ..roles import CONSUMER, PASS, PRODUCER
from ..spaces import FIXED
from ..values import TV
from . import register_rule

__all__ = ["linear", "conv", "batch_norm", "layer_norm", "group_norm", "embedding"]

WeightFn = Callable[[str, int, str], Optional[Layout]]


def _module_weight(ctx) -> WeightFn:
    def get(name: str, dim: int, role: str) -> Optional[Layout]:
        if not ctx.has_tensor(name):
            return None
        return ctx.param(name, dim, role)
    return get


def _functional_weight(ctx, positions) -> WeightFn:
    """Weights given as arguments; ``positions`` maps a name to (index, kwarg)."""
    def get(name: str, dim: int, role: str) -> Optional[Layout]:
        idx, kw = positions[name]
        a = ctx.arg(idx, kw, None)
        if a is None:
            return None
        lay = ctx.weight(a, dim, role)
        if lay is None:
            raise RuleError(f"`{kw}` is computed in the graph, so it cannot be rescaled")
        return lay
    return get


# -- Linear ---------------------------------------------------------------------
def _linear(ctx, x: TV, weight: WeightFn) -> TV:
    out = weight("weight", 0, PRODUCER)
    inp = weight("weight", 1, CONSUMER)
    ctx.unify(x.dims[-1], inp)
    bias = weight("bias", 0, PRODUCER)
    if bias is not None:
        ctx.unify(bias, out)
    return TV(x.dims[:-1] + (out,))


@register_rule(nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
def linear(ctx) -> TV:
    """``nn.Linear``: fresh output space, input unified with the weight columns."""
    x = ctx.tensor(ctx.arg(0, "input"))
    y = _linear(ctx, x, _module_weight(ctx))
    ctx.module_attr("in_features", lambda size, d=x.dims[-1]: size(d))
    ctx.module_attr("out_features", lambda size, d=y.dims[-1]: size(d))
    return y


@register_rule(F.linear, torch.nn.functional.linear)
def linear_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    return _linear(ctx, x, _functional_weight(ctx, {"weight": (1, "weight"), "bias": (2, "bias")}))


# -- Convolutions ---------------------------------------------------------------
def _conv_channels(ctx, cin: Layout, groups: int, weight: WeightFn, cout: int,
                   transposed: bool) -> Layout:
    """Output channel layout of a (grouped) convolution.

    * ``groups == 1``: fresh output space; input unified with weight dim 1.
    * depthwise (one input channel per group): the groups *are* the input
      channels, so the output is ``Prod(C_in, M)`` for channel multiplier
      ``M`` (``C_in`` itself when ``M == 1``), and ``groups`` follows ``C_in``.
    * otherwise the input is refined into ``Prod(G, P_in)`` with the group
      count ``G`` fixed and each group widened alike; the output is
      ``Prod(G, P_out)``.
    """
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    if groups == 1:
        out = weight("weight", out_dim, PRODUCER)
        ctx.unify(cin, weight("weight", in_dim, CONSUMER))
    elif transposed:
        raise RuleError("grouped transposed convolutions have no rule yet")
    elif cin.size == groups:
        mult = cout // groups
        if mult == 1:
            out = cin
            ctx.unify(weight("weight", 0, PASS), out)
        else:
            out = ctx.prod([cin, ctx.fresh(mult)])
            ctx.unify(weight("weight", 0, PRODUCER), out)
    else:
        g = ctx.table.fresh(groups, status=FIXED,
                            reason=f"the group count of grouped conv `{ctx.node.name}`")
        p_in = ctx.fresh(cin.size // groups)
        ctx.unify(cin, ctx.prod([g, p_in]))
        ctx.unify(weight("weight", 1, CONSUMER), p_in)
        out = ctx.prod([g, ctx.fresh(cout // groups)])
        ctx.unify(weight("weight", 0, PRODUCER), out)
    bias = weight("bias", 0, PASS if (groups > 1 and cin.size == groups and cout == groups)
                  else PRODUCER)
    if bias is not None:
        ctx.unify(bias, out)
    return out


def _conv(ctx, nd: int, groups: int, weight: WeightFn, transposed: bool) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    out_shape = ctx.out_shape
    c = len(x.dims) - nd - 1
    if c < 0:
        raise RuleError("input has too few dims for the convolution")
    cin = ctx.norm(x.dims[c])
    out = _conv_channels(ctx, cin, groups, weight, out_shape[c], transposed)
    spatial = tuple(ctx.free(n) for n in out_shape[c + 1:])
    return TV(x.dims[:c] + (out,) + spatial)


_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3,
         nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2, nn.ConvTranspose3d: 3}


@register_rule(*_CONV)
def conv(ctx) -> TV:
    """``nn.ConvNd`` / ``nn.ConvTransposeNd`` (see :func:`_conv_channels`)."""
    m = ctx.module
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    x = ctx.tensor(ctx.arg(0, "input"))
    cin = x.dims[len(x.dims) - _CONV[type(m)] - 1]
    y = _conv(ctx, _CONV[type(m)], m.groups, _module_weight(ctx), transposed)
    cout = y.dims[len(y.dims) - _CONV[type(m)] - 1]
    ctx.module_attr("in_channels", lambda size: size(cin))
    ctx.module_attr("out_channels", lambda size: size(cout))
    if m.groups > 1 and m.groups == ctx.norm(cin).size:  # depthwise: groups follow C_in
        ctx.module_attr("groups", lambda size: size(cin))
    return y


def _conv_functional(nd: int):
    def rule(ctx) -> TV:
        groups = ctx.arg(6, "groups", 1)
        if not isinstance(groups, int):
            raise RuleError("non-literal groups")
        weight = _functional_weight(ctx, {"weight": (1, "weight"), "bias": (2, "bias")})
        x = ctx.tensor(ctx.arg(0, "input"))
        cin = x.dims[len(x.dims) - nd - 1]
        if groups > 1 and ctx.norm(cin).size == groups:
            # depthwise: the group count is the channel count, so it follows C_in
            ctx.literal_arg(6, "groups", lambda size: size(cin))
        return _conv(ctx, nd, groups, weight, False)
    rule.__name__ = f"conv{nd}d_functional"
    return rule


register_rule(F.conv1d)(_conv_functional(1))
register_rule(F.conv2d)(_conv_functional(2))
register_rule(F.conv3d)(_conv_functional(3))


# -- Norms ----------------------------------------------------------------------
def _per_channel(ctx, x: TV, c: int, weight: WeightFn, names) -> TV:
    for name in names:
        lay = weight(name, 0, PASS)
        if lay is not None:
            ctx.unify(lay, x.dims[c])
    return x


_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def batch_norm(ctx) -> TV:
    """BatchNorm: per-channel statistics; copies have identical ones."""
    x = ctx.tensor(ctx.arg(0, "input"))
    y = _per_channel(ctx, x, 1, _module_weight(ctx), _BN_TENSORS)
    ctx.module_attr("num_features", lambda size: size(x.dims[1]))
    return y


@register_rule(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def instance_norm(ctx) -> TV:
    """InstanceNorm: per-sample, per-channel statistics (channel dim before the spatial ones)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    nd = {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}[type(ctx.module)]
    c = len(x.dims) - nd - 1
    y = _per_channel(ctx, x, c, _module_weight(ctx), _BN_TENSORS)
    ctx.module_attr("num_features", lambda size: size(x.dims[c]))
    return y


@register_rule(F.batch_norm)
def batch_norm_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    weight = _functional_weight(ctx, {"running_mean": (1, "running_mean"),
                                      "running_var": (2, "running_var"),
                                      "weight": (3, "weight"), "bias": (4, "bias")})
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


@register_rule(*([nn.RMSNorm] if hasattr(nn, "RMSNorm") else []))
def rms_norm(ctx) -> TV:
    """RMSNorm: the mean of squares over the normalised dims survives uniform replication."""
    x = ctx.tensor(ctx.arg(0, "x"))
    k = len(ctx.module.normalized_shape)
    y = _layer_norm(ctx, x, k, _module_weight(ctx), "RMSNorm")
    dims = x.dims[len(x.dims) - k:]
    ctx.module_attr("normalized_shape", lambda size: tuple(size(d) for d in dims))
    return y


if hasattr(F, "rms_norm"):
    @register_rule(F.rms_norm)
    def rms_norm_functional(ctx) -> TV:
        x = ctx.tensor(ctx.arg(0, "input"))
        shape = ctx.arg(1, "normalized_shape")
        y = _layer_norm(ctx, x, len(shape),
                        _functional_weight(ctx, {"weight": (2, "weight"), "bias": (None, "bias")}),
                        "RMSNorm")
        dims = x.dims[len(x.dims) - len(shape):]
        as_type = type(shape) if isinstance(shape, (list, tuple)) else tuple
        ctx.literal_arg(1, "normalized_shape", lambda size: as_type(size(d) for d in dims))
        return y


@register_rule(nn.LayerNorm)
def layer_norm(ctx) -> TV:
    """LayerNorm: mean and variance over the normalised dims survive uniform replication."""
    x = ctx.tensor(ctx.arg(0, "input"))
    k = len(ctx.module.normalized_shape)
    y = _layer_norm(ctx, x, k, _module_weight(ctx))
    dims = x.dims[len(x.dims) - k:]
    ctx.module_attr("normalized_shape", lambda size: tuple(size(d) for d in dims))
    return y


@register_rule(F.layer_norm)
def layer_norm_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    shape = ctx.arg(1, "normalized_shape")
    k = len(shape)
    weight = _functional_weight(ctx, {"weight": (2, "weight"), "bias": (3, "bias")})
    # weights are 1-D per normalised dim only when k == 1; for k > 1 dim i is dim i
    y = _layer_norm(ctx, x, k, weight)
    dims = x.dims[len(x.dims) - k:]
    as_type = type(shape) if isinstance(shape, (list, tuple)) else tuple
    ctx.literal_arg(1, "normalized_shape", lambda size: as_type(size(d) for d in dims))
    return y


def _group_norm(ctx, x: TV, groups: int, weight: WeightFn) -> TV:
    c = x.dims[1]
    g = ctx.table.fresh(groups, status=FIXED,
                        reason=f"the group count of GroupNorm `{ctx.node.name}`")
    ctx.unify(c, ctx.prod([g, ctx.fresh(ctx.norm(c).size // groups)]))
    ctx.uniform(c, "GroupNorm averages over the channels of each group")
    return _per_channel(ctx, x, 1, weight, ("weight", "bias"))


@register_rule(nn.GroupNorm)
def group_norm(ctx) -> TV:
    """GroupNorm: channels factor as (groups, per-group); per-group widened uniformly."""
    x = ctx.tensor(ctx.arg(0, "input"))
    y = _group_norm(ctx, x, ctx.module.num_groups, _module_weight(ctx))
    ctx.module_attr("num_channels", lambda size: size(x.dims[1]))
    return y


@register_rule(F.group_norm)
def group_norm_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    groups = ctx.arg(1, "num_groups")
    weight = _functional_weight(ctx, {"weight": (2, "weight"), "bias": (3, "bias")})
    return _group_norm(ctx, x, groups, weight)


# -- Embedding ------------------------------------------------------------------
def _embedding(ctx, idx: TV, weight: WeightFn) -> TV:
    vocab = weight("weight", 0, PASS)
    ctx.fix(vocab, "embedding vocabulary (indexed by token ids)")
    return TV(idx.dims + (weight("weight", 1, PRODUCER),))


@register_rule(nn.Embedding)
def embedding(ctx) -> TV:
    """Embedding: the table's columns produce a fresh space; its rows are fixed."""
    idx = ctx.tensor(ctx.arg(0, "input"))
    y = _embedding(ctx, idx, _module_weight(ctx))
    ctx.module_attr("embedding_dim", lambda size: size(y.dims[-1]))
    return y


@register_rule(F.embedding)
def embedding_functional(ctx) -> TV:
    idx = ctx.tensor(ctx.arg(0, "input"))
    return _embedding(ctx, idx, _functional_weight(ctx, {"weight": (1, "weight")}))
