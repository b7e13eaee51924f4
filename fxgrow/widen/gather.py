"""Grow one tensor: gather it along every growing dim, scale its consumer dims.

For each tensor dimension that belongs to a growing group, the dimension's
index map and scale come from :func:`fxgrow.ir.layout.expand`; the tensor is
rebuilt with one vectorised gather:

* producer and pass-through dims are gathered, so new neurons compute
  exactly what the neurons they copy compute;
* consumer dims are gathered and multiplied by ``1 / count``, so the copies
  of a neuron together contribute what the neuron contributed alone;
* the divided side of a contraction (a key head dim) has its producer rows
  divided too: ``Σ_j q_g(j) k_g(j)/c = Σ_i q_i k_i``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from ..ir.groups import Member
from ..ir.layout import Layout, expand, leaves
from ..ir.roles import PRODUCER, SCALED
from .growth import GrowthPlan
from .pad import Padder


def _real(t: torch.Tensor) -> bool:
    """Floating or complex: a tensor whose slices can be divided by the counts."""
    return t.is_floating_point() or t.is_complex()


__all__ = ["Expander", "grow_tensor"]


class Expander:
    """Caches the expanded index, scale and new-position mask of each layout."""

    def __init__(self, plan: GrowthPlan) -> None:
        self.maps = plan.maps()
        old_flags = {g: (gg.index, (torch.arange(gg.new) < gg.old).to(torch.float64))
                     for g, gg in plan.growth.items() if g in self.maps}
        self.old_flags = old_flags
        # producers are copied unscaled, except the divided side of a contraction
        rescaled = plan.rescaled()
        self.producer_maps = {g: rescaled.get(g, (idx, torch.ones(idx.numel(), dtype=torch.float64)))
                              for g, (idx, _) in self.maps.items()}
        self.rescaled = set(rescaled)
        #: gains used as ``c + tensor``: divided, they must keep ``c`` (``(c + w)/s - c``)
        self.offsets = dict(getattr(plan.analysis, "offsets", {}))
        self._cache: Dict[Tuple[Layout, str], Any] = {}

    def grows(self, layout: Layout) -> bool:
        return any(leaf.space in self.maps for leaf in leaves(layout))

    def index_scale(self, layout: Layout, device) -> Tuple[torch.Tensor, torch.Tensor]:
        key = (layout, "map")
        if key not in self._cache:
            self._cache[key] = expand(layout, self.maps)
        idx, scale = self._cache[key]
        return idx.to(device), scale.to(device)

    def producer_scale(self, layout: Layout, device) -> Optional[torch.Tensor]:
        """What a producer's rows along ``layout`` are multiplied by (None: nothing)."""
        if not any(leaf.space in self.rescaled for leaf in leaves(layout)):
            return None
        key = (layout, "producer")
        if key not in self._cache:
            self._cache[key] = expand(layout, self.producer_maps)[1]
        return self._cache[key].to(device)

    def is_new(self, layout: Layout, device) -> torch.Tensor:
        """True at positions that belong to a new neuron of any leaf."""
        key = (layout, "new")
        if key not in self._cache:
            self._cache[key] = expand(layout, self.old_flags)[1] == 0
        return self._cache[key].to(device)


def _bcast(v: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.view(shape)


def _gather(t: torch.Tensor, index: Dict[int, torch.Tensor]) -> torch.Tensor:
    """``t`` gathered along several dims, allocating the result once.

    Adjacent dims are gathered by one broadcast advanced index (which keeps
    them in place); anything else falls back to one ``index_select`` per dim.
    """
    dims = sorted(index)
    if len(dims) > 1 and dims == list(range(dims[0], dims[-1] + 1)):
        k = len(dims)
        idx = tuple(index[d].view([-1 if j == i else 1 for j in range(k)])
                    for i, d in enumerate(dims))
        return t[(slice(None),) * dims[0] + idx]
    for d in dims:
        t = t.index_select(d, index[d])
    return t


def grow_tensor(t: torch.Tensor, members: List[Member], ex: Expander,
                 scale_consumers: bool, mp: Optional[Padder] = None,
                 want_mask: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Gather ``t`` along every growing dim; return it (and, if asked, where it is new)."""
    with torch.no_grad():
        out = t.detach()
        masks = []
        for m in members:
            if mp is not None and mp.grows(m):
                out = mp.pad(out, m, m.tensor)
                masks.append((m.dim, torch.arange(out.shape[m.dim], device=out.device)
                              >= m.layout.size))
        index, scales = {}, []
        for m in members:
            if (mp is not None and mp.grows(m)) or not ex.grows(m.layout):
                continue
            index[m.dim], scale = ex.index_scale(m.layout, t.device)
            if scale_consumers and m.role in SCALED and _real(out):
                scales.append((m.dim, scale))
            elif scale_consumers and m.role == PRODUCER and _real(out):
                # the divided side of a contraction: Σ_j q_g(j) k_g(j)/c = Σ_i q_i k_i
                rows = ex.producer_scale(m.layout, t.device)
                if rows is not None:
                    scales.append((m.dim, rows))
            if want_mask:
                masks.append((m.dim, ex.is_new(m.layout, t.device)))
        if index:
            out = _gather(out, index)  # a new tensor: scaling it in place is safe
        total = None
        for d, scale in scales:
            factor = _bcast(scale.to(out.dtype), d, out.dim())
            out.mul_(factor)
            total = factor if total is None else total * factor
        offset = ex.offsets.get(members[0].tensor) if members else None
        if offset and total is not None:  # the graph multiplies by c + w: (c + w)·s = c + w'
            out.add_(offset * (total - 1))
        new_mask = None
        if want_mask:
            for d, is_new in masks:
                b = _bcast(is_new, d, out.dim())
                new_mask = b if new_mask is None else (new_mask | b)
            if new_mask is not None:
                new_mask = new_mask.expand(out.shape)
        # never hand back storage shared with the user's tensor
        return (out.clone() if out.data_ptr() == t.data_ptr() else out), new_mask
