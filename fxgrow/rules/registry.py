"""The rule table: one map from ops to the rules that read them.

Keys are ``nn.Module`` classes (for ``call_module`` nodes), functions
(``call_function``), method names (``call_method``, given as strings) and
qualified function names (``"module.qualname"``, so that fxgrow never has to
import a package such as torchvision to know its ops).  A rule is a function
of one :class:`fxgrow.analysis.context.RuleContext` that returns the abstract
value of the node's output (see :mod:`fxgrow.ir.values`).  Ops without a rule
block every space they touch, so a missing rule can cost growth but never
correctness.

Built-in rules are collected per module in a :class:`RuleSet` and installed
by :mod:`fxgrow.rules` explicitly; users add rules for their own ops and leaf
modules with :func:`register_rule`.

>>> import torch, fxgrow.rules
>>> lookup(torch.nn.Linear).name, lookup("view").name, lookup(torch.nn.Bilinear) is None
('linear', 'reshape', True)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch import nn

from .. import checks
from ..capture.functions import autograd_function_of
from ..errors import SpecError

__all__ = ["Rule", "RuleSet", "register_rule", "install", "lookup", "has_module_rule",
           "add_fallback", "RULES", "RULES_BY_NAME"]

Key = Union[type, Callable[..., Any], str]


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
#: rules of third-party functions, keyed by "module.qualname"
RULES_BY_NAME: Dict[str, Rule] = {}
#: consulted in order when the table has no rule for a target (the ATen front end)
_FALLBACKS: List[Callable[[Any], Optional[Rule]]] = []


def _put(targets: Tuple[Key, ...], rule: Rule, override: bool) -> None:
    for t in targets:
        table = RULES_BY_NAME if isinstance(t, str) and "." in t else RULES
        if override or t not in table:
            table[t] = rule


class RuleSet:
    """Rules collected by one module, installed into the table by :func:`install`.

    >>> rs = RuleSet()
    >>> @rs.rule("my_method")
    ... def mine(ctx): ...
    >>> [(t, r.name) for t, r in rs.entries]
    [('my_method', 'mine')]
    """

    def __init__(self) -> None:
        self.entries: List[Tuple[Key, Rule]] = []

    def rule(self, *targets: Key, accepts_sizes: bool = False, name: Optional[str] = None):
        """Decorator: ``fn`` is the rule of every target (see :func:`register_rule`)."""
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            rule = Rule(fn, name or fn.__name__, accepts_sizes)
            self.entries += [(t, rule) for t in targets]
            return fn
        return deco


def install(ruleset: RuleSet, override: bool = False) -> None:
    """Put a rule set's rules into the table (keeping rules already there unless ``override``)."""
    for target, rule in ruleset.entries:
        _put((target,), rule, override)


def register_rule(*targets: Key, accepts_sizes: bool = False, name: Optional[str] = None,
                  override: bool = True):
    """Decorator registering ``fn`` as the rule of every target.

    Parameters
    ----------
    *targets : module class, function, method name (str) or qualified function name
        The ops the rule describes.  A ``torch.autograd.Function`` subclass describes its
        calls (``MyFn.apply(x)``, kept as calls by torch.fx capture).  A string with a dot names a function by
        ``"module.qualname"`` (``"torchvision.ops.stochastic_depth.stochastic_depth"``),
        without importing it; a string without one is a ``Tensor`` method.
    accepts_sizes : bool
        See :class:`Rule`.
    name : str, optional
        A name for messages and visualisation (default: the function's).
    override : bool
        Replace an existing rule (default) instead of keeping it.

    Raises
    ------
    SpecError
        No target, or a target that is none of those (``register_rule(12345)``).
    """
    checks.rule_targets(targets)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise SpecError(f"a rule is a function of a RuleContext, not {type(fn).__name__}")
        _put(targets, Rule(fn, name or fn.__name__, accepts_sizes), override)
        return fn
    return deco


def has_module_rule(module: nn.Module) -> bool:
    """Whether the table has a rule for ``module``'s class: tracing keeps it a leaf."""
    return lookup(type(module)) is not None


def add_fallback(fallback: Callable[[Any], Optional[Rule]]) -> None:
    """Consult ``fallback(target)`` for targets the table has no rule for."""
    if fallback not in _FALLBACKS:
        _FALLBACKS.append(fallback)


def lookup(target: Key) -> Optional[Rule]:
    """The rule for ``target``, or None.

    Module classes match exactly; a subclass of a registered class matches
    only if no class between them defines a method other than the harmless
    ones in :data:`_HARMLESS` (overriding ``forward``, ``__call__`` or a helper
    such as ``_conv_forward`` computes something else).
    """
    rule = RULES.get(target) if not isinstance(target, str) or "." not in target else None
    kept = autograd_function_of(target) if rule is None else None
    if kept is not None:
        rule = RULES.get(kept)  # a custom Function's call, kept by capture: its class's rule
    if rule is None and callable(target):  # functions and classes by qualified name
        name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
        rule = RULES_BY_NAME.get(name)
    for fallback in _FALLBACKS:
        if rule is not None:
            break
        # torch.export front end: an ATen overload (aten.linear.default, ...) runs
        # the rule of the canonical op it computes (fxgrow/rules/aten.py); a rule
        # registered for the overload itself wins.
        rule = fallback(target)
    if rule is not None or not isinstance(target, type) or not issubclass(target, nn.Module):
        return rule
    mro = inspect.getmro(target)
    for i, base in enumerate(mro[1:], 1):
        if base in RULES:
            if all(_only_harmless(cls) for cls in mro[:i]):
                return RULES[base]
            return None
    return None


#: methods a subclass may define and still compute what its base computes
_HARMLESS = frozenset({"__init__", "extra_repr", "reset_parameters", "__repr__", "__setstate__",
                       "_load_from_state_dict", "_save_to_state_dict", "_get_name"})


def _only_harmless(cls: type) -> bool:
    return all(not callable(v) or k in _HARMLESS or (k.startswith("__") and k.endswith("__")
                                                    and k not in ("__call__", "__getattr__"))
               for k, v in vars(cls).items() if not isinstance(v, (staticmethod, classmethod))
               ) and not any(isinstance(v, property) for v in vars(cls).values())
