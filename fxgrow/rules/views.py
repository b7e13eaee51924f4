"""Ops that move, merge and split dimensions without changing values.

Their rules are pure layout algebra: ``flatten`` and ``view`` merge dims into
products and split them into factors (refining a space ``n -> h ⊗ d``),
``permute`` reorders them, ``unsqueeze``/``squeeze``/``expand`` insert and
drop size-1 dims, ``repeat`` tiles them.  Literal arguments that name neuron
counts (view sizes) are recomputed after growth from the new layouts.
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import torch
from torch import fx, nn

from ..errors import RuleError
from ..ir.layout import Layout, leaves
from ..ir.rewrites import Item
from ..ir.roles import FIXED, GROWABLE
from ..ir.values import TV, SizeOf, iter_sizes, iter_tensors
from .common import dim_index
from .registry import RuleSet

__all__ = ["RULES", "reshape", "flatten", "permute", "transpose", "unsqueeze", "squeeze",
           "expand", "repeat", "tile"]

RULES = RuleSet()


# -- reshape ----------------------------------------------------------------------
def _reshape_dims(ctx, x: TV, in_shape: Sequence[int], out_shape: Sequence[int]) -> List[Layout]:
    """Match input and output dims by products of sizes, like reshape does."""
    if 0 in in_shape or 0 in out_shape:
        raise RuleError("zero-size dimension")
    ins = [(i, n) for i, n in enumerate(in_shape) if n != 1]
    outs = [(j, n) for j, n in enumerate(out_shape) if n != 1]
    for i, n in enumerate(in_shape):
        if n == 1:
            ctx.fix(x.dims[i], "a size-1 dimension dropped by a reshape")
    result: List[Layout] = [None] * len(out_shape)  # type: ignore[list-item]
    for j, n in enumerate(out_shape):
        if n == 1:
            result[j] = ctx.free(1)
    if math.prod(in_shape) != math.prod(out_shape):
        raise RuleError("input and output sizes do not match")
    a = b = 0
    while a < len(ins):
        ia, ib = [ins[a]], [outs[b]]
        pa, pb = ins[a][1], outs[b][1]
        while pa != pb:
            if pa < pb:
                a += 1
                ia.append(ins[a])
                pa *= ins[a][1]
            else:
                b += 1
                ib.append(outs[b])
                pb *= outs[b][1]
        merged = ctx.prod([x.dims[i] for i, _ in ia])
        if len(ib) == 1 and (len(ia) == 1 or _can_grow(ctx, merged)):
            pieces = [merged]
        elif not _can_grow(ctx, merged):
            # Nothing here can grow (e.g. spatial extents, which window
            # partitions factor and merge in different orders, then crop):
            # no need to relate the pieces to the merged dims, only to keep
            # them fixed.
            pieces = [ctx.table.fresh(n, free=True, status=FIXED,
                                      reason=f"reshaped from a fixed dimension by `{ctx.node.name}`")
                      for _, n in ib]
        else:
            pieces = ctx.factor(merged, [n for _, n in ib])
        for (j, _), piece in zip(ib, pieces):
            result[j] = piece
        a += 1
        b += 1
    return result


def _upstream(ctx, node: Any) -> Tuple[Layout, ...]:
    """The layouts of every tensor ``node`` is computed from, its own included:
    while none of them grows, neither its sizes nor its strides change."""
    seen, stack, out = set(), [node], {}
    while stack:
        n = stack.pop()
        if not isinstance(n, fx.Node) or n in seen:
            continue
        seen.add(n)
        for tv in iter_tensors(ctx.value(n)):
            out.update(dict.fromkeys(tv.dims))
        stack.extend(n.all_input_nodes)
    return tuple(out)


def _can_grow(ctx, layout: Layout) -> bool:
    return any(ctx.table.status(l.space) == GROWABLE for l in leaves(ctx.norm(layout)))


def _shape_literal(ctx, entries: List[Any], dims: List[Layout], rebuild,
                   inputs: Sequence[Layout] = ()) -> None:
    """Recompute shape entries after growth.

    The rewrite also applies when one of ``inputs`` grows though no entry
    changes (``x.view(b, s, -1)`` of a grown ``x``): an ATen view then becomes
    a reshape, as its input's strides may have changed (see
    :data:`fxgrow.ops.aten.VIEWS`).

    An entry becomes a literal when its dim changes size, or when it is read
    from a size (``x.shape[3]``) of a dim that grows: otherwise the grown
    model would compute a new number for a dim whose neurons did not change
    (the two dims can have equal sizes without being the same neurons).
    ``-1`` and untouched entries are kept, so batch sizes stay dynamic.
    """
    whole = bool(entries) and all(e is entries[0] for e in entries) and len(entries) > 1 \
        and isinstance(entries[0], fx.Node) and isinstance(ctx.value(entries[0]), tuple)

    def provenance(raw) -> Tuple[Layout, ...]:
        v = ctx.value(raw) if isinstance(raw, fx.Node) else None
        return tuple(l for sz in iter_sizes(v) for l in sz.layouts)

    if whole:  # x.view(y.size()): all or nothing
        sizes = ctx.value(entries[0])
        if len(sizes) == len(dims) and all(
                isinstance(sz, SizeOf) and len(sz.layouts) == 1
                and ctx.norm(sz.layouts[0]) == ctx.norm(lay) for sz, lay in zip(sizes, dims)):
            # each entry is the size of the very dim it shapes (`h.flatten(1).view(h.shape)`):
            # the grown graph reads the grown sizes itself, and dims that do not grow (the
            # batch) stay dynamic
            args, kwargs = tuple(ctx.node.args), dict(ctx.node.kwargs)
            ctx.rewrite(args, kwargs, when=tuple(dims) + tuple(inputs))
            return
        # otherwise entry by entry: the new size where this dim or the one it is read from
        # grows, else the graph's own entry (so the batch and spatial sizes stay dynamic)
        new = [ctx.if_grows((lay,) + (sz.layouts if isinstance(sz, SizeOf) else ()),
                            ctx.size(lay), Item(entries[0], i))
               if isinstance(sz, SizeOf) else ctx.size(lay)
               for i, (sz, lay) in enumerate(zip(sizes, dims))]
        args, kwargs = rebuild(new)
        ctx.rewrite(args, kwargs, when=tuple(dims) + provenance(entries[0]) + tuple(inputs))
        return
    new = []
    for raw, lay in zip(entries, dims):
        if isinstance(raw, int) and raw == -1:
            new.append(-1)
        elif not isinstance(raw, (int, fx.Node)):
            new.append(ctx.size(lay))
        else:
            new.append(ctx.if_grows((lay,) + provenance(raw), ctx.size(lay), raw))
    args, kwargs = rebuild(new)
    if inputs:
        when = tuple(dims) + tuple(l for raw in entries for l in provenance(raw)) + tuple(inputs)
        ctx.rewrite(args, kwargs, when=when)
    else:
        ctx.rewrite(args, kwargs)


def _shape_entries(ctx, first: int) -> Tuple[List[Any], Any]:
    """Shape arguments of view/reshape/expand, and how to write them back.

    ``rebuild(new)`` gives the node's ``(args, kwargs)`` with the entries replaced.
    """
    node = ctx.node
    args = list(node.args)
    if "size" in node.kwargs or "shape" in node.kwargs:
        key = "size" if "size" in node.kwargs else "shape"
        entries = list(node.kwargs[key])
        return entries, lambda new: (tuple(args), {**node.kwargs, key: tuple(new)})
    rest = args[first:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        entries = list(rest[0])
        return entries, lambda new: (tuple(args[:first]) + (tuple(new),), dict(node.kwargs))
    if len(rest) == 1 and isinstance(rest[0], fx.Node):
        v = ctx.value(rest[0])  # a whole size tuple, e.g. x.view(y.size())
        if isinstance(v, tuple):
            entries = [rest[0]] * len(ctx.spec(rest[0]))
            return entries, lambda new: (tuple(args[:first]) + (tuple(new),), dict(node.kwargs))
    return rest, lambda new: (tuple(args[:first]) + tuple(new), dict(node.kwargs))


@RULES.rule("view", "reshape", torch.reshape, accepts_sizes=True)
def reshape(ctx) -> TV:
    """``view``/``reshape``: merge dims into products, split them into factors."""
    if any(isinstance(a, torch.dtype) for a in ctx.node.args[1:]):
        raise RuleError("a view as another dtype reinterprets the bytes")
    x = ctx.tensor(ctx.arg(0, "input"))
    dims = _reshape_dims(ctx, x, ctx.spec(ctx.arg(0, "input")).shape, ctx.out_shape)
    entries, rebuild = _shape_entries(ctx, 1)
    if len(entries) == len(dims):
        # a view is rewritten (an ATen view to a reshape) even when no entry
        # changes if anything its input is computed from grows: the input's
        # strides may then differ (attention's output is laid out like its
        # query only while the query and value head dims agree), and a
        # reshape gives the same values whatever they are
        _shape_literal(ctx, entries, dims, rebuild, inputs=_upstream(ctx, ctx.arg(0, "input")))
    else:
        raise RuleError("cannot read the target shape")
    return TV(tuple(dims))


@RULES.rule("view_as", "reshape_as")
def reshape_as(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0))
    other = ctx.tensor(ctx.arg(1))
    dims = _reshape_dims(ctx, x, ctx.spec(ctx.arg(0)).shape, ctx.out_shape)
    for a, b in zip(dims, other.dims):
        ctx.unify(a, b)
    return TV(tuple(dims))


def _flatten(ctx, x: TV, start: int, end: int) -> TV:
    n = len(x.dims)
    if n == 0:
        return TV((ctx.free(1),))
    s, e = dim_index(start, n), dim_index(end, n)
    merged = ctx.prod(list(x.dims[s:e + 1]))
    if ctx.norm(merged).size == 1:
        merged = ctx.free(1)
    return TV(x.dims[:s] + (merged,) + x.dims[e + 1:])


@RULES.rule(torch.flatten, "flatten")
def flatten(ctx) -> TV:
    """``flatten``: the merged dims become one row-major product."""
    x = ctx.tensor(ctx.arg(0, "input"))
    return _flatten(ctx, x, ctx.arg(1, "start_dim", 0), ctx.arg(2, "end_dim", -1))


@RULES.rule(nn.Flatten)
def flatten_module(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    return _flatten(ctx, x, ctx.module.start_dim, ctx.module.end_dim)


@RULES.rule(nn.Unflatten, "unflatten", torch.unflatten)
def unflatten(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    if ctx.module is not None:
        d = dim_index(ctx.module.dim, x.ndim)
    else:
        d = dim_index(ctx.arg(1, "dim"), x.ndim)
        if not all(isinstance(s, int) and s > 0 for s in ctx.arg(2, "sizes")):
            raise RuleError("unflatten sizes must be positive literals")
    k = len(ctx.out_shape) - x.ndim + 1
    sizes = ctx.out_shape[d:d + k]
    pieces = ctx.factor(x.dims[d], sizes)
    if ctx.module is None:
        ctx.rewrite_arg(2, "sizes", tuple(ctx.size(p) for p in pieces))
    else:
        ctx.fix(x.dims[d], "nn.Unflatten has literal sizes")
    return TV(x.dims[:d] + tuple(p if ctx.norm(p).size > 1 else ctx.free(1) for p in pieces)
              + x.dims[d + 1:])


# -- moving dims ------------------------------------------------------------------
@RULES.rule("permute", torch.permute)
def permute(ctx) -> TV:
    """``permute``: the layouts move with their dims."""
    x = ctx.tensor(ctx.arg(0, "input"))
    rest = list(ctx.node.args[1:]) or [ctx.node.kwargs.get("dims")]
    order = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
    order = [dim_index(d, x.ndim) for d in order]
    return TV(tuple(x.dims[d] for d in order))


@RULES.rule("transpose", torch.transpose, "swapaxes", "swapdims", torch.swapaxes)
def transpose(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    a, b = dim_index(ctx.arg(1, "dim0"), x.ndim), dim_index(ctx.arg(2, "dim1"), x.ndim)
    dims = list(x.dims)
    dims[a], dims[b] = dims[b], dims[a]
    return TV(tuple(dims))


@RULES.rule("t", torch.t)
def t(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    return TV(tuple(reversed(x.dims)))


@RULES.rule("unsqueeze", torch.unsqueeze)
def unsqueeze(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    d = dim_index(ctx.arg(1, "dim"), x.ndim + 1)
    return TV(x.dims[:d] + (ctx.free(1),) + x.dims[d:])


@RULES.rule("squeeze", torch.squeeze)
def squeeze(ctx) -> TV:
    """``squeeze``: dropped size-1 dims are fixed (growing them would stop the squeeze)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    shape = ctx.spec(ctx.arg(0, "input")).shape
    d = ctx.arg(1, "dim", None)
    if d is None:
        drop = {i for i, n in enumerate(shape) if n == 1}
    else:
        ds = d if isinstance(d, (tuple, list)) else (d,)
        drop = {dim_index(i, x.ndim) for i in ds if shape[dim_index(i, x.ndim)] == 1}
    for i in drop:
        ctx.fix(x.dims[i], "a size-1 dimension squeezed away")
    return TV(tuple(l for i, l in enumerate(x.dims) if i not in drop))


