"""Keyword arguments a captured graph specialised: still accepted at their captured value.

Tracing runs ``forward`` on the example input, so every keyword parameter the
example does not give takes its default, and the graph computes that case only
(``forward(x, scale=1.0)`` traces ``* 1.0``; HuggingFace's ``attention_mask=None``
traces the unmasked model).  Capture records those values
(``meta["fxgrow.capture"]["specialised"]``) and :func:`guard` keeps the grown
graph's call signature compatible with the user's: passing a specialised
argument *at its captured value* is accepted (and dropped), any other value
raises :class:`~fxgrow.errors.SpecialisedInputError` naming the argument,
instead of a bare ``TypeError`` or, worse, a silently different computation.
The user's own class (``fxgrow.widen(..., output="module")``,
:func:`fxgrow.grow_into`) keeps every argument.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Tuple

import torch
from torch import fx, nn

from .. import meta
from ..errors import SpecialisedInputError

__all__ = ["specialised", "guard"]


def specialised(model: nn.Module, args: tuple, kwargs: dict) -> Dict[str, Any]:
    """Keyword parameters of ``model.forward`` the example does not give, with their
    defaults (what tracing specialises them to).

    >>> class M(nn.Module):
    ...     def forward(self, x, scale=1.0, *, mask=None):
    ...         return x * scale
    >>> specialised(M(), (torch.ones(1),), {})
    {'scale': 1.0, 'mask': None}
    """
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return {}
    given = set(kwargs) | set(list(sig.parameters)[: len(args)])
    return {name: p.default for name, p in sig.parameters.items()
            if name not in given and p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _equal(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False  # a tensor where the graph specialised a value: never the same call
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - values without a comparison are not equal
        return False


def _kwargs_guard(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
    fixed = module.meta.get(meta.CAPTURE, {}).get("specialised") or {}
    if not any(k in fixed for k in kwargs):
        return None
    kept = {}
    for k, v in kwargs.items():
        if k not in fixed:
            kept[k] = v
        elif not _equal(v, fixed[k]):
            given = (f"a tensor of shape {tuple(v.shape)}" if isinstance(v, torch.Tensor)
                     else repr(v))
            raise SpecialisedInputError(
                f"`{k}` was not in the example input, so the captured graph computes "
                f"{k}={fixed[k]!r} only (given {given}); give {k} in the example input to keep it "
                "an input, or grow your own module (fxgrow.widen(..., output='module') or "
                "fxgrow.grow_into), which keeps every argument")
    return args, kept


def guard(gm: fx.GraphModule, how: Dict[str, Any]) -> None:
    """Let ``gm`` accept its specialised keyword arguments at their captured values.

    >>> gm = torch.fx.symbolic_trace(nn.Linear(2, 2))
    >>> gm.meta[meta.CAPTURE] = {"specialised": {"scale": 1.0}}
    >>> guard(gm, gm.meta[meta.CAPTURE])
    >>> gm(torch.ones(1, 2), scale=1.0).shape
    torch.Size([1, 2])
    >>> gm(torch.ones(1, 2), scale=2.0)
    Traceback (most recent call last):
    ...
    fxgrow.errors.SpecialisedInputError: `scale` was not in the example input, ...
    """
    if how.get("specialised") and _kwargs_guard not in gm._forward_pre_hooks.values():
        gm.register_forward_pre_hook(_kwargs_guard, with_kwargs=True)
