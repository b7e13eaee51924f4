"""The ``torch.fx`` front end: symbolic tracing with the user's leaf modules.

Known ``torch.nn`` layers stay leaves, as ``torch.fx`` does by default, so
rules see ``Conv2d`` rather than its functional body; the user can keep more
modules whole.  A model fx cannot trace fails with a :class:`TraceError`
naming the construct (the deepest frame of the user's code) and the ways out.

The traced ``GraphModule`` shares the model's submodules and tensors: nothing
downstream writes to them, and whatever ``forward`` assigns while it is
traced is undone (:func:`fxgrow.capture.runner.preserved`).
"""

from __future__ import annotations

import contextlib
import os
import traceback
from typing import Any, Callable, ContextManager, Dict, Iterable, Optional, Type, Union

import torch
from torch import fx, nn

from ..errors import TraceError
from .functions import keeping_functions
from .modules import call_override, hidden_computation, root_problem
from .regions import recording
from .runner import preserved

__all__ = ["trace"]


class _Tracer(fx.Tracer):
    """``fx.Tracer`` that also keeps the user's chosen modules as leaves."""

    def __init__(self, leaf_modules: Iterable[Union[str, Type[nn.Module]]] = (),
                 is_leaf: Optional[Callable[[nn.Module], bool]] = None) -> None:
        super().__init__()
        self._is_leaf = is_leaf
        # buffers become get_attr nodes, so `self.mask[:, :, :t, :t]` with a traced `t`
        # (nanoGPT's causal mask) traces instead of failing on a real tensor
        self.proxy_buffer_attributes = True
        leaf = tuple(leaf_modules)
        self._leaf_types = tuple(t for t in leaf if isinstance(t, type))
        self._leaf_names = {t for t in leaf if isinstance(t, str)}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self._leaf_names or (self._leaf_types and isinstance(m, self._leaf_types)):
            return True
        if self._is_leaf is not None and self._is_leaf(m):
            return True
        if hidden_computation(m) is not None:
            # its hooks run only when the module is called as a whole: keep it a leaf, so
            # the graph computes what the model does (the analysis then blocks it)
            return True
        return super().is_leaf_module(m, qualname)


def _user_frame(exc: BaseException) -> str:
    """The deepest traceback frame outside torch: the construct that failed."""
    torch_dir = os.path.dirname(torch.__file__)
    here = os.path.dirname(os.path.dirname(__file__))  # the fxgrow package
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


def trace(model: nn.Module, leaf_modules: Iterable[Union[str, Type[nn.Module]]] = (),
          concrete_args: Optional[Dict[str, Any]] = None,
          is_leaf: Optional[Callable[[nn.Module], bool]] = None,
          watch: Optional[ContextManager[Any]] = None) -> fx.GraphModule:
    """``torch.fx`` symbolic tracing of ``model``, keeping ``leaf_modules`` whole
    (and the modules ``is_leaf`` accepts); ``watch`` is entered around the tracing
    alone (a :class:`~fxgrow.capture.modes.TrainingWatch`)."""
    problem = root_problem(model)
    if problem:
        raise TraceError(f"cannot capture {type(model).__name__}: {problem}")
    override = call_override(model)
    if override:
        raise TraceError(f"torch.fx cannot trace {type(model).__name__} faithfully: {override}, "
                         "which fx would trace and then run again; capture='export' runs it once")
    tracer = _Tracer(leaf_modules, is_leaf)
    try:
        # tracing runs the model's Python: what forward assigns (a buffer, now a Proxy,
        # or a call counter) must not stay on the user's modules
        with preserved(model), recording(tracer), keeping_functions(tracer), \
                watch or contextlib.nullcontext():
            graph = tracer.trace(model, concrete_args=concrete_args or None)
            # the constants fx itself stores on the root (`_tensor_constant0`, ...)
            constants = {n.target: getattr(model, n.target) for n in graph.nodes
                         if n.op == "get_attr" and n.target.startswith("_tensor_constant")}
    except Exception as e:  # fx raises many kinds: TraceError, TypeError, ...
        where = _user_frame(e)
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}"
            + (f"\n  at {where}" if where else "") + "\n" + _WAYS_OUT) from e
    with preserved(model):  # the graph module takes its tensors from the restored model
        for target, value in constants.items():
            setattr(model, target, value)
        return fx.GraphModule(tracer.root, graph, model.__class__.__name__)
