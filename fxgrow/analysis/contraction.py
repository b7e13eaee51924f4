"""Contractions between activations: grow a query/key head dim exactly.

A product of two activations sums over a dimension: attention scores are
``s = Σ_i q_i k_i`` over the head dim.  Copying neuron ``i`` ``c_i`` times on
both sides would count it ``c_i`` times.  Net2WiderNet's consumer fix works
on one side: if the key side's copies are divided by the counts,

    Σ_j q_g(j) · k_g(j) / c_g(j) = Σ_i c_i · q_i · k_i / c_i = Σ_i q_i k_i.

So rules record a contraction (``ctx.contract``) instead of merging the two
sides, and :func:`resolve` decides after the walk, giving each contracted
space an exponent ``α``: its producer rows are divided by ``count**α`` and
its consumer columns by ``count**(1-α)`` (plain Net2WiderNet is ``α = 0``).

* Two spaces (``q`` and ``k`` from different projections, or different
  parts of a packed one): one side gets ``α = 1`` and becomes the *partner*
  of the other (the *primary*), copying its index map.  The second operand's
  side is tried first, then the first's.
* One space on both sides (``h @ hᵀ``; ``q`` and ``k`` tied by one rotary
  table; ``q, k, v`` unbound from one ``(3, heads, head_dim)`` view):
  ``α = ½``, so ``Σ_j (x_g(j)/√c)(y_g(j)/√c) = Σ_i x_i y_i``.

Each choice is proved from the graph (:func:`path_problem`): following the
values that carry the space, with the power of the counts they are divided
by, every node must be a producing layer, a tensor attribute (never
divided: a rotary table), a move, a product or quotient by undivided values,
a sum of equally divided values, a consumer reading exactly ``α``, or a
contraction whose two operands sum to power 1.  Anything else (a ReLU, a
norm, adding a constant, the model output) blocks both sides, with the
node in the reason.  The attention *scale* is the rules' business: SDPA's
default ``1/sqrt(E)`` is pinned to the old ``E``; fused modules that read it
from the width at run time (``nn.MultiheadAttention``, Swin's window
attention) vouch for their inside and ask for ``sqrt(E'/E)`` on the
partner's rows as well.

Examples
--------
>>> import torch, torch.nn.functional as F, fxgrow
>>> class Attn(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.q, self.k, self.v = (torch.nn.Linear(8, 4) for _ in range(3))
...     def forward(self, x):
...         return F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))
>>> a = fxgrow.analyze(Attn(), torch.randn(2, 5, 8))
>>> {a.group(p).producers[0]: a.group(g).producers[0] for p, g in a.partners.items()}
{'k': 'q'}
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

from torch import fx

from .. import meta
from ..ir.groups import Pairing
from ..ir.layout import Axis, leaves
from ..ir.roles import ATTR, BLOCKED, CONSUMER, GROWABLE, PRODUCER
from ..ir.spaces import Contraction
from ..ir.values import iter_sizes, iter_tensors
from ..ops.kinds import kind, node_inputs, reads_values
from .state import TensorDim, WalkState

__all__ = ["path_problem", "resolve"]


class _Index:
    """Which spaces each node's value and each tensor dim carry, computed once."""

    def __init__(self, state: WalkState) -> None:
        table = state.table
        self.nodes: Dict[fx.Node, Set[int]] = {
            node: {table.find(leaf.space) for tv in iter_tensors(state.env.get(node))
                   for d in tv.dims for leaf in leaves(table.norm(d))}
            for node in state.gm.graph.nodes}
        self.tensors: Dict[int, List[TensorDim]] = {}
        for key in state.param_order:
            if state.roles[key]:
                for root in {table.find(l.space) for l in leaves(table.norm(state.params[key]))}:
                    self.tensors.setdefault(root, []).append(key)

    def touching(self, root: int) -> List[TensorDim]:
        return self.tensors.get(root, [])


