"""Deepening plans: where new layers go, of what kind, and why that is exact.

:func:`plan_deepening` is pure: it reads an :class:`~fxgrow.groups.Analysis`
(the layouts every node's output carries) and decides, for each requested
location, everything the rewrite needs: the channel dimension, the layer
kind (``linear`` or ``conv1d/2d/3d``), the kernel size, the activation, the
BatchNorm to mirror, the method and the new module's name.  Nothing is built
or run here; :mod:`fxgrow.deepen_blocks` builds the modules and
:func:`fxgrow.deepen` calibrates, inserts and verifies.

Where a new layer may go
------------------------
A location is a node whose output has exactly one *neuron* dimension that is
not fixed: dim 1 of an ``(N, C, *spatial)`` map (a ConvNd is inserted) or the
last dim of ``(N, C)`` / ``(N, T, C)`` (a Linear).  Fixed channels (they reach
the model output or input) and tensors without neuron dims (model inputs,
flattened maps whose dim mixes channels and space, scalars) are refused.

Which method is exact
---------------------
``identity`` inserts ``φ(BN(I·h))``.  ``I·h = h`` always; a mirrored BN set
to γ = √(var + ε), β = mean is the identity in eval mode; and ``φ(h) = h``
only when the node already *is* ``φ`` and ``φ`` is idempotent.  After a node
that is not an activation no ``φ`` is inserted (the "identity activation").
``residual`` inserts ``h + L2(φ(BN(L1(h))))`` with ``L2 = 0``: exact for any
``φ`` and in any mode.  ``auto`` takes identity where it is exact, else
residual.

Examples
--------
>>> import torch, fxgrow
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
>>> plan = plan_deepening(fxgrow.analyze(m, torch.randn(3, 4)), "all", method="auto")
>>> [(i.node, i.name, i.method, i.activation.name) for i in plan.insertions]
[('_1', '1_deepen0', 'identity', 'ReLU'), ('_3', '3_deepen0', 'residual', 'GELU')]
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import fx, nn

from .deepen_acts import Activation, activation_of
from .errors import (NotDeepenableError, NotIdempotentError, SpecError, UnknownLocationError)
from .groups import Analysis
from .layout import Layout, leaves
from .shapes import TensorSpec
from .spaces import FIXED
from .values import TV

__all__ = ["BatchNormSpec", "Insertion", "DeepeningPlan", "plan_deepening", "METHODS"]

METHODS = ("identity", "residual", "auto")

Location = Union[str, Iterable[str], Callable[[fx.Node], bool]]

_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_PASS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_ADD = ("add", "sub")


@dataclass(frozen=True)
class BatchNormSpec:
    """The BatchNorm an inserted block mirrors (its hyper-parameters and mode)."""

    eps: float = 1e-5
    momentum: Optional[float] = 0.1
    training: bool = False
    mirrors: str = ""  # the module it copies ('' when forced by batchnorm=True)


@dataclass(frozen=True)
class Insertion:
    """One new block, fully decided.

    ``node`` is the fx node after which it goes; ``name`` the qualified name
    of the new submodule; ``dim`` the channel dimension of the node's output
    (1 for conv, the last for linear); ``why`` says why ``method`` is exact.
    """

    node: str
    name: str
    method: str
    kind: str
    dim: int
    channels: int
    kernel_size: int
    activation: Optional[Activation]
    batchnorm: Optional[BatchNormSpec]
    dtype: torch.dtype
    why: str

    @property
    def needs_calibration(self) -> bool:
        """An identity block's BN gets γ and β from data statistics."""
        return self.method == "identity" and self.batchnorm is not None

    @property
    def exact(self) -> bool:
        """Function preserving in the block's mode (BN in training mode is only close)."""
        return not (self.needs_calibration and self.batchnorm.training)

    def record(self) -> Dict[str, object]:
        """What ``gm.meta["fxgrow.deepen"]`` lists for this insertion."""
        return {"after": self.node, "module": self.name, "method": self.method,
                "layer": self.kind, "channels": self.channels,
                "kernel_size": self.kernel_size if self.kind != "linear" else None,
                "activation": (self.activation.name if self.activation else
                               "ReLU" if self.method == "residual" else None),
                "batchnorm": self.batchnorm is not None, "why": self.why}


@dataclass(frozen=True)
class DeepeningPlan:
    """Every insertion of one ``deepen`` call; ``skipped`` maps node -> reason (``after="all"``)."""

    analysis: Analysis = field(repr=False)
    insertions: Tuple[Insertion, ...]
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def needs_calibration(self) -> List[Insertion]:
        return [i for i in self.insertions if i.needs_calibration]


# -- locating ------------------------------------------------------------------

