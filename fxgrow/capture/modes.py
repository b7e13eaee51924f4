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

from typing import Any, Callable, Dict

import torch
from torch import fx, nn

from .. import meta
from ..errors import ModeError
from . import signature
from .runner import preserved

__all__ = ["ModeError", "fx_dependence", "export_dependence", "guard", "inherit"]

#: ATen ops whose result depends on the mode export ran in
_MODE_OPS = ("dropout", "native_dropout", "feature_dropout", "alpha_dropout", "batch_norm",
             "native_batch_norm", "_native_batch_norm_legit", "instance_norm")


def fx_dependence(model: nn.Module, gm: fx.GraphModule, retrace: Callable[[], fx.GraphModule]
                  ) -> str:
    """``"same"`` if tracing ``model`` in the other mode gives ``gm``'s code, else ``"differs"``."""
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
