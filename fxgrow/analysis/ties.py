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

from ..ir.roles import BLOCKED, CONSUMER, PASS, PRODUCER
from ..ir.values import TV
from ..ops.kinds import MUL, is_op, norm_kind
from .state import TensorDim, WalkState

__all__ = ["resolve_ties"]


def _gains(state: WalkState, node: fx.Node) -> Optional[List[TensorDim]]:
    """Per-neuron gain tensors applied last by ``node`` (a norm's affine weight and
    bias, or a multiplication by a 1-D parameter), or None."""
    if node.op == "call_module":
        mod = state.gm.get_submodule(node.target)
        calls = sum(1 for n in node.graph.nodes if n.op == "call_module" and n.target == node.target)
        if calls == 1 and norm_kind(mod) is not None \
                and getattr(mod, "weight", None) is not None and mod.weight.dim() == 1:
            names = ["weight"] + (["bias"] if getattr(mod, "bias", None) is not None else [])
            return [(state.name(f"{node.target}.{n}"), 0) for n in names]
        return None
    if node.op == "call_function" and is_op(node, MUL):
        attrs = [a for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"]
        if len(attrs) == 1 and isinstance(state.env.get(attrs[0]), TV) \
                and state.env[attrs[0]].ndim == 1 and len(attrs[0].users) == 1 \
                and sum(1 for n in node.graph.nodes
                        if n.op == "get_attr" and n.target == attrs[0].target) == 1:
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
        if not isinstance(src, fx.Node) or len(src.users) != 1:
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
        if CONSUMER in roles and roles & {PRODUCER, PASS} and not _move_scaling(state, key):
            state.table.mark(state.params[key], BLOCKED,
                             f"`{key[0]}` dim {key[1]} is used both as a consumer "
                             f"(scaled) and unscaled (e.g. tied weights)")