def _owned(state: WalkState, node: fx.Node) -> Set[str]:
    """Tensors a node reads as its own parameters (a module's, or get_attr arguments)."""
    if node.op == "call_module":
        prefix = f"{node.target}."
        return {key[0] for key in state.params if key[0].startswith(prefix)}
    return {state.name(n.target) for n in node_inputs(node) if n.op == "get_attr"}


def path_problem(state: WalkState, root: int, alpha: float, contractions: List[Contraction],
                 index: Optional[_Index] = None) -> Optional[str]:
    """Why dividing space ``root``'s producer rows by ``count**alpha`` (and its
    consumer columns by ``count**(1 - alpha)``) would not preserve the function
    (None if it would).

    Each node carrying the neurons gets the power of the counts its values are
    divided by: producing layers ``alpha``; tensor attributes 0 (gathered); moves
    keep it; products add the powers of their factors; sums need equal powers.
    A consumer must read power ``alpha``; each of ``contractions`` must sum its two
    sides to power 1, which makes the copies add up to the old sum.
    """
    index = index or _Index(state)
    touching = index.touching(root)
    for key in touching:
        extra = state.roles[key] - {PRODUCER, CONSUMER, ATTR}
        if extra:
            return f"`{key[0]}` dim {key[1]} reads these neurons as {sorted(extra)[0]}"
    gm = state.gm
    producers = {key[0] for key in touching if PRODUCER in state.roles[key]}
    consumers = {key[0] for key in touching if CONSUMER in state.roles[key]}
    sites = {c.node: c for c in contractions}
    power: Dict[fx.Node, float] = {}  # nodes carrying the neurons -> power of the counts
    reached: Set[str] = set()
    for node in gm.graph.nodes:
        ins = [n for n in node_inputs(node) if n in power]
        out = root in index.nodes[node]
        if (not ins and not out) or not reads_values(node):
            continue  # export's metadata asserts, guards, switches compute nothing
        value = state.env.get(node)
        if not out and not any(True for _ in iter_tensors(value)) and any(True for _ in iter_sizes(value)):
            continue  # `x.shape`, `x.size(-1)`: sizes, which the rules recompute, not values
        where = f"node `{node.name}` ({meta.op(node) or node.target})"
        if node.name in sites:
            c = sites[node.name]
            reached.add(node.name)
            if c.vouched:  # a fused module's rule vouches for its inside
                continue
            total = sum(power[n] for n in ins if n.name in c.operands)
            if total != 1:
                return f"{where} would see them divided by count**{total:g}, not count**1"
            # other inputs (attention's values) pass through linearly
            passing = [power[n] for n in ins if n.name not in c.operands]
            if out:
                if len(set(passing)) != 1:
                    return f"{where} passes them on from the product itself"
                power[node] = passing[0]
            continue
        if node.op == "output":
            return f"{where}: they reach the model output"
        what = kind(gm, node) if node.op != "get_attr" else "attr"
        owned = _owned(state, node) if what == "layer" else set()
        if what == "layer" and not owned:
            # a product of activations that does not contract these neurons (the
            # values in `attn @ v`): linear in each factor, like an elementwise product
            what = "scale"
        read = [n for n in ins if n.op != "get_attr"
                or state.name(n.target) not in owned]
        powers = [power[n] for n in read]
        if what == "attr":
            result = 0.0  # gathered, never divided: a multiplier like a rotary table
        elif what == "layer" and owned & (producers | consumers):
            if read and (not owned & consumers or any(p != alpha for p in powers)):
                return f"{where} reads them divided by count**{max(powers):g}"
            if out and not owned & producers:
                return f"{where} passes them through a layer that does not make them"
            result = alpha
        elif what == "move" or (what in ("scale", "divide", "add") and not any(powers)):
            if len(set(powers)) > 1:
                return f"{where} joins values divided by different powers of the counts"
            result = powers[0] if powers else 0.0
        elif what == "scale":
            if sum(powers) > 1:
                return f"{where} multiplies two divided values"
            result = sum(powers)
        elif what == "divide":
            first = node_inputs(node)[:1]
            if not first or first[0] not in power or any(power[n] for n in read[1:]) \
                    or read[0] is not first[0]:
                return f"{where} divides by them"
            result = power[first[0]]
        elif what == "add":
            operands = list(node.args) + [v for k, v in node.kwargs.items() if k != "alpha"]
            if len(powers) != len(operands) or len(set(powers)) > 1:
                return f"{where} adds something that is not divided with them"
            result = powers[0]
        else:
            if any(powers):
                return f"{where} is not linear in them"
            result = 0.0
        if out:
            power[node] = result
    missing = [c.node for c in contractions if c.node not in reached and not c.vouched]
    if missing:
        return f"they do not reach node `{missing[0]}`"
    return None


