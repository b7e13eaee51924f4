"""Mean- and zero-padding, carried out: the new neurons of padded groups.

The plan proved (:mod:`fxgrow.analysis.padding`) that a group's new neurons
may be the mean of the old ones (a LayerNorm'd stream) or zero (an RMSNorm'd
one), and recorded the norms it found.  :class:`Padder` fills the new rows
and columns and rescales those norms: ``γ·√(n/n')`` and ``ε·n/n'`` (in the module, or the
literal argument of a functional or written-out norm) keep the normalised old
outputs exact.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import fx, nn

from ..ir.groups import Member
from ..ir.roles import CONSUMER
from ..ops.access import with_arg
from ..ops.kinds import default_rms_eps
from .growth import GrowthPlan

__all__ = ["Padder"]


class Padder:
    """How mean- and zero-padded groups fill their new neurons (see :mod:`fxgrow.analysis.padding`)."""

    def __init__(self, plan: GrowthPlan) -> None:
        self.groups = plan.padded
        self.norm_weight: Dict[str, int] = {}
        self.offsets: Dict[str, float] = {}  # gains used as c + weight
        self.norm_bias: Dict[str, int] = {}
        self.norm_modules: Dict[str, int] = {}
        self.eps_literals: List[Tuple[str, int, float, int]] = []  # written-out RMSNorms
        for gid, gg in self.groups.items():
            for site in gg.norms:  # what the plan's padding proof found
                if site.weight is not None:
                    self.norm_weight[site.weight] = gid
                    if site.offset:
                        self.offsets[site.weight] = site.offset
                if site.bias is not None:
                    self.norm_bias[site.bias] = gid
                if site.module is not None:
                    self.norm_modules[site.module] = gid
                if site.eps_node is not None:
                    self.eps_literals.append((site.eps_node, site.eps_index, site.eps, gid))

    def grows(self, m: Member) -> bool:
        return getattr(m.layout, "space", None) in self.groups and m.layout.size == \
            self.groups[m.layout.space].old

    def rescale_eps(self, new: nn.Module) -> None:
        """``ε·n/n'``: with ``γ·√(n/n')`` the old outputs are exact."""
        for path, gid in self.norm_modules.items():
            gg = self.groups[gid]
            norm = new.get_submodule(path)
            eps = norm.eps
            if eps is None:  # RMSNorm's default: the machine epsilon it computes in
                weight = getattr(norm, "weight", None)
                eps = default_rms_eps(weight.dtype if weight is not None else
                                      torch.get_default_dtype())
            norm.eps = eps * gg.old / gg.new

    def rescale_eps_literals(self, new: fx.GraphModule) -> None:
        """The same ``ε·n/n'`` where ``eps`` is a graph literal: RMSNorms written out,
        functional ``layer_norm``/``rms_norm`` (an ``eps`` left to its default is given)."""
        nodes = {n.name: n for n in new.graph.nodes}
        for name, index, eps, gid in self.eps_literals:
            gg = self.groups[gid]
            node = nodes[name]
            node.args, node.kwargs = with_arg(node.args, node.kwargs, index, "eps",
                                              eps * gg.old / gg.new)

    def pad(self, out: torch.Tensor, m: Member, qualname: str) -> torch.Tensor:
        gg = self.groups[m.layout.space]
        n, extra = gg.old, gg.new - gg.old
        shape = list(out.shape)
        shape[m.dim] = extra
        if qualname in self.norm_weight:
            # the norm over n' neurons sees (mean) square n/n' of the old: γ·√(n/n') undoes it
            # (a gain c + w: (c + w)·√(n/n') = c + w')
            c = self.offsets.get(qualname, 0.0)
            out = (out + c) * (n / gg.new) ** 0.5 - c
            fill = torch.ones(shape, dtype=out.dtype, device=out.device)
        elif qualname in self.norm_bias or m.role == CONSUMER or gg.mode == "zero":
            # new norm outputs are 0 and consumers read new neurons through zeros;
            # zero-padding: new rows 0 keep new entries 0 along every linear path
            fill = torch.zeros(shape, dtype=out.dtype, device=out.device)
        else:
            # mean-padding: new rows are the mean of the old, so every affine
            # combination downstream has new entries equal to its old mean
            fill = out.mean(dim=m.dim, keepdim=True).expand(shape)
        return torch.cat([out, fill], dim=m.dim)
