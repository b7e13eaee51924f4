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
a sum of equally divided values (``index_add``/``scatter_add`` too, into
zeros or into values divided alike), a consumer reading exactly ``α`` (through
a claimed piece of a parameter as well: ``self.weight[i]`` per expert), or a
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
from ..ir.roles import ATTR, BLOCKED, CONSUMER, GROWABLE, PASS, PRODUCER
from ..ir.spaces import Contraction
from ..ir.values import iter_sizes, iter_tensors
from ..ops.kinds import (ACCUMULATE, CASTS, ZEROS, canonical_arg, is_op, kind,
                         node_inputs, reads_values)
from .state import TensorDim, WalkState
from .ties import Gain, gain_of

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


def _owned(state: WalkState, node: fx.Node) -> Tuple[Set[str], Set[fx.Node]]:
    """Tensors a node reads as its own parameters (a module's, get_attr arguments, or
    parameters its rule claimed through a chain of moves or as a piece: ``self.weight[i]``
    per expert, :meth:`RuleContext.weight`), and the argument nodes that carry them."""
    if node.op == "call_module":
        prefix = f"{node.target}."
        return {key[0] for key in state.params if key[0].startswith(prefix)}, set()
    names: Set[str] = set()
    args: Set[fx.Node] = set()
    for n in node_inputs(node):
        src = _claimed_source(state, n)
        if src is not None:
            names.add(state.name(src.target))
            args.add(n)
    return names, args


def _claimed_source(state: WalkState, n: fx.Node) -> Optional[fx.Node]:
    """The parameter (get_attr node) that argument ``n`` is, directly or through nodes
    each used once by the next, up to the node that a rule claimed it through."""
    if n.op == "get_attr":
        return n
    cur = n
    while cur.args and isinstance(cur.args[0], fx.Node):
        src = cur.args[0]
        if src.op == "get_attr":
            return src if (cur, src) in state.claims else None
        if len(cur.users) != 1:
            return None
        cur = src
    return None


def path_problem(state: WalkState, root: int, alpha: float, contractions: List[Contraction],
                 index: Optional[_Index] = None,
                 gains: Optional[List[Gain]] = None) -> Optional[str]:
    """Why dividing space ``root``'s producer rows by ``count**alpha`` (and its
    consumer columns by ``count**(1 - alpha)``) would not preserve the function
    (None if it would).

    Each node carrying the neurons gets the power of the counts its values are
    divided by: producing layers ``alpha``; tensor attributes 0 (gathered); moves
    keep it; products add the powers of their factors; sums need equal powers.
    A consumer must read power ``alpha``; each of ``contractions`` must sum its two
    sides to power 1, which makes the copies add up to the old sum.

    With ``gains`` (a list to fill), the division is made later instead: producing
    layers copy their rows unscaled (power 0), and a per-neuron gain applied last
    (:func:`~fxgrow.analysis.ties.gain_of`: a norm's weight, ``x * w``) over these
    neurons, reading undivided values, divides its tensors by ``count**alpha``
    (power ``alpha``); the gains found are appended.  That is how a query/key norm
    (an RMSNorm over the head dim, which a division before it would not survive)
    still grows exactly: ``n(x)`` is unchanged by copies (its mean is, under
    uniform replication), and ``γ/count**alpha · n(x)`` is divided.
    """
    index = index or _Index(state)
    touching = index.touching(root)
    deferred = []
    for key in touching:
        extra = state.roles[key] - {PRODUCER, CONSUMER, ATTR}
        if extra and gains is not None:
            deferred.append((key, extra))  # fine if it turns out to be one of the gains
        elif extra:
            return f"`{key[0]}` dim {key[1]} reads these neurons as {sorted(extra)[0]}"
    gm = state.gm
    producers = {key[0] for key in touching if PRODUCER in state.roles[key]}
    consumers = {key[0] for key in touching if CONSUMER in state.roles[key]}
    sites = {c.node: c for c in contractions}
    power: Dict[fx.Node, float] = {}  # nodes carrying the neurons -> power of the counts
    reached: Set[str] = set()
    made: Set[fx.Node] = set()  # nodes computed from what the producers make
    zeros: Set[fx.Node] = set()  # tensors of zeros
    for node in gm.graph.nodes:
        ins = [n for n in node_inputs(node) if n in power]
        out = root in index.nodes[node]
        if (not ins and not out) or not reads_values(node):
            continue  # export's metadata asserts, guards, switches compute nothing
        value = state.env.get(node)
        if not out and not any(True for _ in iter_tensors(value)) and any(True for _ in iter_sizes(value)):
            continue  # `x.shape`, `x.size(-1)`: sizes, which the rules recompute, not values
        where = f"node `{node.name}` ({meta.op(node) or node.target})"
        # a gain applied to values computed from the producers' rows, not to a table of
        # tensor attributes (a rotary table's frequencies)
        gain = _gain_here(state, node, root) if gains is not None and \
            any(n in made for n in ins) else None
        if gain is not None:
            if any(power[n] for n in ins):
                return f"{where} applies its gain to values already divided"
            gains.append(gain)
            power[node] = alpha
            continue
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
        if is_op(node, ZEROS):  # zeros at any count: joins values of any power
            zeros.add(node)
            if out:
                power[node] = 0.0
            continue
        if is_op(node, ACCUMULATE):
            why = _accumulated(node, power, zeros)
            if isinstance(why, str):
                return f"{where} {why}"
            if out:
                power[node] = why
            continue
        what = kind(gm, node) if node.op != "get_attr" else "attr"
        owned, weights = _owned(state, node) if what == "layer" else (set(), set())
        if what == "layer" and not owned:
            # a product of activations that does not contract these neurons (the
            # values in `attn @ v`): linear in each factor, like an elementwise product
            what = "scale"
        read = [n for n in ins if n not in weights]
        if what == "move" and is_op(node, CASTS) and node.args and node.args[0] in power:
            read = [node.args[0]]  # `type_as(x, other)` reads only the dtype of `other`
        powers = [power[n] for n in read]
        if what == "attr":
            result = 0.0  # gathered, never divided: a multiplier like a rotary table
        elif what == "layer" and owned & (producers | consumers):
            if read and (not owned & consumers or any(p != alpha for p in powers)):
                return f"{where} reads them divided by count**{max(powers):g}"
            if out and not owned & producers:
                return f"{where} passes them through a layer that does not make them"
            result = alpha if gains is None else 0.0  # (gain mode: the gain divides)
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
            if (what == "layer" and owned & producers) or any(n in made for n in ins):
                made.add(node)
    missing = [c.node for c in contractions if c.node not in reached and not c.vouched]
    if missing:
        return f"they do not reach node `{missing[0]}`"
    for key, extra in deferred:
        if not any(key in g.tensors for g in gains):
            return f"`{key[0]}` dim {key[1]} reads these neurons as {sorted(extra)[0]}"
    if gains is not None and not gains:
        return "no gain divides them"
    return None


