"""Weights computed from parameters that growth re-derives: the weight norm.

``torch.nn.utils.parametrizations.weight_norm`` (and the older hook) compute a
layer's weight in forward, ``W = g * v / ||v||`` with the norm over every dim
but ``dim``; ``torch.export`` records it as ``aten._weight_norm(v, g, dim)``.
Dividing ``v``'s columns by replication counts would not divide ``W``'s (the
norm divides them back), so the rule does not hand out ``v`` as a weight to
rescale.  Instead it gives the node the spaces of ``v`` (``W`` has ``v``'s
shape) and records a :class:`~fxgrow.ir.reparam.WeightNorm` on it; the layer
reading ``W`` as its weight (:func:`fxgrow.rules.linear.functional_weight`)
gives ``v``'s dims their roles, and the widening pass grows the effective
weight and re-derives ``v`` and ``g`` from it (:mod:`fxgrow.widen.reparam`).
That is exact for any dim the layer grows, including the dims the norm is
taken over.

The weight norm must feed one linear layer's weight, and read parameters
directly; anything else blocks its spaces, naming the node.

>>> import torch
>>> from torch import nn
>>> import fxgrow
>>> class M(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a = nn.Linear(4, 8)
...         self.b = nn.utils.parametrizations.weight_norm(nn.Linear(8, 3))
...     def forward(self, x):
...         return self.b(torch.relu(self.a(x)))
>>> an = fxgrow.analyze(M(), torch.randn(2, 4), capture="export")
>>> [g.size for g in an.growable]
[8]
"""

from __future__ import annotations

from typing import Any, Optional

import torch.nn.functional as F
from torch import fx

from .. import meta
from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.reparam import WeightNorm
from ..ir.roles import PASS
from ..ir.values import TV
from ..ops.aten import bind, canonical_target, overload
from ..ops.kinds import canonical_arg
from .registry import RuleSet

__all__ = ["RULES", "weight_norm", "reparametrized_weight"]

RULES = RuleSet()

#: layers whose rules read their weight through functional_weight (argument 1, "weight")
_WEIGHT_READERS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d,
                   F.conv_transpose2d, F.conv_transpose3d, F.embedding} | {
    op for op in map(overload, ("conv_transpose1d.default", "conv_transpose2d.input",
                                "conv_transpose3d.input")) if op is not None}
_CONVOLUTION = overload("convolution.default")


def _reads_as_weight(user: fx.Node, node: fx.Node) -> bool:
    if user.op != "call_function":
        return False
    if _CONVOLUTION is not None and user.target is _CONVOLUTION:
        return bind(user.target, user.args, user.kwargs).get("weight") is node
    return canonical_target(user) in _WEIGHT_READERS and \
        canonical_arg(user, 1, "weight", None) is node


@RULES.rule(*(op for op in (overload("_weight_norm.default"),) if op is not None),
            name="weight_norm")
def weight_norm(ctx) -> TV:
    """``aten._weight_norm(v, g, dim)``: the spaces of ``v``; ``g``'s dim ``dim`` is ``v``'s."""
    node = ctx.node
    bound = bind(node.target, node.args, node.kwargs)
    v, g, dim = bound.get("v"), bound.get("g"), bound.get("dim", 0)
    if not all(isinstance(p, fx.Node) and p.op == "get_attr" for p in (v, g)):
        raise RuleError("a weight norm of tensors computed in the graph: it cannot be "
                        "re-derived from grown parameters")
    users = list(node.users)
    if len(users) != 1 or not _reads_as_weight(users[0], node):
        raise RuleError(f"the weight-normed weight `{node.name}` is read other than as one "
                        "layer's weight, so growing it cannot be exact")
    vs, gs = ctx.spec(v), ctx.spec(g)
    if not isinstance(vs, TensorSpec) or not isinstance(gs, TensorSpec) \
            or not isinstance(dim, int) or isinstance(dim, bool):
        raise RuleError("unexpected arguments of a weight norm")
    nd = len(vs.shape)
    if dim == -1:
        if len(gs.shape) and any(n != 1 for n in gs.shape):
            raise RuleError("a weight norm over the whole tensor with a non-scalar gain")
    elif not 0 <= dim < nd or len(gs.shape) != nd or any(
            n != (vs.shape[d] if d == dim else 1) for d, n in enumerate(gs.shape)):
        raise RuleError(f"a weight norm over dim {dim} whose gain has shape {tuple(gs.shape)}")
    # claimed with no role: the layer reading the weight gives v's dims theirs
    dims = tuple(ctx.weight(v, d, None) for d in range(nd))
    gains = [ctx.weight(g, d, None) for d in range(len(gs.shape))]
    if dim != -1:
        ctx.unify(gains[dim], dims[dim])
    meta.set_reparam(node, WeightNorm(v.target, g.target, dim))
    return TV(dims)


def reparametrized_weight(ctx, a: Any, dim: int, role: str) -> Optional[Layout]:
    """Layout of dim ``dim`` of a weight-normed weight ``a`` this node alone reads, giving
    ``v``'s dim ``role`` (and ``g``'s, along the dim the norm keeps, ``PASS``: it is
    re-derived per neuron there); None if ``a`` is no such weight."""
    if not isinstance(a, fx.Node) or len(a.users) != 1 \
            or next(iter(a.users)).name != ctx.node.name:
        return None
    site = meta.reparam(a)
    if not isinstance(site, WeightNorm):
        return None
    bound = bind(a.target, a.args, a.kwargs)
    ndim = len(ctx.spec(a).shape)
    lay = ctx.weight(bound["v"], dim, role)
    if site.dim != -1 and dim % ndim == site.dim:
        ctx.weight(bound["g"], dim, PASS)
    return lay
