"""Tensors made in forward: ``zeros``/``ones``/``full``/``empty``, ``arange``, ``one_hot``.

A tensor filled with one value (``zeros(B, T, C)``, ``x.new_ones(n)``,
``full(size, v)``) holds the same value at every position, so *any* layout
describes it exactly: copies of a constant are the same constant.  Each dim
therefore gets a fresh space, whatever its size was read from (a literal --
under ``torch.export`` every static size is one -- or ``x.size(1)``), and
whatever the tensor is later combined with decides whether that space grows
(``h + zeros(B, C)`` joins ``C`` to ``h``'s group); selecting from it pins
nothing of the tensor its size was read from.  The size entries are
recomputed after growth from those spaces, like a view's sizes.  ``empty``
is laid out the same way (its values are written before they are read).

``arange`` and ``eye`` are not constant: their values are positions, so a dim
they are sized by must keep its size (fixed); ``one_hot`` adds a class dim
whose positions are the index's values (a new fixed dim).  A value read from a
neuron count (``full(size, x.size(-1))``) would change with the width: it
blocks that width.

:func:`is_constant` tells the indexing rules when a tensor holds one value
everywhere: selecting an entry of it reads no neuron, so it need not pin one.
"""

from __future__ import annotations

import operator
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx

from .. import meta
from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.values import TV, SizeOf, iter_sizes
from ..ops.aten import canonical_target
from ..ops.kinds import MOVE, is_op, node_inputs
from .elementwise import same_as_input
from .registry import RuleSet
from .views import _shape_literal

__all__ = ["RULES", "filled", "empty_like", "arange", "eye", "one_hot", "is_constant"]

RULES = RuleSet()

_FILLED = {torch.zeros: 0, torch.ones: 0, torch.empty: 0, torch.full: 0,
           "new_zeros": 1, "new_ones": 1, "new_empty": 1, "new_full": 1}
#: ops whose value is the same at every position
CONSTANTS = {torch.zeros, torch.ones, torch.full, "new_zeros", "new_ones", "new_full",
             torch.zeros_like, torch.ones_like, torch.full_like, torch.scalar_tensor}


#: moves that keep a constant constant (not dropout: in training it is a random mask)
_KEEPS = MOVE - {F.dropout}


def is_constant(node: Any) -> bool:
    """Whether ``node`` holds one value at every position: a filled tensor, or a move
    (view, cast, expand, slice, ...) of one, that nothing writes into in place."""
    for _ in range(64):  # a chain of moves; graphs are acyclic
        if not isinstance(node, fx.Node) or node.op not in ("call_function", "call_method"):
            return False
        try:
            if canonical_target(node) in CONSTANTS:
                return not _written(node)
        except TypeError:  # an unhashable target
            return False
        tensors = [n for n in node_inputs(node) if isinstance(meta.shape(n), TensorSpec)]
        if not is_op(node, _KEEPS) or len(tensors) != 1:
            return False
        node = tensors[0]
    return False


def _in_place(node: fx.Node) -> bool:
    """Whether ``node`` may write into one of its inputs (``x[i] = v``, ``x.add_(y)``,
    ``out=``, a mutating ATen overload)."""
    if node.target is operator.setitem or "out" in node.kwargs:
        return True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if isinstance(node.target, torch._ops.OpOverload):
        return node.target._schema.is_mutable
    name = getattr(node.target, "__name__", "")
    return name.endswith("_") and not name.endswith("__")


def _written(origin: fx.Node) -> bool:
    """Whether anything writes into ``origin`` or a view (a move) of it."""
    todo, seen = [origin], set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for user in node.users:
            if user.op in ("call_function", "call_method") and _in_place(user):
                return True
            if is_op(user, MOVE):
                todo.append(user)
    return False


