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

Large tensors are built in place (:func:`gather_scaled`): the old block is
written once, scaled, to where the old neurons stay, and every new position is
then read from the old neuron it copies, so each grown element is written once
and the work is a few contiguous copies, not a gather of every element.  The
values are exactly those of the plain gather followed by the scaling
(``tests/widen/test_gather.py`` checks it bit for bit).  On the ``meta``
device only the shape is made.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

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
        self.scratch = Scratch()

    def grows(self, layout: Layout) -> bool:
        return any(leaf.space in self.maps for leaf in leaves(layout))

    def index_scale(self, layout: Layout, device) -> Tuple[torch.Tensor, torch.Tensor]:
        key = (layout, "map")
        if key not in self._cache:
            self._cache[key] = expand(layout, self.maps)
        idx, scale = self._cache[key]
        return idx.to(device), scale.to(device)

    def homes(self, layout: Layout) -> Optional["Homes"]:
        """The runs that keep the old positions of ``layout``, and the copies (see :func:`homes`)."""
        key = (layout, "homes")
        if key not in self._cache:
            idx, _ = self.index_scale(layout, "cpu")
            self._cache[key] = homes(idx, layout.size)
        return self._cache[key]

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


def _gather_reference(t: torch.Tensor, index: Dict[int, torch.Tensor]) -> torch.Tensor:
    """``t`` gathered along several dims: the plain form, for layouts :class:`Plan` does
    not take (and the one the fast form is tested against).

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


#: a dim whose old neurons sit in more runs than this is gathered the plain way
_MAX_HOMES = 256
#: nor a tensor whose old block falls into more pieces than this
_MAX_BLOCKS = 1024


class Homes(NamedTuple):
    """Where one dim's old positions sit, verbatim, in the grown dim, and what fills the rest.

    ``runs``: ``(new start, old start, length)`` slices that together hold every
    old position once (for a plain axis one run, ``(0, 0, old)``); ``fills``:
    ``(new start, length, positions)``, the remaining new positions, each read
    from the grown dim at ``positions`` (inside the runs); ``home``: the
    grown position of each old one; ``span``: ``(start, length)`` of the grown
    positions from the first run's start to the last run's end; ``index``: the map
    itself, on the host.
    """

    runs: Tuple[Tuple[int, int, int], ...]
    fills: Tuple[Tuple[int, int, torch.Tensor], ...]
    home: torch.Tensor
    span: Tuple[int, int]
    index: torch.Tensor


def homes(index: torch.Tensor, old: int) -> Optional[Homes]:
    """Split a dim's index map into the runs that keep old positions and the copies.

    ``None`` when the old positions are not all kept, in order, in at most
    ``_MAX_HOMES`` runs (the plain gather then does the work).

    >>> h = homes(torch.tensor([0, 1, 2, 1, 0]), 3)
    >>> h.runs, [(a, n, p.tolist()) for a, n, p in h.fills]
    (((0, 0, 3),), [(3, 2, [1, 0])])
    >>> homes(torch.tensor([0, 1, 0, 2, 3, 3]), 4).runs  # the two parts of a Cat
    ((0, 0, 2), (3, 2, 2))
    >>> homes(torch.tensor([0, 1, 1, 2, 3, 2]), 4).runs  # a copy that runs into old ones
    ((0, 0, 2), (3, 2, 2))
    """
    idx = index.cpu()
    n = idx.numel()
    if n == 0 or old == 0 or int(idx.min()) < 0 or int(idx.max()) >= old:
        return None
    if n > old and torch.equal(idx[:old], torch.arange(old)):  # a plain axis: one run
        return Homes(((0, 0, old),), ((old, n - old, idx[old:]),), idx[:old], (0, old), idx)
    # each old position's home: where it first appears
    home = torch.full((old,), n, dtype=torch.long).scatter_reduce_(
        0, idx, torch.arange(n), reduce="amin")
    if int(home.max()) >= n:
        return None  # an old position no new one keeps
    breaks = (torch.nonzero(home[1:] != home[:-1] + 1).view(-1) + 1).tolist()
    if len(breaks) >= _MAX_HOMES:
        return None
    starts, ends = [0] + breaks, breaks + [old]
    at = home[starts].tolist()
    runs = sorted((p, v, e - v) for p, v, e in zip(at, starts, ends))
    gaps, last = [], 0
    for p, _, length in runs:
        if p > last:
            gaps.append((last, p))
        last = p + length
    if n > last:
        gaps.append((last, n))
    lo, hi = runs[0][0], last
    fills = tuple((a, b - a, home[idx[a:b]]) for a, b in gaps)
    return Homes(tuple(runs), fills, home, (lo, hi - lo), idx)


def _narrow(t: torch.Tensor, spans) -> torch.Tensor:
    for d, (start, length) in spans:
        t = t.narrow(d, start, length)
    return t


class Scratch:
    """One reusable buffer for the copies that cannot be written in place.

    ``index_select`` writes a contiguous result fast and a strided one (the new
    columns of a weight) slowly: those go through this buffer, kept between
    tensors so its pages are touched once.
    """

    def __init__(self) -> None:
        self._buf: Optional[torch.Tensor] = None

    def like(self, t: torch.Tensor) -> torch.Tensor:
        """A contiguous tensor of ``t``'s shape, dtype and device, to be overwritten."""
        buf = self._buf
        if buf is None or buf.numel() < t.numel() or buf.dtype != t.dtype \
                or buf.device != t.device:
            self._buf = buf = torch.empty(max(t.numel(), buf.numel() if buf is not None
                                              and buf.dtype == t.dtype else 0),
                                          dtype=t.dtype, device=t.device)
        return buf[:t.numel()].view(t.shape)


