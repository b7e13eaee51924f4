"""Ops that concatenate, split, slice and index dimensions.

``cat`` concatenates layouts, ``split``/``chunk``/slicing cut them (refining
``A -> A1 ⊕ A2`` everywhere ``A`` is used), an integer index selects (and
fixes) one position, a tensor index gathers positions (fixing the indexed
dim).  Split sizes and slice bounds are recomputed after growth.
"""

from __future__ import annotations

import operator
from itertools import accumulate
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import fx

from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.values import TV, SizeOf, iter_sizes, iter_tensors
from .common import broadcast, dim_index
from .factories import is_constant
from .registry import RuleSet

__all__ = ["RULES", "cat", "stack", "split", "unbind", "getitem", "advanced_index"]

RULES = RuleSet()


# -- concatenation and splitting --------------------------------------------------
@RULES.rule(torch.cat, torch.concat, torch.concatenate)
def cat(ctx) -> TV:
    """``cat``: the output layout is the concatenation of the input layouts."""
    tensors = ctx.arg(0, "tensors")
    values = _sequence(ctx, tensors)
    if any(v.ndim > 1 for v in values) and isinstance(tensors, (list, tuple)):
        # torch.cat skips 1-D empty tensors (an empty KV cache) whatever the other ranks
        values = [v for v, t in zip(values, tensors)
                  if not (v.ndim == 1 and tuple(ctx.spec(t).shape) == (0,))]
    d = dim_index(ctx.arg(1, "dim", 0), values[0].ndim)
    dims = list(values[0].dims)
    for v in values[1:]:
        for i in range(len(dims)):
            if i != d:
                ctx.unify(dims[i], v.dims[i])
    dims[d] = ctx.cat([v.dims[d] for v in values])
    return TV(tuple(dims))


def _sequence(ctx, tensors: Any) -> List[TV]:
    """The tensors of a list argument, or of one value that is a sequence of tensors
    (``torch.cat(h.chunk(2)[::-1])`` passes the reversed tuple as one node)."""
    if isinstance(tensors, (list, tuple)):
        return [ctx.tensor(t) for t in tensors]
    seq = ctx.value(tensors)
    if not isinstance(seq, (list, tuple)) or not seq or not all(isinstance(v, TV) for v in seq):
        raise RuleError("the tensors to join are not a sequence of tensors fxgrow reads")
    if len({v.ndim for v in seq}) != 1:  # (the empty 1-D tensors torch skips)
        raise RuleError("tensors of different ranks joined")
    return list(seq)


@RULES.rule(torch.stack)
def stack(ctx) -> TV:
    tensors = ctx.arg(0, "tensors")
    values = _sequence(ctx, tensors)
    d = dim_index(ctx.arg(1, "dim", 0), values[0].ndim + 1)
    dims = list(values[0].dims)
    for v in values[1:]:
        for a, b in zip(dims, v.dims):
            ctx.unify(a, b)
    dims.insert(d, ctx.free(len(values)))
    return TV(tuple(dims))


def _pieces(ctx, x: TV, d: int) -> List[Layout]:
    """One layout per piece: ``x``'s dim ``d`` cut at the example's boundaries.

    An empty piece (a split size of 0, an expert no token was routed to) cuts
    nothing: it is a new empty dim, so every piece keeps its place.
    """
    sizes = [s.shape[d] for s in ctx.out_spec]
    cuts = ctx.split_at(x.dims[d], [b for b in accumulate(sizes)][:-1])
    full = iter(cuts if sum(sizes) else [])
    return [next(full) if n else ctx.free(0) for n in sizes]


def _static_sizes(ctx, raw: Any) -> bool:
    """Whether split sizes are known without the data: literal ints, or ints read
    from sizes (:class:`~fxgrow.ir.values.SizeOf`); an int computed from tensor
    values (``counts.tolist()``, a tensor of indices) is not."""
    if isinstance(raw, (list, tuple)):
        return all(_static_sizes(ctx, r) for r in raw)
    if isinstance(raw, fx.Node):
        return isinstance(ctx.value(raw), SizeOf)
    return isinstance(raw, int) and not isinstance(raw, bool)


@RULES.rule("split", torch.split, "chunk", torch.chunk, "tensor_split", torch.tensor_split,
               accepts_sizes=True)