def _entries(ctx, pos: int) -> Tuple[List[Any], Any]:
    """The size entries of a factory call (a list at ``pos``, ``size=``, ``x.size()`` or
    varargs), and ``rebuild(new)`` giving the call's ``(args, kwargs)`` with them replaced."""
    node = ctx.node
    args = list(node.args)
    if "size" in node.kwargs:
        raw = node.kwargs["size"]
        return list(raw), lambda new: (tuple(args), {**node.kwargs, "size": type(raw)(new)})
    if len(args) > pos and isinstance(args[pos], (list, tuple)):
        raw = args[pos]
        return list(raw), lambda new: (tuple(args[:pos]) + (type(raw)(new),)
                                       + tuple(args[pos + 1:]), dict(node.kwargs))
    if len(args) > pos and isinstance(args[pos], fx.Node) and isinstance(ctx.value(args[pos]), tuple):
        whole = args[pos]  # zeros(x.size())
        return [whole] * len(ctx.value(whole)), lambda new: (
            tuple(args[:pos]) + (tuple(new),) + tuple(args[pos + 1:]), dict(node.kwargs))
    if node.target in (torch.full, "new_full"):
        raise RuleError("cannot read the size of a full")
    return args[pos:], lambda new: (tuple(args[:pos]) + tuple(new), dict(node.kwargs))


@RULES.rule(*_FILLED, accepts_sizes=True)
def filled(ctx) -> TV:
    """``zeros``/``ones``/``empty``/``full`` and the ``new_*`` methods: one value everywhere.

    Each dim is a fresh space, related to nothing until the tensor is combined
    with another; the size entries are rewritten to the new sizes when those
    spaces grow (an entry read from a size stays as it is while neither it nor
    its dim grows, so a dynamic batch size stays dynamic).  Exact: a constant is
    its own copy, whatever the index map.
    """
    out_shape = ctx.out_shape
    pos = _FILLED[ctx.node.target]
    entries, rebuild = _entries(ctx, pos)
    if len(entries) != len(out_shape):
        raise RuleError("cannot read the size of the new tensor")
    dims = [ctx.fresh(n) for n in out_shape]
    fill = ctx.arg(pos + 1, "fill_value", None) if ctx.node.target in (torch.full, "new_full") \
        else None
    for sz in iter_sizes(ctx.value(fill)):
        for lay in sz.layouts:
            ctx.block(lay, "a neuron count read by `size` fills a tensor")
    _shape_literal(ctx, entries, dims, rebuild)
    return TV(tuple(dims))


@RULES.rule(torch.empty_like)
def empty_like(ctx) -> TV:
    """``empty_like(x)``: laid out like ``x`` (its values are written before they are
    read); not a move of ``x``'s values."""
    return same_as_input(ctx)


def _positions_of(ctx, raw: Any, why: str) -> Optional[Layout]:
    """Fix the layouts an int argument was read from (the values are positions);
    the layout itself if it is one whole dim's."""
    v = ctx.value(raw) if isinstance(raw, fx.Node) else raw
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return None
    if not isinstance(v, SizeOf):
        raise RuleError(f"a non-literal {why}")
    for lay in v.layouts:
        ctx.fix(lay, f"its size counts the positions of {why}")
    return v.layouts[0] if len(v.layouts) == 1 and ctx.norm(v.layouts[0]).size == v.value \
        else None


@RULES.rule(torch.arange, accepts_sizes=True)
def arange(ctx) -> TV:
    """``arange(end)``/``arange(start, end, step)``: positions, so a dim it is sized by
    keeps its size (fixed); the result has that dim's layout (``arange(x.size(1))``
    indexes the same positions as ``x``'s dim 1) or a new fixed one."""
    node = ctx.node
    bounds = list(node.args[:3]) + [node.kwargs[k] for k in ("start", "end", "step")
                                    if k in node.kwargs]
    lays = [_positions_of(ctx, b, "an arange") for b in bounds]
    (n,) = ctx.out_shape
    if len(bounds) == 1 and lays[0] is not None:
        return TV((lays[0],))
    return TV((ctx.free(n),))


@RULES.rule(torch.eye, accepts_sizes=True)
def eye(ctx) -> TV:
    """``eye(n, m)``: a 1 where the row equals the column, so both are positions (fixed)."""
    for b in list(ctx.node.args[:2]) + [ctx.node.kwargs[k] for k in ("n", "m")
                                        if k in ctx.node.kwargs]:
        _positions_of(ctx, b, "an eye")
    return TV(tuple(ctx.free(n) for n in ctx.out_shape))


@RULES.rule(F.one_hot, accepts_sizes=True)
def one_hot(ctx) -> TV:
    """``one_hot(idx, n)``: the index's dims pass, the class dim is new and fixed (its
    positions are the index's values)."""
    idx = ctx.tensor(ctx.arg(0, "input"))
    _positions_of(ctx, ctx.arg(1, "num_classes", -1), "a one-hot class")
    return TV(idx.dims + (ctx.free(ctx.out_shape[-1]),))
