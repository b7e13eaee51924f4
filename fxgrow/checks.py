"""Argument checks shared by every entry point: what a valid argument is, said once.

``widen``, ``deepen``, ``verify``, ``plan_widening``, the capture options, the
pictures and ``register_rule`` validate their arguments here, so a bad value
is refused with the same :class:`~fxgrow.errors.SpecError` (or
:class:`~fxgrow.errors.OutputPathError` for a file that cannot be written)
wherever it is given, before any work is done.  Each check returns the value
normalised (an ``int``, a ``float``, a tuple).

Examples
--------
>>> integer(3, "trials", minimum=0)
3
>>> seed(2 ** 70)
Traceback (most recent call last):
...
fxgrow.errors.SpecError: seed must be an int >= 0 and < 2**63, got 1180591620717411303424
>>> real(float("nan"), "noise")
Traceback (most recent call last):
...
fxgrow.errors.SpecError: noise must be a finite real number >= 0, got nan
>>> leaf_modules("fc1")
Traceback (most recent call last):
...
fxgrow.errors.SpecError: leaf_modules must be a list of module types or qualified names, not a str (did you mean ['fc1']?)
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from .errors import OutputPathError, SpecError

__all__ = ["integer", "seed", "real", "flag", "module", "real_tensors", "finite",
           "output_path", "write_text", "plan_sizes", "rule_targets", "leaf_modules",
           "leaf_names", "concrete_args", "location", "kernel_size", "SEED_MAX"]

#: seeds are ints in [0, SEED_MAX): torch's generators take 64-bit seeds, and
#: fxgrow adds small offsets (one per trial, one per block)
SEED_MAX = 2 ** 63


def _what(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def integer(value: Any, name: str, *, minimum: Optional[int] = None,
            maximum: Optional[int] = None) -> int:
    """``value`` as an int (not a bool, not a float), within the bounds."""
    shown = (f"2**{maximum.bit_length() - 1}" if maximum is not None and maximum > 2 ** 20
             and maximum & (maximum - 1) == 0 else maximum)
    bounds = (f" >= {minimum}" if minimum is not None else "") + \
             (f" and < {shown}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{name} must be an int{bounds}, got {_what(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value >= maximum):
        raise SpecError(f"{name} must be an int{bounds}, got {value}")
    return value


def seed(value: Any, name: str = "seed") -> int:
    """A seed: an int in ``[0, 2**63)``."""
    return integer(value, name, minimum=0, maximum=SEED_MAX)


def real(value: Any, name: str, *, minimum: Optional[float] = 0.0) -> float:
    """``value`` as a finite float (not a bool, not complex), ``>= minimum``."""
    bound = f" >= {minimum:g}" if minimum is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(f"{name} must be a finite real number{bound}, got {_what(value)}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise SpecError(f"{name} must be a finite real number{bound}, got {value:g}")
    return value


def flag(value: Any, name: str) -> Optional[bool]:
    """True, False or None."""
    if value is not None and not isinstance(value, bool):
        raise SpecError(f"{name} must be True, False or None, got {_what(value)}")
    return value


def module(value: Any, name: str) -> nn.Module:
    """An ``nn.Module`` (an ``ExportedProgram`` runs as ``ep.module()``)."""
    if isinstance(value, torch.export.ExportedProgram):
        return value.module()
    if not isinstance(value, nn.Module):
        raise SpecError(f"{name} must be an nn.Module, got {type(value).__name__}")
    return value


def _tensors(tree: Any) -> Iterable[torch.Tensor]:
    return (t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor))


def real_tensors(model: nn.Module, inputs: Any, name: str) -> None:
    """Refuse tensors on the ``meta`` device where values are needed (verification)."""
    state = list(model.parameters()) + list(model.buffers())
    if any(t.device.type == "meta" for t in list(_tensors(inputs)) + state):
        raise SpecError(f"{name} runs the models and needs real tensors, but the model or "
                        "its input is on the meta device; pass verify=False (growing needs "
                        "no values)")


def finite(tree: Any, name: str, error: type = SpecError) -> None:
    """Refuse NaN or infinite entries in the floating (or complex) tensors of ``tree``."""
    for t in _tensors(tree):
        if (t.is_floating_point() or t.is_complex()) and t.device.type != "meta" \
                and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise error(f"{name} is not finite: {bad} of {t.numel()} entries of a "
                        f"{tuple(t.shape)} tensor are NaN or infinite")


def output_path(path: Any, name: str = "output",
                suffixes: Optional[Sequence[str]] = None) -> str:
    """A path a file can be written to: its folder exists, it is no folder itself.

    ``suffixes`` (lower case, with the dot) restricts the extension.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise SpecError(f"{name} must be a path (str or os.PathLike), got {_what(path)}")
    path = os.fspath(path)
    if suffixes is not None and os.path.splitext(path)[1].lower() not in suffixes:
        raise SpecError(f"{name} {path!r} must end in one of {', '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputPathError(f"cannot write {name} {path!r}: the folder {folder!r} does "
                              "not exist (create it first)")
    if os.path.isdir(path):
        raise OutputPathError(f"cannot write {name} {path!r}: it is a folder")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"cannot write {name} {path!r}: the folder is not writable")
    return path


