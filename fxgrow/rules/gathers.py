"""Gathers and scatters: ops that read or write positions an index tensor names.

``index_select``/``gather``/``take_along_dim`` read, ``index_add``/``scatter``/
``index_put`` write, along one dim (or several, for ``index_put``) whose
positions the *values* of an index tensor name.  That dim is fixed: growing it
would change which neurons the values point at.  Every other dim passes: the
index tensor reads or writes the same position of it as the output, so copies
of a neuron there stay copies.  A gather along tokens (position buffers,
ViT-MAE's masking, MoE routing) therefore leaves the feature dims growable,
and so does the MoE combine, ``index_add`` of expert outputs back into the
token rows.

A write that *accumulates* (``index_add``, ``scatter_add``, ``index_put`` with
``accumulate``) sums every entry written to one position: the dims those
entries come from are summed over, so neurons there would be counted once
per copy (blocked, like a sum); positions (tokens) are what they are for.
A boolean mask (``x[mask] = v``, ``masked_scatter``) picks positions too: the
dims it covers and its own are fixed, the others pass.
``tril``/``triu``, ``flip`` and ``diff`` read positions too: the dims they
read are fixed.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import fx

from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.values import TV
from .common import broadcast, dim_index
from .registry import RuleSet
from .slicing import advanced_index, index_layouts

__all__ = ["RULES", "index_select", "gather", "take_along_dim", "index_add", "scatter",
           "index_put", "masked_scatter", "copy", "tril", "flip", "diff"]

RULES = RuleSet()

_PICKED = "indexed by a tensor of positions"
_MASKED = "selected by a boolean mask"
_SUMMED = ("summed into the positions an index names: copies of a neuron would be "
           "counted once per copy")


def _shape(ctx, a) -> Sequence[int]:
    return tuple(ctx.spec(a).shape)


def _positions(ctx, a, *names) -> TV:
    """An index tensor argument (integer, not a mask)."""
    spec = ctx.spec(a)
    if not isinstance(a, fx.Node) or spec is None:
        raise RuleError("the index is not a tensor")
    if spec.dtype == torch.bool or spec.dtype.is_floating_point:
        raise RuleError(f"an index of dtype {spec.dtype}")
    return ctx.tensor(a)


def _aligned(ctx, pairs, why: str) -> List[Layout]:
    """Dims that must index the same positions in every tensor of ``pairs``
    (``(layout, size)`` per tensor): unified where all sizes agree; where one
    tensor covers only a prefix of the others, fixed."""
    sizes = {n for _, n in pairs}
    if len(sizes) == 1:
        for lay, _ in pairs[1:]:
            ctx.unify(pairs[0][0], lay)
    else:
        for lay, _ in pairs:
            ctx.fix(lay, why)
    return [lay for lay, _ in pairs]


@RULES.rule(torch.index_select, "index_select")
def index_select(ctx) -> TV:
    """``index_select(x, d, idx)`` is ``x[:, ..., idx]`` along ``d``: that dim is fixed,
    the index's dim takes its place, the others pass."""
    x = ctx.tensor(ctx.arg(0, "input"))
    d = dim_index(ctx.arg(1, "dim"), x.ndim)
    idx = ctx.arg(2, "index")
    _positions(ctx, idx)
    return advanced_index(ctx, x, [slice(None)] * d + [idx])


@RULES.rule(torch.gather, "gather")
def gather(ctx) -> TV:
    """``out[..., j, ...] = x[..., idx[..., j, ...], ...]`` along ``d``.

    Along ``d`` the index's values pick positions of ``x`` (fixed); the output
    has the index's positions there.  Along every other dim the output, the
    index and ``x`` are read at the same position, so their layouts are one
    (where the index covers only a prefix of ``x``, both are fixed).
    """
    xn, idxn = ctx.arg(0, "input"), ctx.arg(2, "index")
    x = ctx.tensor(xn)
    d = dim_index(ctx.arg(1, "dim"), x.ndim)
    idx = _positions(ctx, idxn)
    sx, si = _shape(ctx, xn), _shape(ctx, idxn)
    if len(sx) != len(si):
        raise RuleError("gather with an index of another rank")
    ctx.fix(x.dims[d], _PICKED)
    out = []
    for e in range(x.ndim):
        if e == d:
            out.append(idx.dims[e])
        else:
            out.append(_aligned(ctx, [(idx.dims[e], si[e]), (x.dims[e], sx[e])],
                                "gathered from a prefix")[0])
    return TV(tuple(out))


