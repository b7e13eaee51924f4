"""Activations, as deepening sees them: which ones, idempotent or not.

Net2DeeperNet inserts ``φ(I·h)`` after a node whose value is ``h``.  That is
``h`` again exactly when ``h`` already lies in the image of ``φ`` and ``φ``
is the identity there, i.e. when the node *is* ``φ`` and ``φ`` is idempotent
(``φ(φ(z)) = φ(z)``): ReLU, ReLU6 and Hardtanh (with the same bounds) are;
GELU, SiLU, tanh, sigmoid, LeakyReLU, ... are not.  This module recognises
the activation a node computes -- a module, a functional call, or the ATen op
of a ``torch.export`` graph (``aten.relu_.default``, read through
:func:`fxgrow.ops.aten.canonical_target`) -- and builds an equivalent
``nn.Module`` for the inserted block (functional calls such as ``F.relu``
become modules, so every inserted op is a named submodule).

Examples
--------
>>> import torch
>>> from torch import fx, nn
>>> gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU6(), nn.GELU()))
>>> [(a.name, a.idempotent) for a in map(activation_of, gm.graph.nodes) if a]
[('ReLU6', True), ('GELU', False)]
>>> ep = torch.export.export(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), (torch.randn(1, 2),))
>>> [a.name for a in map(activation_of, ep.module().graph.nodes) if a]
['ReLU']
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from .access import node_arg
from .aten import canonical_target
from .kinds import IDEMPOTENT_ACTIVATIONS, OTHER_ACTIVATIONS

__all__ = ["Activation", "activation_of"]

@dataclass(frozen=True)
class Activation:
    """The activation a node computes: its name, idempotence and a module factory."""

    name: str
    idempotent: bool
    make: Callable[[], nn.Module]

    def __repr__(self) -> str:
        return f"Activation({self.name}, idempotent={self.idempotent})"


def _fresh(module: nn.Module) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        m = copy.deepcopy(module)
        if hasattr(m, "inplace"):
            m.inplace = False  # the block owns its tensors; in-place buys nothing
        return m
    return make


def _aten_name(node: fx.Node) -> Optional[str]:
    """``"hardtanh"`` for ``aten.hardtanh_.default`` (the packet, in-place ``_`` dropped)."""
    if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
        return node.target._schema.name.split("::")[-1].rstrip("_")
    return None


def _functional(node: fx.Node) -> Optional[Activation]:
    t = node.target if node.op == "call_function" else None
    m = node.target if node.op == "call_method" else None
    aten = _aten_name(node)
    if aten is not None:
        # an export graph: read the ATen op as the torch function it computes.  Their
        # arguments sit at the same positions with the same names (gelu's approximate,
        # hardtanh's bounds, leaky_relu's slope, elu's alpha), so the checks below apply.
        # Hardtanh is read by name: the rule table files it under F.relu6.
        t = F.hardtanh if aten == "hardtanh" else canonical_target(node)
        if t is F.relu6 and aten != "relu6":
            return None

    def const(*vals: Any) -> bool:
        return all(not isinstance(v, fx.Node) for v in vals)

    if t in (F.relu, torch.relu) or m == "relu":
        return Activation("ReLU", True, nn.ReLU)
    if t is F.relu6:
        return Activation("ReLU6", True, nn.ReLU6)
    if t is F.hardtanh:
        lo, hi = node_arg(node, 1, "min_val", -1.0), node_arg(node, 2, "max_val", 1.0)
        if const(lo, hi):
            return Activation("Hardtanh", True, lambda: nn.Hardtanh(lo, hi))
        return None
    if t is F.gelu:
        approx = node_arg(node, 1, "approximate", "none")
        return Activation("GELU", False, lambda: nn.GELU(approximate=approx))
    if t is F.leaky_relu:
        slope = node_arg(node, 1, "negative_slope", 0.01)
        if const(slope):
            return Activation("LeakyReLU", False, lambda: nn.LeakyReLU(slope))
        return None
    if t is F.elu:
        alpha = node_arg(node, 1, "alpha", 1.0)
        if const(alpha):
            return Activation("ELU", False, lambda: nn.ELU(alpha))
        return None
    simple = {F.silu: nn.SiLU, torch.tanh: nn.Tanh, F.tanh: nn.Tanh, torch.sigmoid: nn.Sigmoid,
              F.sigmoid: nn.Sigmoid, F.hardswish: nn.Hardswish, F.mish: nn.Mish,
              F.softplus: nn.Softplus, F.selu: nn.SELU, torch.selu: nn.SELU,
              F.hardsigmoid: nn.Hardsigmoid, F.softsign: nn.Softsign}
    methods = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    cls = simple.get(t) if t is not None else methods.get(m)
    if cls is not None and len(node.args) == 1 and not node.kwargs:
        return Activation(cls.__name__, False, cls)
    return None


def activation_of(node: fx.Node) -> Optional[Activation]:
    """The element-wise activation ``node`` computes, or None.

    ``node`` must belong to a graph whose owning module is reachable as
    ``node.graph.owning_module`` (true of every ``GraphModule``).
    """
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(node.target)
        if type(module) in IDEMPOTENT_ACTIVATIONS:
            return Activation(type(module).__name__, True, _fresh(module))
        if type(module) in OTHER_ACTIVATIONS:
            return Activation(type(module).__name__, False, _fresh(module))
        return None
    if node.op in ("call_function", "call_method"):
        return _functional(node)
    return None
