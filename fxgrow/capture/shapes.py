"""Shape propagation: run the example input through the graph once.

Every node gets ``node.meta["fxgrow.shape"]``: a :class:`TensorSpec` for a
tensor, a tuple of them for a tuple of tensors, the value itself for small
Python values (ints from ``size()``, slices, ...), or a :class:`Opaque`
marker for anything else.  Like ``torch.fx.passes.shape_prop`` but without
keeping tensors, and without touching the module's buffers (see
:mod:`fxgrow.capture.runner`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import torch
from torch import fx

from .. import meta
from ..errors import ExampleInputError
from torch._subclasses.fake_tensor import FakeTensorMode

from .memo import LeafMemo
from .runner import call_pure, preserved

__all__ = ["TensorSpec", "Opaque", "describe", "propagate", "run_recording"]


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
    if type(value) is dict:
        return {k: describe(v) for k, v in value.items()}
    if isinstance(value, _PLAIN):
        return value
    return Opaque(type(value).__name__)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, memo: Optional[LeafMemo] = None) -> None:
        super().__init__(gm)
        self.memo = memo

    def call_module(self, target, args, kwargs):
        if self.memo is not None:  # the model's run computed this very call: see capture.memo
            out = self.memo.lookup(self.fetch_attr(target), args, kwargs)
            if out is not None:
                return out
        return super().call_module(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:
            raise ExampleInputError(
                f"the model fails on the example input at node {n.format_node()}: "
                f"{type(e).__name__}: {e}") from e
        meta.set_shape(n, describe(out))
        return out


def _fake_run(gm: fx.GraphModule, placeholder_values: Tuple[Any, ...]) -> None:
    """Run the graph on fake tensors: shapes and dtypes, no data, nothing written."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    convert = lambda t: mode.from_tensor(t) if isinstance(t, torch.Tensor) else t  # noqa: E731
    state = {n: convert(t) for n, t in list(gm.named_parameters()) + list(gm.named_buffers())}
    values = torch.utils._pytree.tree_map(convert, tuple(placeholder_values))
    with mode, preserved(gm), torch.no_grad():
        torch.func.functional_call(_Run(gm), {f"gm.{k}": v for k, v in state.items()},
                                   (values,), strict=False)


class _Run(torch.nn.Module):
    """Holds the graph as a submodule and interprets it, recording shapes."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, values):
        return _Recorder(self.gm).run(*values)


def propagate(gm: fx.GraphModule, placeholder_values: Tuple[Any, ...]) -> None:
    """Record ``fxgrow.shape`` on every node of ``gm``.

    The graph runs on fake tensors (:class:`torch._subclasses.FakeTensorMode`):
    shapes without data, so no weight memory is touched, nothing can be
    written in place, and a model built on the ``meta`` device can be analysed.
    A graph fake tensors cannot run (data-dependent Python, an op without a fake
    kernel) runs once on real copies of its state instead (:func:`call_pure`).
    """
    try:
        _fake_run(gm, placeholder_values)
        return
    except Exception:  # noqa: BLE001 - the real run below says what is wrong, if anything
        pass
    run_recording(gm, placeholder_values)


def run_recording(gm: fx.GraphModule, placeholder_values: Tuple[Any, ...],
                  seed: Optional[int] = None, memo: Optional[LeafMemo] = None) -> Any:
    """Run ``gm`` once on real tensors, changing nothing (:func:`call_pure`), and record
    ``fxgrow.shape`` on every node as :func:`propagate` does; returns the graph's output.

    A caller that runs the graph on the example input anyway (the faithfulness
    check of capture) gets the shapes from that run instead of a second one;
    ``seed`` is passed to :func:`call_pure`; with ``memo``, a layer the model's run
    recorded the same call of is not computed again (:class:`LeafMemo`).  A node that
    fails raises :class:`ExampleInputError` naming it.
    """
    def run(module, args, kwargs):
        if memo is None:
            return _Recorder(module).run(*args)
        with memo.offering():
            return _Recorder(module, memo).run(*args)
    return call_pure(gm, placeholder_values, seed=seed, fn=run)
