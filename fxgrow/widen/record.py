"""What growing did to each tensor, kept for what comes after: the gradient map.

A grown model's tensor is its source tensor gathered along each growing dim by
an index map and multiplied by a *value scale* ``v`` per position (consumer
columns by the shares, the divided side of a contraction's rows, ...).  The
grown model's gradient is the source's, gathered the same way and multiplied
by a *gradient ratio* ``r = w / v`` per position, ``w`` the copy's share of
its neuron (``1/c`` for Net2WiderNet):

* a producer row (``v = 1``): the copy's output is read with weight ``w``, so
  every gradient reaching it is ``w`` times the neuron's: ``r = w``;
* a consumer column (``v = w``): it reads the copy's activation, equal to the
  neuron's, with the same output gradient: ``r = 1``;
* per-neuron values (BatchNorm's ``γ``, ``β``; ``v = 1``): ``r = w``;
* the divided side of a contraction, rows ``v = w^α`` and columns
  ``v = w^(1-α)``, gets ``r = w^(1-α)`` and ``w^α``; a scale read at run time
  (``√(n/n')``) divides out the same way.

The map is exact wherever the copies' activations are equal and their
gradients scale with the shares: every group under equal shares (net2net),
and under ``split`` every group no norm or mean averages over (a norm's
backward spreads its mean terms evenly over the copies whatever their
shares).  Positions with nothing to inherit -- fresh values (``zero_out``,
``random_pad``), a new neuron's zero outgoing weights, mean- or zero-padded
neurons -- get ratio 0 (fresh optimizer state); old neurons of padded groups
keep ratio 1.  :func:`fxgrow.grow_optimizer` applies the record to
optimizer state (momentum by ``r``, second moments by ``r²``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from ..ir.groups import Member
from ..ir.roles import PRODUCER, SCALED
from .gather import Expander
from .growth import GrowthPlan
from .pad import Padder

__all__ = ["TensorGrowth", "GrowthRecord", "tensor_growth", "share_maps"]


@dataclass(frozen=True)
class TensorGrowth:
    """One tensor's growth: ``(dim, index, ratio)`` per growing dim."""

    dims: Tuple[Tuple[int, torch.Tensor, torch.Tensor], ...]

    def grow(self, state: torch.Tensor, power: int = 1) -> torch.Tensor:
        """``state`` (shaped like the source tensor) gathered and scaled by ``ratio**power``.

        >>> tg = TensorGrowth(((0, torch.tensor([0, 1, 0]), torch.tensor([.5, 1., .5])),))
        >>> tg.grow(torch.tensor([2., 3.])).tolist(), tg.grow(torch.tensor([2., 3.]), 2).tolist()
        ([1.0, 3.0, 1.0], [0.5, 3.0, 0.5])
        """
        out = state
        for d, index, ratio in self.dims:
            shape = [1] * out.dim()
            shape[d] = -1
            r = (ratio ** power).to(device=out.device, dtype=out.dtype).view(shape)
            out = out.index_select(d, index.to(out.device)) * r
        return out


@dataclass(frozen=True)
class GrowthRecord:
    """The gradient map of a grown model (``gm.meta["fxgrow.growth"]``).

    ``tensors`` is keyed by every qualified name of every grown tensor;
    ``reinitialised``: every parameter was re-initialised (``random_init``),
    so nothing carries over.
    """

    init: str
    tensors: Mapping[str, TensorGrowth] = field(default_factory=dict)
    reinitialised: bool = False


def share_maps(plan: GrowthPlan, old_only: bool = False) -> Dict[int, tuple]:
    """``{group: (index, share)}`` of replicated groups: each copy's share of its neuron
    (``old_only``: 1 for old neurons and 0 for new ones, as for fresh values)."""
    return {g: (gg.index, (torch.arange(gg.new) < gg.old).to(torch.float64) if old_only
                else gg.scale)
            for g, gg in plan.growth.items() if gg.mode == "replicate"}


def tensor_growth(members: Sequence[Member], ex: Expander, mp: Optional[Padder],
                  shares: Mapping[int, tuple], scaled: bool) -> TensorGrowth:
    """The record of one grown tensor.

    ``shares``: :func:`share_maps` of the plan carried out; ``scaled``: whether
    the initialiser scaled consumers and divided rows (else ``v = 1``).  Fresh
    values sit where the shares are 0 (``zero_out``, and ``random_pad``'s
    ``old_only`` maps), so their ratio is 0.
    """
    dims = []
    for m in members:
        if mp is not None and mp.grows(m):
            gg = mp.groups[m.layout.space]
            keep = torch.arange(gg.new) < gg.old
            dims.append((m.dim, torch.where(keep, torch.arange(gg.new), 0),
                         keep.to(torch.float64)))
            continue
        if not ex.grows(m.layout):
            continue
        index, value = ex.index_scale(m.layout, None)
        if not scaled or m.role not in SCALED:
            rows = ex.producer_scale(m.layout, None) if scaled and m.role == PRODUCER else None
            value = rows if rows is not None else torch.ones_like(value)
        share = ex.shares(m.layout, shares)
        ratio = torch.where(value == 0, torch.zeros_like(share), share / value)
        dims.append((m.dim, index, ratio))
    return TensorGrowth(tuple(dims))
