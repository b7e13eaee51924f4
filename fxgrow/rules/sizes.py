"""Ops that read sizes: ``size()``, ``shape``, ``numel``, ``dim``; comparisons of sizes.

Their results are ints that remember which layouts they were read from
(:class:`~fxgrow.ir.values.SizeOf`), so a rule that bakes one into the
computation can be caught, and a view that uses one can be rewritten.
"""

from __future__ import annotations

import operator
from typing import Any, Tuple

import torch
from torch import fx

from ..errors import RuleError
from ..ir.layout import leaves
from ..ir.rewrites import Item
from ..ir.values import TV, SizeOf
from .common import dim_index
from .registry import RuleSet

__all__ = ["RULES", "size", "numel", "getattr_rule", "COMPARISONS", "compare"]

RULES = RuleSet()


def _sizes(ctx, x: TV, shape) -> tuple:
    return tuple(SizeOf((lay,), n) for lay, n in zip(x.dims, shape))


@RULES.rule("size")
def size(ctx) -> Any:
    """``size()``: ints that remember which layouts they were read from."""
    x = ctx.tensor(ctx.arg(0))
    shape = ctx.spec(ctx.arg(0)).shape
    d = ctx.arg(1, "dim", None)
    if d is None:
        return _sizes(ctx, x, shape)
    d = dim_index(d, x.ndim)
    return SizeOf((x.dims[d],), shape[d])


@RULES.rule("dim", "ndimension")
def ndim(ctx) -> int:
    return ctx.out_spec  # the rank never changes


@RULES.rule("numel", torch.numel)
def numel(ctx) -> SizeOf:
    x = ctx.tensor(ctx.arg(0))
    return SizeOf(tuple(x.dims), ctx.out_spec)


@RULES.rule(getattr)
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


#: Python comparisons, which :func:`compare` reads when their operands are sizes
COMPARISONS = (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge)


def _operand(ctx, raw: Any, value: Any) -> Tuple[Any, Tuple[Any, ...]]:
    """One operand of a comparison as a rewrite template, and the layouts it reads
    that hold neurons (empty: the operand stays as the graph computes it)."""
    if isinstance(value, SizeOf):
        lays = tuple(value.layouts)
        found = [leaf for lay in lays for leaf in leaves(ctx.norm(lay))]
        neurons = [leaf for leaf in found if not ctx.table.is_free(leaf.space)]
        if not neurons:  # batch, time or space only: never grows, stays dynamic
            return raw, ()
        if len(neurons) < len(found):
            for leaf in neurons:
                ctx.block(leaf, f"{ctx.node.target.__name__} compares a size made of a neuron "
                                "count and a size that depends on the input (batch, space): "
                                "the result could change with the width")
            return raw, ()
        # neurons only: a constant of the model (weights fix it, inputs do not), so the
        # grown graph compares the original count wherever it would change
        return ctx.if_grows(lays, value.value, raw), lays
    if isinstance(value, (tuple, list)):
        if isinstance(raw, (tuple, list)) and len(raw) == len(value):
            items = list(raw)
        elif isinstance(raw, fx.Node):
            items = [Item(raw, i) for i in range(len(value))]  # read back in the grown graph
        else:
            return raw, ()
        parts = [_operand(ctx, r, v) for r, v in zip(items, value)]
        lays = tuple(lay for _, ls in parts for lay in ls)
        if not lays:
            return raw, ()
        return type(value)(t for t, _ in parts), lays
    return raw, ()


def compare(ctx) -> Any:
    """``a == b`` (or ``!=``, ``<``, ...) of ints read from sizes, no tensor operand.

    A size of a dim that holds neurons is fixed by the model's weights, not by
    its input, so a comparison of such sizes (``_assert(x.shape[-1] ==
    q.shape[-1])``, a model checking its own widths) is a constant of the
    model.  Growth must not change it: where a count it reads grows, the grown
    graph compares the original count instead (a literal); elsewhere it
    compares what the graph reads, so batch and spatial sizes stay dynamic.  A
    count combined with an input-dependent size (``x.numel()``, ``1 + H * W``
    tokens) cannot be kept apart, so its neurons are blocked.

    Examples
    --------
    >>> import torch, fxgrow
    >>> class Checked(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Linear(3, 8), torch.nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         h = self.a(x)
    ...         torch._assert(h.shape[-1] == self.b.in_features, "width")
    ...         return self.b(h)
    >>> fxgrow.analyze(Checked(), torch.randn(2, 3)).group("a").growable
    True
    """
    node = ctx.node
    args, when = [], []
    for raw in node.args:
        template, lays = _operand(ctx, raw, ctx.value(raw))
        args.append(template)
        when += lays
    if node.kwargs:
        raise RuleError("a comparison with keyword arguments")
    if when:
        ctx.rewrite(tuple(args), {}, when=tuple(when))
    return ctx.out_spec
