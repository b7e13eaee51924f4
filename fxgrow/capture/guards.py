"""Shape guards of an exported graph, failing with a reason instead of a bare assert.

``torch.export`` records the conditions the model's Python took for granted on the
example (``1 + x.size(0) % 3 == 3`` when a loop runs ``x.size(0) % 3 + 1`` times),
and ``ExportedProgram.module()`` checks them in a ``_guards_fn`` submodule called
first in ``forward``.  A graph holds one path through the model's Python: the
branch the example took.  Called with inputs outside those conditions it would
compute something else, so the check is right to stop it, but torch's bare
``AssertionError: Guard failed: ...`` tells the user neither why nor what to do.

:func:`explain_guards` wraps that submodule so the failure is a
:class:`~fxgrow.errors.ShapeGuardError` (an ``AssertionError`` too, so code that
caught torch's keeps working) that names the condition and the ways around it.
The wrapper is an ordinary submodule: it survives copies and growth of the graph.

The user's own class grown (``widen(..., output="module")``, a target
:func:`fxgrow.grow_into` filled) runs its own ``forward``, which may take another path
outside those conditions (another loop count routes the neurons through other layers
than the growth was planned for).
:func:`guard_module` gives it the same check, as a forward pre-hook, so it too is
exact or stops with the reason.  The hook checks calls whose inputs have the
example's structure (the same arguments given); the paths of other call structures
were not captured, as for any model grown from one example.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, List, Optional, Sequence, Tuple

from torch import fx, nn

from ..errors import ShapeGuardError

__all__ = ["explain_guards", "GuardCheck", "guard_module", "InputGuard"]

_NAME = "_guards_fn"


class GuardCheck(nn.Module):
    """Runs ``torch.export``'s guard function; a failed guard raises
    :class:`~fxgrow.errors.ShapeGuardError` naming the condition.

    Examples
    --------
    >>> import torch, fxgrow
    >>> class Loop(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         h = self.a(x)
    ...         for _ in range(x.shape[0] % 3):  # the loop count depends on the batch
    ...             h = torch.tanh(h)
    ...         return self.b(h)
    >>> g = fxgrow.widen(Loop(), torch.randn(2, 4), 2.0, capture="export")
    >>> try:
    ...     g(torch.randn(3, 4))
    ... except fxgrow.ShapeGuardError as e:
    ...     print(str(e).splitlines()[0])
    fxgrow grew this model from a capture that holds for inputs where `x.size()[0] % 3 == 2`, and these inputs break it
    """

    # export marks its guard call impure, so dead-code elimination keeps it
    _is_impure = True

    def __init__(self, guards: nn.Module, conditions: Optional[Sequence[str]] = None):
        super().__init__()
        self.guards = guards
        #: the conditions as torch.export wrote them (None: not known)
        self.conditions = None if conditions is None else tuple(conditions)

    def forward(self, *args: Any) -> None:
        try:
            self.guards(*args)
        except AssertionError as e:
            if isinstance(e, ShapeGuardError):
                raise
            cond = str(e).split("Guard failed:", 1)[-1].strip() or str(e)
            raise ShapeGuardError(_failure(cond)) from e


def _failure(cond: str) -> str:
    return (f"fxgrow grew this model from a capture that holds for inputs where `{cond}`, "
            "and these inputs break it\n"
            "  The model's Python depends on the inputs there (a branch, a loop count, a size "
            "read as a number) and the growth was proven on the path the example took. Call it "
            "with inputs that keep the condition, or grow it from an example like these inputs.")


def explain_guards(gm: Any, ep: Any = None) -> Any:
    """Wrap ``gm._guards_fn`` (if any) in a :class:`GuardCheck`, in place; returns ``gm``.

    Only for a module fxgrow itself just made from ``ep``, an ``ExportedProgram``
    (never the user's module).
    """
    if not isinstance(gm, fx.GraphModule):
        return gm
    guards = getattr(gm, _NAME, None)
    if isinstance(guards, nn.Module) and not isinstance(guards, GuardCheck):
        code = getattr(ep, "_guards_code", None)  # private: absent in other torch versions
        # (deduplicated: a model grown before checks them in a hook export traces again)
        conditions = list(dict.fromkeys(str(c) for c in code)) \
            if isinstance(code, (list, tuple)) else None
        setattr(gm, _NAME, GuardCheck(guards, conditions))
    return gm


class InputGuard:
    """Forward pre-hook (``with_kwargs=True``): the capture's guards on a call's inputs.

    A call is bound to ``forward``'s signature (``m(x)`` and ``m(x=x)`` alike) and each
    condition torch.export wrote (``L['x'].size()[0] % 3 == 2``) is evaluated on the
    bound arguments.  Holds only the conditions' text and the example's argument names,
    so the module it is registered on still pickles (``torch.save(model)``) and copies.
    """

    #: it raises or returns None, never changes an input: capture may look through it
    checks_only = True

    def __init__(self, conditions: Sequence[str], given: Sequence[str]):
        self.conditions, self.given = tuple(conditions), frozenset(given)

    def __getstate__(self) -> dict:
        return {"conditions": self.conditions, "given": self.given}  # not the compiled code

    def _compiled(self) -> Tuple[List[Tuple[str, Any]], dict]:
        """The conditions compiled, and the names they may call: made once per hook
        (and again after unpickling), not on every call."""
        made = self.__dict__.get("_code")
        if made is None:
            made = self.__dict__["_code"] = (
                [(c, compile(c, "<guard>", "eval")) for c in self.conditions], _namespace())
        return made

    def __call__(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        try:
            bound = inspect.signature(module.forward).bind(*args, **kwargs)
        except (TypeError, ValueError):
            return None  # not a call of this forward: it raises its own error
        if set(bound.arguments) != self.given:
            return None  # other arguments given: another call, not the captured one
        bound.apply_defaults()
        scope = {"L": dict(bound.arguments)}
        compiled, names = self._compiled()
        for cond, code in compiled:
            try:
                holds = bool(eval(code, names, scope))  # noqa: S307 - export's own text
            except Exception:  # noqa: BLE001 - a condition these inputs cannot answer
                return None
            if not holds:
                raise ShapeGuardError(_failure(re.sub(r"L\['([^']+)'\]", r"\1", cond)))
        return None


def _namespace() -> dict:
    """What export's guard text may call (``Max``, ``Mod``, ...), as its own check has."""
    try:
        from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP
    except ImportError:  # pragma: no cover - older torch
        return {}
    return dict(SYMPY_INTERP)


def guard_module(module: nn.Module, gm: Any) -> nn.Module:
    """Register :class:`InputGuard` on ``module`` (fxgrow's own copy of the user's
    model, grown, or the target :func:`fxgrow.grow_into` filled) when ``gm``, the graph
    it was grown from, checks guards; an earlier :class:`InputGuard` is replaced."""
    guards = getattr(gm, _NAME, None)
    info = getattr(getattr(getattr(gm, "graph", None), "_codegen", None), "pytree_info", None)
    if not isinstance(guards, GuardCheck) or not guards.conditions or info is None \
            or info.in_spec is None:
        return module
    try:
        n = info.in_spec.children_specs[0].num_children
        keys = info.in_spec.children_specs[1].context
        given = tuple(inspect.signature(module.forward).parameters)[:n] + tuple(keys)
    except (TypeError, ValueError, AttributeError, IndexError):
        return module
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, InputGuard):  # grown again: the new capture's guards replace it
            del module._forward_pre_hooks[key]
            module._forward_pre_hooks_with_kwargs.pop(key, None)
    module.register_forward_pre_hook(InputGuard(guards.conditions, given), with_kwargs=True)
    return module