@RULES.rule("expand", accepts_sizes=True)
def expand(ctx) -> TV:
    """``expand``: broadcast size-1 dims (fixed); sizes of kept dims follow their layouts."""
    x = ctx.tensor(ctx.arg(0))
    in_shape = ctx.spec(ctx.arg(0)).shape
    out_shape = ctx.out_shape
    lead = len(out_shape) - len(in_shape)
    dims: List[Layout] = [ctx.free(n) for n in out_shape[:lead]]
    for i, n in enumerate(out_shape[lead:]):
        if in_shape[i] == n:
            dims.append(x.dims[i])
        else:
            ctx.fix(x.dims[i], "a size-1 dimension expanded")
            dims.append(ctx.free(n))
    entries, rebuild = _shape_entries(ctx, 1)
    if len(entries) != len(dims):
        raise RuleError("cannot read the expanded shape")
    _shape_literal(ctx, entries, dims, rebuild)
    return TV(tuple(dims))


@RULES.rule("expand_as")
def expand_as(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0))
    other = ctx.tensor(ctx.arg(1))
    in_shape = ctx.spec(ctx.arg(0)).shape
    out_shape = ctx.out_shape
    lead = len(out_shape) - len(in_shape)
    for i, n in enumerate(out_shape[lead:]):
        if in_shape[i] == n:
            ctx.unify(x.dims[i], other.dims[lead + i])
        else:
            ctx.fix(x.dims[i], "a size-1 dimension expanded")
    return other


