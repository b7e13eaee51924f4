"""The space table: union-find over atomic neuron spaces, with refinement.

Rules describe what an op does to neurons by *unifying* layouts (two
dimensions index the same neurons in the same order), *refining* spaces (a
``split`` that cuts a producer's channels turns space ``A`` into ``A1 ⊕ A2``
everywhere ``A`` is used) and *marking* spaces fixed or blocked.  The table
keeps these facts consistent:

* union-find merges spaces that must be widened by one index map;
* a refined space stores its *definition* (a layout over finer spaces), and
  :meth:`SpaceTable.norm` rewrites every layout through the definitions, so a
  refinement made late in the walk reaches layouts recorded early;
* status (growable < fixed < blocked) and reasons live on the unrefined roots
  and are pushed down to the finer spaces when a space is refined.

Anything that cannot be represented exactly (a cut that interleaves inner
factors, a concatenation that would have to become a product) raises
:class:`Unalignable`; the rule context turns that into a block with a reason.

Examples
--------
>>> t = SpaceTable()
>>> a = t.fresh(6)
>>> left, right = t.cut(a, 2)
>>> str(t.norm(a))
'(s1:2 ⊕ s2:4)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .groups import UniformSite
from .layout import Axis, Cat, Layout, Prod, leaves
from .roles import BLOCKED, FIXED, GROWABLE, STATUS_RANK

__all__ = ["Contraction", "SpaceTable", "Unalignable", "UNIT"]

_MAX_REASONS = 4

#: the layout of a size-1 dimension that indexes nothing
UNIT = Prod(())


class Unalignable(Exception):
    """Two layouts cannot be made to index the same neurons exactly."""


@dataclass(frozen=True)
class Contraction:
    """A product that sums over neurons ``a`` of one operand paired with ``b`` of the other.

    The two sides stay separate spaces: they will share one index map, and one
    side's producers will be divided by the counts (see :mod:`fxgrow.analysis.contraction`).
    ``vouched``: the rule that recorded it knows ``b`` is the side to rescale and
    that its producers feed the product linearly (a fused attention module).
    ``sqrt_scale``: the product is also multiplied by ``1/sqrt(size)`` read at run
    time, so the rescaled side must undo the change of that factor too.
    """

    a: Layout
    b: Layout
    why: str
    node: str
    vouched: bool = False
    sqrt_scale: bool = False
    #: names of the two operand nodes (the rest of the node's inputs pass through)
    operands: Tuple[str, ...] = ()


@dataclass
class _Space:
    size: int
    parent: int
    status: str = GROWABLE
    reasons: Dict[str, List[str]] = field(default_factory=lambda: {FIXED: [], BLOCKED: []})
    definition: Optional[Layout] = None
    free: bool = False


class SpaceTable:
    """Atomic spaces, their unions, refinements and statuses."""

    def __init__(self) -> None:
        self._spaces: List[_Space] = []
        self.uniform: List[UniformSite] = []
        self.contractions: List[Contraction] = []

    # -- creation and lookup -------------------------------------------------
    def fresh(self, size: int, *, free: bool = False, status: str = GROWABLE,
              reason: str = "") -> Axis:
        """A new space of ``size`` neurons.

        ``free`` spaces stand for batch, time or spatial extents (or model
        inputs): they are never growable and are not listed as groups.
        """
        sid = len(self._spaces)
        self._spaces.append(_Space(size=int(size), parent=sid, free=free))
        if status != GROWABLE:
            self._set_status(sid, status, [reason] if reason else [])
        return Axis(sid, int(size))

    def find(self, sid: int) -> int:
        spaces = self._spaces
        root = sid
        while spaces[root].parent != root:
            root = spaces[root].parent
        while spaces[sid].parent != root:  # path compression
            spaces[sid].parent, sid = root, spaces[sid].parent
        return root

    def __len__(self) -> int:
        return len(self._spaces)

    def status(self, sid: int) -> str:
        return self._spaces[self.find(sid)].status

    def reasons(self, sid: int) -> List[str]:
        sp = self._spaces[self.find(sid)]
        return list(sp.reasons.get(sp.status, []))

    def is_free(self, sid: int) -> bool:
        return self._spaces[self.find(sid)].free

    # -- normal form ---------------------------------------------------------
    def norm(self, layout: Layout) -> Layout:
        """Canonical form of ``layout`` over unrefined root spaces.

        Refinements are substituted, nested ``Cat``/``Prod`` flattened,
        size-1 factors dropped, and a ``Prod`` whose outermost factor is a
        ``Cat`` distributed into a ``Cat`` of ``Prod``\\ s (row-major order
        makes the two index the same neurons).
        """
        if isinstance(layout, Axis):
            root = self.find(layout.space)
            sp = self._spaces[root]
            if sp.definition is not None:
                return self.norm(sp.definition)
            return layout if layout.space == root else Axis(root, sp.size)
        if isinstance(layout, Cat):
            return self.make_cat((self.norm(p) for p in layout.parts), normed=True)
        return self.make_prod((self.norm(f) for f in layout.factors), normed=True)

    def make_cat(self, parts: Iterable[Layout], normed: bool = False) -> Layout:
        """The concatenation of ``parts``, in normal form (``normed``: the parts are
        already, and normalising them again would give them back unchanged)."""
        flat: List[Layout] = []
        for p in parts:
            if not normed:
                p = self.norm(p)
            if p.size == 0:
                continue
            flat.extend(p.parts if isinstance(p, Cat) else (p,))
        if len(flat) == 1:
            return flat[0]
        return Cat(tuple(flat))

    def make_prod(self, factors: Iterable[Layout], normed: bool = False) -> Layout:
        """The row-major product of ``factors``, in normal form (``normed`` as for
        :meth:`make_cat`)."""
        flat: List[Layout] = []
        for f in factors:
            if not normed:
                f = self.norm(f)
            if f.size == 1:
                # A size-1 factor vanishes from the product's index, so it
                # must never grow: growing it would change the product's size
                # behind the back of every layout that dropped it.
                for leaf in leaves(f):
                    self._set_status(self.find(leaf.space), FIXED,
                                     ["a size-1 dimension merged into a product"])
                continue
            flat.extend(f.factors if isinstance(f, Prod) else (f,))
        if not flat:
            return UNIT
        if len(flat) == 1:
            return flat[0]
        if isinstance(flat[0], Cat):  # Prod(A ⊕ B, R) == Prod(A, R) ⊕ Prod(B, R)
            rest = tuple(flat[1:])
            return self.make_cat((self.make_prod((p,) + rest, normed=True)
                                  for p in flat[0].parts), normed=True)
        return Prod(tuple(flat))

    # -- status --------------------------------------------------------------
    def _set_status(self, root: int, status: str, reasons: Sequence[str]) -> None:
        sp = self._spaces[root]
        if status == GROWABLE:
            return
        bucket = sp.reasons[status]
        for r in reasons:
            if r and r not in bucket and len(bucket) < _MAX_REASONS:
                bucket.append(r)
        if STATUS_RANK[status] > STATUS_RANK[sp.status]:
            sp.status = status

    def mark(self, layout: Layout, status: str, reason: str) -> None:
        """Mark every space of ``layout`` at least ``status`` because ``reason``."""
        for leaf in leaves(self.norm(layout)):
            self._set_status(self.find(leaf.space), status, [reason])

    def _push_down(self, root: int) -> None:
        """Give the finer spaces of a refined ``root`` its status and reasons."""
        sp = self._spaces[root]
        if sp.definition is None:
            return
        for leaf in leaves(self.norm(sp.definition)):
            lroot = self.find(leaf.space)
            self._merge_status(lroot, sp)
            if sp.free:
                self._spaces[lroot].free = True

    def _merge_status(self, root: int, src: _Space) -> None:
        for status in (FIXED, BLOCKED):
            if STATUS_RANK[src.status] >= STATUS_RANK[status]:
                self._set_status(root, status, src.reasons[status])

    # -- structure -----------------------------------------------------------
    def union(self, a: int, b: int) -> None:
        """Merge spaces ``a`` and ``b``: one index map will widen both."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if ra > rb:
            ra, rb = rb, ra
        sa, sb = self._spaces[ra], self._spaces[rb]
        if sa.size != sb.size:
            raise Unalignable(f"spaces of {sa.size} and {sb.size} neurons cannot be one")
        sb.parent = ra
        sa.free = sa.free and sb.free
        self._merge_status(ra, sb)
        da, db = sa.definition, sb.definition
        if da is None and db is not None:
            sa.definition = db
        elif da is not None and db is not None:
            self.unify(da, db)
        self._push_down(ra)

    def define(self, sid: int, layout: Layout) -> None:
        """Refine unrefined root ``sid`` into ``layout`` (same size)."""
        root = self.find(sid)
        sp = self._spaces[root]
        layout = self.norm(layout)
        if layout.size != sp.size:
            raise Unalignable(f"cannot refine {sp.size} neurons into {layout.size}")
        if any(self.find(l.space) == root for l in leaves(layout)):
            raise Unalignable("a space cannot be refined into a layout containing itself")
        if not any(True for _ in leaves(layout)):  # size 1 refined into nothing
            self._set_status(root, FIXED, ["a size-1 dimension that indexes no neurons"])
            return
        sp.definition = layout
        self._push_down(root)

    def _child(self, parent: Axis, size: int) -> Axis:
        return self.fresh(size, free=self.is_free(parent.space))

    def unify(self, a: Layout, b: Layout) -> None:
        """Make layouts ``a`` and ``b`` index the same neurons in the same order."""
        a, b = self.norm(a), self.norm(b)
        if a.size != b.size:
            raise Unalignable(f"dimensions of size {a.size} and {b.size} cannot be aligned")
        if a == b:
            return
        if isinstance(a, Axis) and isinstance(b, Axis):
            self.union(a.space, b.space)
        elif isinstance(a, Axis):
            self.define(a.space, b)
        elif isinstance(b, Axis):
            self.define(b.space, a)
        elif isinstance(a, Prod) and isinstance(b, Prod):
            self._unify_factors(list(a.factors), list(b.factors))
        else:
            bounds = sorted(set(_bounds(a)) | set(_bounds(b)))
            for x, y in zip(self.split_at(a, bounds), self.split_at(b, bounds)):
                self.unify(x, y)

    def pair(self, a: Layout, b: Layout) -> List[Tuple[Axis, Axis]]:
        """Refine ``a`` and ``b`` to one structure and pair their leaves, merging nothing.

        What a contraction needs: position ``i`` of ``a`` meets position ``i`` of
        ``b``, but the two sides stay separate spaces.
        """
        a, b = self.norm(a), self.norm(b)
        if a.size != b.size:
            raise Unalignable(f"dimensions of size {a.size} and {b.size} cannot be paired")
        if isinstance(a, Axis) and isinstance(b, Axis):
            return [(a, b)]
        if isinstance(a, Axis) or isinstance(b, Axis):
            # refine the atomic side into a fresh copy of the other's structure
            atom, other = (a, b) if isinstance(a, Axis) else (b, a)
            self.define(atom.space, self._fresh_copy(other, atom))
            return self.pair(a, b)
        if isinstance(a, Prod) and isinstance(b, Prod):
            if [f.size for f in a.factors] != [f.size for f in b.factors]:
                sizes = _common_factors([f.size for f in a.factors], [f.size for f in b.factors])
                a, b = self.make_prod(self.factor(a, sizes)), self.make_prod(self.factor(b, sizes))
                if not (isinstance(a, Prod) and isinstance(b, Prod)) or \
                        [f.size for f in a.factors] != [f.size for f in b.factors]:
                    raise Unalignable(f"{a} and {b} have no common factors")
            return [p for x, y in zip(a.factors, b.factors) for p in self.pair(x, y)]
        if isinstance(a, Cat) and isinstance(b, Cat):
            bounds = sorted(set(_bounds(a)) | set(_bounds(b)))
            return [p for x, y in zip(self.split_at(a, bounds), self.split_at(b, bounds))
                    for p in self.pair(x, y)]
        raise Unalignable(f"{a} and {b} cannot be paired")

    def _fresh_copy(self, layout: Layout, like: Axis) -> Layout:
        if isinstance(layout, Axis):
            return self._child(like, layout.size)
        if isinstance(layout, Cat):
            return Cat(tuple(self._fresh_copy(p, like) for p in layout.parts))
        return Prod(tuple(self._fresh_copy(f, like) for f in layout.factors))

    def _unify_factors(self, fa: List[Layout], fb: List[Layout]) -> None:
        while fa and fb:
            x, y = self.norm(fa.pop(0)), self.norm(fb.pop(0))
            if x.size == y.size:
                self.unify(x, y)
            elif x.size > y.size:
                hi, lo = self._split_factor(x, y.size)
                self.unify(hi, y)
                fa.insert(0, lo)
            else:
                hi, lo = self._split_factor(y, x.size)
                self.unify(x, hi)
                fb.insert(0, lo)
        if fa or fb:
            raise Unalignable("products with different factors cannot be aligned")

    def _split_factor(self, f: Layout, outer: int) -> Tuple[Layout, Layout]:
        """Refine factor ``f`` into ``Prod(hi, lo)`` with ``hi.size == outer``.

        An atomic space is simply refined.  A concatenation can be viewed as a
        product only by making its ``outer`` equal blocks one space (each block
        then widens by the same map) over a fixed axis that says which block:
        that is what a channel shuffle after a ``cat`` needs.
        """
        f = self.norm(f)
        if f.size % outer:
            raise Unalignable(f"{f.size} neurons do not factor by {outer}")
        inner = f.size // outer
        if isinstance(f, Axis):
            hi, lo = self._child(f, outer), self._child(f, inner)
            self.define(f.space, Prod((hi, lo)))
            return hi, lo
        if isinstance(f, Cat):
            blocks = self.split_at(f, [inner * k for k in range(1, outer)])
            for b in blocks[1:]:
                self.unify(blocks[0], b)
            which = self.fresh(outer, free=True, status=FIXED,
                               reason="which block of a concatenation viewed as a product")
            return which, self.norm(blocks[0])
        raise Unalignable(f"{f} cannot be split into {outer} x {inner}")

    def cut(self, layout: Layout, k: int) -> Tuple[Layout, Layout]:
        """Cut ``layout`` after its first ``k`` positions, refining as needed."""
        layout = self.norm(layout)
        if not 0 < k < layout.size:
            raise ValueError(f"cut at {k} outside (0, {layout.size})")
        if isinstance(layout, Axis):
            left, right = self._child(layout, k), self._child(layout, layout.size - k)
            self.define(layout.space, Cat((left, right)))
            return left, right
        if isinstance(layout, Cat):
            offset = 0
            parts = layout.parts
            for i, part in enumerate(parts):
                if offset + part.size == k:
                    return self.make_cat(parts[: i + 1]), self.make_cat(parts[i + 1:])
                if offset < k < offset + part.size:
                    left, right = self.cut(part, k - offset)
                    return (self.make_cat(parts[:i] + (left,)),
                            self.make_cat((right,) + parts[i + 1:]))
                offset += part.size
        assert isinstance(layout, Prod)
        inner = prod(f.size for f in layout.factors[1:])
        if k % inner:
            raise Unalignable(
                f"a cut at {k} of {layout} interleaves its inner factors")
        left, right = self.cut(layout.factors[0], k // inner)
        rest = layout.factors[1:]
        return self.make_prod((left,) + rest), self.make_prod((right,) + rest)

    def split_at(self, layout: Layout, bounds: Sequence[int]) -> List[Layout]:
        """Cut ``layout`` at each offset in increasing ``bounds``."""
        pieces, offset, rest = [], 0, self.norm(layout)
        for b in bounds:
            if b <= offset or b >= layout.size:
                continue
            left, rest = self.cut(rest, b - offset)
            pieces.append(left)
            offset = b
        pieces.append(rest)
        return pieces

    def factor(self, layout: Layout, sizes: Sequence[int]) -> List[Layout]:
        """Split ``layout`` into row-major factors of the given ``sizes``.

        This is what ``view`` does when it splits one dimension into several
        (``n -> (h, d)`` makes a product space ``h ⊗ d``).
        """
        layout = self.norm(layout)
        if prod(sizes) != layout.size:
            raise Unalignable(f"{layout.size} neurons cannot be viewed as {tuple(sizes)}")
        queue = list(layout.factors) if isinstance(layout, Prod) else [layout]
        out: List[Layout] = []
        for target in sizes:
            acc: List[Layout] = []
            have = 1
            while have < target:
                f = self.norm(queue.pop(0))
                need = target // have
                if f.size <= need:
                    if need % f.size:
                        raise Unalignable(f"{f} does not fit a dimension of {target}")
                    acc.append(f)
                    have *= f.size
                else:
                    hi, lo = self._split_factor(f, need)
                    acc.append(hi)
                    have *= need
                    queue.insert(0, lo)
            out.append(self.make_prod(acc))
        return out

    # -- results -------------------------------------------------------------
    def finalize(self) -> None:
        """Push statuses down every refinement, until nothing changes."""
        for _ in range(len(self._spaces) + 1):
            before = [(s.status, sum(map(len, s.reasons.values()))) for s in self._spaces]
            for sid in range(len(self._spaces)):
                if self.find(sid) == sid:
                    self._push_down(sid)
            after = [(s.status, sum(map(len, s.reasons.values()))) for s in self._spaces]
            if before == after:
                return

    def roots(self) -> List[int]:
        """Atomic spaces: unrefined roots, in creation order."""
        return [sid for sid, sp in enumerate(self._spaces)
                if sp.parent == sid and sp.definition is None]

    def size(self, sid: int) -> int:
        return self._spaces[self.find(sid)].size


def _bounds(layout: Layout) -> List[int]:
    """Inner boundaries of a top-level concatenation."""
    if not isinstance(layout, Cat):
        return []
    out, offset = [], 0
    for part in layout.parts[:-1]:
        offset += part.size
        out.append(offset)
    return out


def _common_factors(xs: Sequence[int], ys: Sequence[int]) -> List[int]:
    """The coarsest row-major factor sizes that refine both ``xs`` and ``ys``."""
    out: List[int] = []
    xs, ys = list(xs), list(ys)
    while xs and ys:
        x, y = xs[0], ys[0]
        if x == y:
            out.append(x)
            xs.pop(0), ys.pop(0)
        elif x > y and x % y == 0:
            out.append(y)
            ys.pop(0)
            xs[0] = x // y
        elif y > x and y % x == 0:
            out.append(x)
            xs.pop(0)
            ys[0] = y // x
        else:
            raise Unalignable(f"factors {x} and {y} do not nest")
    return out