def split(ctx) -> tuple:
    """``split``/``chunk``: cut the layout; a cut inside a space refines it.

    After growth the pieces may differ in size, or a split size read from
    another dim (``qkv.split(x.size(-1))``) may change while the pieces do
    not, so the call is rewritten to ``split`` with explicit sizes.

    Sizes computed from the data (MoE rows split by the counts of tokens
    routed to each expert, ``x.split(counts.tolist())``) cut the dim elsewhere
    on every input: the dim is fixed, each piece is a new free extent, and the
    call is never rewritten (its sizes stay the graph's).
    """
    x = ctx.tensor(ctx.arg(0, "input"))
    node = ctx.node
    d = dim_index(ctx.arg(2, "dim", 0), x.ndim)
    if not isinstance(ctx.out_spec, tuple) or not all(isinstance(s, TensorSpec) for s in ctx.out_spec):
        raise RuleError("unexpected output")
    sizes = list(node.args[1:2]) + [v for k, v in node.kwargs.items() if k != "dim"]
    if not _static_sizes(ctx, sizes):
        ctx.fix(x.dims[d], "split into pieces whose sizes are computed from the data")
        return tuple(TV(x.dims[:d] + (ctx.free(s.shape[d]),) + x.dims[d + 1:])
                     for s in ctx.out_spec)
    pieces = _pieces(ctx, x, d)

    provenance = tuple(l for a in list(node.args[1:]) + list(node.kwargs.values())
                       for sz in iter_sizes(ctx.value(a)) for l in sz.layouts)
    target = "split" if isinstance(node.target, str) else torch.split
    ctx.rewrite((node.args[0], [ctx.size(p) for p in pieces], d), {}, target=target,
                when=tuple(pieces) + provenance)
    return tuple(TV(x.dims[:d] + (p,) + x.dims[d + 1:]) for p in pieces)


@RULES.rule("unbind", torch.unbind)
def unbind(ctx) -> tuple:
    """``unbind``: every slice is a dropped size-1 piece, so the dim is fixed."""
    x = ctx.tensor(ctx.arg(0, "input"))
    d = dim_index(ctx.arg(1, "dim", 0), x.ndim)
    ctx.fix(x.dims[d], "unbound into separate tensors")
    return tuple(TV(x.dims[:d] + x.dims[d + 1:]) for _ in ctx.out_spec)


@RULES.rule(operator.getitem, accepts_sizes=True)
def getitem(ctx) -> Any:
    """Indexing: tuples pick elements; tensors take basic slices and ints."""
    base = ctx.value(ctx.arg(0))
    index = ctx.node.args[1]
    if not isinstance(base, TV):
        idx = ctx.value(index)
        if isinstance(base, (tuple, list)):
            return base[idx.value if isinstance(idx, SizeOf) else idx]
        if isinstance(base, dict) and not isinstance(idx, SizeOf) and idx in base:
            return base[idx]  # a dict input: `batch["x"]`
        if any(True for _ in iter_tensors(base)):
            raise RuleError("indexing a container of tensors fxgrow does not read")
        return ctx.out_spec
    return _index_tensor(ctx, base, index)


def _is_tensor_index(ctx, item: Any) -> bool:
    return isinstance(item, fx.Node) and isinstance(ctx.value(item), TV)


def _is_full(item: Any) -> bool:
    return isinstance(item, slice) and item == slice(None)


def advanced_index(ctx, x: TV, items: List[Any]) -> TV:
    """``x[i, :, j]``: see :func:`index_layouts` (the output's recorded shape tells how
    many positions a boolean mask selects)."""
    return TV(tuple(index_layouts(ctx, x, items, ctx.out_shape)[0]))


class _MaskDim(NamedTuple):
    """Dim ``j`` of a boolean mask used as an index: it covers one dim of ``x``."""

    mask: fx.Node
    j: int


_MASKED = "selected by a boolean mask"


def _expand_masks(ctx, items: List[Any]) -> List[Any]:
    """``items`` with each boolean mask of rank ``k`` spelt as the ``k`` dims it covers
    (torch reads ``x[mask]`` as ``x[mask.nonzero().unbind(1)]``)."""
    out: List[Any] = []
    for item in items:
        if _is_tensor_index(ctx, item) and ctx.spec(item).dtype in (torch.bool, torch.uint8):
            rank = len(ctx.spec(item).shape)
            if rank == 0:
                raise RuleError("a 0-d boolean index (a new axis)")
            out += [_MaskDim(item, j) for j in range(rank)]
        else:
            out.append(item)
    if len({i.mask for i in out if isinstance(i, _MaskDim)}) > 1:
        raise RuleError("several boolean masks in one index")
    return out