@RULES.rule(torch.take_along_dim, "take_along_dim")
def take_along_dim(ctx) -> TV:
    """``take_along_dim(x, idx, d)``: ``gather`` whose other dims broadcast."""
    xn, idxn = ctx.arg(0, "input"), ctx.arg(1, "indices")
    x = ctx.tensor(xn)
    d = ctx.arg(2, "dim", None)
    if d is None:
        raise RuleError("take_along_dim without a dim flattens its input")
    d = dim_index(d, x.ndim)
    idx = _positions(ctx, idxn)
    sx, si = _shape(ctx, xn), _shape(ctx, idxn)
    if len(sx) != len(si):
        raise RuleError("take_along_dim with an index of another rank")
    ctx.fix(x.dims[d], _PICKED)
    out_shape = ctx.out_shape
    rest = broadcast(ctx, [x.dims[:d] + x.dims[d + 1:], idx.dims[:d] + idx.dims[d + 1:]],
                     [sx[:d] + sx[d + 1:], si[:d] + si[d + 1:]],
                     out_shape[:d] + out_shape[d + 1:])
    return TV(tuple(rest[:d]) + (idx.dims[d],) + tuple(rest[d:]))


@RULES.rule(torch.index_add, "index_add", "index_add_", torch.index_copy, "index_copy",
            "index_copy_")
def index_add(ctx) -> TV:
    """``out = x; out[..., idx[i], ...] += src[..., i, ...]`` along ``d`` (``index_copy``
    writes instead of adding).

    Along ``d`` the index picks positions of ``x`` (fixed); ``src``'s rows along
    ``d`` follow the index's entries and are summed into those positions (a
    neuron dim there blocks; tokens pass).  The other dims of ``src`` are ``x``'s.
    """
    xn, srcn = ctx.arg(0, "input"), ctx.arg(3, "source")
    x, src = ctx.tensor(xn), ctx.tensor(srcn)
    d = dim_index(ctx.arg(1, "dim"), x.ndim)
    idx = _positions(ctx, ctx.arg(2, "index"))
    sx, ss = _shape(ctx, xn), _shape(ctx, srcn)
    if len(sx) != len(ss) or idx.ndim > 1:
        raise RuleError("index_add with operands of other ranks")
    ctx.fix(x.dims[d], _PICKED)
    for e in range(x.ndim):
        if e != d:
            if sx[e] != ss[e]:
                raise RuleError("index_add with a source of another shape")
            ctx.unify(x.dims[e], src.dims[e])
    if idx.ndim == 1:
        ctx.unify(src.dims[d], idx.dims[0])
    ctx.mixes(src.dims[d], _SUMMED)
    return x


_ACCUMULATING = {"scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_",
                 torch.scatter_add, torch.scatter_reduce}


@RULES.rule(torch.scatter, "scatter", "scatter_", torch.scatter_add, "scatter_add",
            "scatter_add_", torch.scatter_reduce, "scatter_reduce", "scatter_reduce_")