def _module(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is(gm: fx.GraphModule, node: fx.Node, types: tuple) -> bool:
    return isinstance(_module(gm, node), types)


def _first_input(node: fx.Node) -> Optional[fx.Node]:
    return node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None


def _is_layer_end(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A node that ends a layer: what ``after="all"`` inserts after.

    Producers, BatchNorms, activations and residual adds qualify, unless a
    BatchNorm or activation reads them next (then the layer ends later):
    conv -> BN -> ReLU gives one location, after the ReLU.
    """
    kind = (_is(gm, node, tuple(_CONV) + (nn.Linear,) + _BN) or activation_of(node) is not None
            or (node.op == "call_function" and getattr(node.target, "__name__", "") in _ADD)
            or (node.op == "call_method" and node.target in _ADD))
    if not kind:
        return False
    return not any(_first_input(u) is node and (_is(gm, u, _BN) or activation_of(u) is not None)
                   for u in node.users)


def _resolve(gm: fx.GraphModule, after: Location) -> Tuple[List[fx.Node], bool]:
    """The nodes ``after`` names, and whether ineligible ones are skipped ("all")."""
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    if isinstance(after, str) and after == "all":
        return [n for n in nodes if _is_layer_end(gm, n)], True
    if callable(after) and not isinstance(after, (str, fx.Node)):
        picked = [n for n in nodes if after(n)]
        if not picked:
            raise UnknownLocationError("the `after` predicate matches no node of the graph")
        return picked, False
    names = [after] if isinstance(after, (str, fx.Node)) else list(after)
    by_name = {n.name: n for n in nodes}
    by_module: Dict[str, List[fx.Node]] = {}
    for n in nodes:
        if n.op == "call_module":
            by_module.setdefault(n.target, []).append(n)
    picked: List[fx.Node] = []
    for name in names:
        if isinstance(name, fx.Node):
            name = name.name
        if not isinstance(name, str):
            raise SpecError(f"`after` items must be node or module names, got {name!r}")
        if name in by_module:  # a module called twice gets a block after each call
            picked += by_module[name]
        elif name in by_name:
            picked.append(by_name[name])
        else:
            close = difflib.get_close_matches(name, list(by_module) + list(by_name), n=3)
            raise UnknownLocationError(
                f"no node or module named `{name}`"
                + (f"; did you mean {close}?" if close else "")
                + " (module names are dotted, e.g. `layer1.0.relu`; node names are the "
                  "torch.fx names, e.g. `layer1_0_relu_1`)")
    if not names:
        raise UnknownLocationError("`after` names no location")
    return list(dict.fromkeys(picked)), False


# -- checking one location -------------------------------------------------------

def _neuron(analysis: Analysis, layout: Layout) -> bool:
    ls = list(leaves(layout))
    return bool(ls) and not any(analysis.spaces[a.space][2] for a in ls)


def _fixed_reason(analysis: Analysis, layout: Layout) -> Optional[str]:
    for a in leaves(layout):
        if analysis.spaces[a.space][1] == FIXED:
            group = next((g for g in analysis.groups if g.id == a.space), None)
            return group.reason if group and group.reason else "its channels are fixed"
    return None


def _channel_dim(analysis: Analysis, node: fx.Node) -> Tuple[int, str]:
    """The channel dim of ``node``'s output and the layer kind, or NotDeepenableError."""
    where = f"cannot insert a layer after `{node.name}`"
    value, spec = node.meta.get("fxgrow.value"), node.meta.get("fxgrow.shape")
    if not isinstance(value, TV) or not isinstance(spec, TensorSpec):
        raise NotDeepenableError(f"{where}: its output is not a tensor", "not a tensor")
    if node.op in ("placeholder", "get_attr"):
        what = "a model input" if node.op == "placeholder" else "a stored tensor"
        raise NotDeepenableError(f"{where}: it is {what}, not a neuron tensor computed by a layer",
                                 "not a neuron tensor")
    if not spec.dtype.is_floating_point:
        raise NotDeepenableError(f"{where}: its output is {spec.dtype}, not floating point",
                                 "not floating point")
    neuron = [_neuron(analysis, d) for d in value.dims]
    nd = len(value.dims)
    if nd >= 3 and neuron[1] and not any(neuron[2:]) and nd - 2 in (1, 2, 3):
        dim, kind = 1, f"conv{nd - 2}d"
    elif nd >= 2 and neuron[-1] and not any(neuron[1:-1]):
        dim, kind = nd - 1, "linear"
    else:
        why = ("the model input" if node.op == "placeholder" else
               f"no dimension of its {tuple(spec.shape)} output indexes neurons alone "
               "(e.g. flattened channels x space, or a model input)")
        raise NotDeepenableError(f"{where}: not a neuron tensor: {why}", "not a neuron tensor")
    fixed = _fixed_reason(analysis, value.dims[dim])
    if fixed is not None:
        raise NotDeepenableError(
            f"{where}: its channels are fixed ({fixed}); a layer there could not be widened "
            "and its output size may not change", fixed)
    return dim, kind


def _walk_back(gm: fx.GraphModule, node: fx.Node):
    """``(BatchNorm, producer)`` of the pattern producer -> [BN] -> [dropout] -> [act] -> node."""
    cur: Optional[fx.Node] = node
    if activation_of(node) is not None:
        cur = _first_input(node)
    while cur is not None and _is(gm, cur, _PASS):
        cur = _first_input(cur)
    bn = None
    if cur is not None and _is(gm, cur, _BN):
        bn = _module(gm, cur)
        cur = _first_input(cur)
    producer = _module(gm, cur) if cur is not None else None
    return bn, producer if isinstance(producer, tuple(_CONV) + (nn.Linear,)) else None


def _kernel(kind: str, producer: Optional[nn.Module], kernel_size: Optional[int]) -> int:
    if kind == "linear":
        return 1
    if kernel_size is not None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise SpecError(f"kernel_size must be a positive odd int (a Dirac kernel is centred "
                            f"at (k-1)/2), got {kernel_size}")
        return kernel_size
    ks = getattr(producer, "kernel_size", None)
    if ks and len(set(ks)) == 1 and ks[0] % 2 == 1:
        return ks[0]  # mirror the producer's receptive field
    return 3


def _bn_spec(bn: Optional[nn.Module], dim: int, force: Optional[bool],
             training: bool, where: str) -> Optional[BatchNormSpec]:
    if force is False or (force is None and bn is None):
        return None
    if dim != 1:  # BatchNorm normalises dim 1; a Linear on (N, T, C) has its channels last
        if force:
            raise SpecError(f"{where}: batchnorm=True needs the channels in dim 1")
        return None
    if bn is None:
        return BatchNormSpec(training=training)
    return BatchNormSpec(bn.eps, bn.momentum, bn.training, type(bn).__name__)


def plan_deepening(
    analysis: Analysis,
    after: Location,
    *,
    method: str = "identity",
    batchnorm: Optional[bool] = None,
    kernel_size: Optional[int] = None,
    training: bool = False,
) -> DeepeningPlan:
    """Decide every insertion (pure: nothing is built, run or changed).

    Parameters
    ----------
    analysis : Analysis
        Of the model to deepen (its nodes carry ``fxgrow.value`` layouts).
    after, method, batchnorm, kernel_size :
        As for :func:`fxgrow.deepen`.
    training : bool
        Mode of a BatchNorm forced by ``batchnorm=True`` where none is mirrored.

    Returns
    -------
    DeepeningPlan

    Raises
    ------
    UnknownLocationError, NotDeepenableError, NotIdempotentError, SpecError
    """
    if method not in METHODS:
        raise SpecError(f"unknown method {method!r}; choose one of {METHODS}")
    gm = analysis.graph_module
    nodes, skip = _resolve(gm, after)
    taken = {name for name, _ in gm.named_modules()}
    out: List[Insertion] = []
    skipped: Dict[str, str] = {}
    for node in nodes:
        try:
            out.append(_plan_one(analysis, node, method, batchnorm, kernel_size, training, taken))
        except (NotDeepenableError, NotIdempotentError) as e:
            if not skip:
                raise
            skipped[node.name] = str(e)
    return DeepeningPlan(analysis, tuple(out), skipped)


def _plan_one(analysis: Analysis, node: fx.Node, method: str, batchnorm: Optional[bool],
              kernel_size: Optional[int], training: bool, taken: set) -> Insertion:
    gm = analysis.graph_module
    dim, kind = _channel_dim(analysis, node)
    spec: TensorSpec = node.meta["fxgrow.shape"]
    act = activation_of(node)
    identity_exact = act is None or act.idempotent
    if method == "identity" and not identity_exact:
        raise NotIdempotentError(
            f"cannot insert an identity layer after `{node.name}` exactly: it is {act.name}, "
            f"and {act.name}({act.name}(z)) != {act.name}(z), so repeating it changes the "
            "function (only ReLU, ReLU6 and Hardtanh are idempotent); use method='residual' "
            "or 'auto'")
    chosen = method if method != "auto" else ("identity" if identity_exact else "residual")
    if chosen == "identity":
        why = ("identity layer; " + (f"{act.name} is idempotent, so repeating it is exact"
                                     if act else "no activation at this point"))
    else:
        why = ("residual block with a zero last layer: exact for any activation"
               + (f" ({act.name} is not idempotent)" if act and not act.idempotent else ""))
    bn, producer = _walk_back(gm, node)
    base = node.target if node.op == "call_module" else node.name
    k = 0
    while f"{base}_deepen{k}" in taken:
        k += 1
    name = f"{base}_deepen{k}"
    taken.add(name)
    return Insertion(
        node=node.name, name=name, method=chosen, kind=kind, dim=dim,
        channels=spec.shape[dim], kernel_size=_kernel(kind, producer, kernel_size),
        activation=act, dtype=spec.dtype,
        batchnorm=_bn_spec(bn, dim, batchnorm, training,
                           f"cannot mirror BatchNorm after `{node.name}`"),
        why=why)
