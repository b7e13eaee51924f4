"""Ops that move, merge, split or slice dimensions.

These never change values, only where neurons sit, so their rules are pure
layout algebra: ``flatten`` and ``view`` merge dims into products and split
them into factors (refining a space ``n -> h ⊗ d``), ``cat`` concatenates
layouts, ``split``/``chunk``/slicing cut them (refining ``A -> A1 ⊕ A2``
everywhere ``A`` is used), ``permute`` reorders them.  Literal arguments that
name neuron counts (view sizes, split sizes, slice bounds) are recomputed
after growth from the new layouts.
"""

from __future__ import annotations

import operator
from itertools import accumulate
from typing import Any, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import RuleError
from ..layout import Layout, leaves
from ..shapes import TensorSpec
from ..values import TV, SizeOf, iter_sizes
from . import register_rule

__all__ = ["reshape", "flatten", "permute", "cat", "split", "getitem", "spatial"]


def _dim(d: Any, ndim: int) -> int:
    if not isinstance(d, int):
        raise RuleError(f"non-literal dim {d!r}")
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise RuleError(f"dim {d} out of range")
    return d % max(ndim, 1)


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
        if len(ib) == 1:
            pieces = [merged]
        elif all(ctx.table.status(l.space) != "growable" for l in leaves(ctx.norm(merged))):
            # Nothing here can grow (e.g. spatial extents, which window
            # partitions factor in different orders): no need to relate the
            # pieces to the merged dims, only to keep them fixed.
            pieces = [ctx.table.fresh(n, free=True, status="fixed",
                                      reason=f"reshaped from a fixed dimension by `{ctx.node.name}`")
                      for _, n in ib]
        else:
            pieces = ctx.factor(merged, [n for _, n in ib])
        for (j, _), piece in zip(ib, pieces):
            result[j] = piece
        a += 1
        b += 1
    return result


def _shape_literal(ctx, entries: List[Any], dims: List[Layout], rebuild) -> None:
    """Recompute shape entries after growth.

    An entry becomes a literal when its dim changes size, or when it is read
    from a size (``x.shape[3]``) of a dim that grows: otherwise the grown
    model would compute a new number for a dim whose neurons did not change
    (the two dims can have equal sizes without being the same neurons).
    ``-1`` and untouched entries are kept, so batch sizes stay dynamic.
    """
    whole = bool(entries) and all(e is entries[0] for e in entries) and len(entries) > 1 \
        and isinstance(entries[0], fx.Node) and isinstance(ctx.value(entries[0]), tuple)

    def grows(raw, size) -> bool:
        v = ctx.value(raw) if isinstance(raw, fx.Node) else None
        provenance = [l for sz in iter_sizes(v) for l in sz.layouts]
        return any(size(l) != ctx.norm(l).size for l in provenance)

    def fn(size):
        new, changed = [], False
        for raw, lay in zip(entries, dims):
            n = size(lay)
            if isinstance(raw, int) and raw == -1:
                new.append(-1)
            elif n != ctx.norm(lay).size or not isinstance(raw, (int, fx.Node)) or grows(raw, size):
                new.append(n)
                changed = True
            else:
                new.append(raw)
        if whole:  # x.view(y.size()): all or nothing
            if not changed:
                return rebuild(None)
            new = [size(lay) for lay in dims]
        return rebuild(new)
    ctx.literal(fn)


