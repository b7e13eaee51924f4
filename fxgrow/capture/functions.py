"""Custom ``torch.autograd.Function``\\ s stay calls in the graph, with their own backward.

A custom Function (a straight-through estimator, a gradient reversal, a clipped
derivative) computes a forward *and* a backward of its own.  torch.fx would trace
``MyFn.apply(x)`` by running ``MyFn.forward`` on proxies, so the graph holds the
forward's ops and autograd differentiates those: the captured (and grown) model
computes the same outputs with other gradients (a rounding STE's gradient becomes
0, a gradient reversal's sign flips), which is silently wrong for anyone who trains
it.  :func:`keeping_functions` makes the tracer record one ``call_function`` node per
call instead, whose target (:func:`function_call`) runs ``MyFn.apply`` itself, so the
graph, and every graph grown from it, backpropagates through ``MyFn.backward``.

The analysis has no rule for such a node unless the user registers one (for the
Function class: ``fxgrow.register_rule(MyFn)(rule)``), so by default it blocks the
channels the Function touches, with a reason naming it.  Functions defined inside
``torch`` (the reentrant checkpoint, ...) have the backward of their forward and are
traced through as before.

torch.export (non-strict) inlines a Function's forward the same way and offers no
hook to keep the call; :func:`watching_functions` records which custom Functions ran
while exporting, so capture can say so (the outputs are exact; the gradients through
those Functions are not theirs).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from torch import fx
from torch.utils import _pytree as pytree

__all__ = ["keeping_functions", "watching_functions", "function_call", "autograd_function_of"]

_Function = torch.autograd.Function
_CALLS: Dict[type, Callable[..., Any]] = {}


def _custom(cls: Any) -> bool:
    """A user's Function: its backward may differ from autograd of its forward."""
    mod = getattr(cls, "__module__", "") or ""
    return isinstance(cls, type) and issubclass(cls, _Function) and \
        not (mod == "torch" or mod.startswith("torch."))


def function_call(fn: type) -> Callable[..., Any]:
    """The graph target that runs ``fn.apply`` (one per Function class, so the node's
    target names it: ``mymodule.MyFn.apply``).

    >>> class Twice(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x): return 2 * x
    ...     @staticmethod
    ...     def backward(ctx, g): return 2 * g
    >>> call = function_call(Twice)
    >>> call(torch.ones(2)), autograd_function_of(call) is Twice, call.__qualname__
    (tensor([2., 2.]), True, 'Twice.apply')
    """
    call = _CALLS.get(fn)
    if call is None:
        def call(*args: Any, **kwargs: Any) -> Any:
            return fn.apply(*args, **kwargs)
        call.__name__ = "apply"
        call.__qualname__ = f"{fn.__qualname__}.apply"
        call.__module__ = fn.__module__
        call.autograd_function = fn  # type: ignore[attr-defined]
        _CALLS[fn] = call
    return call


def autograd_function_of(target: Any) -> Optional[type]:
    """The Function class a :func:`function_call` target runs, else None."""
    fn = getattr(target, "autograd_function", None)
    return fn if isinstance(fn, type) and issubclass(fn, _Function) else None


@contextlib.contextmanager
def _patched_apply(replacement: Callable[..., Any]) -> Iterator[None]:
    original = _Function.__dict__["apply"]

    def apply(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return replacement(cls, original.__get__(None, cls), args, kwargs)
    _Function.apply = classmethod(apply)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        _Function.apply = original  # type: ignore[method-assign]


@contextlib.contextmanager
def keeping_functions(tracer: fx.Tracer) -> Iterator[None]:
    """While torch.fx traces, record each custom Function call as one node."""
    def replacement(cls: Any, apply: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        if _custom(cls) and any(isinstance(a, fx.Proxy) for a in pytree.tree_leaves((args, kwargs))):
            return tracer.create_proxy("call_function", function_call(cls), args, kwargs)
        return apply(*args, **kwargs)
    with _patched_apply(replacement):
        yield


@contextlib.contextmanager
def watching_functions(seen: List[str]) -> Iterator[None]:
    """Append the name of each custom Function applied while the block runs to ``seen``."""
    def replacement(cls: Any, apply: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        if _custom(cls):
            name = f"{cls.__module__}.{cls.__qualname__}"
            if name not in seen:
                seen.append(name)
        return apply(*args, **kwargs)
    with _patched_apply(replacement):
        yield