def scatter(ctx) -> TV:
    """``out = x; out[..., idx[..., j, ...], ...] = src[..., j, ...]`` along ``d``
    (``scatter_add``/``scatter_reduce`` combine the entries written to one position).

    Along ``d`` the index picks positions of ``x`` (fixed); along the other dims
    ``x``, the index and ``src`` are read at the same position (one layout; fixed
    where they differ in size).  The entries along ``d`` of the index and ``src``
    are written (or summed) into the picked positions: where they combine, a
    neuron dim there blocks.  A scalar ``src`` (``scatter(x, d, idx, value)``)
    writes one value everywhere.
    """
    xn, idxn = ctx.arg(0, "input"), ctx.arg(2, "index")
    x = ctx.tensor(xn)
    d = dim_index(ctx.arg(1, "dim"), x.ndim)
    idx = _positions(ctx, idxn)
    srcn = ctx.arg(3, "src", None)
    if srcn is None:
        srcn = ctx.arg(3, "value", None)
    tensors = [(idx, _shape(ctx, idxn))]
    if isinstance(srcn, fx.Node):
        tensors.append((ctx.tensor(srcn), _shape(ctx, srcn)))
    sx = _shape(ctx, xn)
    if any(len(s) != len(sx) for _, s in tensors):
        raise RuleError("scatter with operands of other ranks")
    ctx.fix(x.dims[d], _PICKED)
    for e in range(x.ndim):
        pairs = [(t.dims[e], s[e]) for t, s in tensors]
        if e == d:
            _aligned(ctx, pairs, "scattered from a prefix")
            if ctx.node.target in _ACCUMULATING or ctx.arg(4, "reduce", None) is not None:
                for lay, _ in pairs:
                    ctx.mixes(lay, _SUMMED)
        else:
            _aligned(ctx, pairs + [(x.dims[e], sx[e])], "scattered into a prefix")
    return x


@RULES.rule("index_put", "index_put_", torch.index_put, torch.index_put_)
def index_put(ctx) -> TV:
    """``out = x; out[indices] = values`` (``+=`` with ``accumulate``).

    The region written is laid out like ``x[indices]``
    (:func:`~fxgrow.rules.slicing.index_layouts`: the indexed dims fixed, the
    others passing) and ``values`` broadcasts into it like an elementwise
    operand.  Accumulated entries are summed per position, so the index's own
    dims then block neurons (tokens pass); written ones are not (copies write
    copies).  A boolean mask (``h[input_ids == token_id] = emb``) writes the
    positions it selects: the dims it covers and its own are fixed, the others
    pass (``emb``'s features are ``h``'s).
    """
    x = ctx.tensor(ctx.arg(0, "input"))
    indices, valn = ctx.arg(1, "indices"), ctx.arg(2, "values")
    if not isinstance(indices, (tuple, list)) or not isinstance(valn, fx.Node):
        raise RuleError("index_put with indices that are not a list of tensors")
    items = [slice(None) if i is None else i for i in indices]
    if not any(isinstance(i, fx.Node) for i in items):
        raise RuleError("index_put without an index tensor")
    for i in items:
        if isinstance(i, fx.Node) and ctx.spec(i).dtype not in (torch.bool, torch.uint8):
            _positions(ctx, i)
    region, picked = index_layouts(ctx, x, items, _shape(ctx, valn))
    rshape = tuple(ctx.norm(lay).size for lay in region)
    broadcast(ctx, [region, ctx.tensor(valn).dims], [rshape, _shape(ctx, valn)], rshape)
    if ctx.arg(3, "accumulate", False):
        for lay in picked:
            ctx.mixes(lay, _SUMMED)
    return x