def write_text(path: Any, text: str, name: str = "output") -> None:
    """Write ``text`` (UTF-8); an ``OSError`` becomes an :class:`OutputPathError`."""
    path = output_path(path, name)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise OutputPathError(f"cannot write {name} {path!r}: {e.strerror or e}") from e


def plan_sizes(plan: Any) -> Optional[Dict[int, Tuple[int, int]]]:
    """``{group id: (old, new)}`` from a plan mapping (``grown.meta["fxgrow.plan"]``)
    or a :class:`~fxgrow.widen.growth.GrowthPlan`; None stays None."""
    if plan is None:
        return None
    if callable(getattr(plan, "summary", None)):
        plan = plan.summary()
    usage = ('plan must map group ids to (old size, new size), e.g. '
             'grown.meta["fxgrow.plan"]')
    if not isinstance(plan, Mapping):
        raise SpecError(f"{usage}; got {_what(plan)}")
    out = {}
    for gid, sizes in plan.items():
        ok = (isinstance(gid, numbers.Integral) and not isinstance(gid, bool)
              and isinstance(sizes, (tuple, list)) and len(sizes) == 2
              and all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                      for s in sizes))
        if not ok:
            raise SpecError(f"{usage}; got the entry {gid!r}: {sizes!r}")
        out[int(gid)] = (int(sizes[0]), int(sizes[1]))
    return out


def rule_targets(targets: Tuple[Any, ...]) -> None:
    """What a rule may be registered for: module classes, callables, method or
    qualified function names."""
    if not targets:
        raise SpecError("register_rule needs at least one target (a module class, a "
                        "function or a method name)")
    for t in targets:
        if isinstance(t, nn.Module):
            raise SpecError(f"cannot register a rule for a module instance; register its class "
                            f"{type(t).__name__}")
        good = (isinstance(t, str) and t.strip() == t and t != "") or \
            (isinstance(t, type) and issubclass(t, (nn.Module, torch.autograd.Function))) or \
            (callable(t) and not isinstance(t, type))
        if not good:
            raise SpecError(f"cannot register a rule for {_what(t)}: a target is an nn.Module "
                            "class, a torch.autograd.Function class, a function, a Tensor method name (\"my_method\") or a "
                            "qualified function name (\"pkg.module.fn\")")


def leaf_modules(value: Any) -> Tuple[Any, ...]:
    """A tuple of module types and qualified names (a list, tuple or set of them)."""
    usage = "leaf_modules must be a list of module types or qualified names"
    if value is None:
        return ()
    if isinstance(value, (str, type)):
        hint = repr([value]) if isinstance(value, str) else f"[{value.__name__}]"
        raise SpecError(f"{usage}, not a {type(value).__name__ if isinstance(value, str) else 'type'}"
                        f" (did you mean {hint}?)")
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise SpecError(f"{usage}, got {_what(value)}")
    for v in value:
        if not (isinstance(v, str) or (isinstance(v, type) and issubclass(v, nn.Module))):
            raise SpecError(f"{usage}; {_what(v)} is neither")
    return tuple(value)


def leaf_names(model: nn.Module, leaves: Tuple[Any, ...]) -> None:
    """Every name in ``leaves`` must be a submodule of ``model``."""
    names = {n for n, _ in model.named_modules() if n}
    unknown = [v for v in leaves if isinstance(v, str) and v not in names]
    if unknown:
        import difflib
        close = sorted({c for u in unknown for c in difflib.get_close_matches(u, names, n=2)})
        raise SpecError(f"leaf_modules names no module of the model: {unknown}"
                        + (f"; did you mean {close}?" if close else ""))


def concrete_args(model: nn.Module, concrete: Optional[Mapping[str, Any]]) -> None:
    """The keys of ``concrete_args`` must be parameters of ``model.forward``."""
    if not concrete:
        return
    if not isinstance(concrete, Mapping) or not all(isinstance(k, str) for k in concrete):
        raise SpecError(f"concrete_args must be a dict {{parameter name: value}}, got "
                        f"{_what(concrete)}")
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(concrete) - set(params))
    if unknown:
        raise SpecError(f"concrete_args {unknown} are not parameters of "
                        f"{type(model).__name__}.forward (its parameters: {list(params)})")


def location(after: Any) -> Any:
    """``"all"``, a name, a node, a predicate, or a list of names and nodes."""
    usage = ("after names where to insert: \"all\", a module or node name, a list of "
             "names, or a predicate on fx nodes")
    if isinstance(after, (str, fx.Node)) or (callable(after) and not isinstance(after, type)):
        return after
    if isinstance(after, (list, tuple, set, frozenset)) or (
            isinstance(after, Iterable) and not isinstance(after, (bytes, Mapping))):
        items = list(after)
        bad = [a for a in items if not isinstance(a, (str, fx.Node))]
        if bad:
            raise SpecError(f"{usage}; {_what(bad[0])} in the list is neither")
        return items
    raise SpecError(f"{usage}, got {_what(after)}")


def kernel_size(value: Any) -> Optional[int]:
    """None or a positive odd int (a Dirac kernel is centred at ``(k - 1) / 2``)."""
    if value is None:
        return None
    k = integer(value, "kernel_size", minimum=1)
    if k % 2 == 0:
        raise SpecError(f"kernel_size must be a positive odd int (a Dirac kernel is centred "
                        f"at (k-1)/2), got {k}")
    return k
