"""Tensors read in conflicting roles: one tensor dimension has one index map.

A dimension that is divided by the replication counts where it consumes a
group (a weight's columns) cannot also be copied unscaled where it produces
or passes it (an embedding's columns): the two uses would need two different
grown tensors.  :func:`resolve_ties` blocks such dimensions, except in the
one case it can mend: a tied output layer whose every consuming use reads the
output of a per-neuron gain nothing else reads (the final norm's weight and
bias, or ``x * weight``), where the 1/count scaling moves onto the gain.

:func:`gain_of` recognises such gains, in fx and ATen graphs alike, with a
literal offset (Gemma's ``1 + w``) recorded so the division keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch.nn.functional as F
from torch import fx

from ..ir.roles import ATTR, BLOCKED, CONSUMER, PASS, PRODUCER
from ..ir.values import TV
from ..ops.access import tensor_by_name
from ..ops.kinds import (BN_MODULES, CASTS, MUL, canonical_arg, gain_operand, is_op, kind,
                         node_inputs, norm_kind, value_users)
from ..ops.aten import canonical_target
from .state import TensorDim, WalkState

__all__ = ["resolve_ties", "gain_of", "Gain"]

#: functional norms whose affine tensors apply last: ``{function: (weight index, bias index)}``
_FUNCTIONAL = {F.layer_norm: (2, 3), F.batch_norm: (3, 4)}
if hasattr(F, "rms_norm"):
    _FUNCTIONAL[F.rms_norm] = (2, None)


@dataclass(frozen=True)
class Gain:
    """The per-neuron tensors a node applies last, ``y = (c + γ) ⊙ f(x) + β``.

    ``tensors`` are the dims of ``γ`` (and ``β``) along the neurons; ``offsets``
    the literal ``c`` added to a tensor before it multiplies (Gemma's ``1 + w``):
    dividing the gain by ``s`` then makes ``γ' = (c + γ)/s - c``.
    """

    tensors: List[TensorDim]
    offsets: Dict[str, float] = field(default_factory=dict)


def _readers(state: WalkState, tensor: str) -> int:
    """How many places read tensor ``tensor`` (by identity, under any of its names):
    ``get_attr`` uses, and calls of modules that own it."""
    n = 0
    for node in state.gm.graph.nodes:
        if node.op == "get_attr" and state.name(node.target) == tensor:
            n += len(value_users(node))
        elif node.op == "call_module":
            mod = state.gm.get_submodule(node.target)
            owned = list(mod.named_parameters(remove_duplicate=False)) + \
                list(mod.named_buffers(remove_duplicate=False))
            n += any(state.name(f"{node.target}.{k}") == tensor for k, _ in owned)
    return n


def _tensor_inputs(state: WalkState, node: fx.Node) -> List[fx.Node]:
    """The inputs of ``node`` that are tensors (not sizes read from them)."""
    return [n for n in node_inputs(node) if isinstance(state.env.get(n), TV)]


def _moved_from(state: WalkState, node: fx.Node) -> Optional[fx.Node]:
    """The one tensor a move (a view, slice, cast, dropout) reads, or None."""
    if kind(state.gm, node) != "move" or not node.args:
        return None
    if is_op(node, CASTS) and isinstance(node.args[0], fx.Node):
        return node.args[0]  # `type_as(x, other)` reads only the dtype of `other`
    ins = _tensor_inputs(state, node)
    return ins[0] if len(ins) == 1 and node.args[0] is ins[0] else None


def _gain_operand(state: WalkState, node: fx.Node) -> Optional[Gain]:
    """``γ`` or ``c + γ`` (:func:`~fxgrow.ops.kinds.gain_operand`), ``γ`` a 1-D tensor
    attribute that nothing else reads."""
    found = gain_operand(node)
    if found is None:
        return None
    attr, offset = found
    value, name = state.env.get(attr), state.name(attr.target)
    if not isinstance(value, TV) or value.ndim != 1 or _readers(state, name) != 1:
        return None
    return Gain([(name, 0)], {name: offset} if offset else {})


def gain_of(state: WalkState, node: fx.Node) -> Optional[Gain]:
    """The per-neuron gain ``node`` applies last, if nothing else reads its tensors.

    A norm module's or a functional norm's affine weight and bias (LayerNorm,
    RMSNorm, BatchNorm), or a product with a 1-D tensor attribute, possibly
    cast and offset by a literal (``x * (1.0 + w.float())``).  Dividing those
    tensors by ``s`` divides the node's output by ``s``; each must have exactly
    one reader, this node, since the change reaches every reader.
    """
    gm = state.gm
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if (norm_kind(mod) is not None or isinstance(mod, BN_MODULES)) \
                and getattr(mod, "weight", None) is not None and mod.weight.dim() == 1:
            names = ["weight"] + (["bias"] if getattr(mod, "bias", None) is not None else [])
            gains = [(state.name(f"{node.target}.{n}"), 0) for n in names]
            return Gain(gains) if all(_readers(state, t) == 1 for t, _ in gains) else None
        return None
    if node.op != "call_function":
        return None
    if is_op(node, _FUNCTIONAL) and not isinstance(state.env.get(node), tuple):
        wi, bi = _FUNCTIONAL[canonical_target(node)]
        args = [canonical_arg(node, wi, "weight", None)]
        if bi is not None and canonical_arg(node, bi, "bias", None) is not None:
            args.append(canonical_arg(node, bi, "bias"))
        found = [_gain_operand(state, a) if isinstance(a, fx.Node) and a.op == "get_attr"
                 else None for a in args]
        return Gain([g.tensors[0] for g in found]) if None not in found else None
    if is_op(node, MUL) and len(node.args) == 2 and not node.kwargs:
        for i, a in enumerate(node.args):
            other = node.args[1 - i]
            if isinstance(a, fx.Node) and isinstance(other, fx.Node) and other is not a:
                found = _gain_operand(state, a)
                if found is not None:
                    return found
    return None


def _gain_before(state: WalkState, src: fx.Node) -> Optional[Gain]:
    """The gain whose output reaches ``src`` through moves used once each."""
    node = src
    while len(value_users(node)) == 1:
        gain = gain_of(state, node)
        if gain is not None:
            return gain
        node = _moved_from(state, node)
        if node is None:
            return None
    return None


def _move_scaling(state: WalkState, key: TensorDim) -> bool:
    """Tied weights: move a consumer's 1/count scaling onto the gain before it.

    If every consuming use reads the output of a per-neuron gain that nothing
    else reads (the norm is called once, the weight read once; views, slices
    and casts in between), dividing that gain by the counts instead gives the
    consumer copies that are already divided:
    ``Σ_j W[g(j)] γ[g(j)]/c · n[g(j)] = Σ_i W[i] γ[i] n[i]``.  A multiplier on the
    producing side (an embedding scaled by ``√d``) changes nothing: the tied
    tensor is only copied there.
    """
    uses = state.consumer_uses.get(key, [])
    moves: List[TensorDim] = []
    offsets: Dict[str, float] = {}
    for use in uses:
        src = use.args[0] if use.args else None
        gain = _gain_before(state, src) if isinstance(src, fx.Node) else None
        if gain is None or any(g not in state.params for g in gain.tensors):
            return False
        lay = state.table.norm(state.params[key])
        if any(state.table.norm(state.params[g]) != lay for g in gain.tensors):
            return False
        moves += gain.tensors
        offsets.update(gain.offsets)
    if not moves:
        return False
    state.roles[key].discard(CONSUMER)
    for g in moves:
        state.roles[g] = {CONSUMER}
    state.offsets.update(offsets)
    return True


def resolve_ties(state: WalkState) -> None:
    """Block every tensor dim that is both scaled (consumer) and copied unscaled,
    unless its scaling can move onto a gain (:func:`_move_scaling`)."""
    for key, roles in state.roles.items():
        # ATTR: read as a plain tensor somewhere (``w[1]``, a bias made of a weight row)
        if CONSUMER in roles and roles & {PRODUCER, PASS, ATTR} and not _move_scaling(state, key):
            state.table.mark(state.params[key], BLOCKED,
                             f"`{key[0]}` dim {key[1]} is used both as a consumer "
                             f"(scaled) and unscaled (e.g. tied weights)")
        elif CONSUMER in roles:
            t = tensor_by_name(state.gm, key[0])
            if not (t.is_floating_point() or t.is_complex()):
                state.table.mark(state.params[key], BLOCKED,
                                 f"`{key[0]}` ({t.dtype}) consumes these neurons, and an integer "
                                 "tensor cannot be divided by the replication counts")
