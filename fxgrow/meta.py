"""The ``fxgrow.*`` keys in ``node.meta`` and ``graph_module.meta``, behind accessors.

Passes hand results on through the graph, as torch.fx's own passes do
(``ShapeProp`` writes ``node.meta["tensor_meta"]``).  Every key fxgrow writes
is named here once; code reads and writes them through these functions, so a
key cannot be misspelt and its meaning is documented in one place.

Per node (written by capture and analysis):

========================  ==============================================================
``fxgrow.shape``          :class:`~fxgrow.capture.shapes.TensorSpec` (or tuple / value)
``fxgrow.value``          the abstract value: layouts per dim, in group ids
``fxgrow.op``             the op's display name (``nn.Linear``, ``aten.view.default``)
``fxgrow.rule``           the name of the rule that read the node (None: no rule)
``fxgrow.blocked``        why the node blocked what it touched
``fxgrow.reparam``        a weight computed from parameters that growth re-derives
                          (:class:`~fxgrow.ir.reparam.WeightNorm`: ``g * v / ||v||``)
========================  ==============================================================

Per grown module (``gm.meta``, written by the entry points, documented for users):
``fxgrow.capture``, ``fxgrow.plan``, ``fxgrow.init``, ``fxgrow.report``,
``fxgrow.growth`` (the gradient map :func:`fxgrow.grow_optimizer` reads, a
:class:`fxgrow.widen.record.GrowthRecord`), ``fxgrow.deepen``, ``fxgrow.deepen_skipped``,
``fxgrow.warnings`` (the message of every :class:`~fxgrow.errors.GrowthWarning` the call
gave, e.g. that nothing grows).

>>> class N: meta = {}
>>> n = N(); set_op(n, "nn.Linear"); op(n)
'nn.Linear'
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

__all__ = ["PREFIX", "SHAPE", "VALUE", "OP", "RULE", "BLOCKED", "CAPTURE", "PLAN", "INIT",
           "REPORT", "GROWTH", "DEEPEN", "DEEPEN_SKIPPED", "WARNINGS", "shape", "set_shape",
           "value", "set_value",
           "op", "set_op", "rule", "set_rule", "blocked", "set_blocked", "REPARAM", "reparam",
           "set_reparam", "clear"]

PREFIX = "fxgrow."
SHAPE, VALUE, OP, RULE, BLOCKED = (PREFIX + k for k in ("shape", "value", "op", "rule", "blocked"))
CAPTURE, PLAN, INIT, REPORT = (PREFIX + k for k in ("capture", "plan", "init", "report"))
DEEPEN, DEEPEN_SKIPPED = PREFIX + "deepen", PREFIX + "deepen_skipped"
WARNINGS = PREFIX + "warnings"
REPARAM = PREFIX + "reparam"
GROWTH = PREFIX + "growth"

_MISSING = object()


def shape(node: Any, default: Any = None) -> Any:
    """What capture recorded of the node's output (a TensorSpec for a tensor)."""
    return node.meta.get(SHAPE, default)


def set_shape(node: Any, spec: Any) -> None:
    node.meta[SHAPE] = spec


def value(node: Any) -> Any:
    """The node's abstract value after analysis (None before, or for untracked nodes)."""
    return node.meta.get(VALUE)


def set_value(node: Any, v: Any) -> None:
    node.meta[VALUE] = v


def op(node: Any) -> Optional[str]:
    """The op's display name, as the analysis saw it."""
    return node.meta.get(OP)


def set_op(node: Any, name: str) -> None:
    node.meta[OP] = name


def rule(node: Any, default: Any = _MISSING) -> Optional[str]:
    """The rule that read the node; None if the op had no rule."""
    return node.meta.get(RULE) if default is _MISSING else node.meta.get(RULE, default)


def set_rule(node: Any, name: Optional[str]) -> None:
    node.meta[RULE] = name


def blocked(node: Any) -> Tuple[str, ...]:
    """Why the node blocked the spaces it touched (empty if it blocked nothing)."""
    return tuple(node.meta.get(BLOCKED, ()))


def set_blocked(node: Any, why: Tuple[str, ...]) -> None:
    node.meta[BLOCKED] = tuple(why)


def reparam(node: Any) -> Any:
    """How growth re-derives the parameters this node computes a weight from (or None)."""
    return node.meta.get(REPARAM)


def set_reparam(node: Any, site: Any) -> None:
    node.meta[REPARAM] = site


def clear(node: Any) -> None:
    """Drop every ``fxgrow.*`` key (a rewritten graph's old annotations no longer hold)."""
    for key in [k for k in node.meta if k.startswith(PREFIX)]:
        del node.meta[key]
