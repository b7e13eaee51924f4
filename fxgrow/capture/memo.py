"""Share the outputs of pure leaf layers between the model's run and the graph's.

The faithfulness check of capture runs the model and the captured graph on the
example input and compares their outputs: two forwards, most of whose time is
spent in convolutions and matrix products.  Where the graph calls a layer
(``call_module``) on exactly what the model gave the same layer, with the
layer's state untouched, the layer would compute exactly what it computed in
the model's run, so the graph's run can take that output instead of computing
it again (:class:`LeafMemo`).  The check's verdict is unchanged: the graph's
output is the value it would have computed.

Why the reused value is the one the graph would compute, call by call (the
k-th call of a layer in the graph is matched with its k-th call in the model):

* the layer is one of torch's own classes whose forward is a function of its
  inputs, its parameters and buffers and its Python attributes alone, with no
  random numbers and no writes (:data:`PURE_LAYERS`; exact types, so a
  subclass's forward or a parametrization is never trusted), and no hook runs
  around it (none on the layer, no global module hook);
* its tensors are the objects they were when each run started and none has been
  written since (their version counters); both runs start from equal values
  (:func:`fxgrow.capture.runner.call_pure` copies the same user tensors);
* its Python attributes (stride, padding, eps, ``training`` ...; other values
  by identity) and the value-affecting global state (autocast, matmul precision
  and TF32, backend switches, grad mode, the number of active dispatch and
  function modes) are equal at both calls;
* the inputs, positional and keyword, are equal in type, shape, stride, dtype,
  device and every value (``torch.equal``), and none was written between its
  model-run call and now, and the output was not written after the model's call
  either.

Anything else is computed as usual.  The model's final output is cloned by the
caller before the graph runs (:func:`detached_copy`), so an in-place op of the
graph on a shared value cannot change the reference it is compared with.  The
outputs are kept alive from the model's run to the graph's, up to
``budget`` bytes (default: the bytes of the model's parameters and buffers,
at least :data:`MIN_BUDGET`); later calls are computed.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["LeafMemo", "PURE_LAYERS", "detached_copy"]

#: torch layers whose forward reads only its inputs, tensors and Python attributes
PURE_LAYERS = frozenset({
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LayerNorm, nn.GroupNorm,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Embedding,
    nn.MultiheadAttention, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
})

MIN_BUDGET = 256 << 20

_SCALARS = (int, float, bool, str, type(None))


def _plain(v: Any) -> bool:
    """A Python value compared by ``==`` (a tensor inside a tuple is not)."""
    return isinstance(v, _SCALARS) or (type(v) is tuple and all(isinstance(e, _SCALARS)
                                                                 for e in v))


def _hooks_anywhere() -> bool:
    m = nn.modules.module
    return any(getattr(m, name, None) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks", "_global_module_registration_hooks"))


def _eligible(m: nn.Module) -> bool:
    if type(m) not in PURE_LAYERS:
        return False
    if any(s._forward_hooks or s._forward_pre_hooks or s._backward_hooks
           or getattr(s, "_backward_pre_hooks", None) for s in m.modules()):
        return False
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
        return False  # updates its running statistics: state written between calls
    if isinstance(m, nn.Embedding) and m.max_norm is not None:
        return False  # renormalises its weight rows in place
    if isinstance(m, nn.MultiheadAttention) and m.training and m.dropout:
        return False  # draws dropout masks
    return all(type(t) in (torch.Tensor, nn.Parameter) and not t.is_meta
               for t in _state_tensors(list(m.modules())))


def _state_tensors(subs: List[nn.Module]) -> List[torch.Tensor]:
    # attention reads its out_proj's weight itself: a layer's submodules' tensors count
    return [t for s in subs for d in (s._parameters, s._buffers) for t in d.values()
            if t is not None]


def _tensors_of(subs: List[nn.Module]) -> Tuple[Tuple[int, int], ...]:
    return tuple((id(t), t._version) for t in _state_tensors(subs))


def _attributes(subs: List[nn.Module]) -> Tuple[Any, ...]:
    # plain values by value, anything else (the parameter dicts, a replaced `forward`,
    # a cache) by identity: a layer whose attributes differ is not trusted
    return tuple((k, v if _plain(v) else id(v)) for s in subs for k, v in vars(s).items())


def _modes() -> Tuple[Any, ...]:
    """Global state a layer's values depend on, then the depth of the mode stacks."""
    auto = tuple((d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d))
                 for d in ("cpu", "cuda"))
    backends = torch.backends
    flags = (torch.get_float32_matmul_precision(), backends.cudnn.allow_tf32,
             backends.cuda.matmul.allow_tf32, backends.cudnn.enabled, backends.mkldnn.enabled,
             torch.is_grad_enabled(), torch.is_inference_mode_enabled())
    return (auto, flags, torch._C._len_torch_function_stack(),
            torch._C._len_torch_dispatch_stack())


def _key(value: Any) -> Any:
    """What an argument must match besides its values: a tensor's type and layout, or
    the value itself."""
    if isinstance(value, torch.Tensor):
        return (type(value), value.shape, value.stride(), value.dtype, value.device)
    return value


def _outputs(out: Any) -> Optional[Tuple[Optional[torch.Tensor], ...]]:
    """The tensors of a layer's output (a tensor, or a tuple of tensors and Nones such as
    attention's), or None for anything else."""
    parts = out if type(out) is tuple else (out,)
    if all(type(t) is torch.Tensor or (t is None and type(out) is tuple) for t in parts):
        return parts
    return None