def _accumulated(node: fx.Node, power: Dict[fx.Node, float], zeros: Set[fx.Node]):
    """The power of the counts ``input + (source added at index)`` is divided by, or
    why it is not one: both terms divided alike (or ``input`` zeros), and an index
    that does not carry the neurons (positions, never scaled)."""
    base = canonical_arg(node, 0, "input", None)
    index = canonical_arg(node, 2, "index", None)
    source = canonical_arg(node, 3, "source", None)
    if source is None:
        source = canonical_arg(node, 3, "src", None)
    if index in power:
        return "indexes by them"
    p = power.get(source, 0.0)
    if base not in zeros and power.get(base, 0.0) != p:
        return "adds something that is not divided with them"
    return p


def _gain_here(state: WalkState, node: fx.Node, root: int) -> Optional[Gain]:
    """The per-neuron gain ``node`` applies last, if its tensor dims hold space ``root``
    (other spaces they hold are divided only if proven so themselves; None otherwise)."""
    if node.op not in ("call_function", "call_method", "call_module"):
        return None
    gain = gain_of(state, node)
    if gain is None:
        return None
    table = state.table
    for key in gain.tensors:
        if key not in state.params or root not in {
                table.find(l.space) for l in leaves(table.norm(state.params[key]))}:
            return None
    return gain


def _prove(state: WalkState, root: int, alpha: float, cs: List[Contraction],
           index: _Index, flips: List[Tuple[int, List[Gain]]]) -> Optional[str]:
    """:func:`path_problem` as it is, else with the division moved onto gains; a
    proof by gains is recorded in ``flips`` (:func:`_move_onto_gains` applies it)."""
    why = path_problem(state, root, alpha, cs, index)
    if why is None:
        return None
    found: List[Gain] = []
    if path_problem(state, root, alpha, cs, index, found) is None:
        flips.append((root, found))
        return None
    return why


def _flipped(state: WalkState, root: int, gains: List[Gain], index: _Index) -> List[TensorDim]:
    """The tensor dims whose roles a proof by gains changes: ``root``'s producers
    (their rows become plain copies) and the gains (they become the divided producers)."""
    return [key for key in index.touching(root) if PRODUCER in state.roles[key]] + \
        [key for gain in gains for key in gain.tensors]


def _move_onto_gains(state: WalkState, flips: List[Tuple[int, List[Gain]]], divided: Set[int],
                     index: _Index) -> Dict[int, str]:
    """Apply the proofs by gains whose role changes touch no space divided the plain way
    (``divided``: a producer dim that holds one must stay a divided producer, a gain must
    not become one); returns ``{space: why}`` for the proofs that cannot be applied."""
    table = state.table
    moved = {root for root, _ in flips}
    refused: Dict[int, str] = {}
    for root, gains in flips:
        for key in _flipped(state, root, gains, index):
            spaces = {table.find(l.space) for l in leaves(table.norm(state.params[key]))}
            clash = (spaces & divided) - moved
            if clash:
                refused[root] = (f"`{key[0]}` dim {key[1]} also holds neurons divided "
                                 "before their norm")
    for root, gains in flips:
        if root in refused:
            continue
        for key in index.touching(root):
            if PRODUCER in state.roles[key]:
                state.roles[key] = (state.roles[key] - {PRODUCER}) | {PASS}
        for gain in gains:
            for key in gain.tensors:
                # a gain used as ``c + w`` keeps its offset: ``(c + w)/s - c``, as for ties
                state.roles[key] = {PRODUCER}
            state.offsets.update(gain.offsets)
    return refused


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
    flips: List[Tuple[int, List[Gain]]] = []
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
                       else _prove(state, s, 1.0, [c], index, flips))
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
               else _prove(state, root, 0.5, cs, index, flips))
        if why is None:
            halved[root] = cs[0].node
        else:
            for c in cs:
                blocked.append((c, "both sides read the same neurons, and dividing them by "
                                   f"sqrt(count) is not proven exact: {why}"))
    refused = _move_onto_gains(state, flips, rescaled | set(halved), index)
    if refused:  # (rare) block what those proofs would have grown
        for root in refused:
            halved.pop(root, None)
        pairings = [p for p in pairings if p.rescaled not in refused]
        for c in table.contractions:
            ends = {table.find(l.space) for side in (c.a, c.b) for l in leaves(table.norm(side))}
            for root in ends & set(refused):
                blocked.append((c, refused[root]))
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