@RULES.rule(torch.masked_scatter, "masked_scatter", "masked_scatter_")
def masked_scatter(ctx) -> TV:
    """``x.masked_scatter(mask, src)``: the entries of ``x`` where ``mask`` (broadcast to
    ``x``) holds take ``src``'s entries one after another, in row-major order.

    The mask varies over some leading dims of ``x`` and is constant (size 1:
    ``mask.unsqueeze(-1)``, one flag per token) over the trailing dims after the
    last of them, so it selects whole blocks ``x[i, j, :]`` of those dims.
    Where ``src`` ends with the same dims (``(n, features)``), the ``k``-th block
    selected is ``src``'s ``k``-th row, read in full: there the two are one
    layout, and copies of a neuron are written onto copies.  The dims the mask
    varies over, the mask's own and ``src``'s rows are positions (fixed): a
    mask holding neurons would select copies of them, so a different number of
    entries.
    """
    xn, mn, sn = ctx.arg(0, "input"), ctx.arg(1, "mask"), ctx.arg(2, "source")
    x, mask, src = ctx.tensor(xn), ctx.tensor(mn), ctx.tensor(sn)
    sx, sm, ss = _shape(ctx, xn), _shape(ctx, mn), _shape(ctx, sn)
    if len(sm) > len(sx):
        raise RuleError("masked_scatter with a mask of higher rank")
    pad = len(sx) - len(sm)
    full = (1,) * pad + tuple(sm)
    k = max((d + 1 for d in range(len(sx)) if full[d] != 1), default=0)
    block = tuple(sx[k:])
    if len(ss) < len(block) + (1 if block else 0) or tuple(ss[len(ss) - len(block):]) != block:
        raise RuleError("masked_scatter from a source whose rows are not the blocks "
                        "the mask selects")
    for d in range(len(sx)):
        if d < k:
            ctx.fix(x.dims[d], _MASKED)
        if d >= pad:
            ctx.fix(mask.dims[d - pad], _MASKED)
    rows = len(ss) - len(block)
    for lay in src.dims[:rows]:
        ctx.fix(lay, _MASKED)
    for a, b in zip(x.dims[k:], src.dims[rows:]):
        ctx.unify(a, b)
    return x


@RULES.rule("copy_")
def copy(ctx) -> TV:
    """``x.copy_(src)``: ``x`` takes ``src``'s values, broadcast to ``x``'s shape, so the
    two are laid out alike (an elementwise write)."""
    xn, srcn = ctx.arg(0, "input"), ctx.arg(1, "src")
    x = ctx.tensor(xn)
    if isinstance(srcn, fx.Node):
        src = ctx.tensor(srcn)
        broadcast(ctx, [x.dims, src.dims], [_shape(ctx, xn), _shape(ctx, srcn)],
                  _shape(ctx, xn))
    return x


# -- ops that read positions ---------------------------------------------------------------
_POSITIONS = "reads the positions along this dimension"


@RULES.rule(torch.tril, "tril", "tril_", torch.triu, "triu", "triu_")
def tril(ctx) -> TV:
    """``tril``/``triu`` keep an entry by its row and column: both are positions
    (fixed; a causal mask's are tokens), the other dims pass."""
    x = ctx.tensor(ctx.arg(0, "input"))
    if x.ndim < 2:
        raise RuleError("tril of fewer than two dims")
    for lay in x.dims[-2:]:
        ctx.fix(lay, _POSITIONS)
    return x


@RULES.rule(torch.flip, "flip")
def flip(ctx) -> TV:
    """``flip(x, dims)`` reverses positions: the flipped dims are fixed."""
    x = ctx.tensor(ctx.arg(0, "input"))
    dims = ctx.arg(1, "dims")
    for d in (dims if isinstance(dims, (tuple, list)) else (dims,)):
        ctx.fix(x.dims[dim_index(d, x.ndim)], _POSITIONS)
    return x


@RULES.rule(torch.diff, "diff")
def diff(ctx) -> TV:
    """``diff(x, n, dim)``: differences of neighbouring positions along ``dim`` (fixed;
    a new, shorter dim), the other dims pass."""
    x = ctx.tensor(ctx.arg(0, "input"))
    if ctx.arg(3, "prepend", None) is not None or ctx.arg(4, "append", None) is not None:
        raise RuleError("diff with prepended or appended values")
    d = dim_index(ctx.arg(2, "dim", -1), x.ndim)
    ctx.fix(x.dims[d], _POSITIONS)
    return TV(x.dims[:d] + (ctx.free(ctx.out_shape[d]),) + x.dims[d + 1:])
