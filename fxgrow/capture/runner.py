"""Run a module on inputs without changing its state.

A forward pass in training mode updates BatchNorm running statistics.
fxgrow runs user models to learn shapes and to verify growth, and must not
change them, so every such run goes through :func:`call_pure`, which gives
the module private copies of its buffers for the duration of the call.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

__all__ = ["call_pure", "full_precision"]


@contextlib.contextmanager
def full_precision():
    """Disable TF32 (and reduced-precision matmuls) for the duration.

    CUDA convolutions default to TF32 on Ampere and later GPUs, which rounds
    float32 products to 10 mantissa bits: two computations of the same
    function then differ by ~1e-4, which would hide (or fake) a real
    difference.  Comparisons run in full float32.
    """
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    precision = torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.set_float32_matmul_precision(precision)


class _Forward(nn.Module):
    """Holds ``module`` as a submodule and calls ``fn(module, *args)``."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.inner = module
        self._fn = fn

    def forward(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        return self._fn(self.inner, args, kwargs)


def _default(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    return module(*args, **kwargs)


def call_pure(
    module: nn.Module,
    args: Tuple[Any, ...],
    kwargs: Optional[Dict[str, Any]] = None,
    fn: Optional[Callable[..., Any]] = None,
    seed: Optional[int] = None,
) -> Any:
    """Call ``fn(module, args, kwargs)`` (default: ``module(*args, **kwargs)``).

    Buffers are replaced by clones for the call, so running statistics and
    step counters of the user's module stay as they were.  With ``seed`` the
    call runs under a forked, seeded RNG, so stochastic layers draw the same
    numbers in two calls and the caller's RNG state is untouched.

    Examples
    --------
    >>> bn = nn.BatchNorm1d(3)
    >>> _ = call_pure(bn, (torch.randn(4, 3),))
    >>> bool(bn.running_mean.eq(0).all())
    True
    """
    kwargs = kwargs or {}
    wrapper = _Forward(module, fn or _default)
    buffers = {f"inner.{name}": buf.clone() for name, buf in module.named_buffers()}
    with torch.no_grad():
        if seed is None:
            return torch.func.functional_call(wrapper, buffers, (args, kwargs), strict=False)
        devices = [t.device for t in _tensors((args, kwargs)) if t.device.type == "cuda"]
        with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
            torch.manual_seed(seed)
            return torch.func.functional_call(wrapper, buffers, (args, kwargs), strict=False)


def _tensors(tree: Any):
    leaves, _ = torch.utils._pytree.tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor)]
