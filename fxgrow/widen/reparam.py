"""Grow weight-normed layers exactly: grow the effective weight, re-derive ``v`` and ``g``.

A weight norm (:class:`fxgrow.ir.reparam.WeightNorm`, recorded on its node by
the analysis) computes ``W = g * v / ||v||``.  The widening pass grows ``W``
instead of ``v`` (``v``'s members describe ``W``'s dims: the same shape, the
same roles), so its rows are copied and its columns divided as any weight's;
once every tensor is grown (and new neurons filled by ``random_pad`` or
``zero_out``), ``v' = W'`` and ``g' = ||W'||`` over the same dims give
``g' * v' / ||v'|| == W'``.  A slice of ``W'`` that is all zero (new neurons'
zeroed columns) gets ``g' = 0`` and ``v' = 1`` there: the effective weight is
0 as asked, where ``v' = 0`` would make it ``0 / 0``.

>>> import torch
>>> v, g = torch.randn(4, 3), torch.rand(4, 1)
>>> w = torch._weight_norm(v, g, 0)
>>> v2, g2 = rederive(w, 0)
>>> torch.allclose(torch._weight_norm(v2, g2, 0), w)
True
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from .. import meta
from ..ir.reparam import WeightNorm
from ..ops.access import attr_by_name

__all__ = ["Reparametrized", "rederive", "weight_norms"]


def rederive(w: torch.Tensor, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(v, g)`` with ``torch._weight_norm(v, g, dim) == w``."""
    with torch.no_grad():
        w = w.detach()
        if w.is_meta:
            return w, torch.norm_except_dim(w, 2, dim)
        g = torch.norm_except_dim(w, 2, dim)
        zero = g == 0
        if bool(zero.any()):  # 0 * 1 / ||1||: an exact zero, where 0 / 0 is NaN
            w = torch.where(zero, torch.ones_like(w), w)
        return w, g.to(w.dtype)


def weight_norms(gm: nn.Module) -> Dict[str, WeightNorm]:
    """``{tensor name: its weight norm}`` for ``v`` and ``g`` of every weight norm the
    analysis of ``gm`` recorded (for passes that grow tensors one at a time)."""
    out: Dict[str, WeightNorm] = {}
    for node in gm.graph.nodes:
        site = meta.reparam(node)
        if isinstance(site, WeightNorm):
            out[site.weight] = out[site.gain] = site
    return out


class Reparametrized:
    """The weight norms of a plan's graph whose weight grows, read from the analysed
    graph (:func:`fxgrow.meta.reparam`); ``growing`` maps each growing tensor's name
    to the tensor itself."""

    def __init__(self, gm: nn.Module, growing: Dict[str, torch.Tensor]) -> None:
        by_id = {id(t): q for q, t in growing.items()}
        self.sites: Dict[str, Tuple[WeightNorm, torch.Tensor, torch.Tensor]] = {}
        for node in gm.graph.nodes:
            site = meta.reparam(node)
            if not isinstance(site, WeightNorm):
                continue
            v, g = attr_by_name(gm, site.weight), attr_by_name(gm, site.gain)
            q = by_id.get(id(v))
            if q is not None:
                self.sites[q] = (site, v, g)

    def source(self, qualname: str, t: torch.Tensor) -> torch.Tensor:
        """What to grow for tensor ``qualname``: the effective weight of a weight norm."""
        if qualname not in self.sites:
            return t
        site, v, g = self.sites[qualname]
        with torch.no_grad():
            return torch._weight_norm(v.detach(), g.detach(), site.dim)

    def finish(self, new: nn.Module,
               put: Callable[[str, torch.Tensor, torch.Tensor], None]) -> List[str]:
        """Re-derive ``v`` and ``g`` of every site from the grown ``W'`` held in ``v``'s
        place; ``put(qualname, old tensor, new value)`` writes a tensor.  Returns the
        names of the gains written."""
        written = []
        for q, (site, v, g) in self.sites.items():
            v_new, g_new = rederive(attr_by_name(new, q), site.dim)
            put(q, v, v_new)
            put(site.gain, g, g_new.to(g.dtype))
            written.append(site.gain)
        return written