def index_layouts(ctx, x: TV, items: List[Any], hint: Optional[Sequence[int]] = None
                  ) -> Tuple[List[Layout], List[Layout]]:
    """The layouts of ``x[i, :, j]`` and, among them, those the index tensors give.

    ``x[i, :, j]`` with tensor indices (and ints and slices beside them).

    Every dim indexed by a tensor picks positions by value, so it is fixed:
    growing it would change which neurons the values name.  The index
    tensors broadcast against each other like the operands of an
    elementwise op, and their dims take the place of the indexed dims --
    where the first indexed dim was if the indexed dims are adjacent, in
    front otherwise.  Dims a full slice keeps pass through, so a gather
    along positions (``table[position_ids]``, CLIP's pooling
    ``h[arange(B), eos]``, MoE token routing ``h[token_idx]``) leaves the
    feature dims growable.  An int (its dim dropped, as torch does before
    the tensor indices) or a partial slice beside a tensor index fixes only
    its own dim (nothing rewrites its bounds).
    Exact: each output entry is one input entry, and copies of an index
    entry pick the same input entry.

    A boolean mask of rank ``k`` (``h[input_ids == token_id]``) is the ``k``
    index tensors of its ``True`` entries' positions: it covers ``k`` dims, all
    fixed, and so are the mask's own dims -- a mask that held neurons would
    select copies of them, so the number selected would change with growth.  A
    mask with no neuron dim computes the same values after growth (as every
    such tensor does), so it selects the same positions, and the dims it does
    not cover pass through.  How many it selects depends on the input: the
    positions are a free dim whose size ``hint`` gives.

    Parameters
    ----------
    hint : sequence of int, optional
        The region's shape, aligned from the right (all of it: the output of a
        ``getitem``; its last dims: the values of an ``index_put``); needed only
        where a boolean mask indexes.
    """
    items = _expand_masks(ctx, list(items))
    if None in items:
        raise RuleError("advanced indexing with a new axis (None)")
    if Ellipsis in items:
        k = items.index(Ellipsis)
        n_real = len(items) - 1
        items = items[:k] + [slice(None)] * (x.ndim - n_real) + items[k + 1:]
    if len(items) > x.ndim:
        raise RuleError("too many indices")
    items += [slice(None)] * (x.ndim - len(items))
    shape = ctx.spec(ctx.arg(0)).shape
    picked, operands, out = [], [], []
    for d, item in enumerate(items):
        if isinstance(item, _MaskDim):
            if ctx.spec(item.mask).shape[item.j] != shape[d]:
                raise RuleError("a boolean mask of another shape than the dims it indexes")
            ctx.fix(x.dims[d], _MASKED)
            ctx.fix(ctx.tensor(item.mask).dims[item.j], _MASKED)
            if item.j == 0:
                operands.append(None)  # its positions: a free dim, sized below
            picked.append(d)
            continue
        if _is_tensor_index(ctx, item):
            operands.append((ctx.tensor(item).dims, tuple(ctx.spec(item).shape)))
        elif not isinstance(item, slice):
            ctx.int_value(item)  # torch drops an int's dim first, as in basic indexing
            ctx.fix(x.dims[d], "a single index selected beside a tensor index")
            continue
        elif not _is_full(item):
            start, stop, step = slice(*(None if v is None else ctx.int_value(v)
                                        for v in (item.start, item.stop, item.step))
                                      ).indices(shape[d])
            ctx.fix(x.dims[d], "sliced beside a tensor index")
            out.append((d, ctx.free(len(range(start, stop, step)))))
            continue
        else:
            out.append((d, x.dims[d]))
            continue
        picked.append(d)
        ctx.fix(x.dims[d], "indexed by a tensor of positions")
    at = picked[0] if picked == list(range(picked[0], picked[-1] + 1)) else -1
    dims: List[Layout] = [lay for d, lay in out if d < at]
    if None in operands:
        operands = _mask_positions(ctx, operands, len(dims), len(out), hint)
    bshape = torch.broadcast_shapes(*(s for _, s in operands))
    bdims = broadcast(ctx, [dims for dims, _ in operands], [s for _, s in operands], bshape)
    dims += bdims + [lay for d, lay in out if d > at]
    return dims, bdims