def _select_into(view: torch.Tensor, dim: int, positions: torch.Tensor, start: int,
                 span: Tuple[int, int], scratch: Scratch) -> None:
    """``view.narrow(dim, start, len(positions)) = view.index_select(dim, positions)``.

    Straight into place when that is contiguous and outside ``span`` (where the
    positions lie); else through ``scratch``, reading the whole of ``view``
    (``index_select`` is slower from a narrowed, strided source).
    """
    dst = view.narrow(dim, start, positions.numel())
    lo, width = span
    if dst.is_contiguous() and (start + positions.numel() <= lo or start >= lo + width):
        torch.index_select(view.narrow(dim, lo, width), dim, positions - lo, out=dst)
        return
    tmp = scratch.like(dst)
    torch.index_select(view, dim, positions, out=tmp)
    dst.copy_(tmp)


def gather_scaled(t: torch.Tensor, index: Dict[int, torch.Tensor],
                  layouts: Dict[int, Homes], scales: List[Tuple[int, torch.Tensor]],
                  offset: Optional[float], scratch: Optional[Scratch] = None
                  ) -> Optional[torch.Tensor]:
    """``t`` gathered along the dims of ``index``, multiplied by ``scales`` (and ``offset``
    kept, see :func:`grow_tensor`), writing each grown element once.

    The old block is copied (scaled) to its runs, then each dim, innermost first,
    fills its new positions by reading the grown tensor at its runs: a new neuron
    is a copy of an old one, so it is read from where that old one (already scaled)
    now sits.  Exactly the values of gathering and then scaling, when every scale
    is a function of the old position (``scale[j] == scale[home[index[j]]]``);
    ``None`` otherwise, or for a non-contiguous ``t`` (the plain path keeps its layout).
    """
    if not t.is_contiguous():
        return None
    blocks = [[]]
    for d in sorted(index):
        blocks = [b + [(d, r)] for b in blocks for r in layouts[d].runs]
        if len(blocks) > _MAX_BLOCKS:
            return None
    scratch = scratch if scratch is not None else Scratch()
    factors = []
    for d, scale in scales:  # on the host, float64
        h = layouts[d]
        if not torch.equal(scale[h.home][h.index], scale):
            return None  # a share per copy (split): scaled after the gather instead
        factors.append((d, scale.to(t.device, t.dtype)))
    dims = sorted(index)
    shape = list(t.shape)
    for d in dims:
        shape[d] = index[d].numel()
    out = torch.empty(shape, dtype=t.dtype, device=t.device)
    nd = t.dim()
    # 1. the old block, into the product of every dim's runs (scaled on the way)
    for block in blocks:
        dst = _narrow(out, [(d, (a, n)) for d, (a, _, n) in block])
        src = _narrow(t, [(d, (v, n)) for d, (_, v, n) in block])
        if not factors:
            dst.copy_(src)
            continue
        total = None
        for i, (d, scale) in enumerate(factors):
            a, _, n = dict(block)[d]
            f = _bcast(scale[a:a + n], d, nd)
            if i == 0:
                torch.mul(src, f, out=dst)
            else:
                dst.mul_(f)
            total = f if total is None else total * f
        if offset:
            dst.add_(offset * (total - 1))
    # 2. each dim's new positions, innermost first, over what is already filled
    for k in range(len(dims) - 1, -1, -1):
        d = dims[k]
        regions = [[]]
        for e in dims[:k]:  # outer dims: only their runs are filled so far
            regions = [r + [(e, (a, n))] for r in regions for a, _, n in layouts[e].runs]
        for region in regions:
            view = _narrow(out, region)
            for a, _, positions in layouts[d].fills:
                _select_into(view, d, positions.to(t.device), a, layouts[d].span, scratch)
    return out


