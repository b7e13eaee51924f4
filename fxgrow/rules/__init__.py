"""The rule table: what each op does to neuron spaces.

One table maps an op to its rule.  Keys are ``nn.Module`` classes (for
``call_module`` nodes), functions (``call_function``) and method names
(``call_method``, given as strings).  A rule is a function of one
:class:`fxgrow.analysis.RuleContext` that returns the abstract value of the
node's output (see :mod:`fxgrow.values`).  Ops without a rule block every
space they touch, so a missing rule can cost growth but never correctness.

Users add rules for their own ops and leaf modules with
:func:`register_rule`:

>>> import torch
>>> from fxgrow.rules import register_rule, elementwise
>>> class MyAct(torch.nn.Module):
...     def forward(self, x):
...         return x.clamp(min=0) * 2
>>> _ = register_rule(MyAct)(elementwise)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

from torch import nn

from ..errors import RuleError

__all__ = ["Rule", "register_rule", "lookup", "node_arg", "RULES", "RULES_BY_NAME"]

Key = Union[type, Callable[..., Any], str]

#: rules of third-party functions, keyed by "module.qualname" so that fxgrow
#: never has to import the package (e.g. torchvision) to know its ops
RULES_BY_NAME: Dict[str, "Rule"] = {}


@dataclass(frozen=True)
class Rule:
    """A registered rule.

    ``accepts_sizes``: the rule understands integer arguments read from a
    neuron dimension's size (``x.size(1)``) and rewrites or propagates them
    itself; for any other rule such arguments block the spaces they came from,
    since the value would silently change when the space grows.
    """

    fn: Callable[..., Any]
    name: str
    accepts_sizes: bool = False


RULES: Dict[Key, Rule] = {}

#: ``node_arg``'s default: the argument is required
MISSING = object()


def node_arg(node: Any, index: Optional[int], name: Optional[str] = None,
             default: Any = MISSING) -> Any:
    """A node's raw argument by position or keyword, as every rule reads them.

    ``node`` is an ``fx.Node`` (or a view of one with canonical arguments);
    a missing argument without ``default`` is a ``RuleError``, which blocks.
    """
    if index is not None and index < len(node.args):
        return node.args[index]
    if name is not None and name in node.kwargs:
        return node.kwargs[name]
    if default is MISSING:
        raise RuleError(f"missing argument {name or index}")
    return default

#: set by fxgrow/rules/aten.py: the rule of an ATen overload, or None
_aten_hook: Optional[Callable[[Any], Optional[Rule]]] = None


def register_rule(*targets: Key, accepts_sizes: bool = False, name: Optional[str] = None,
                  override: bool = True):
    """Decorator registering ``fn`` as the rule of every target.

    Parameters
    ----------
    *targets : module class, function, method name (str) or qualified function name
        The ops the rule describes.  A string with a dot names a function by
        ``"module.qualname"`` (``"torchvision.ops.stochastic_depth.stochastic_depth"``),
        without importing it; a string without one is a ``Tensor`` method.
    accepts_sizes : bool
        See :class:`Rule`.
    name : str, optional
        A name for messages and visualisation (default: the function's).
    override : bool
        Replace an existing rule (default) instead of keeping it.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        rule = Rule(fn, name or fn.__name__, accepts_sizes)
        for t in targets:
            table = RULES_BY_NAME if isinstance(t, str) and "." in t else RULES
            if override or t not in table:
                table[t] = rule
        return fn

    return deco


def lookup(target: Key) -> Optional[Rule]:
    """The rule for ``target``, or None.

    Module classes match exactly; a subclass of a registered class matches
    only if it does not override ``forward`` (so it computes the same thing).
    """
    rule = RULES.get(target) if not isinstance(target, str) or "." not in target else None
    if rule is None and callable(target) and not isinstance(target, type):
        name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
        rule = RULES_BY_NAME.get(name)
    if rule is None and _aten_hook is not None:
        # torch.export front end: an ATen overload (aten.linear.default, ...) runs
        # the rule of the canonical op it computes, through an argument adapter
        # (fxgrow/rules/aten.py); a rule registered for the overload itself wins.
        rule = _aten_hook(target)
    if rule is not None or not isinstance(target, type) or not issubclass(target, nn.Module):
        return rule
    for base in inspect.getmro(target)[1:]:
        if base in RULES:
            if base.forward is target.forward:
                return RULES[base]
            return None
    return None


def _load_builtin() -> None:
    from . import elementwise as _e, layers as _l, shape_ops as _s, reductions as _r  # noqa: F401
    from . import attention as _a, einsum as _es, torchvision_ops as _tv  # noqa: F401


from .elementwise import elementwise  # noqa: E402  (re-exported for users)

_load_builtin()

# The torch.export front end: ATen overloads read as canonical ops (rules/aten.py).
from . import aten as _aten  # noqa: E402,F401
_aten_hook = _aten.aten_rule
