"""Deepening plans: where new layers go, of what kind, and why that is exact.

:func:`plan_deepening` is pure: it reads an :class:`~fxgrow.analysis.result.Analysis`
(the layouts every node's output carries) and decides, for each requested
location, everything the rewrite needs: the channel dimension, the layer
kind (``linear`` or ``conv1d/2d/3d``), the kernel size, the activation, the
BatchNorm to mirror, the method and the new module's name.  Nothing is built
or run here; :mod:`fxgrow.deepen.blocks` builds the modules and
:func:`fxgrow.deepen` calibrates, inserts and verifies.

Where a new layer may go
------------------------
A location is a node whose output has exactly one *neuron* dimension that is
not fixed: dim 1 of an ``(N, C, *spatial)`` map (a ConvNd is inserted) or the
last dim of ``(N, C)`` / ``(N, T, C)`` (a Linear; the dims in between may be
neuron dims that never grow, such as token positions tied to a position
table).  Transformer sub-blocks (``block=``, :mod:`fxgrow.deepen.transformer`)
need the Linear case, attention also a token dim.  Fixed channels (they reach
the model output or input) and tensors without neuron dims (model inputs,
flattened maps whose dim mixes channels and space, scalars) are refused.

Which method is exact
---------------------
``identity`` inserts ``φ(BN(I·h))``.  ``I·h = h`` always; a mirrored BN set
to γ = √(var + ε), β = mean is the identity in eval mode; and ``φ(h) = h``
only when the node already *is* ``φ`` and ``φ`` is idempotent.  After a node
that is not an activation no ``φ`` is inserted (the "identity activation").
``residual`` inserts ``h + L2(φ(BN(L1(h))))`` with ``L2 = 0`` (or a transformer
sub-block whose last layer is 0): exact for any ``φ`` and in any mode.  ``auto`` takes identity where it is exact, else
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
from torch import fx

from .. import checks, meta
from ..analysis.result import Analysis
from ..capture.shapes import TensorSpec
from ..errors import NotDeepenableError, NotIdempotentError, SpecError, UnknownLocationError
from ..ir.layout import Layout, leaves
from ..ir.roles import FIXED
from ..ir.values import TV
from ..ops.activations import Activation, activation_of
from ..ops.layers import (batchnorm_params, is_passthrough, is_residual_add, layer_kind,
                          module_outputs, scope_paths)
from ..ops.layers import kernel_size as _producer_kernel
from .transformer import BlockSpec, ResolvedBlock, as_spec, model_defaults, resolve, scale_note

__all__ = ["BatchNormSpec", "Insertion", "DeepeningPlan", "plan_deepening", "METHODS"]

METHODS = ("identity", "residual", "auto")

Location = Union[str, Iterable[str], Callable[[fx.Node], bool]]



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
    block: Optional[ResolvedBlock] = None  # a transformer sub-block (``block=``)

    @property
    def layer(self) -> str:
        """What is inserted: ``linear``/``convNd``, or the transformer block's kind."""
        return self.block.kind if self.block is not None else self.kind

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
        rec = {"after": self.node, "module": self.name, "method": self.method,
               "layer": self.layer, "channels": self.channels,
               "kernel_size": self.kernel_size if self.kind != "linear" else None,
               "activation": (self.block.activation.name if self.block is not None else
                              self.activation.name if self.activation else
                              "ReLU" if self.method == "residual" else None),
               "batchnorm": self.batchnorm is not None, "why": self.why}
        if self.block is not None:
            rec.update(self.block.record())
        return rec


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
# Ops are recognised through :mod:`fxgrow.ops.layers`, which reads call_module nodes
# (symbolic_trace) and ATen calls with their nn_module_stack (torch.export) alike.

def _first_input(node: fx.Node) -> Optional[fx.Node]:
    return node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None


def _is_layer_end(node: fx.Node) -> bool:
    """A node that ends a layer: what ``after="all"`` inserts after.

    Producers, BatchNorms, activations and residual adds qualify, unless a
    BatchNorm or activation reads them next (then the layer ends later):
    conv -> BN -> ReLU gives one location, after the ReLU.
    """
    if not (layer_kind(node) is not None or activation_of(node) is not None
            or is_residual_add(node)):
        return False
    return not any(_first_input(u) is node and (layer_kind(u) == "bn"
                                                or activation_of(u) is not None)
                   for u in node.users)


