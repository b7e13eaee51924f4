"""Weights computed from parameters that growth re-derives instead of rescaling.

A weight-normed layer (``torch.nn.utils.parametrizations.weight_norm``) computes
its weight in the graph, ``W = g * v / ||v||`` (the norm over every dim but
``dim``), so neither ``v`` nor ``g`` can be divided by the replication counts
the way a plain weight is.  The growth is still exact: grow the *effective*
weight ``W`` to ``W'`` by the usual plan (copied rows, divided columns), then
set ``v' = W'`` and ``g' = ||W'||`` over the same dims, so that
``g' * v' / ||v'|| == W'``.  The rule of the weight norm
(:mod:`fxgrow.rules.reparam`) records a :class:`WeightNorm` on its node; the
widening pass (:mod:`fxgrow.widen.reparam`) reads it there and does this.

>>> WeightNorm("conv.parametrizations.weight.original1",
...            "conv.parametrizations.weight.original0", 2).weight
'conv.parametrizations.weight.original1'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WeightNorm"]


@dataclass(frozen=True)
class WeightNorm:
    """``g * v / ||v||``: ``weight`` names ``v`` (its members are the effective
    weight's), ``gain`` names ``g``; ``dim`` is the dim the norm is not taken over
    (``-1``: the norm of the whole tensor)."""

    weight: str
    gain: str
    dim: int