#: tensors smaller than this are gathered in one call: a few calls cost more than the copy
_SMALL = 1 << 15


def _worth_it(t: torch.Tensor, index: Dict[int, torch.Tensor]) -> bool:
    """Whether :func:`gather_scaled` beats one gather and a scaling pass: for large
    tensors growing along more than one dim, or along an outer one (one ``index_select``
    over the last dim writes its result contiguously, which the in-place form cannot)."""
    if not index or t.numel() < _SMALL:
        return False
    return len(index) > 1 or max(index) < t.dim() - 1


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
        index, scales, layouts = {}, [], []
        for m in members:
            if (mp is not None and mp.grows(m)) or not ex.grows(m.layout):
                continue
            index[m.dim] = ex.index_scale(m.layout, t.device)[0]
            scale = ex.index_scale(m.layout, "cpu")[1]  # read on the host, moved when used
            layouts.append((m.dim, m.layout))
            if scale_consumers and m.role in SCALED and _real(out):
                scales.append((m.dim, scale))
            elif scale_consumers and m.role == PRODUCER and _real(out):
                # the divided side of a contraction: Σ_j q_g(j) k_g(j)/c = Σ_i q_i k_i
                rows = ex.producer_scale(m.layout, "cpu")
                if rows is not None:
                    scales.append((m.dim, rows))
            if want_mask:
                masks.append((m.dim, ex.is_new(m.layout, t.device)))
        offset = ex.offsets.get(members[0].tensor) if members else None
        fast = None
        if index and out.is_meta:  # shapes only: nothing to copy or scale
            shape = list(out.shape)
            for d, i in index.items():
                shape[d] = i.numel()
            fast = torch.empty(shape, dtype=out.dtype, device=out.device)
        elif _worth_it(out, index):
            runs = {d: ex.homes(layout) for d, layout in layouts}
            if all(h is not None and h.home.numel() == out.shape[d] for d, h in runs.items()):
                fast = gather_scaled(out, index, runs, scales, offset, ex.scratch)
        if fast is not None:  # gathered and scaled, each element written once
            out, scales = fast, []
        elif index:
            out = _gather_reference(out, index)  # a new tensor: scaling it in place is safe
        total = None
        for d, scale in scales:
            factor = _bcast(scale.to(out.device, out.dtype), d, out.dim())
            out.mul_(factor)
            total = factor if total is None else total * factor
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