def resolve(state: WalkState) -> Tuple[List[Pairing], Dict[int, str]]:
    """Decide how every recorded contraction grows, or block it.

    Returns the partner pairings (two spaces, one index map, the rescaled
    side's producers divided by the counts) and ``{space: node}`` for spaces
    contracted with themselves (``h @ hᵀ``, q and k tied by a rotary table or
    unbound from one ``(3, heads, head_dim)`` view), whose producers and
    consumers are both divided by ``sqrt(count)``.
    """
    table = state.table
    if not table.contractions:
        return [], {}
    index = _Index(state)
    pairings: List[Pairing] = []
    rescaled: Set[int] = set()
    primaries: Set[int] = set()
    selfish: Dict[int, List[Contraction]] = {}
    blocked: List[Tuple[Contraction, str]] = []
    for c in table.contractions:
        na, nb = table.norm(c.a), table.norm(c.b)
        if not isinstance(na, Axis) or not isinstance(nb, Axis):
            blocked.append((c, "a side was split or merged after the product"))
            continue
        ra, rb = table.find(na.space), table.find(nb.space)
        if not index.touching(ra) or not index.touching(rb):
            blocked.append((c, "one side has no layer that makes it"))
        elif ra == rb:
            selfish.setdefault(ra, []).append(c)
        else:
            problems = []
            for s, p in ([(rb, ra)] if c.vouched else [(rb, ra), (ra, rb)]):
                why = ("the other side is divided for another product" if p in rescaled
                       else "it is the undivided side of another product" if s in primaries
                       else path_problem(state, s, 1.0, [c], index))
                if why is None:
                    pairings.append(Pairing(p, s, c.node, c.sqrt_scale))
                    rescaled.add(s)
                    primaries.add(p)
                    break
                problems.append(why)
            else:
                blocked.append((c, "dividing " + ("the key" if c.vouched else "either")
                                + " side by the counts is not proven exact: " + "; ".join(problems)))
    halved: Dict[int, str] = {}
    for root, cs in selfish.items():
        why = ("it is also one side of another product" if root in rescaled | primaries
               else path_problem(state, root, 0.5, cs, index))
        if why is None:
            halved[root] = cs[0].node
        else:
            for c in cs:
                blocked.append((c, "both sides read the same neurons, and dividing them by "
                                   f"sqrt(count) is not proven exact: {why}"))
    for c, problem in blocked:
        msg = f"{c.why}: {problem} (node `{c.node}`)"
        table.mark(c.a, BLOCKED, msg)
        table.mark(c.b, BLOCKED, msg)
        state.note(state.node_named(c.node), msg)
    _share_status(state, pairings)
    return pairings, halved


def _share_status(state: WalkState, pairings: List[Pairing]) -> None:
    """Spaces that share an index map share their status (a fixed query fixes the key)."""
    table = state.table
    changed = True
    while changed:  # reasons are capped per space, so this settles
        changed = False
        for p in pairings:
            for src, dst in ((p.primary, p.rescaled), (p.rescaled, p.primary)):
                status = table.status(src)
                if status == GROWABLE:
                    continue
                before = (table.status(dst), tuple(table.reasons(dst)))
                for r in table.reasons(src) or [f"its contraction partner is {status}"]:
                    table.mark(Axis(dst, table.size(dst)), status, r)
                changed |= (table.status(dst), tuple(table.reasons(dst))) != before
