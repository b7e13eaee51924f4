"""Tensors read in conflicting roles: one tensor dimension has one index map.

A dimension that is divided by the replication counts where it consumes a
group (a weight's columns) cannot also be copied unscaled where it produces
or passes it (an embedding's columns): the two uses would need two different
grown tensors.  :func:`resolve_ties` blocks such dimensions, except in the
one case it can mend: a tied output layer whose every consuming use reads the
output of a per-neuron gain nothing else reads (the final norm's weight and
bias, or ``x * weight``), where the 1/count scaling moves onto the gain.
"""

from __future__ import annotations

from typing import List, Optional

from torch import fx

from ..ir.roles import ATTR, BLOCKED, CONSUMER, PASS, PRODUCER
from ..ir.values import TV
from ..ops.access import tensor_by_name
from ..ops.kinds import MUL, is_op, norm_kind, value_users
from .state import TensorDim, WalkState

__all__ = ["resolve_ties"]


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


def _gains(state: WalkState, node: fx.Node) -> Optional[List[TensorDim]]:
    """Per-neuron gain tensors applied last by ``node`` (a norm's affine weight and
    bias, or a multiplication by a 1-D parameter) that nothing else reads, or None.

    The scaling moved onto a gain changes it for every reader, so each gain must
    have exactly one: this node (counted by tensor identity, across aliases).
    """
    if node.op == "call_module":
        mod = state.gm.get_submodule(node.target)
        if norm_kind(mod) is not None \
                and getattr(mod, "weight", None) is not None and mod.weight.dim() == 1:
            names = ["weight"] + (["bias"] if getattr(mod, "bias", None) is not None else [])
            gains = [(state.name(f"{node.target}.{n}"), 0) for n in names]
            return gains if all(_readers(state, t) == 1 for t, _ in gains) else None
        return None
    if node.op == "call_function" and is_op(node, MUL):
        attrs = [a for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"]
        if len(attrs) == 1 and isinstance(state.env.get(attrs[0]), TV) \
                and state.env[attrs[0]].ndim == 1 \
                and _readers(state, state.name(attrs[0].target)) == 1:
            return [(state.name(attrs[0].target), 0)]
    return None


def _move_scaling(state: WalkState, key: TensorDim) -> bool:
    """Tied weights: move a consumer's 1/count scaling onto the gain before it.

    If every consuming use reads the output of a per-neuron gain that nothing
    else reads (the norm is called once, the weight read once), dividing that
    gain by the counts instead gives the consumer copies that are already
    divided: ``Σ_j W[g(j)] γ[g(j)]/c · n[g(j)] = Σ_i W[i] γ[i] n[i]``.
    """
    uses = state.consumer_uses.get(key, [])
    moves = []
    for use in uses:
        src = use.args[0] if use.args else None
        if not isinstance(src, fx.Node) or len(value_users(src)) != 1:
            return False
        gains = _gains(state, src)
        if not gains or any(g not in state.params for g in gains):
            return False
        lay = state.table.norm(state.params[key])
        if any(state.table.norm(state.params[g]) != lay for g in gains):
            return False
        moves += gains
    if not moves:
        return False
    state.roles[key].discard(CONSUMER)
    for g in moves:
        state.roles[g] = {CONSUMER}
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
