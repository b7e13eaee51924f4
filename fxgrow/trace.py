"""Capture a model as a ``torch.fx`` graph, with shapes from an example input.

``capture`` is the front end: it turns the user's model and example input
into a :class:`torch.fx.GraphModule` whose nodes carry
``node.meta["fxgrow.shape"]`` (see :mod:`fxgrow.shapes`).  Known
``torch.nn`` layers stay leaves, as ``torch.fx`` does by default, so rules
see ``Conv2d`` rather than its functional body.  A ``GraphModule`` given by
the user (traced by their own tracer, e.g. HuggingFace's) is used as is.

The user's model is never changed: a traced ``GraphModule`` shares the
model's submodules, so nothing downstream writes to them, and the graph of a
user's ``GraphModule`` is copied before any metadata is written.
"""

from __future__ import annotations

import copy
import inspect
import os
import traceback
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Tuple, Type, Union

import torch
from torch import fx, nn

from .errors import ExampleInputError, SpecError, TraceError
from .export import as_module, copy_exported, export_module, flat_inputs, is_exported
from .shapes import propagate

__all__ = ["Captured", "capture", "normalize_input", "CAPTURES"]

#: how ``capture`` obtains the graph (see :func:`capture`)
CAPTURES = ("auto", "fx", "export")

ExampleInput = Union[torch.Tensor, Tuple[Any, ...], Dict[str, Any]]


@dataclass
class Captured:
    """A traced graph and the example input bound to its placeholders."""

    graph_module: fx.GraphModule
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


def normalize_input(example_input: ExampleInput) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Split an example input into positional and keyword arguments.

    A tensor is one positional argument, a tuple or list is the positional
    arguments, a dict is keyword arguments.
    """
    if isinstance(example_input, torch.Tensor):
        return (example_input,), {}
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    if isinstance(example_input, dict):
        if not all(isinstance(k, str) for k in example_input):
            raise ExampleInputError("a dict example input must have str keys (argument names)")
        return (), dict(example_input)
    raise ExampleInputError(
        f"example_input must be a tensor, a tuple of positional inputs or a dict of keyword "
        f"inputs, not {type(example_input).__name__}")


class _Tracer(fx.Tracer):
    """``fx.Tracer`` that also keeps the user's chosen modules as leaves."""

    def __init__(self, leaf_modules: Iterable[Union[str, Type[nn.Module]]] = ()) -> None:
        super().__init__()
        # buffers become get_attr nodes, so `self.mask[:, :, :t, :t]` with a traced `t`
        # (nanoGPT's causal mask) traces instead of failing on a real tensor
        self.proxy_buffer_attributes = True
        leaf = tuple(leaf_modules)
        self._leaf_types = tuple(t for t in leaf if isinstance(t, type))
        self._leaf_names = {t for t in leaf if isinstance(t, str)}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self._leaf_names or (self._leaf_types and isinstance(m, self._leaf_types)):
            return True
        return super().is_leaf_module(m, qualname)


def _user_frame(exc: BaseException) -> str:
    """The deepest traceback frame outside torch: the construct that failed."""
    torch_dir = os.path.dirname(torch.__file__)
    here = os.path.dirname(__file__)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(torch_dir) or frame.filename.startswith(here):
            continue
        found = f"{frame.filename}:{frame.lineno}: `{(frame.line or '').strip()}`"
    return found


_WAYS_OUT = (
    "Ways around it: make the offending submodule a leaf "
    "(`leaf_modules=[...]`, it is then treated as an op without a rule and its channels are "
    "blocked unless you register one), pass the Python values the control flow depends on as "
    "`concrete_args`, or trace the model yourself (e.g. with torch.fx or "
    "transformers.utils.fx.symbolic_trace) and pass the GraphModule.")


def _trace(model: nn.Module, leaf_modules, concrete_args) -> fx.GraphModule:
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args or None)
    except Exception as e:  # fx raises many kinds: TraceError, TypeError, ...
        where = _user_frame(e)
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}"
            + (f"\n  at {where}" if where else "") + "\n" + _WAYS_OUT) from e
    name = model.__class__.__name__
    return fx.GraphModule(tracer.root, graph, name)