def _counts(ctx, raw: Sequence[Any]) -> List[int]:
    """Literal repeat counts; a count read from a size is taken at its value when every
    layout it was read from is a free extent (which never grows), else a RuleError."""
    counts = []
    for r in raw:
        v = ctx.value(r)
        if isinstance(v, SizeOf):
            if not _free(ctx, v.layouts):
                raise RuleError("a repeat count read from the size of a neuron dimension")
            v = v.value
        if not isinstance(v, int) or isinstance(v, bool):
            raise RuleError("non-literal repeat counts")
        counts.append(v)
    return counts


def _free(ctx, layouts: Sequence[Layout]) -> bool:
    return all(ctx.table.is_free(l.space) for lay in layouts for l in leaves(ctx.norm(lay)))


def _tile(ctx, x: TV, reps: List[int]) -> TV:
    lead = len(reps) - x.ndim
    dims: List[Layout] = [ctx.free(r) for r in reps[:lead]]
    for lay, r in zip(x.dims, reps[lead:]):
        dims.append(lay if r == 1 else ctx.prod([ctx.free(r), lay]))
    return TV(tuple(dims))


def _rest(ctx, first: int, name: str) -> List[Any]:
    rest = list(ctx.node.args[first:]) or [ctx.node.kwargs.get(name, ())]
    return list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest


