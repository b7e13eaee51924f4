"""Calibration data for inserted BatchNorms: batches in, per-channel statistics out.

An inserted BatchNorm should see, in training mode, statistics close to the
ones it stores.  :func:`channel_stats` runs calibration batches through the
*original* graph (eval-exact insertions do not change what any insertion
point sees), feeds each insertion point's value through the new block's
first layer, and accumulates per-channel mean and (biased, as BatchNorm
normalises with) variance in float64.  Runs go through
:func:`fxgrow.capture.runner.call_pure`, so the model's own running statistics are
untouched.

Accepted data: a tensor (one batch), a tuple or dict shaped like the example
input (one batch), or any other iterable of such batches (a list, a
``DataLoader``).  Trailing items of a tuple batch beyond the model's inputs
(the targets of ``(x, y)`` batches) are ignored.

Examples
--------
>>> import torch
>>> len(list(batches(torch.randn(4, 3), torch.randn(2, 3))))
1
>>> len(list(batches([(torch.randn(4, 3), torch.zeros(4))] * 2, torch.randn(2, 3))))
2
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple

import torch
from torch import fx
from torch.utils import _pytree as pytree

from .. import checks
from ..capture.inputs import bind_inputs, normalize_input
from ..capture.runner import call_pure
from ..errors import CalibrationError

__all__ = ["batches", "fixed_size", "channel_stats"]

Args = Tuple[Tuple[Any, ...], Dict[str, Any]]


def _signature(value: Any) -> Tuple[Any, List[Tuple[Tuple[int, ...], torch.dtype]]]:
    leaves, spec = pytree.tree_flatten(value)
    return spec, [(tuple(t.shape[1:]), t.dtype) if isinstance(t, torch.Tensor) else (None, None)
                  for t in leaves]


def batches(calibration: Any, example_input: Any) -> Iterator[Args]:
    """Yield ``(args, kwargs)`` per calibration batch, checked against the example input.

    Raises
    ------
    CalibrationError
        No batch, a batch whose structure, per-sample shape or dtype
        differs from the example input's, or one with NaN or infinite values.
    """
    ex_args, ex_kwargs = normalize_input(example_input)
    want_spec, want = _signature((ex_args, ex_kwargs))
    if isinstance(calibration, (torch.Tensor, tuple, dict)):
        items: Iterable[Any] = [calibration]
    elif isinstance(calibration, Iterable) and not isinstance(calibration, (str, bytes)):
        items = calibration
    else:
        raise CalibrationError(
            f"calibration must be a tensor, a tuple/dict like the example input, or an "
            f"iterable of batches, not {type(calibration).__name__}")
    n = 0
    for i, batch in enumerate(items):
        if isinstance(batch, (tuple, list)) and not ex_kwargs and len(batch) > len(ex_args):
            batch = tuple(batch[: len(ex_args)])  # (inputs..., targets) from a DataLoader
        try:
            args, kwargs = normalize_input(batch)
        except Exception as e:
            raise CalibrationError(f"calibration batch {i}: {e}") from e
        spec, got = _signature((args, kwargs))
        if spec != want_spec or got != want:
            raise CalibrationError(
                f"calibration batch {i} does not look like the example input: expected "
                f"per-sample shapes/dtypes {_show(want)}, got {_show(got)} "
                "(only the batch dimension may differ)")
        checks.finite((args, kwargs), f"calibration batch {i}", CalibrationError)
        n += 1
        yield args, kwargs
    if n == 0:
        raise CalibrationError("the calibration data holds no batch")


def fixed_size(data: Iterable[Args], size: int) -> Iterator[Args]:
    """Cut every batch into chunks of exactly ``size`` samples; a remainder is dropped.

    A graph captured by ``torch.export`` from a static example has its batch
    size baked in (a guard checks it, and views carry it as a literal), so
    calibration data must reach it in batches of that size.  The statistics
    are sums over all chunks, so only the dropped remainder is lost.

    Raises
    ------
    CalibrationError
        No batch holds ``size`` samples.

    Examples
    --------
    >>> data = batches(torch.randn(10, 3), torch.randn(4, 3))
    >>> [a[0].shape[0] for a, _ in fixed_size(data, 4)]
    [4, 4]
    """
    n = 0
    for args, kwargs in data:
        leaves = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        total = leaves[0].shape[0] if leaves and leaves[0].dim() else 0
        for start in range(0, total - size + 1, size):
            n += 1
            yield pytree.tree_map(
                lambda t: t[start:start + size] if isinstance(t, torch.Tensor) else t,
                (args, kwargs))
    if n == 0:
        raise CalibrationError(
            f"the model was captured by torch.export with a fixed batch size of {size}: "
            f"calibration batches must hold at least {size} samples (they are cut into "
            f"chunks of {size})")


def _show(sig) -> str:
    return ", ".join(f"(N, {', '.join(map(str, s))})/{str(d).replace('torch.', '')}"
                     if s is not None else "non-tensor" for s, d in sig)


class _Tap(fx.Interpreter):
    """Runs the graph and hands chosen nodes' values to callbacks."""

    def __init__(self, gm: fx.GraphModule, taps: Dict[str, Callable[[torch.Tensor], None]]):
        super().__init__(gm)
        self.taps = taps

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.taps:
            self.taps[n.name](out)
        return out


def channel_stats(
    gm: fx.GraphModule,
    data: Iterable[Args],
    probes: Dict[str, Callable[[torch.Tensor], torch.Tensor]],
) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel (dim 1) mean and biased variance of ``probe(value of node)``.

    Parameters
    ----------
    gm : fx.GraphModule
        The original graph.
    data : iterable of (args, kwargs)
        From :func:`batches`.
    probes : {node name: function}
        Maps a node's value to the tensor whose statistics are wanted (the
        input of a new block's BatchNorm).

    Returns
    -------
    {node name: (mean, var)} in the probed tensor's dtype.
    """
    acc: Dict[str, List[Any]] = {}

    def tap(name: str, probe: Callable[[torch.Tensor], torch.Tensor]):
        def fn(value: torch.Tensor) -> None:
            y = probe(value).detach()
            dims = [d for d in range(y.dim()) if d != 1]
            y64 = y.double()
            s, ss = y64.sum(dims), (y64 * y64).sum(dims)
            cnt = y.numel() // y.shape[1]
            if name in acc:
                a = acc[name]
                a[0], a[1], a[2] = a[0] + s, a[1] + ss, a[2] + cnt
            else:
                acc[name] = [s, ss, cnt, y.dtype]
        return fn

    taps = {name: tap(name, p) for name, p in probes.items()}

    def run(module, args, kwargs):
        return _Tap(module, taps).run(*bind_inputs(module, args, kwargs))

    for args, kwargs in data:
        call_pure(gm, args, kwargs, fn=run)
    out = {}
    for name, (s, ss, cnt, dtype) in acc.items():
        mean = s / cnt
        var = (ss / cnt - mean * mean).clamp_min(0.0)
        out[name] = (mean.to(dtype), var.to(dtype))
    return out