def _mask_positions(ctx, operands, before: int, kept: int, hint) -> list:
    """``operands`` with the mask's place (``None``) taken by its positions: a free dim
    of the size ``hint`` has where they land (the last of the broadcast index dims,
    after the ``before`` kept dims in front; 1 where ``hint`` does not reach it)."""
    if hint is None:
        raise RuleError("a boolean mask whose number of positions is not known")
    rank = max([len(s) for o in operands if o is not None for s in (o[1],)] + [1])
    i = len(hint) - (kept + rank) + before + rank - 1
    n = hint[i] if 0 <= i < len(hint) else 1
    return [((ctx.free(n),), (n,)) if o is None else o for o in operands]


def _index_tensor(ctx, x: TV, index: Any) -> TV:
    shape = ctx.spec(ctx.arg(0)).shape
    items = list(index) if isinstance(index, tuple) else [index]
    if any(_is_tensor_index(ctx, i) for i in items):
        return advanced_index(ctx, x, items)
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items = items[:k] + [slice(None)] * (x.ndim - n_real) + items[k + 1:]
    items += [slice(None)] * (x.ndim - sum(1 for i in items if i is not None))
    out: List[Layout] = []
    plan: List[Tuple[Any, Any]] = []  # (original item, layouts for the rewrite)
    constant = is_constant(ctx.arg(0))
    d = 0
    for item in items:
        if item is None:
            out.append(ctx.free(1))
            plan.append((None, None))
            continue
        n = shape[d]
        lay = x.dims[d]
        if isinstance(item, slice):
            start, stop, step = (ctx.int_value(v) if v is not None else None
                                 for v in (item.start, item.stop, item.step))
            fixed_ends = (item.start is None or start >= 0) and stop is not None and 0 <= stop < n
            start, stop, step = slice(start, stop, step).indices(n)
            if constant and fixed_ends:
                # a slice of a constant that ends before the dim does is the same
                # constant at any width: no neuron of the input is pinned
                out.append(ctx.free(len(range(start, stop, step))))
                plan.append((item, None))
                d += 1
                continue
            if step != 1:
                # every step-th neuron: a widened space would need a strided
                # map, so the dim is fixed (spatial dims are fixed anyway)
                ctx.fix(lay, "sliced with a stride")
                out.append(ctx.free(len(range(start, stop, step))))
                plan.append((item, None))
                d += 1
                continue
            if stop <= start:
                # an empty piece (partial rotary code's `q[..., rotary_dim:]` with
                # rotary_dim == head_dim): it stays empty, at the end of the grown dim
                out.append(ctx.free(0))
                at_end = start == n and item.start is not None
                plan.append((item, ("end", lay) if at_end else None))
                d += 1
                continue
            if (start, stop) == (0, n):
                out.append(lay)
                # literal bounds that happen to cover the dim (`h[:, :16]`, GhostNet's crop
                # after a cat) must follow it once it grows
                explicit = item.start is not None or item.stop is not None
                plan.append((item, ("whole", lay) if explicit else None))
            else:
                parts = ctx.split_at(lay, [b for b in (start, stop) if 0 < b < n])
                before = parts[0] if start > 0 else None
                mid = parts[1] if start > 0 else parts[0]
                out.append(mid)
                plan.append((item, (before, mid)))
        elif constant:
            # every entry of a constant is the same value: selecting one reads no
            # neuron, so the index pins none and stays valid at any width
            ctx.int_value(item)
            plan.append((item, None))
        else:
            i = ctx.int_value(item)
            i = i % n
            parts = ctx.split_at(lay, [b for b in (i, i + 1) if 0 < b < n])
            before = parts[0] if i > 0 else None
            sel = parts[1] if i > 0 else parts[0]
            ctx.fix(sel, "a single index selected")
            plan.append((item, (before, sel)))
        d += 1
    if any(lays is not None for _, lays in plan):
        new_items = []
        for item, lays in plan:
            if lays is None:
                new_items.append(item)
                continue
            if lays[0] == "whole":
                new_items.append(ctx.if_grows((lays[1],), slice(None), item))
                continue
            if lays[0] == "end":
                new_items.append(ctx.if_grows((lays[1],), slice(ctx.size(lays[1]), None), item))
                continue
            before, mid = lays
            start = ctx.size(before) if before is not None else 0
            if isinstance(item, slice):
                stop = ctx.size(ctx.cat([before, mid]) if before is not None else mid)
                new_items.append(slice(start, stop))
            else:
                new_items.append(start)
        idx = tuple(new_items) if isinstance(index, tuple) else new_items[0]
        ctx.rewrite((ctx.node.args[0], idx), dict(ctx.node.kwargs))
    return TV(tuple(out))