def _resolve(gm: fx.GraphModule, after: Location
             ) -> Tuple[List[fx.Node], bool, Dict[fx.Node, str]]:
    """The nodes ``after`` names, whether ineligible ones are skipped ("all"), and
    the module name each node was asked for by (it names the new block).

    A name is looked up as a leaf module (``call_module`` nodes), then as a
    module any node was computed in (``nn_module_stack``: the leaves of an
    exported graph, and containers such as ``"blocks.0"``, whose calls end at
    their output nodes), then as a node name.
    """
    after = checks.location(after)
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    if isinstance(after, str) and after == "all":
        return [n for n in nodes if _is_layer_end(n)], True, {}
    if callable(after) and not isinstance(after, (str, fx.Node)):
        picked = [n for n in nodes if after(n)]
        if not picked:
            raise UnknownLocationError("the `after` predicate matches no node of the graph")
        return picked, False, {}
    names = [after] if isinstance(after, (str, fx.Node)) else list(after)
    by_name = {n.name: n for n in nodes}
    by_module: Dict[str, List[fx.Node]] = {}
    for n in nodes:
        if n.op == "call_module":
            by_module.setdefault(n.target, []).append(n)
    scopes = {p for n in nodes for p in scope_paths(n) if p}
    picked: List[fx.Node] = []
    asked: Dict[fx.Node, str] = {}
    for name in names:
        if isinstance(name, fx.Node):
            name = name.name
        if not isinstance(name, str):
            raise SpecError(f"`after` items must be node or module names, got {name!r}")
        if name in by_module:  # a module called twice gets a block after each call
            picked += by_module[name]
        elif name in scopes and module_outputs(gm, name):
            for n in module_outputs(gm, name):
                picked.append(n)
                asked.setdefault(n, name)
        elif name in by_name:
            picked.append(by_name[name])
        else:
            close = difflib.get_close_matches(name, list(by_module) + sorted(scopes)
                                              + list(by_name), n=3)
            raise UnknownLocationError(
                f"no node or module named `{name}`"
                + (f"; did you mean {close}?" if close else "")
                + " (module names are dotted, e.g. `layer1.0.relu`; node names are the "
                  "torch.fx names, e.g. `layer1_0_relu_1`)")
    if not names:
        raise UnknownLocationError("`after` names no location")
    return list(dict.fromkeys(picked)), False, asked


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
    value, spec = meta.value(node), meta.shape(node)
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
    elif nd >= 2 and neuron[-1] and not any(
            n and _fixed_reason(analysis, d) is None for n, d in zip(neuron[1:-1], value.dims[1:-1])):
        # a Linear acts on the last dim position by position; the dims before it may be
        # neuron dims that can never grow (token positions tied to a fixed position table)
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


def _walk_back(node: fx.Node):
    """``(BatchNorm params, producer kernel size)`` of producer -> [BN] -> [dropout] -> [act] -> node.

    BatchNorm params are ``(eps, momentum, training, type name)`` or None; the
    kernel size is None unless the producer is a conv.
    """
    cur: Optional[fx.Node] = node
    if activation_of(node) is not None:
        cur = _first_input(node)
    while cur is not None and is_passthrough(cur):
        cur = _first_input(cur)
    bn = None
    if cur is not None and layer_kind(cur) == "bn":
        bn = batchnorm_params(cur)
        cur = _first_input(cur)
    return bn, _producer_kernel(cur) if cur is not None else None


def _kernel(kind: str, producer_kernel: Optional[Tuple[int, ...]],
            kernel_size: Optional[int]) -> int:
    if kind == "linear":
        return 1
    if kernel_size is not None:
        return checks.kernel_size(kernel_size)
    ks = producer_kernel
    if ks and len(set(ks)) == 1 and ks[0] % 2 == 1:
        return ks[0]  # mirror the producer's receptive field
    return 3


def _bn_spec(bn: Optional[tuple], dim: int, force: Optional[bool],
             training: bool, where: str) -> Optional[BatchNormSpec]:
    if force is False or (force is None and bn is None):
        return None
    if dim != 1:  # BatchNorm normalises dim 1; a Linear on (N, T, C) has its channels last
        if force:
            raise SpecError(f"{where}: batchnorm=True needs the channels in dim 1")
        return None
    if bn is None:
        return BatchNormSpec(training=training)
    eps, momentum, bn_training, name = bn
    return BatchNormSpec(eps, momentum, bn_training, name)


