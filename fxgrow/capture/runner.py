"""Run a module on inputs without changing its state, or the inputs'.

A forward pass can change a model: BatchNorm in training mode updates its
running statistics, ``nn.Embedding(max_norm=...)`` renormalises its weight
rows in place, a forward may edit weights under ``no_grad`` (``clamp_``),
count its calls in a Python attribute (``self.n += 1``), edit its input
(``x.mul_(2)``), or, while torch.fx traces it, store a ``Proxy`` where it
assigns a buffer.  fxgrow runs user models to learn shapes, to trace them and
to verify growth, and must change none of that, so every such run goes
through this module:

* :func:`call_pure` gives the module private copies of its buffers and the
  call private copies of its inputs, keeps its parameters from being written
  (or, for a module whose parameters are cheap to copy, or one whose forward
  writes them, gives it private copies of those too), and restores every
  submodule's Python attributes afterwards;
* :func:`preserved` is the last part alone, for tracing.

Copying every parameter costs as much as a large part of a forward pass
(33 ms of resnet50's 80, one thread), so a module whose parameters are large
runs on its own parameters under :class:`_GuardWrites`, a dispatch mode that
looks at every ATen op *before* it runs and stops the call, with nothing
written, when the op's schema says it writes (in place, ``out=``) to memory a
parameter owns; the call then runs again on private copies.  Buffers are
always copied: they are small, and the batch-norm kernels update running
statistics their schemas do not declare as written.  What the call does to
the parameter objects themselves (``p.data = ...``, ``requires_grad_``,
``.grad``, Python attributes, hooks) is undone afterwards.  Writes that do
not go through the ATen dispatcher at all (through a NumPy view of a
parameter, a raw data pointer, a C++ extension called outside
``torch.ops``) are not seen by the guard; no forward fxgrow has met does that.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

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

    Saves a shallow copy of each submodule's ``__dict__`` and of every dict, list
    and set in it (parameters, buffers, submodules, hooks, caches), and puts them
    back: a ``self.n += 1``, a
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
    saved: List[Tuple[Dict[str, Any], Dict[str, Any], List[Tuple[Any, Any]]]] = []
    for m in module.modules():
        # every container attribute's contents too, not only the parameter, buffer and hook
        # dicts: a cache filled in place (timm's `attention_bias_cache[device] = ...`) would
        # otherwise keep a tracer's Proxy or fake tensor in the user's model
        state = vars(m)
        saved.append((state, dict(state), [(v, _contents(v)) for v in state.values()
                                            if isinstance(v, _CONTAINERS)]))
    try:
        yield
    finally:
        for state, attrs, contents in saved:
            state.clear()
            state.update(attrs)
            for target, c in contents:  # the containers themselves were shared: refill
                if c or target:  # (most are empty hook dicts that stayed empty)
                    _refill(target, c)


_CONTAINERS = (dict, list, set)


def _contents(v: Any) -> Any:
    return dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else set(v)


def _refill(target: Any, c: Any) -> None:
    if isinstance(target, list):
        target[:] = c
    else:
        target.clear()
        target.update(c)


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

    Buffers are replaced by clones for the call, parameters are kept from
    being written (or replaced by clones, see the module docstring), the
    inputs are cloned, and the submodules' attributes are restored afterwards
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
        params = list(module.named_parameters())
        if _guard_pays(module, [t for _, t in params]):
            rng = None if seed is not None else _rng_state((args, kwargs))
            try:
                return _call(module, wrapper, _copies(module.named_buffers()), args, kwargs,
                             seed, guard=[t for _, t in params])
            except _Written:
                if rng is not None:  # the stopped call's draws are not the caller's
                    _set_rng_state(rng)
        state = _copies(params + list(module.named_buffers()))
        return _call(module, wrapper, state, args, kwargs, seed)


def _copies(named) -> Dict[str, torch.Tensor]:
    return {f"inner.{name}": t.detach().clone().requires_grad_(t.requires_grad)
            if t.is_floating_point() or t.is_complex() else t.detach().clone()
            for name, t in named}


def _call(module, wrapper, state, args, kwargs, seed, guard=None) -> Any:
    args, kwargs = _clone_inputs((args, kwargs))
    with preserved(module), _guarded(guard) as mode:
        if seed is None:
            out = torch.func.functional_call(wrapper, state, (args, kwargs), strict=False)
        else:
            devices = [t.device for t in _tensors((args, kwargs)) if t.device.type == "cuda"]
            with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
                torch.manual_seed(seed)
                out = torch.func.functional_call(wrapper, state, (args, kwargs), strict=False)
    if mode is None:
        return out
    if mode.stopped:  # the forward caught _Written and went on: its result is not the model's
        raise _Written(mode.stopped)
    # an output that is a parameter (or a view of one) must not let the caller write to it
    return torch.utils._pytree.tree_map(
        lambda t: t.clone() if isinstance(t, torch.Tensor) and _storage(t) in mode.storages
        else t, out)


#: guard the parameters (a dispatch mode, ~25 us per ATen op) rather than copy them
#: (~0.3 ms per MB) when they hold more than this many bytes per submodule
GUARD_BYTES_PER_MODULE = 100_000


def _guard_pays(module: nn.Module, params: List[torch.Tensor]) -> bool:
    if not params or any(type(p) not in (torch.Tensor, nn.Parameter) or p.is_meta
                         or p.layout != torch.strided for p in params):
        return False
    size = sum(p.numel() * p.element_size() for p in params)
    return size > GUARD_BYTES_PER_MODULE * sum(1 for _ in module.modules())


class _Written(BaseException):
    """A guarded call was about to write to a parameter (a BaseException, so that a
    forward's ``except Exception`` does not swallow it)."""


def _storage(t: torch.Tensor) -> Optional[int]:
    try:
        return t.untyped_storage()._cdata
    except Exception:  # noqa: BLE001 - no plain storage (a sparse tensor, a subclass)
        return None


def _unsafe(storage: Optional[int], storages) -> bool:
    return storage is None or storage in storages  # no storage to compare: assume the worst


@functools.lru_cache(maxsize=None)
def _written_arguments(op: Any) -> Tuple[Tuple[int, str], ...]:
    """(position, name) of every argument the op's schema says it writes."""
    return tuple((i, a.name) for i, a in enumerate(op._schema.arguments)
                 if a.alias_info is not None and a.alias_info.is_write)


class _GuardWrites(TorchDispatchMode):
    """Stops (raises :class:`_Written`) before any ATen op that writes to ``storages``."""

    def __init__(self, storages) -> None:
        super().__init__()
        self.storages = storages
        self.stopped: Optional[str] = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for i, name in _written_arguments(func):
            value = args[i] if i < len(args) else kwargs.get(name)
            for t in (value if isinstance(value, (list, tuple)) else (value,)):
                if isinstance(t, torch.Tensor) and _unsafe(_storage(t), self.storages):
                    self.stopped = f"{func} writes to a parameter"
                    raise _Written(self.stopped)
        return func(*args, **kwargs)


@contextlib.contextmanager
def _guarded(params: Optional[List[torch.Tensor]]) -> Iterator[Optional[_GuardWrites]]:
    """Guard ``params`` against writes for the block, and undo what it does to the
    parameter objects (their data, flags, gradients, attributes and hooks)."""
    if params is None:
        yield None
        return
    saved = [(p, p.detach(), _geometry(p), p.requires_grad, p.grad, dict(vars(p)),
              p._backward_hooks) for p in params]
    mode = _GuardWrites(frozenset(_storage(p) for p in params))
    try:
        with mode:
            yield mode
    finally:
        for p, alias, geometry, requires_grad, grad, attrs, hooks in saved:
            if _geometry(p) != geometry:  # `p.data = ...`: give it its own tensor back
                p.data = alias
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
            if p.grad is not grad:
                p.grad = grad
            if vars(p) != attrs:
                vars(p).clear()
                vars(p).update(attrs)
            if p._backward_hooks is not hooks:
                p._backward_hooks = hooks


def _geometry(t: torch.Tensor) -> Tuple[Any, ...]:
    return (_storage(t), t.storage_offset(), t.shape, t.stride(), t.dtype, t.device)


def _rng_state(tree: Any) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
    cuda = sorted({t.device.index or 0 for t in _tensors(tree) if t.device.type == "cuda"})
    return torch.get_rng_state(), {d: torch.cuda.get_rng_state(d) for d in cuda}


def _set_rng_state(state: Tuple[torch.Tensor, Dict[int, torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    for d, s in state[1].items():
        torch.cuda.set_rng_state(s, d)


def _clone_inputs(tree: Any) -> Any:
    return torch.utils._pytree.tree_map(
        lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


def _tensors(tree: Any):
    leaves, _ = torch.utils._pytree.tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor)]
