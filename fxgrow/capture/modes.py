"""Train and eval mode in a captured graph: follow the switch, or refuse it clearly.

A graph is captured in the model's current mode.  Mode-dependent layers
torch.fx keeps as leaves (``nn.Dropout``, ``nn.BatchNorm2d``, and modules with
a rule, such as timm's ``DropPath``) follow ``train()``/``eval()`` in the grown
graph.  Everything else that reads ``self.training`` is baked in: fx evaluates
``F.dropout(h, p, self.training)`` or ``if self.training:`` while tracing, and
torch.export specialises dropout and BatchNorm to the mode it ran in.

So capture records the mode it traced in and whether the graph depends on it
(``meta["fxgrow.capture"]["training"]`` and ``["modes"]``: ``"same"`` when a
trace in the other mode gives the same graph, ``"differs"`` otherwise), and
:func:`guard` makes a graph that differs refuse to run in the other mode,
with a clear :class:`~fxgrow.errors.FxGrowError`, instead of silently running
the traced one.  The guard is a forward pre-hook, so it is copied (and saved)
with every model grown from the graph.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import fx, nn

from .. import meta
from ..errors import ModeError
from . import signature
from .runner import preserved

__all__ = ["ModeError", "TrainingWatch", "fx_dependence", "export_dependence", "guard", "inherit"]

#: ATen ops whose result depends on the mode export ran in
_MODE_OPS = ("dropout", "native_dropout", "feature_dropout", "alpha_dropout", "batch_norm",
             "native_batch_norm", "_native_batch_norm_legit", "instance_norm")


class _TrainingFlag:
    """``nn.Module.training`` while a trace is watched: the instance's own flag, read
    through here so that each read is noted by every active :class:`TrainingWatch`."""

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        for watch in _WATCHES:
            watch.read = True
        try:
            return obj.__dict__["training"]
        except KeyError:
            raise AttributeError("training") from None

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["training"] = value


_FLAG = _TrainingFlag()
_WATCHES: List["TrainingWatch"] = []
_LOCK = threading.Lock()


class TrainingWatch:
    """Notes whether any module's ``training`` flag is read inside the block.

    ``watchable`` is False when a read on ``model`` could escape the watch (see the
    module docstring); ``read`` is then meaningless.

    >>> m = nn.Linear(2, 2)
    >>> with TrainingWatch(m) as w:
    ...     _ = m.training
    >>> w.watchable, w.read
    (True, True)
    """

    def __init__(self, model: nn.Module) -> None:
        self.read = False
        self.watchable = nn.Module.__dict__.get("training", _FLAG) is _FLAG and all(
            _plain_flag(m) for m in model.modules())

    def __enter__(self) -> "TrainingWatch":
        if self.watchable:
            with _LOCK:
                if not _WATCHES:
                    nn.Module.training = _FLAG  # type: ignore[assignment]
                _WATCHES.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.watchable:
            with _LOCK:
                _WATCHES.remove(self)
                if not _WATCHES:
                    del nn.Module.training


def _plain_flag(m: nn.Module) -> bool:
    """Every read of ``m.training`` goes through ``nn.Module``'s attribute, and flipping
    the mode changes nothing but the flags."""
    cls = type(m)
    owner = next((k for k in cls.__mro__ if "training" in vars(k)), nn.Module)
    return (owner is nn.Module and "training" in vars(m) and cls.train is nn.Module.train
            and cls.__setattr__ is nn.Module.__setattr__
            and cls.__getattribute__ is nn.Module.__getattribute__)


def fx_dependence(model: nn.Module, gm: fx.GraphModule, retrace: Callable[[], fx.GraphModule],
                  watch: Optional[TrainingWatch] = None) -> str:
    """``"same"`` if tracing ``model`` in the other mode gives ``gm``'s code, else ``"differs"``.

    With ``watch`` (the watch ``gm``'s trace ran under), a trace that read no mode
    flag is ``"same"`` without tracing again.
    """
    if watch is not None and watch.watchable and not watch.read:
        return "same"
    with preserved(model):  # flips every submodule's flag, and puts them back
        model.train(not model.training)
        try:
            other = retrace()
        except Exception:  # noqa: BLE001 - a model that only traces in one mode depends on it
            return "differs"
    return "same" if other.code == gm.code else "differs"


def export_dependence(gm: fx.GraphModule) -> str:
    """``"differs"`` if the exported graph holds an op specialised to the export's mode."""
    for node in gm.graph.nodes:
        name = getattr(node.target, "__name__", "") if node.op == "call_function" else ""
        if name.split(".")[0] in _MODE_OPS:
            return "differs"
    return "same"


def inherit(how: Dict[str, Any], gm: fx.GraphModule) -> None:
    """Keep what an earlier capture (of the graph fxgrow grew) knew of modes."""
    earlier = getattr(gm, "meta", {}).get(meta.CAPTURE, {})
    for key in ("training", "modes", "specialised"):
        if key in earlier:
            how[key] = earlier[key]


def _mode_guard(module: nn.Module, args: Any) -> None:
    how = module.meta.get(meta.CAPTURE, {})
    traced = how.get("training")
    if traced is not None and module.training != traced:
        mode, other = ("train", "eval") if traced else ("eval", "train")
        raise ModeError(
            f"this graph was captured in {mode} mode, and what it computes depends on the mode "
            f"(dropout, BatchNorm or `if self.training` baked in by tracing), so it cannot run in "
            f"{other} mode. Call .{mode}() on it, or grow your own module instead "
            "(fxgrow.widen(..., output='module') or fxgrow.grow_into), which keeps both modes")


def guard(gm: fx.GraphModule, how: Dict[str, Any]) -> None:
    """Make ``gm`` refuse to run in the mode it was not captured in, if that would differ.

    >>> gm = torch.fx.symbolic_trace(nn.Linear(2, 2))
    >>> gm.meta[meta.CAPTURE] = {"training": False, "modes": "differs"}
    >>> guard(gm, gm.meta[meta.CAPTURE])
    >>> _ = gm.train()(torch.randn(1, 2))
    Traceback (most recent call last):
    ...
    fxgrow.errors.ModeError: this graph was captured in eval mode, ...
    """
    if how.get("modes") == "differs" and _mode_guard not in gm._forward_pre_hooks.values():
        gm.register_forward_pre_hook(_mode_guard)
    signature.guard(gm, how)  # and the keyword arguments capture specialised
