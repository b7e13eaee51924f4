"""The ``torch.export`` front end: capture a model dynamo can trace.

``torch.fx.symbolic_trace`` fails on data-dependent Python, ``torch._assert``
on proxies, HuggingFace's mask creation, ...; ``torch.export`` runs the
model's Python on fake tensors and records an ATen-level graph.  This module
turns a model or an :class:`torch.export.ExportedProgram` into the
``GraphModule`` the rest of fxgrow analyses: ``ep.module()``, whose
parameters and buffers are ``get_attr`` nodes under the model's own qualified
names (so ``state_dict`` keys are unchanged) and whose ``forward`` takes and
returns the model's own input and output structure.  The rules read its ATen
ops through the canonical forms of :mod:`fxgrow.ops.aten`.

Export runs with ``strict=False`` (the default of recent PyTorch): the
model's Python runs as ordinary Python on fake tensors, so anything that
runs eagerly with static shapes exports; ``strict=True`` (TorchDynamo
bytecode tracing) rejects more programs and gives no better graph for
fxgrow's purposes.  Pass an ``ExportedProgram`` you exported yourself to
choose other options (dynamic shapes, strict mode, ...).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from ..errors import GrowthWarning, TraceError
from .deadline import OutOfTime, dynamic_export_seconds, time_limit
from .functions import watching_functions
from .guards import explain_guards
from .modules import root_problem
from .regions import inline_regions
from .runner import preserved

__all__ = ["export_module", "is_exported", "as_module", "flat_inputs"]


def is_exported(gm: Any) -> bool:
    """Whether ``gm`` is a module made by ``ExportedProgram.module()``.

    Such a module flattens its inputs with a pytree spec before its graph's
    placeholders and unflattens the outputs after it.
    """
    return isinstance(gm, fx.GraphModule) and isinstance(
        getattr(gm.graph, "_codegen", None), getattr(fx.graph, "_PyTreeCodeGen", ()))


def as_module(model: Any) -> Any:
    """``ep.module()`` for an ``ExportedProgram``, the model itself otherwise."""
    if isinstance(model, torch.export.ExportedProgram):
        return explain_guards(model.module(), model)
    return model


def copy_exported(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy whose graph and metadata are new but whose tensors are shared.

    Keeps what ``fx.GraphModule(root, graph)`` would lose: the pytree
    input/output handling, non-persistent buffers, the ``state_dict`` order.
    """
    memo = {id(t): t for t in itertools.chain(gm.parameters(), gm.buffers())}
    return copy.deepcopy(gm, memo)