@RULES.rule("repeat", accepts_sizes=True)
def repeat(ctx) -> TV:
    """``repeat`` tiles: a dim repeated ``r`` times is ``Prod(R, L)`` with ``R`` fixed.

    Counts may be read from the sizes of free extents (a window count): those
    never grow, so the count stays what it is and follows the input.
    """
    x = ctx.tensor(ctx.arg(0))
    return _tile(ctx, x, _counts(ctx, _rest(ctx, 1, "repeats")))


@RULES.rule("tile", torch.tile, accepts_sizes=True)
def tile(ctx) -> TV:
    """``tile(dims)``: ``repeat`` with the counts padded by leading 1s to the rank."""
    x = ctx.tensor(ctx.arg(0, "input"))
    reps = _counts(ctx, _rest(ctx, 1, "dims"))
    return _tile(ctx, x, [1] * (x.ndim - len(reps)) + reps)


@RULES.rule("repeat_interleave", torch.repeat_interleave, accepts_sizes=True)
def repeat_interleave(ctx) -> TV:
    """``repeat_interleave(r, dim)``: each neuron repeated ``r`` times, ``Prod(L, R)``
    (``r`` literal, or read from the size of a free extent)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    r = ctx.arg(1, "repeats")
    d = ctx.arg(2, "dim", None)
    if any(True for a in list(ctx.node.args[2:]) + [v for k, v in ctx.node.kwargs.items()
                                                    if k != "repeats"]
           for _ in iter_sizes(ctx.value(a))):
        raise RuleError("repeat_interleave with a size read from a tensor")
    if isinstance(r, (int, fx.Node)) and not isinstance(ctx.value(r), TV):
        r = _counts(ctx, [r])[0]
    if not isinstance(r, int) or d is None:
        raise RuleError("repeat_interleave needs a literal int count and a dim")
    d = dim_index(d, x.ndim)
    dims = list(x.dims)
    dims[d] = ctx.prod([x.dims[d], ctx.free(r)])
    if ctx.arg(3, "output_size", None) is not None:
        # the length of the repeated dim, checked by the op: it grows with the dim
        ctx.rewrite_arg(3, "output_size", ctx.size(dims[d]))
    return TV(tuple(dims))