def plan_deepening(
    analysis: Analysis,
    after: Location,
    *,
    method: Optional[str] = None,
    batchnorm: Optional[bool] = None,
    kernel_size: Optional[int] = None,
    training: bool = False,
    block: Union[None, str, BlockSpec] = None,
) -> DeepeningPlan:
    """Decide every insertion (pure: nothing is built, run or changed).

    Parameters
    ----------
    analysis : Analysis
        Of the model to deepen (its nodes carry ``fxgrow.value`` layouts).
    after, method, batchnorm, kernel_size, block :
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
    spec = as_spec(block)
    if method is None:  # a transformer block is a zero-residual block
        method = "identity" if spec is None else "residual"
    if method not in METHODS:
        raise SpecError(f"unknown method {method!r}; choose one of {METHODS}")
    if spec is not None:
        if method == "identity":
            raise SpecError(f"block={spec.kind!r} is a zero-residual block: use "
                            "method='residual' (or 'auto')")
        if batchnorm:
            raise SpecError("transformer blocks have their own norm: batchnorm=True does not "
                            "apply to block=...")
    gm = analysis.graph_module
    nodes, skip, asked = _resolve(gm, after)
    defaults = model_defaults(gm) if spec is not None else {}
    taken = {name for name, _ in gm.named_modules()}
    out: List[Insertion] = []
    skipped: Dict[str, str] = {}
    for node in nodes:
        try:
            out.append(_plan_one(analysis, node, method, batchnorm, kernel_size, training, taken,
                                 asked.get(node), spec, defaults))
        except (NotDeepenableError, NotIdempotentError) as e:
            if not skip:
                raise
            skipped[node.name] = str(e)
    return DeepeningPlan(analysis, tuple(out), skipped)


def _base_name(node: fx.Node, asked: Optional[str]) -> str:
    """What the new block is named after: the module asked for, the module called,
    the innermost module the node was computed in (export graphs), or the node."""
    if asked:
        return asked
    if node.op == "call_module":
        return node.target
    paths = [p for p in scope_paths(node) if p]
    return paths[-1] if paths else node.name


def _check_tokens(node: fx.Node, kind: str, spec: BlockSpec) -> None:
    """Transformer blocks act on the last dim; attention also needs a token dim."""
    shape = tuple(meta.shape(node).shape)
    where = f"cannot insert a {spec.kind} block after `{node.name}`"
    if kind != "linear":
        raise NotDeepenableError(
            f"{where}: its {shape} output is a feature map with channels in dim 1; "
            f"{spec.kind} blocks need a token sequence (N, T, C) with neurons in the last dim "
            "(use the default block, a conv residual block, there)", "not a token sequence")
    if spec.kind != "mlp" and len(shape) < 3:
        raise NotDeepenableError(
            f"{where}: its {shape} output has no token dimension; attention needs (N, T, C)",
            "no token dimension")


def _plan_one(analysis: Analysis, node: fx.Node, method: str, batchnorm: Optional[bool],
              kernel_size: Optional[int], training: bool, taken: set, asked: Optional[str],
              block: Optional[BlockSpec], defaults: Dict[str, object]) -> Insertion:
    dim, kind = _channel_dim(analysis, node)
    spec: TensorSpec = meta.shape(node)
    act = activation_of(node)
    resolved = None
    bn, producer_kernel = _walk_back(node)
    bn_spec = None
    if block is not None:
        _check_tokens(node, kind, block)
        resolved = resolve(block, spec.shape[dim], defaults, spec.dtype)
        chosen, why = "residual", scale_note(resolved)
    else:
        bn_spec = _bn_spec(bn, dim, batchnorm, training,
                           f"cannot mirror BatchNorm after `{node.name}`")
        identity_exact = act is None or act.idempotent
        if method == "identity" and not identity_exact:
            raise NotIdempotentError(
                f"cannot insert an identity layer after `{node.name}` exactly: it is "
                f"{act.name}, and {act.name}({act.name}(z)) != {act.name}(z), so repeating it "
                "changes the function (only ReLU, ReLU6 and Hardtanh are idempotent); use "
                "method='residual' or 'auto'")
        # a mirrored BatchNorm in training mode normalises with each batch's statistics,
        # so an identity block is exact only on the calibration batch: auto takes residual
        batch_stats = bn_spec is not None and bn_spec.training
        chosen = method if method != "auto" else (
            "identity" if identity_exact and not batch_stats else "residual")
        if chosen == "identity":
            why = ("identity layer; " + (f"{act.name} is idempotent, so repeating it is exact"
                                         if act else "no activation at this point"))
        else:
            why = ("residual block with a zero last layer: exact for any activation"
                   + (f" ({act.name} is not idempotent)" if act and not act.idempotent else "")
                   + (" (a mirrored BatchNorm would use batch statistics in training mode)"
                      if batch_stats and identity_exact else ""))
    base = _base_name(node, asked)
    k = 0
    while f"{base}_deepen{k}" in taken:
        k += 1
    name = f"{base}_deepen{k}"
    taken.add(name)
    return Insertion(
        node=node.name, name=name, method=chosen, kind=kind, dim=dim,
        channels=spec.shape[dim], kernel_size=_kernel(kind, producer_kernel, kernel_size),
        activation=act, dtype=spec.dtype, batchnorm=bn_spec, why=why, block=resolved)
