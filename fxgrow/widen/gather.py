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

Large tensors are built by :func:`gather_scaled`: the old tensor is scaled once,
then gathered one dim at a time by ``index_select`` calls that each write a
contiguous result (the outermost dim's old positions are written in place and
its new positions copied from them), so each grown element is written once and
the work is a few contiguous copies, not a broadcast gather of every element.  The
values are exactly those of the plain gather followed by the scaling
(``tests/widen/test_gather.py`` checks it bit for bit).  On the ``meta``
device only the shape is made.
"""

from __future__ import annotations

import functools
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
        self._plan = plan
        # producers are copied unscaled, except the divided side of a contraction
        rescaled = plan.rescaled()
        self.producer_maps = {g: rescaled.get(g, (idx, torch.ones(idx.numel(), dtype=torch.float64)))
                              for g, (idx, _) in self.maps.items()}
        self.rescaled = set(rescaled)
        #: gains used as ``c + tensor``: divided, they must keep ``c`` (``(c + w)/s - c``)
        self.offsets = dict(getattr(plan.analysis, "offsets", {}))
        self._cache: Dict[Tuple[Layout, str], Any] = {}
        self.scratch = Scratch()

    @functools.cached_property
    def old_flags(self) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
        """``{group: (index, 1 at old positions, 0 at new)}``, made when first asked for
        (only masks of new positions need it)."""
        return {g: (gg.index, (torch.arange(gg.new) < gg.old).to(torch.float64))
                for g, gg in self._plan.growth.items() if g in self.maps}

    def shares(self, layout: Layout, shares: Dict[int, tuple]) -> torch.Tensor:
        """``expand(layout, shares)``'s scale, cached per layout (``shares`` is one
        plan's :func:`~fxgrow.widen.record.share_maps`, the same for every call)."""
        key = (layout, "shares", id(shares))
        if key not in self._cache:
            self._cache[key] = (shares, expand(layout, shares)[1])  # keeps `shares` alive
        return self._cache[key][1]

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


class Scratch:
    """Reusable buffers for intermediates: the scaled old tensor, partial gathers, and
    the copies that cannot be written in place.

    Kept between tensors so their pages are touched once (a fresh large allocation
    costs a page fault per page).  ``index_select`` writes a contiguous result fast and
    a strided one (the new columns of a weight) slowly: those go through a buffer too.
    """

    def __init__(self) -> None:
        self._bufs: Dict[int, torch.Tensor] = {}

    def like(self, t: torch.Tensor, slot: int = 3) -> torch.Tensor:
        """A contiguous tensor of ``t``'s shape, dtype and device, to be overwritten;
        tensors from different slots never share memory."""
        return self.shaped(t.shape, t, slot)

    def sized(self, t: torch.Tensor, dim: int, n: int, slot: int) -> torch.Tensor:
        """Like :meth:`like`, with ``n`` positions along ``dim``."""
        shape = list(t.shape)
        shape[dim] = n
        return self.shaped(shape, t, slot)

    def shaped(self, shape, t: torch.Tensor, slot: int) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= n
        buf = self._bufs.get(slot)
        if buf is None or buf.numel() < numel or buf.dtype != t.dtype \
                or buf.device != t.device:
            keep = buf.numel() if buf is not None and buf.dtype == t.dtype \
                and buf.device == t.device else 0
            self._bufs[slot] = buf = torch.empty(max(numel, keep), dtype=t.dtype,
                                                 device=t.device)
        return buf[:numel].view(shape)


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


def _select(src: torch.Tensor, dim: int, index: torch.Tensor,
            out: Optional[torch.Tensor] = None) -> torch.Tensor:
    if out is None:
        return torch.index_select(src, dim, index)
    return torch.index_select(src, dim, index, out=out)


def gather_scaled(t: torch.Tensor, index: Dict[int, torch.Tensor],
                  layouts: Dict[int, Homes], scales: List[Tuple[int, torch.Tensor]],
                  offset: Optional[float], scratch: Optional[Scratch] = None
                  ) -> Optional[torch.Tensor]:
    """``t`` gathered along the dims of ``index``, multiplied by ``scales`` (and ``offset``
    kept, see :func:`grow_tensor`), with every grown element written once.

    A scale that is a function of the old position (``scale[j] == scale[home[index[j]]]``)
    can be applied before the gather: the old tensor is scaled once (into ``scratch``),
    then gathered one dim at a time, innermost first, each ``index_select`` writing a
    contiguous result.  The outermost dim, when its slices of the grown tensor are
    contiguous, is not gathered as a whole: the inner gathers write straight into the
    runs of the grown tensor that keep the old positions, and the new positions are then
    read from their old neuron there.  Exactly the values of gathering and then scaling
    (each element is multiplied by the same factors in the same order); ``None`` when a
    scale is not a function of the old position (``split``'s shares: scaled after the
    gather instead), or for a non-contiguous ``t`` (the plain path keeps its layout).
    """
    if not t.is_contiguous():
        return None
    scratch = scratch if scratch is not None else Scratch()
    nd = t.dim()
    factors = []
    for d, scale in scales:  # on the host, float64
        h = layouts[d]
        if not torch.equal(scale[h.home][h.index], scale):
            return None  # a share per copy (split): scaled after the gather instead
        # the factor of each old position: that of its home in the grown dim
        factors.append(_bcast(scale[h.home].to(t.device, t.dtype), d, nd))
    dims = sorted(index)
    shape = list(t.shape)
    for d in dims:
        shape[d] = index[d].numel()
    out = torch.empty(shape, dtype=t.dtype, device=t.device)
    src = t
    if factors:  # 1. the old tensor, scaled as gather-then-scale would scale each element
        src = scratch.like(t, 0)
        torch.mul(t, factors[0], out=src)
        total = factors[0]
        for f in factors[1:]:
            src.mul_(f)
            total = total * f
        if offset:
            src.add_(offset * (total - 1))
    d0, inner = dims[0], dims[:0:-1]  # the outermost dim; the others, innermost first

    def gather_inner(piece: torch.Tensor, dst: Optional[torch.Tensor]) -> torch.Tensor:
        for k, d in enumerate(inner):  # intermediates in scratch (their pages reused)
            last = k == len(inner) - 1
            target = dst if last else scratch.sized(piece, d, index[d].numel(), 1 + k % 2)
            piece = _select(piece, d, index[d].to(t.device), target)
        if dst is not None and not inner:
            dst.copy_(piece)
        return piece

    h0 = layouts[d0]
    if all(n == 1 for n in shape[:d0]):  # the grown tensor's slices along d0 are contiguous
        # 2. each run of old positions along d0, gathered along the inner dims, in place
        for a, v, n in h0.runs:
            gather_inner(src.narrow(d0, v, n), out.narrow(d0, a, n))
        # 3. d0's new positions, read from their old neuron's home
        for a, _, positions in h0.fills:
            _select_into(out, d0, positions.to(t.device), a, h0.span, scratch)
    else:
        _select(gather_inner(src, None), d0, index[d0].to(t.device), out)
    return out


#: tensors smaller than this are gathered in one call: a few calls cost more than the copy
_SMALL = 1 << 15


def _worth_it(t: torch.Tensor, index: Dict[int, torch.Tensor]) -> bool:
    """Whether :func:`gather_scaled` beats one gather and a scaling pass: for tensors
    large enough that a few more calls cost less than a pass over the grown tensor."""
    return bool(index) and t.numel() >= _SMALL


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
