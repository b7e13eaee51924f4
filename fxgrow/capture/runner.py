"""Run a module on inputs without changing its state, or the inputs'.

A forward pass can change a model: BatchNorm in training mode updates its
running statistics, ``nn.Embedding(max_norm=...)`` renormalises its weight
rows in place, a forward may edit weights under ``no_grad`` (``clamp_``),
count its calls in a Python attribute (``self.n += 1``), edit its input
(``x.mul_(2)``), or, while torch.fx traces it, store a ``Proxy`` where it
assigns a buffer.  fxgrow runs user models to learn shapes, to trace them and
to verify growth, and must change none of that, so every such run goes
through this module:

* :func:`call_pure` gives the module private copies of its parameters and
  buffers and the call private copies of its inputs, and restores every
  submodule's Python attributes afterwards;
* :func:`preserved` is the last part alone, for tracing.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["call_pure", "preserved", "full_precision"]


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


@contextlib.contextmanager
def preserved(module: nn.Module) -> Iterator[None]:
    """Restore every submodule's attributes as they were when the block ends.

    Saves a shallow copy of each submodule's ``__dict__`` and of its parameter,
    buffer, submodule and hook dicts, and puts them back: a ``self.n += 1``, a
    buffer reassigned (to a ``Proxy`` while tracing), a lazily built cache or a
    flipped ``training`` flag does not outlive the block.  Tensors changed in
    place are not covered here (:func:`call_pure` hands out copies).

    Examples
    --------
    >>> class Count(nn.Module):
    ...     def forward(self, x):
    ...         self.calls = getattr(self, "calls", 0) + 1
    ...         return x
    >>> m = Count()
    >>> with preserved(m):
    ...     _ = m(torch.ones(1))
    >>> hasattr(m, "calls")
    False
    """
    saved: List[Tuple[nn.Module, Dict[str, Any], Dict[str, Dict[Any, Any]]]] = []
    for m in module.modules():
        dicts = {k: dict(v) for k, v in vars(m).items() if isinstance(v, dict)
                 and (k.startswith("_") and (k.endswith("hooks") or k in (
                     "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")))}
        saved.append((m, dict(vars(m)), dicts))
    try:
        yield
    finally:
        for m, attrs, dicts in saved:
            state = vars(m)
            state.clear()
            state.update(attrs)
            for k, d in dicts.items():  # the dicts themselves were shared: refill them
                target = state[k]
                target.clear()
                target.update(d)


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

    Parameters and buffers are replaced by clones for the call, the inputs
    are cloned, and the submodules' attributes are restored afterwards
    (:func:`preserved`), so running statistics, weights edited in place, step
    counters and the caller's tensors all stay as they were.  With ``seed``
    the call runs under a forked, seeded RNG, so stochastic layers draw the
    same numbers in two calls and the caller's RNG state is untouched.

    Examples
    --------
    >>> bn = nn.BatchNorm1d(3)
    >>> _ = call_pure(bn, (torch.randn(4, 3),))
    >>> bool(bn.running_mean.eq(0).all())
    True
    >>> emb = nn.Embedding(4, 3, max_norm=0.1)   # renormalises its rows in place
    >>> before = emb.weight.clone()
    >>> _ = call_pure(emb, (torch.tensor([0, 1]),))
    >>> torch.equal(emb.weight, before)
    True
    """
    kwargs = kwargs or {}
    wrapper = _Forward(module, fn or _default)
    with torch.no_grad():
        state = {f"inner.{name}": t.detach().clone().requires_grad_(t.requires_grad)
                 if t.is_floating_point() or t.is_complex() else t.detach().clone()
                 for name, t in list(module.named_parameters()) + list(module.named_buffers())}
        args, kwargs = _clone_inputs((args, kwargs))
        with preserved(module):
            if seed is None:
                return torch.func.functional_call(wrapper, state, (args, kwargs), strict=False)
            devices = [t.device for t in _tensors((args, kwargs)) if t.device.type == "cuda"]
            with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
                torch.manual_seed(seed)
                return torch.func.functional_call(wrapper, state, (args, kwargs), strict=False)


def _clone_inputs(tree: Any) -> Any:
    return torch.utils._pytree.tree_map(
        lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


def _tensors(tree: Any):
    leaves, _ = torch.utils._pytree.tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor)]
