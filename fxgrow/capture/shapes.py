"""Shape propagation: run the example input through the graph once.

Every node gets ``node.meta["fxgrow.shape"]``: a :class:`TensorSpec` for a
tensor, a tuple of them for a tuple of tensors, the value itself for small
Python values (ints from ``size()``, slices, ...), or a :class:`Opaque`
marker for anything else.  Like ``torch.fx.passes.shape_prop`` but without
keeping tensors, and without touching the module's buffers (see
:mod:`fxgrow.capture.runner`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import torch
from torch import fx

from .. import meta
from ..errors import ExampleInputError
from .runner import call_pure

__all__ = ["TensorSpec", "Opaque", "describe", "propagate"]


class TensorSpec(NamedTuple):
    """Shape and dtype of one tensor value."""

    shape: Tuple[int, ...]
    dtype: torch.dtype


class Opaque(NamedTuple):
    """A value fxgrow does not look into (its type name only)."""

    type_name: str


_PLAIN = (int, float, bool, str, type(None), slice, torch.dtype, torch.device, type(Ellipsis))


def describe(value: Any) -> Any:
    """The metadata recorded for one runtime value."""
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(value.shape), value.dtype)
    if isinstance(value, torch.Size):
        return tuple(int(v) for v in value)
    if isinstance(value, (tuple, list)):
        return tuple(describe(v) for v in value)
    if isinstance(value, _PLAIN):
        return value
    return Opaque(type(value).__name__)


class _Recorder(fx.Interpreter):
    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:
            raise ExampleInputError(
                f"the model fails on the example input at node {n.format_node()}: "
                f"{type(e).__name__}: {e}") from e
        meta.set_shape(n, describe(out))
        return out


def propagate(gm: fx.GraphModule, placeholder_values: Tuple[Any, ...]) -> Any:
    """Record ``fxgrow.shape`` on every node of ``gm``; return the output."""

    def run(module, args, kwargs):
        return _Recorder(module).run(*args)

    return call_pure(gm, placeholder_values, fn=run)
