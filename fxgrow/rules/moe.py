"""Mixture-of-experts: the grouped matmul that runs every expert at once.

HuggingFace's MoE blocks sort the routed tokens by expert and run one
*grouped* matmul per projection: ``out[s] = x[s] @ W[e(s)]`` for rows ``s`` of
expert ``e(s)`` (the rows of expert ``e`` are ``offs[e-1]:offs[e]``), with
``W`` of shape ``(E, K, N)`` -- ``transformers::grouped_mm_fallback`` on CPU
and in float32, ``torch._grouped_mm`` / ``F.grouped_mm`` where the kernel
exists.  Each expert is a linear layer with a batch (expert) dim in front: its
``K`` columns consume the input's features and its ``N`` rows produce the
output's, so expert widths grow like any MLP's and the model dim passes
through the experts like through a Linear.  The expert dim is fixed (the
router's offsets count experts), and so are the rows if they are neurons
(they are tokens: the offsets cut them into groups).

``torch._grouped_mm``'s kernel wants every row a multiple of 16 bytes long: a
width grown to a count that breaks that (13 float32 features) makes the grown
model raise when it runs (never a wrong result); HuggingFace's fallback has no
such limit.

The tokens reach the experts through gathers and return through a gather or
``index_add`` along the token dim (:mod:`fxgrow.rules.gathers`); the router is
a plain Linear whose expert dim ends in a softmax and ``topk``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx

from ..errors import RuleError
from ..ir.roles import CONSUMER, PRODUCER
from ..ir.values import TV
from .registry import Rule, RuleSet

__all__ = ["RULES", "grouped_mm", "custom_op_rule"]

RULES = RuleSet()


def _arg(ctx, index: int, *names: str) -> Any:
    """Argument ``index``, or the first of ``names`` given as a keyword (the ops
    spell their parameters differently)."""
    node = ctx.node
    if index < len(node.args):
        return node.args[index]
    return next((node.kwargs[n] for n in names if n in node.kwargs), None)


def grouped_mm(ctx) -> TV:
    """``grouped_mm(x (S, K), W (E, K, N), offs (E,))``: every expert a Linear.

    Exact: a copied feature of ``x`` meets its column of every expert divided by
    its count, so each row's sum is unchanged (a consumer); a copied row of
    every expert's ``N`` makes a copied output feature (a producer).  The expert
    and row dims do not grow.
    """
    xn, wn = _arg(ctx, 0, "input", "self", "mat_a"), _arg(ctx, 1, "weight", "mat2", "mat_b")
    offs, bias = _arg(ctx, 2, "offs"), _arg(ctx, 3, "bias")
    if not isinstance(xn, fx.Node) or not isinstance(wn, fx.Node):
        raise RuleError("grouped matmul of non-tensors")
    x, w = ctx.tensor(xn), ctx.tensor(wn)
    if x.ndim != 2 or w.ndim != 3 or not isinstance(offs, fx.Node):
        raise RuleError("only a grouped matmul of rows (S, K) by experts (E, K, N) with "
                        "offsets is understood")
    cols = ctx.weight(wn, 1, CONSUMER)
    rows = ctx.weight(wn, 2, PRODUCER)
    if cols is None or rows is None:
        raise RuleError("the expert weights are computed in the graph, so they cannot be "
                        "rescaled")
    ctx.unify(x.dims[1], cols)
    ctx.fix(w.dims[0], "the expert index of a grouped matmul")
    ctx.unify(ctx.tensor(offs).dims[0], w.dims[0])
    ctx.fix(x.dims[0], "rows grouped into experts by offsets")
    if bias is not None:
        b = ctx.weight(bias, 1, PRODUCER) if isinstance(bias, fx.Node) else None
        if b is None:
            raise RuleError("a grouped matmul bias that is not a parameter")
        ctx.unify(b, rows)
        ctx.fix(ctx.tensor(bias).dims[0], "the expert index of a grouped matmul")
    return TV((x.dims[0], rows))


_GROUPED = [f for f in (getattr(torch, "_grouped_mm", None), getattr(F, "grouped_mm", None))
            if f is not None]
RULES.rule(*_GROUPED, *(op for op in (getattr(getattr(torch.ops.aten, "_grouped_mm", None),
                                              "default", None),) if op is not None),
           name="grouped_mm")(grouped_mm)

#: custom ops of other libraries, by their schema name (registered when the library loads)
_CUSTOM = {"transformers::grouped_mm_fallback": Rule(grouped_mm, "grouped_mm")}


def custom_op_rule(target: Any) -> Optional[Rule]:
    """The rule of a library's custom op (``torch.ops.transformers.grouped_mm_fallback``),
    found by its schema name, so fxgrow need not import the library."""
    if isinstance(target, torch._ops.OpOverload):
        return _CUSTOM.get(target.name())
    return None
