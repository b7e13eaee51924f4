"""Growth plans as data: which groups grow, to what size, and how neurons are copied.

A plan is pure data, cheap to build and to inspect: for each growing group
an index map ``g`` (new neuron ``j`` copies old neuron ``g(j)``; the first
``n`` map to themselves) and the replication counts ``c_i = |g^-1(i)|``.
:func:`fxgrow.widen.plan.plan_widening` draws it; :mod:`fxgrow.widen.apply`
carries it out, reading the analysis it refers to only as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch

__all__ = ["GroupGrowth", "GrowthPlan"]


@dataclass(frozen=True)
class GroupGrowth:
    """How one group grows."""

    group: int
    old: int
    new: int
    index: torch.Tensor  # (new,) old neuron copied by each new neuron
    counts: torch.Tensor  # (old,) how many times each old neuron appears
    #: "replicate" (Net2WiderNet copies), "mean" (new neurons are the mean of the
    #: old ones; LayerNorm rescaled) or "zero" (new neurons are 0; RMSNorm rescaled),
    #: see fxgrow.analysis.padding; when padded, index/counts are unused
    mode: str = "replicate"
    #: padded groups: the norms the padding proof found, which the rewrite rescales
    norms: Tuple[Any, ...] = ()  # fxgrow.analysis.padding.NormSite records
    #: (new,) float64: each copy's share of its neuron's outgoing weight, summing to 1
    #: over the copies of every old neuron; None: equal shares 1 / count (Net2WiderNet).
    #: Set by the initialisers of fxgrow.widen.inits ("split", "zero_out").
    shares: Optional[torch.Tensor] = None

    @property
    def scale(self) -> torch.Tensor:
        """Per new neuron, its share of the old neuron's outgoing weight: what a consumer
        multiplies its column by (``1 / count``, or :attr:`shares` when set)."""
        if self.shares is not None:
            return self.shares
        return 1.0 / self.counts.to(torch.float64)[self.index]


@dataclass(frozen=True)
class GrowthPlan:
    """A validated widening: ``growth[group_id]`` for every group that grows."""

    analysis: Any = field(repr=False)  # the fxgrow.analysis.result.Analysis planned for
    growth: Dict[int, GroupGrowth]
    seed: int = 0
    #: warnings the planner gave (e.g. that nothing grows); the grown model keeps them
    notes: Tuple[str, ...] = ()

    @property
    def sizes(self) -> Dict[int, int]:
        return {g: gg.new for g, gg in self.growth.items()}

    def rescaled(self) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
        """``{group: (index, producer scale)}`` of growing groups whose producer rows
        are divided too: one side of a product between activations (see
        :mod:`fxgrow.analysis.contraction`).  Other groups' producers are copied unscaled."""
        out = {}
        sqrt_scaled = {p.rescaled for p in self.analysis.pairings if p.sqrt_scale}
        for g, gg in self.growth.items():
            alpha = self.analysis.exponent(g)
            if not alpha or gg.mode != "replicate":
                continue
            scale = gg.scale ** alpha
            if g in sqrt_scaled:  # the product divides by sqrt(width) read at run time
                scale = scale * (gg.new / gg.old) ** 0.5
            out[g] = (gg.index, scale)
        return out

    def maps(self) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
        """``{group: (index, consumer scale)}`` of replicated groups, as
        :func:`fxgrow.ir.layout.expand` takes them."""
        return {g: (gg.index, gg.scale ** (1.0 - self.analysis.exponent(g)))
                for g, gg in self.growth.items() if gg.mode == "replicate"}

    @property
    def padded(self) -> Dict[int, GroupGrowth]:
        """Groups grown by mean- or zero-padding (see :mod:`fxgrow.analysis.padding`)."""
        return {g: gg for g, gg in self.growth.items() if gg.mode in ("mean", "zero")}

    def summary(self) -> Dict[int, Tuple[int, int]]:
        """``{group: (old size, new size)}``."""
        return {g: (gg.old, gg.new) for g, gg in self.growth.items()}

    def __str__(self) -> str:
        lines = [f"GrowthPlan ({len(self.growth)} groups grow)"]
        for g, gg in self.growth.items():
            prods = ", ".join(self.analysis.group(g).producers) or "-"
            how = f" ({gg.mode}-padded)" if gg.mode != "replicate" else ""
            if g in self.analysis.partners:
                how = f" (copies group {self.analysis.partners[g]}; rows divided by the counts)"
            elif g in self.analysis.halved:
                how = " (rows and columns divided by sqrt(count))"
            lines.append(f"  group {g}: {gg.old} -> {gg.new}{how}  ({prods})")
        return "\n".join(lines)