def auto_dynamic_shapes(model: nn.Module, args: Tuple[Any, ...],
                        kwargs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """``dynamic_shapes`` marking every dim of every tensor input ``Dim.AUTO``.

    torch.export then keeps a dim symbolic wherever the model allows it (batch,
    sequence, spatial) and specialises the rest (channels read by a weight),
    so the captured graph -- and the grown one -- accepts other input sizes.
    None where the inputs cannot be matched to ``forward``'s parameters.
    """
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return None
    auto = torch.export.Dim.AUTO
    return {name: pytree.tree_map(
        lambda t: {i: auto for i in range(t.dim())} if isinstance(t, torch.Tensor) else None,
        value) for name, value in bound.items()}


def _register_output_types(model: nn.Module) -> None:
    """Let torch.export flatten the output types of a HuggingFace model (its KV caches)
    with transformers' own registration, where transformers provides one."""
    if not any(c.__module__.startswith("transformers.") for c in type(model).__mro__):
        return
    try:
        from transformers.exporters.exporter_dynamo import register_cache_pytrees_for_model
    except ImportError:  # an older transformers: export reports the type it cannot flatten
        return
    register_cache_pytrees_for_model(model)


@contextlib.contextmanager
def _unmarked(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Iterator[None]:
    """Take off the dim markings torch.export leaves on the example's tensors.

    Exporting with ``dynamic_shapes`` marks each input tensor (``_dynamo_weak_dynamic_indices``
    and friends, attributes of the tensor object).  Left there they change the user's
    tensors, and a retry with static shapes on the same tensors still treats their dims
    as dynamic: it meets the very failure it retries after.
    """
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    before = [dict(vars(t)) for t in tensors]
    try:
        yield
    finally:
        for t, attrs in zip(tensors, before):
            for k in [k for k in vars(t) if k.startswith(_MARKS) and k not in attrs]:
                delattr(t, k)
            for k, v in attrs.items():
                if k.startswith(_MARKS):
                    setattr(t, k, v)


_MARKS = ("_dynamo_", "_has_dynamo_dim_marking")


def _export(model: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any],
            dynamic_shapes: Any, seconds: Optional[float] = None) -> Any:
    _register_output_types(model)
    # export runs the model's Python on fake tensors; the time limit covers export
    # alone, so that it can never cut short the restoring of the user's model and inputs
    with preserved(model), _unmarked(args, kwargs), time_limit(seconds):
        return torch.export.export(model, tuple(args), dict(kwargs), strict=False,
                                   dynamic_shapes=dynamic_shapes)


def export_module(model: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                  dynamic: bool = True, how: Optional[Dict[str, Any]] = None) -> fx.GraphModule:
    """``torch.export.export(model, args, kwargs, strict=False).module()``.

    With ``dynamic`` (the default) input dims are exported as
    :func:`auto_dynamic_shapes`; if that fails, or takes longer than
    :func:`~fxgrow.capture.deadline.dynamic_export_seconds`, the model is exported with
    the example's static shapes, with a warning, and ``how["dynamic_fallback_reason"]``
    (when ``how`` is given) says why.

    Raises
    ------
    TraceError
        Naming the cause reported by ``torch.export``.
    """
    problem = root_problem(model)
    if problem:
        raise TraceError(f"cannot capture {type(model).__name__}: {problem}")
    spec = auto_dynamic_shapes(model, args, kwargs) if dynamic else None
    inlined: list = []
    try:
        try:
            # symbolic sizes can make export's shape reasoning blow up: bounded in time
            with watching_functions(inlined):
                ep = _export(model, args, kwargs, spec,
                             dynamic_export_seconds() if spec is not None else None)
        except (Exception, OutOfTime) as e:  # noqa: BLE001 - retried with static shapes below
            if spec is None:
                raise
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
            if isinstance(e, OutOfTime):
                reason = (f"reasoning about symbolic sizes took {e}; "
                          "FXGROW_DYNAMIC_EXPORT_SECONDS sets the limit")
            warnings.warn(f"torch.export could not keep the input sizes of "
                          f"{type(model).__name__} dynamic ({reason}); the captured graph, and "
                          "the grown model, accept only the example's sizes", stacklevel=4)
            if how is not None:
                how["dynamic_fallback_reason"] = reason
            inlined.clear()
            with watching_functions(inlined):
                ep = _export(model, args, kwargs, None)
    except Exception as e:  # export raises many kinds: UserError, Unsupported, ...
        msg = str(e).strip().splitlines()
        head = msg[0] if msg else ""
        detail = "\n  ".join(msg[1:8])
        raise TraceError(
            f"torch.export could not capture {type(model).__name__}: {type(e).__name__}: "
            f"{head}" + (f"\n  {detail}" if detail else "")
            + "\nWays around it: fix the construct torch.export names, export the model yourself with "
              "the options it needs (dynamic_shapes=..., strict=...) and pass the "
              "ExportedProgram, or use capture='fx'.") from e
    if inlined:
        # export records a Function's forward ops; autograd then differentiates those
        warnings.warn(
            f"torch.export inlined the forward of the custom autograd Function(s) "
            f"{', '.join(inlined)} in {type(model).__name__}: the captured and grown graphs "
            "compute the same outputs, but their gradients through them are autograd's of the "
            "forward, not the Function's own backward. To train the grown model, grow with "
            "output='module' (the model's own forward) or capture='fx' (which keeps the calls)",
            GrowthWarning, stacklevel=4)
        if how is not None:
            how["inlined_functions"] = list(inlined)
    gm = explain_guards(ep.module(), ep)
    inline_regions(gm)  # no_grad/autocast bodies become ordinary nodes the rules read
    return gm


def flat_inputs(gm: fx.GraphModule, args: Tuple[Any, ...], kwargs: Dict[str, Any]
                ) -> Optional[Tuple[Any, ...]]:
    """Placeholder values of an exported module, flattened as its forward does."""
    info = getattr(gm.graph._codegen, "pytree_info", None)
    if info is None or info.in_spec is None:
        return None
    from torch.fx._pytree import tree_flatten_spec
    return tuple(tree_flatten_spec((tuple(args), dict(kwargs)), info.in_spec))