def _bind(gm: fx.GraphModule, args, kwargs) -> Tuple[Any, ...]:
    """Placeholder values in graph order, with defaults filled in."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if is_exported(gm):  # ep.module(): inputs are flattened as its forward does
        try:
            flat = flat_inputs(gm, args, kwargs)
        except Exception as e:
            raise ExampleInputError(f"the example input does not match the exported "
                                    f"program's inputs: {type(e).__name__}: {e}") from e
        if flat is not None:
            return flat
    names = [n.target for n in placeholders]
    bound = list(args)
    if len(bound) > len(names):
        raise ExampleInputError(
            f"the model takes {len(names)} inputs ({', '.join(names)}), got {len(bound)} positional")
    unknown = set(kwargs) - set(names)
    if unknown:
        raise ExampleInputError(
            f"unknown keyword input(s) {sorted(unknown)}; the model's inputs are {names}")
    for node in placeholders[len(bound):]:
        name = node.target
        if name in kwargs:
            bound.append(kwargs[name])
        elif node.args:  # placeholder default
            bound.append(node.args[0])
        elif name.startswith("*"):
            continue
        else:
            raise ExampleInputError(f"the example input gives no value for the model input `{name}`")
    return tuple(bound)


def capture(
    model: nn.Module,
    example_input: ExampleInput,
    *,
    leaf_modules: Iterable[Union[str, Type[nn.Module]]] = (),
    concrete_args: Optional[Dict[str, Any]] = None,
    capture: str = "auto",
) -> Captured:
    """Trace ``model`` and record every node's output shape.

    Parameters
    ----------
    model : nn.Module or fx.GraphModule
        The model.  A ``GraphModule`` is used as is (its graph is copied so
        the metadata fxgrow writes does not land on the user's graph).
    example_input : Tensor, tuple or dict
        One batch the model runs on.
    leaf_modules : iterable of module types or qualified names
        Extra modules to keep as leaves instead of tracing through them.
    concrete_args : dict, optional
        Values to specialise during tracing (see ``torch.fx.symbolic_trace``).
        Keyword parameters of ``forward`` that the example input does not
        give are specialised to their defaults.
    capture : {"auto", "fx", "export"}
        ``"fx"``: ``torch.fx`` symbolic tracing.  ``"export"``:
        ``torch.export.export(model, args, kwargs, strict=False).module()``,
        an ATen-level graph (see :mod:`fxgrow.export`; ``leaf_modules`` and
        ``concrete_args`` do not apply).  ``"auto"`` (default): fx, and
        export when fx cannot trace the model.  An ``ExportedProgram`` or a
        ``GraphModule`` is used as is.  ``graph_module.meta["fxgrow.capture"]``
        records ``{"method", "fallback_reason"}``.

    Returns
    -------
    Captured

    Examples
    --------
    >>> cap = capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), torch.randn(2, 4))
    >>> [n.meta["fxgrow.shape"].shape for n in cap.graph_module.graph.nodes][:2]
    [(2, 4), (2, 8)]
    """
    if capture not in CAPTURES:
        raise SpecError(f"unknown capture {capture!r}; choose one of {CAPTURES}")
    how: Dict[str, Any] = {"method": capture, "fallback_reason": None}
    if isinstance(model, torch.export.ExportedProgram):
        if capture == "fx":
            raise TraceError("an ExportedProgram is already an ATen graph; capture='fx' "
                             "needs the nn.Module")
        model, how["method"] = as_module(model), "export"
    if not isinstance(model, nn.Module):
        raise TraceError(f"expected an nn.Module, GraphModule or ExportedProgram, got "
                         f"{type(model).__name__}")
    args, kwargs = normalize_input(example_input)
    if is_exported(model):  # ep.module(), given by the user
        gm = copy_exported(model)
        how["method"] = "export"
    elif isinstance(model, fx.GraphModule):
        gm = fx.GraphModule(model, copy.deepcopy(model.graph), model.__class__.__name__)
        how["method"] = "graph_module"
    elif capture == "export":
        gm = export_module(model, args, kwargs)
    else:
        concrete = dict(concrete_args or {})
        try:
            sig = inspect.signature(model.forward)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            given = set(kwargs) | set(list(sig.parameters)[: len(args)])
            for name, p in sig.parameters.items():
                if (name not in given and name not in concrete
                        and p.default is not inspect.Parameter.empty
                        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)):
                    concrete[name] = p.default
        try:
            gm = _trace(model, leaf_modules, concrete)
            how["method"] = "fx"
        except TraceError as e:
            if capture == "fx":
                raise
            how["fallback_reason"] = str(e).splitlines()[0]
            try:
                gm = export_module(model, args, kwargs)
            except TraceError as e2:
                raise TraceError(f"{e}\n\nThe torch.export fallback failed too:\n{e2}") from e2
            how["method"] = "export"
    values = _bind(gm, args, kwargs)
    propagate(gm, values)
    gm.meta["fxgrow.capture"] = how
    return Captured(gm, args, kwargs)
