"""What a node computes, read the same way from torch.fx and torch.export graphs.

Deepening recognises a few ops by what they are: the layers that end a
"layer" (Linear, ConvNd, BatchNorm), residual adds, pass-through modules
(dropout, identity) and the module a node belongs to.  A
``symbolic_trace`` graph says so with ``call_module`` nodes; a graph captured
by ``torch.export`` (``ep.module()``) has none: its layers are ATen calls
(``aten.conv2d.default`` reading ``get_attr`` weights) and the module each
call came from is recorded in ``node.meta["nn_module_stack"]``.  The helpers
here read both, the ATen form through
:func:`fxgrow.ops.aten.canonical_target` (``aten.linear.default`` ->
``F.linear``), and the module classes from :mod:`fxgrow.ops.kinds`, so the
planner is written once.

Examples
--------
>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
>>> gm = torch.export.export(m, (torch.randn(1, 3, 8, 8),)).module()
>>> [(n.name, layer_kind(n)) for n in gm.graph.nodes if layer_kind(n)]
[('conv2d', 'conv'), ('batch_norm', 'bn')]
>>> [n.name for n in module_outputs(gm, "1")]
['batch_norm']
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from .access import node_arg, tensor_by_name
from .aten import bind, canonical_target
from .kinds import (ADD, BN_MODULES, CONV_FUNCTIONS, CONV_MODULES, PASSTHROUGH_MODULES,
                    is_op)

__all__ = ["layer_kind", "module_of", "batchnorm_params", "kernel_size", "is_residual_add",
           "is_passthrough", "scope_paths", "module_outputs", "type_names"]

def module_of(node: fx.Node) -> Optional[nn.Module]:
    """The module a ``call_module`` node calls (None for every other node)."""
    if node.op != "call_module":
        return None
    return node.graph.owning_module.get_submodule(node.target)


def _canonical(node: fx.Node) -> Any:
    return canonical_target(node) if node.op == "call_function" else None


def layer_kind(node: fx.Node) -> Optional[str]:
    """``"linear"``, ``"conv"``, ``"bn"`` for a layer with weights, else None.

    A call of a module (fx) or of the ATen/functional op it becomes (export).
    """
    m = module_of(node)
    if m is not None:
        if isinstance(m, nn.Linear):
            return "linear"
        if isinstance(m, CONV_MODULES):
            return "conv"
        if isinstance(m, BN_MODULES):
            return "bn"
        return None
    t = _canonical(node)
    if t is F.linear:
        return "linear"
    if t in CONV_FUNCTIONS and _weight(node) is not None:
        return "conv"
    if t is F.batch_norm:
        return "bn"
    return None


def _bound(node: fx.Node) -> Dict[str, Any]:
    """The call's arguments by schema name (ATen) or by position (functional)."""
    if isinstance(node.target, torch._ops.OpOverload):
        return bind(node.target, node.args, node.kwargs)
    return dict(node.kwargs)


def _weight(node: fx.Node) -> Optional[torch.Tensor]:
    w = node_arg(node, 1, "weight", None)
    if isinstance(w, fx.Node) and w.op == "get_attr":
        return tensor_by_name(node.graph.owning_module, w.target)
    return None


def batchnorm_params(node: fx.Node) -> Optional[Tuple[float, Optional[float], bool, str]]:
    """``(eps, momentum, training, type name)`` of a BatchNorm node, else None.

    The ATen form carries them as arguments (``aten.batch_norm(input, weight,
    bias, running_mean, running_var, training, momentum, eps, ...)``).
    """
    m = module_of(node)
    if isinstance(m, BN_MODULES):
        return m.eps, m.momentum, m.training, type(m).__name__
    if m is not None or _canonical(node) is not F.batch_norm:
        return None
    b = _bound(node)
    training = bool(b.get("training", False))
    if node.target is torch.ops.aten._native_batch_norm_legit_no_training.default:
        training = False
    name = scope_types(node)[-1] if scope_types(node) else "BatchNorm"
    return float(b.get("eps", 1e-5)), b.get("momentum", 0.1), training, name


def kernel_size(node: fx.Node) -> Optional[Tuple[int, ...]]:
    """The kernel size of a conv node (module or ATen), else None."""
    m = module_of(node)
    if isinstance(m, CONV_MODULES):
        return tuple(m.kernel_size)
    if m is None and layer_kind(node) == "conv":
        return tuple(_weight(node).shape[2:])
    return None


def is_residual_add(node: fx.Node) -> bool:
    """``a + b`` / ``a - b`` of two computed tensors (``operator.add``, ``x.add``, ATen)."""
    return is_op(node, ADD) and sum(isinstance(a, fx.Node) for a in node.args[:2]) == 2


def is_passthrough(node: fx.Node) -> bool:
    """Dropout/identity: BN mirroring looks through them (exact in eval mode)."""
    m = module_of(node)
    if m is not None:
        return isinstance(m, PASSTHROUGH_MODULES)
    return _canonical(node) is F.dropout


# -- module scopes ------------------------------------------------------------------

def _stack(node: fx.Node) -> List[Tuple[str, Any]]:
    stack = node.meta.get("nn_module_stack") or {}
    return [v for v in stack.values() if isinstance(v, tuple) and len(v) == 2]


def scope_paths(node: fx.Node) -> List[str]:
    """Qualified names of the modules whose call computed ``node``, outermost first."""
    return [path for path, _ in _stack(node)]


def scope_types(node: fx.Node) -> List[str]:
    """Class names of those modules (a class in fx graphs, a dotted string in export)."""
    return [t.__name__ if isinstance(t, type) else str(t).rsplit(".", 1)[-1]
            for _, t in _stack(node)]


def type_names(gm: fx.GraphModule) -> List[str]:
    """Class names of every module the graph's nodes came from (and of its submodules)."""
    names = {type(m).__name__ for m in gm.modules()}
    for n in gm.graph.nodes:
        names.update(scope_types(n))
    return sorted(names)


def module_outputs(gm: fx.GraphModule, name: str) -> List[fx.Node]:
    """The nodes that output each call of module ``name``, in call order.

    A call is a run of consecutive nodes whose ``nn_module_stack`` contains
    ``name`` (weights' ``get_attr`` nodes do not interrupt it); its outputs
    are the run's nodes read outside the run.  Works for leaf modules of an
    exported graph (``"fc1"`` -> its ``aten.linear`` node) and for containers
    in both kinds of graph (``"blocks.0"`` -> the block's last residual add).
    """
    runs: List[List[fx.Node]] = []
    cur: List[fx.Node] = []
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            continue
        if name in scope_paths(n):
            cur.append(n)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    out: List[fx.Node] = []
    for run in runs:
        inside = set(run)
        out += [n for n in run if any(u not in inside for u in n.users)]
    return out