def _nbytes(parts: Tuple[Optional[torch.Tensor], ...]) -> int:
    return sum(t.numel() * t.element_size() for t in parts if t is not None)


def _version(v: Any) -> Optional[int]:
    return v._version if isinstance(v, torch.Tensor) else None


class _Call:
    __slots__ = ("args", "kwargs", "versions", "out", "out_versions", "attrs", "modes")

    def __init__(self, args, kwargs, out, parts, attrs, modes) -> None:
        self.args, self.kwargs = args, dict(kwargs)
        self.versions = tuple(_version(a) for a in args + tuple(self.kwargs.values()))
        self.out, self.out_versions = out, tuple(_version(t) for t in parts)
        self.attrs, self.modes = attrs, modes

    def unchanged(self) -> bool:
        """Neither an input nor the output was written since the layer's call."""
        parts = _outputs(self.out) or ()
        values = self.args + tuple(self.kwargs.values())
        return tuple(_version(t) for t in parts) == self.out_versions and tuple(
            _version(a) for a in values) == self.versions

    def matches(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> bool:
        """``args`` and ``kwargs`` are this call's: same keys, types, layouts and values."""
        if len(args) != len(self.args) or kwargs.keys() != self.kwargs.keys():
            return False
        mine = self.args + tuple(self.kwargs[k] for k in kwargs)
        for a, b in zip(args + tuple(kwargs.values()), mine):
            if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor) or _key(a) != _key(b):
                return False
            if isinstance(a, torch.Tensor) and a is not b and not torch.equal(a, b):
                return False
        return True


class LeafMemo:
    """Outputs of ``model``'s pure leaf layers, recorded in one run and offered to another.

    Parameters
    ----------
    model : nn.Module
        The model whose layers are recorded (never changed: the hooks live only
        for the recording run).
    budget : int, optional
        The most output bytes kept alive between the runs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> memo = LeafMemo(m)
    >>> x = torch.randn(2, 3)
    >>> with memo.recording():
    ...     ref = m(x)
    >>> with memo.offering():
    ...     h = memo.lookup(m[0], (x,), {})
    >>> h is not None and torch.equal(h, m[0](x))
    True
    """

    def __init__(self, model: nn.Module, budget: Optional[int] = None) -> None:
        self._layers = {id(m): m for m in model.modules() if _eligible(m)}
        if _hooks_anywhere():
            self._layers = {}
        self._subs = {i: list(m.modules()) for i, m in self._layers.items()}
        if budget is None:
            size = sum(t.numel() * t.element_size() for t in
                       list(model.parameters()) + list(model.buffers()))
            budget = max(size, MIN_BUDGET)
        self._budget = budget
        self._calls: Dict[int, List[Optional[_Call]]] = {}
        self._start: Dict[int, Tuple[Tuple[int, int], ...]] = {}
        self._modes: Tuple[Any, ...] = ()
        self._next: Dict[int, int] = {}
        self.hits = 0

    def _begin(self) -> None:
        # the tensors each layer holds as this run starts (call_pure has swapped in
        # its copies by now), and the mode stack's depth the run itself starts at
        self._start = {i: _tensors_of(subs) for i, subs in self._subs.items()}
        self._modes = _modes()

    def _state(self, m: nn.Module) -> Optional[Tuple[Any, Any]]:
        """(attributes, modes relative to the run's start), or None when a tensor of ``m``
        was replaced or written since the run started."""
        subs = self._subs[id(m)]
        if _tensors_of(subs) != self._start.get(id(m)):
            return None
        modes = _modes()
        return _attributes(subs), modes[:2] + tuple(a - b for a, b in zip(modes[2:],
                                                                        self._modes[2:]))

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record every eligible layer's calls while the block runs the model."""
        self._begin()
        self._calls = {i: [] for i in self._layers}
        left = [self._budget]

        def hook(m, args, kwargs, out):
            state, parts = self._state(m), _outputs(out)
            size = _nbytes(parts) if parts is not None else 0
            keep = state is not None and parts is not None and size <= left[0]
            if keep:
                left[0] -= size
            self._calls[id(m)].append(_Call(tuple(args), kwargs, out, parts, *state)
                                      if keep else None)

        handles = [m.register_forward_hook(hook, with_kwargs=True)
                   for m in self._layers.values()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def offering(self) -> Iterator[None]:
        """The block runs the graph: :meth:`lookup` offers the recorded outputs."""
        self._begin()
        self._next = {i: 0 for i in self._calls}
        yield

    def lookup(self, m: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]
               ) -> Optional[torch.Tensor]:
        """The recorded output of this call of ``m``, or None: compute it."""
        calls = self._calls.get(id(m))
        if calls is None or self._layers.get(id(m)) is not m:
            return None
        k = self._next[id(m)]
        self._next[id(m)] = k + 1
        call = calls[k] if k < len(calls) else None
        if call is None or not call.unchanged() or self._state(m) != (call.attrs, call.modes):
            return None
        if not call.matches(tuple(args), kwargs):
            return None
        self.hits += 1
        return call.out

    def call(self, module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """``module(*args, **kwargs)``, recording (a ``fn`` for :func:`call_pure`)."""
        with self.recording():
            return module(*args, **kwargs)

    def clear(self) -> None:
        """Drop every recorded output."""
        self._calls, self._next = {}, {}


def detached_copy(tree: Any) -> Any:
    """Every tensor in ``tree`` cloned: a reference no later in-place op can change."""
    return torch.utils._pytree.tree_map(
        lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)