def _shape_entries(ctx, first: int) -> Tuple[List[Any], Any]:
    """Shape arguments of view/reshape/expand, and how to write them back.

    ``rebuild(None)`` gives the node's arguments unchanged.
    """
    node = ctx.node
    args = list(node.args)
    same = (tuple(args), dict(node.kwargs))
    if "size" in node.kwargs or "shape" in node.kwargs:
        key = "size" if "size" in node.kwargs else "shape"
        entries = list(node.kwargs[key])
        return entries, lambda new: same if new is None else (
            tuple(args), {**node.kwargs, key: tuple(new)})
    rest = args[first:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        entries = list(rest[0])
        return entries, lambda new: same if new is None else (
            tuple(args[:first]) + (tuple(new),), dict(node.kwargs))
    if len(rest) == 1 and isinstance(rest[0], fx.Node):
        v = ctx.value(rest[0])  # a whole size tuple, e.g. x.view(y.size())
        if isinstance(v, tuple):
            entries = [rest[0]] * len(ctx.spec(rest[0]))
            return entries, lambda new: same if new is None else (
                tuple(args[:first]) + (tuple(new),), dict(node.kwargs))
    return rest, lambda new: same if new is None else (
        tuple(args[:first]) + tuple(new), dict(node.kwargs))


@register_rule("view", "reshape", torch.reshape, accepts_sizes=True)
def reshape(ctx) -> TV:
    """``view``/``reshape``: merge dims into products, split them into factors."""
    x = ctx.tensor(ctx.arg(0, "input"))
    dims = _reshape_dims(ctx, x, ctx.spec(ctx.arg(0, "input")).shape, ctx.out_shape)
    entries, rebuild = _shape_entries(ctx, 1)
    if len(entries) == len(dims):
        _shape_literal(ctx, entries, dims, rebuild)
    else:
        raise RuleError("cannot read the target shape")
    return TV(tuple(dims))


@register_rule("view_as", "reshape_as")
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
    s, e = _dim(start, n), _dim(end, n)
    merged = ctx.prod(list(x.dims[s:e + 1]))
    if ctx.norm(merged).size == 1:
        merged = ctx.free(1)
    return TV(x.dims[:s] + (merged,) + x.dims[e + 1:])


@register_rule(torch.flatten, "flatten")
def flatten(ctx) -> TV:
    """``flatten``: the merged dims become one row-major product."""
    x = ctx.tensor(ctx.arg(0, "input"))
    return _flatten(ctx, x, ctx.arg(1, "start_dim", 0), ctx.arg(2, "end_dim", -1))


@register_rule(nn.Flatten)
def flatten_module(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    return _flatten(ctx, x, ctx.module.start_dim, ctx.module.end_dim)


@register_rule(nn.Unflatten, "unflatten", torch.unflatten)
def unflatten(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    if ctx.module is not None:
        d = _dim(ctx.module.dim, x.ndim)
    else:
        d = _dim(ctx.arg(1, "dim"), x.ndim)
        if not all(isinstance(s, int) and s > 0 for s in ctx.arg(2, "sizes")):
            raise RuleError("unflatten sizes must be positive literals")
    k = len(ctx.out_shape) - x.ndim + 1
    sizes = ctx.out_shape[d:d + k]
    pieces = ctx.factor(x.dims[d], sizes)
    if ctx.module is None:
        ctx.literal_arg(2, "sizes", lambda size: tuple(size(p) for p in pieces))
    else:
        ctx.fix(x.dims[d], "nn.Unflatten has literal sizes")
    return TV(x.dims[:d] + tuple(p if ctx.norm(p).size > 1 else ctx.free(1) for p in pieces)
              + x.dims[d + 1:])


# -- moving dims ------------------------------------------------------------------
@register_rule("permute", torch.permute)
def permute(ctx) -> TV:
    """``permute``: the layouts move with their dims."""
    x = ctx.tensor(ctx.arg(0, "input"))
    rest = list(ctx.node.args[1:]) or [ctx.node.kwargs.get("dims")]
    order = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
    order = [_dim(d, x.ndim) for d in order]
    return TV(tuple(x.dims[d] for d in order))


@register_rule("transpose", torch.transpose, "swapaxes", "swapdims", torch.swapaxes)
def transpose(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    a, b = _dim(ctx.arg(1, "dim0"), x.ndim), _dim(ctx.arg(2, "dim1"), x.ndim)
    dims = list(x.dims)
    dims[a], dims[b] = dims[b], dims[a]
    return TV(tuple(dims))


@register_rule("t", torch.t)
def t(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    return TV(tuple(reversed(x.dims)))


@register_rule("unsqueeze", torch.unsqueeze)
def unsqueeze(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    d = _dim(ctx.arg(1, "dim"), x.ndim + 1)
    return TV(x.dims[:d] + (ctx.free(1),) + x.dims[d:])


@register_rule("squeeze", torch.squeeze)
def squeeze(ctx) -> TV:
    """``squeeze``: dropped size-1 dims are fixed (growing them would stop the squeeze)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    shape = ctx.spec(ctx.arg(0, "input")).shape
    d = ctx.arg(1, "dim", None)
    if d is None:
        drop = {i for i, n in enumerate(shape) if n == 1}
    else:
        ds = d if isinstance(d, (tuple, list)) else (d,)
        drop = {_dim(i, x.ndim) for i in ds if shape[_dim(i, x.ndim)] == 1}
    for i in drop:
        ctx.fix(x.dims[i], "a size-1 dimension squeezed away")
    return TV(tuple(l for i, l in enumerate(x.dims) if i not in drop))


@register_rule("expand", accepts_sizes=True)
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


@register_rule("expand_as")
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


@register_rule("repeat")
def repeat(ctx) -> TV:
    """``repeat`` tiles: a dim repeated ``r`` times is ``Prod(R, L)`` with ``R`` fixed."""
    x = ctx.tensor(ctx.arg(0))
    reps = list(ctx.node.args[1:])
    if len(reps) == 1 and isinstance(reps[0], (tuple, list)):
        reps = list(reps[0])
    if not all(isinstance(r, int) for r in reps):
        raise RuleError("non-literal repeat counts")
    lead = len(reps) - x.ndim
    dims: List[Layout] = [ctx.free(r) for r in reps[:lead]]
    for lay, r in zip(x.dims, reps[lead:]):
        dims.append(lay if r == 1 else ctx.prod([ctx.free(r), lay]))
    return TV(tuple(dims))


@register_rule("repeat_interleave", torch.repeat_interleave)
def repeat_interleave(ctx) -> TV:
    """``repeat_interleave(r, dim)``: each neuron repeated ``r`` times, ``Prod(L, R)``."""
    x = ctx.tensor(ctx.arg(0, "input"))
    r = ctx.arg(1, "repeats")
    d = ctx.arg(2, "dim", None)
    if not isinstance(r, int) or d is None:
        raise RuleError("repeat_interleave needs a literal int count and a dim")
    d = _dim(d, x.ndim)
    dims = list(x.dims)
    dims[d] = ctx.prod([x.dims[d], ctx.free(r)])
    return TV(tuple(dims))


# -- concatenation and splitting --------------------------------------------------
@register_rule(torch.cat, torch.concat, torch.concatenate)
def cat(ctx) -> TV:
    """``cat``: the output layout is the concatenation of the input layouts."""
    tensors = ctx.arg(0, "tensors")
    values = [ctx.tensor(t) for t in tensors]
    d = _dim(ctx.arg(1, "dim", 0), values[0].ndim)
    dims = list(values[0].dims)
    for v in values[1:]:
        for i in range(len(dims)):
            if i != d:
                ctx.unify(dims[i], v.dims[i])
    dims[d] = ctx.cat([v.dims[d] for v in values])
    return TV(tuple(dims))


@register_rule(torch.stack)
def stack(ctx) -> TV:
    tensors = ctx.arg(0, "tensors")
    values = [ctx.tensor(t) for t in tensors]
    d = _dim(ctx.arg(1, "dim", 0), values[0].ndim + 1)
    dims = list(values[0].dims)
    for v in values[1:]:
        for a, b in zip(dims, v.dims):
            ctx.unify(a, b)
    dims.insert(d, ctx.free(len(values)))
    return TV(tuple(dims))


def _pieces(ctx, x: TV, d: int) -> List[Layout]:
    sizes = [s.shape[d] for s in ctx.out_spec]
    return ctx.split_at(x.dims[d], list(accumulate(sizes))[:-1])


@register_rule("split", torch.split, "chunk", torch.chunk, "tensor_split", torch.tensor_split,
               accepts_sizes=True)
def split(ctx) -> tuple:
    """``split``/``chunk``: cut the layout; a cut inside a space refines it.

    After growth the pieces may differ in size, or a split size read from
    another dim (``qkv.split(x.size(-1))``) may change while the pieces do
    not, so the call is rewritten to ``split`` with explicit sizes.
    """
    x = ctx.tensor(ctx.arg(0, "input"))
    node = ctx.node
    d = _dim(ctx.arg(2, "dim", 0), x.ndim)
    if not isinstance(ctx.out_spec, tuple) or not all(isinstance(s, TensorSpec) for s in ctx.out_spec):
        raise RuleError("unexpected output")
    pieces = _pieces(ctx, x, d)

    provenance = [l for a in list(node.args[1:]) + list(node.kwargs.values())
                  for sz in iter_sizes(ctx.value(a)) for l in sz.layouts]

    def fn(size):
        new = [size(p) for p in pieces]
        if new == [ctx.norm(p).size for p in pieces] and \
                all(size(l) == ctx.norm(l).size for l in provenance):
            return tuple(node.args), dict(node.kwargs)
        target = "split" if isinstance(node.target, str) else torch.split
        return target, (node.args[0], new, d), {}
    ctx.literal(fn)
    return tuple(TV(x.dims[:d] + (p,) + x.dims[d + 1:]) for p in pieces)


@register_rule("unbind", torch.unbind)
def unbind(ctx) -> tuple:
    """``unbind``: every slice is a dropped size-1 piece, so the dim is fixed."""
    x = ctx.tensor(ctx.arg(0, "input"))
    d = _dim(ctx.arg(1, "dim", 0), x.ndim)
    ctx.fix(x.dims[d], "unbound into separate tensors")
    return tuple(TV(x.dims[:d] + x.dims[d + 1:]) for _ in ctx.out_spec)


@register_rule(operator.getitem, accepts_sizes=True)
def getitem(ctx) -> Any:
    """Indexing: tuples pick elements; tensors take basic slices and ints."""
    base = ctx.value(ctx.arg(0))
    index = ctx.node.args[1]
    if not isinstance(base, TV):
        idx = ctx.value(index)
        if isinstance(base, (tuple, list)):
            return base[idx.value if isinstance(idx, SizeOf) else idx]
        return ctx.out_spec
    return _index_tensor(ctx, base, index)


def _is_tensor_index(ctx, item: Any) -> bool:
    return isinstance(item, fx.Node) and isinstance(ctx.value(item), TV)


def _gather_index(ctx, x: TV, items: List[Any]) -> TV:
    """``x[..., idx, ...]`` with one tensor index: like ``index_select``.

    The indexed dim picks positions by value, so it is fixed; the index's own
    dims take its place and the other dims pass through.
    """
    d = next(i for i, item in enumerate(items) if _is_tensor_index(ctx, item))
    if any(not (isinstance(it, slice) and it == slice(None)) for i, it in enumerate(items) if i != d):
        raise RuleError("advanced indexing mixed with slices")
    ctx.fix(x.dims[d], "indexed by a tensor of positions")
    idx = ctx.tensor(items[d])
    if ctx.spec(items[d]).dtype == torch.bool:
        raise RuleError("boolean mask indexing")
    return TV(x.dims[:d] + idx.dims + x.dims[d + 1:])


def _index_tensor(ctx, x: TV, index: Any) -> TV:
    shape = ctx.spec(ctx.arg(0)).shape
    items = list(index) if isinstance(index, tuple) else [index]
    tensor_items = [i for i in items if _is_tensor_index(ctx, i)]
    if len(tensor_items) == 1 and Ellipsis not in items and None not in items:
        return _gather_index(ctx, x, items)
    if tensor_items:
        raise RuleError("indexing with several tensors")
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items = items[:k] + [slice(None)] * (x.ndim - n_real) + items[k + 1:]
    items += [slice(None)] * (x.ndim - sum(1 for i in items if i is not None))
    out: List[Layout] = []
    plan: List[Tuple[Any, Any]] = []  # (original item, layouts for the rewrite)
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
            start, stop, step = slice(start, stop, step).indices(n)
            if step != 1:
                # every step-th neuron: a widened space would need a strided
                # map, so the dim is fixed (spatial dims are fixed anyway)
                ctx.fix(lay, "sliced with a stride")
                out.append(ctx.free(len(range(start, stop, step))))
                plan.append((item, None))
                d += 1
                continue
            stop = max(start, stop)
            if (start, stop) == (0, n):
                out.append(lay)
                plan.append((item, None))
            else:
                parts = ctx.split_at(lay, [b for b in (start, stop) if 0 < b < n])
                before = parts[0] if start > 0 else None
                mid = parts[1] if start > 0 else parts[0]
                out.append(mid)
                plan.append((item, (before, mid)))
        else:
            i = ctx.int_value(item)
            i = i % n
            parts = ctx.split_at(lay, [b for b in (i, i + 1) if 0 < b < n])
            before = parts[0] if i > 0 else None
            sel = parts[1] if i > 0 else parts[0]
            ctx.fix(sel, "a single index selected")
            plan.append((item, (before, sel)))
        d += 1
    node = ctx.node

    def fn(size):
        new_items = []
        for item, lays in plan:
            if lays is None:
                new_items.append(item)
                continue
            before, mid = lays
            b = size(before) if before is not None else 0
            if isinstance(item, slice):
                new_items.append(slice(b, b + size(mid)))
            else:
                new_items.append(b)
        idx = tuple(new_items) if isinstance(index, tuple) else new_items[0]
        return (node.args[0], idx), dict(node.kwargs)
    if any(lays is not None for _, lays in plan):
        ctx.literal(fn)
    return TV(tuple(out))


# -- sizes --------------------------------------------------------------------------
def _sizes(ctx, x: TV, shape) -> tuple:
    return tuple(SizeOf((lay,), n) for lay, n in zip(x.dims, shape))


@register_rule("size")
def size(ctx) -> Any:
    """``size()``: ints that remember which layouts they were read from."""
    x = ctx.tensor(ctx.arg(0))
    shape = ctx.spec(ctx.arg(0)).shape
    d = ctx.arg(1, "dim", None)
    if d is None:
        return _sizes(ctx, x, shape)
    d = _dim(d, x.ndim)
    return SizeOf((x.dims[d],), shape[d])


@register_rule("dim", "ndimension")
def ndim(ctx) -> int:
    return ctx.out_spec  # the rank never changes


@register_rule("numel", torch.numel)
def numel(ctx) -> SizeOf:
    x = ctx.tensor(ctx.arg(0))
    return SizeOf(tuple(x.dims), ctx.out_spec)


@register_rule(getattr)
def getattr_rule(ctx) -> Any:
    """Tensor attributes: ``shape`` is tracked like ``size()``; dtype/device are plain."""
    base = ctx.value(ctx.arg(0))
    attr = ctx.arg(1)
    if not isinstance(base, TV):
        return ctx.out_spec
    if attr == "shape":
        return _sizes(ctx, base, ctx.spec(ctx.arg(0)).shape)
    if attr in ("dtype", "device", "ndim", "is_cuda", "requires_grad"):
        return ctx.out_spec
    if attr == "T":
        return TV(tuple(reversed(base.dims)))
    if attr == "mT" and base.ndim >= 2:
        return TV(base.dims[:-2] + (base.dims[-1], base.dims[-2]))
    raise RuleError(f"tensor attribute {attr!r}")


# -- spatial ops --------------------------------------------------------------------
def spatial(nd: int):
    """Rule for an op over the last ``nd`` dims: the others pass through."""
    def rule(ctx) -> TV:
        x = ctx.tensor(ctx.arg(0, "input"))
        if not isinstance(ctx.out_spec, TensorSpec):
            raise RuleError("returns more than one tensor (return_indices?)")
        out_shape = ctx.out_shape
        if len(out_shape) != x.ndim or x.ndim < nd + 1:
            raise RuleError("unexpected rank")
        return TV(x.dims[:-nd] + tuple(ctx.free(n) for n in out_shape[-nd:]))
    rule.__name__ = f"spatial{nd}d"
    return rule


def _nd_of(cls_or_fn) -> int:
    name = cls_or_fn.__name__
    return int(name[-2]) if name[-1] == "d" and name[-2].isdigit() else 2


for _m in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
           nn.LPPool1d, nn.LPPool2d, nn.FractionalMaxPool2d,
           F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
           F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
           F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
           F.lp_pool1d, F.lp_pool2d):
    register_rule(_m)(spatial(_nd_of(_m)))


@register_rule(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, F.interpolate,
               F.upsample)
def resize(ctx) -> TV:
    """Upsampling resizes the dims after the channel dim (dim 1)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    nd = x.ndim - 2
    if nd < 1:
        raise RuleError("unexpected rank")
    return spatial(nd)(ctx)


@register_rule(F.pad)
def pad(ctx) -> TV:
    """Constant padding adds fixed positions around a layout: ``Cat(P, L, Q)``."""
    x = ctx.tensor(ctx.arg(0, "input"))
    amounts = ctx.arg(1, "pad")
    mode = ctx.arg(2, "mode", "constant")
    if not all(isinstance(p, int) and p >= 0 for p in amounts):
        raise RuleError("non-literal or negative padding")
    dims = list(x.dims)
    for k in range(len(amounts) // 2):
        lo, hi = amounts[2 * k], amounts[2 * k + 1]
        d = x.ndim - 1 - k
        if lo == hi == 0:
            continue
        if mode == "constant":
            parts = ([ctx.free(lo)] if lo else []) + [dims[d]] + ([ctx.free(hi)] if hi else [])
            dims[d] = ctx.cat(parts)
        else:
            ctx.fix(dims[d], f"{mode} padding copies border neurons")
            dims[d] = ctx.free(ctx.out_shape[d])
    return TV(tuple(dims))


@register_rule(torch.roll, "roll")
def roll(ctx) -> TV:
    """``roll`` moves positions along its dims: those are fixed, the rest pass."""
    x = ctx.tensor(ctx.arg(0, "input"))
    dims = ctx.arg(2, "dims", None)
    if dims is None:
        raise RuleError("roll over the flattened tensor")
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    for d in dims:
        ctx.fix(x.dims[_dim(d, x.ndim)], "rolled")
    return x
