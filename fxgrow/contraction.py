"""Contractions between activations: grow a query/key head dim exactly.

A product of two activations sums over a dimension: attention scores are
``s = Σ_i q_i k_i`` over the head dim.  Copying neuron ``i`` ``c_i`` times on
both sides would count it ``c_i`` times.  Net2WiderNet's consumer fix works
on one side: if the key side's copies are divided by the counts,

    Σ_j q_g(j) · k_g(j) / c_g(j) = Σ_i c_i · q_i · k_i / c_i = Σ_i q_i k_i.

So the rules keep the two sides of a contraction as two spaces (two groups
in the analysis: the *primary* side and its *partner*), which share one
index map; the partner's **producer rows** (the weight rows and bias of the
layer that makes ``k``) are divided by the counts.  That is exact when the
value reaching the product is, neuron by neuron, linear in those rows.
:func:`resolve` proves it after the walk, for each recorded contraction,
trying the second operand's side first and then the first's:

* every tensor dim that touches the partner's neurons is a producer row (to
  be divided) or a tensor attribute read as a multiplier (a rotary table);
* every node that carries them moves values (views, transposes, splits,
  casts, dropout in eval), is one of those producing layers, multiplies by
  something that does not carry divided values, or adds divided values
  only to divided values; and they disappear at the contraction itself.

Where neither side can be proved, or the two sides were already one space
(``x @ x.T``, or a rotary table multiplied into both), both are blocked
with the reason.  The attention *scale* is handled by the rules: SDPA's
default ``1/sqrt(E)`` is pinned to the old ``E``; fused modules that read it
from the width at run time (``nn.MultiheadAttention``, Swin's window
attention) ask for the partner's rows to carry ``sqrt(E'/E)`` as well.

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from torch import fx

from .layout import Axis, leaves
from .linearity import kind, node_inputs
from .roles import ATTR, CONSUMER, PRODUCER
from .spaces import BLOCKED, GROWABLE, Contraction
from .values import iter_tensors

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import _State

__all__ = ["Pairing", "resolve"]


@dataclass(frozen=True)
class Pairing:
    """The outcome for one contraction: space ``rescaled`` follows ``primary``'s map."""

    primary: int
    rescaled: int
    node: str
    sqrt_scale: bool


def _carries(state: "_State", value, root: int) -> bool:
    table = state.table
    return any(table.find(leaf.space) == root
               for tv in iter_tensors(value) for d in tv.dims for leaf in leaves(table.norm(d)))


def _touching(state: "_State", root: int) -> List[Tuple[str, int]]:
    table = state.table
    return [key for key in state.param_order if state.roles[key]
            and any(table.find(l.space) == root for l in leaves(table.norm(state.params[key])))]


def _owned(state: "_State", node: fx.Node) -> Set[str]:
    """Tensors a node reads as its own parameters (a module's, or get_attr arguments)."""
    if node.op == "call_module":
        prefix = f"{node.target}."
        return {key[0] for key in state.params if key[0].startswith(prefix)}
    return {state.canonical.get(n.target, n.target) for n in node_inputs(node) if n.op == "get_attr"}


def path_problem(state: "_State", root: int, alpha: float, contractions: List[Contraction]
                 ) -> Optional[str]:
    """Why dividing space ``root``'s producer rows by ``count**alpha`` (and its
    consumer columns by ``count**(1 - alpha)``) would not preserve the function
    (None if it would).

    Each node carrying the neurons gets the power of the counts its values are
    divided by: producing layers ``alpha``; tensor attributes 0 (gathered); moves
    keep it; products add the powers of their factors; sums need equal powers.
    A consumer must read power ``alpha``; each of ``contractions`` must sum its two
    sides to power 1, which makes the copies add up to the old sum.
    """
    for key in _touching(state, root):
        extra = state.roles[key] - {PRODUCER, CONSUMER, ATTR}
        if extra:
            return f"`{key[0]}` dim {key[1]} reads these neurons as {sorted(extra)[0]}"
    gm = state.gm
    touching = _touching(state, root)
    producers = {key[0] for key in touching if PRODUCER in state.roles[key]}
    consumers = {key[0] for key in touching if CONSUMER in state.roles[key]}
    sites = {c.node: c for c in contractions}
    power: Dict[fx.Node, float] = {}  # nodes carrying the neurons -> power of the counts
    reached: Set[str] = set()
    for node in gm.graph.nodes:
        ins = [n for n in node_inputs(node) if n in power]
        out = _carries(state, state.env.get(node), root)
        if not ins and not out:
            continue
        where = f"node `{node.name}` ({node.meta.get('fxgrow.op') or node.target})"
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
        read = [n for n in ins if n.op != "get_attr"
                or state.canonical.get(n.target, n.target) not in owned]
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


def resolve(state: "_State") -> Tuple[List[Pairing], Dict[int, str]]:
    """Decide how every recorded contraction grows, or block it.

    Returns the partner pairings (two spaces, one index map, the rescaled
    side's producers divided by the counts) and ``{space: node}`` for spaces
    contracted with themselves (``h @ hᵀ``, q and k tied by a rotary table or
    unbound from one ``(3, heads, head_dim)`` view), whose producers and
    consumers are both divided by ``sqrt(count)``.
    """
    table = state.table
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
        if not _touching(state, ra) or not _touching(state, rb):
            blocked.append((c, "one side has no layer that makes it"))
        elif ra == rb:
            selfish.setdefault(ra, []).append(c)
        else:
            problems = []
            for s, p in ([(rb, ra)] if c.vouched else [(rb, ra), (ra, rb)]):
                why = ("the other side is divided for another product" if p in rescaled
                       else "it is the undivided side of another product" if s in primaries
                       else path_problem(state, s, 1.0, [c]))
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
               else path_problem(state, root, 0.5, cs))
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
        state.node_notes.setdefault(_node(state, c.node), []).append(msg)
    _share_status(state, pairings)
    return pairings, halved


def _node(state: "_State", name: str) -> fx.Node:
    return next(n for n in state.gm.graph.nodes if n.name == name)


def _share_status(state: "_State", pairings: List[Pairing]) -> None:
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
