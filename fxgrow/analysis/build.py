"""Turn the walk's state into the :class:`~fxgrow.analysis.result.Analysis`.

Numbers the groups (in the order node outputs first show each space, so ids
are stable), renames every layout the walk recorded -- members, uniform
sites, rewrite templates, node values -- from walk-time space ids into group
ids once, collects each group's members, producers, status and reasons, and
writes the renamed values to ``node.meta`` for the graph page.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Tuple

from torch import fx

from .. import meta
from ..ir.groups import Group, Member, Pairing, UniformSite
from ..ir.layout import Axis, Layout, leaves, map_layout
from ..ir.rewrites import AttrRewrite, Rewrite, rename as rename_template
from ..ir.roles import CONSUMER, FIXED, GROWABLE, PRODUCER, ROLES, STATUS_RANK
from ..ir.values import TV, SizeOf
from .result import Analysis, Space
from .state import WalkState

__all__ = ["build_analysis"]


def _rename_value(value: Any, rename: Callable[[Layout], Layout]) -> Any:
    if isinstance(value, TV):
        return TV(tuple(rename(d) for d in value.dims))
    if isinstance(value, SizeOf):
        return SizeOf(tuple(rename(l) for l in value.layouts), value.value)
    if isinstance(value, tuple):
        return tuple(_rename_value(v, rename) for v in value)
    return value


def _layouts(value: Any) -> Iterable[Layout]:
    if isinstance(value, TV):
        yield from value.dims
    elif isinstance(value, SizeOf):
        yield from value.layouts
    elif isinstance(value, tuple):
        for v in value:
            yield from _layouts(v)


def _numbering(state: WalkState) -> Tuple[Dict[int, int], int]:
    """``{root space: id}``: groups first, in graph order, then the other spaces."""
    table = state.table
    order: Dict[int, int] = {}
    grouped = {table.find(leaf.space) for key in state.param_order if state.roles[key]
               for leaf in leaves(table.norm(state.params[key]))}

    def visit(layout: Layout, only_groups: bool = True) -> None:
        for leaf in leaves(table.norm(layout)):
            root = table.find(leaf.space)
            if root not in order and (root in grouped or not only_groups):
                order[root] = len(order)

    # group ids follow the graph (the order in which node outputs first show
    # each group) and come first; other spaces (extents) take the ids after
    for node in state.gm.graph.nodes:
        for lay in _layouts(state.env.get(node)):
            visit(lay)
    for key in state.param_order:
        visit(state.params[key])
    n_groups = len(order)
    for node in state.gm.graph.nodes:
        for lay in _layouts(state.env.get(node)):
            visit(lay, only_groups=False)
    return order, n_groups


def build_analysis(state: WalkState, gm: fx.GraphModule, args: tuple, kwargs: dict) -> Analysis:
    """Turn the walk's state into an :class:`Analysis` (numbering the groups)."""
    table = state.table
    order, n_groups = _numbering(state)

    def rename(layout: Layout) -> Layout:
        def leaf(a: Axis) -> Layout:
            root = table.find(a.space)
            if root not in order:
                order[root] = len(order)
            return Axis(order[root], a.size)
        return map_layout(table.norm(layout), leaf)

    members: Dict[Tuple[str, int], Member] = {}
    by_group: Dict[int, Dict[Member, None]] = {}  # insertion-ordered sets: linear, not quadratic
    for key in state.param_order:
        roles = state.roles[key]
        if not roles:  # e.g. the kernel dims of a functional conv weight
            continue
        role = next(r for r in ROLES if r in roles)
        m = Member(key[0], key[1], role, rename(state.params[key]))
        members[key] = m
        for leaf in leaves(m.layout):
            by_group.setdefault(leaf.space, {})[m] = None

    uniform = tuple(UniformSite(rename(u.layout), u.why, u.node) for u in table.uniform)
    uniform_of: Dict[int, Dict[str, None]] = {}
    for u in uniform:
        for leaf in leaves(u.layout):
            uniform_of.setdefault(leaf.space, {})[u.why] = None

    pairings = tuple(Pairing(order[p.primary], order[p.rescaled], p.node, p.sqrt_scale)
                     for p in state.pairings)
    # one index map for a whole family (a primary and its partners): every member
    # obeys every member's uniform constraints
    families: Dict[int, List[int]] = {}
    for p in pairings:
        families.setdefault(p.primary, [p.primary]).append(p.rescaled)
    for family in families.values():
        merged = {why: None for g in family for why in uniform_of.get(g, {})}
        for g in family:
            uniform_of[g] = dict(merged)

    inverse = {gid: root for root, gid in order.items()}
    found: Dict[int, Tuple[Tuple[Member, ...], str, Tuple[str, ...]]] = {}
    for gid in range(n_groups):
        root = inverse[gid]
        mem = tuple(by_group.get(gid, ()))
        if not mem or table.size(root) == 0:  # an empty tensor (a KV cache before use)
            continue
        status, reasons = table.status(root), tuple(table.reasons(root))
        if status == GROWABLE and not any(m.role in (PRODUCER, CONSUMER) for m in mem):
            # Only tensor attributes read by the graph touch these neurons (an
            # index buffer, say): no layer gives them a meaning to preserve.
            status, reasons = FIXED, ("no layer produces or consumes these neurons; "
                                      f"only {', '.join(m.tensor for m in mem)} reads them",)
        found[gid] = (mem, status, reasons)
    # groups that share an index map (contraction partners) share a status
    for family in families.values():
        worst = max((found[g] for g in family if g in found), key=lambda f: STATUS_RANK[f[1]],
                    default=None)
        if worst is not None and worst[1] != GROWABLE:
            for g in family:
                if g in found and found[g][1] == GROWABLE:
                    found[g] = (found[g][0], worst[1], tuple(
                        f"its contraction partner is {worst[1]}: {r}" for r in worst[2]))
    halved = {order[root]: node for root, node in state.halved.items()}
    head_dims = _head_dims(state, rename, found, pairings, halved)
    groups = []
    for gid, (mem, status, reasons) in found.items():
        producers = tuple(dict.fromkeys(m.module for m in mem if m.role == PRODUCER))
        groups.append(Group(gid, table.size(inverse[gid]), status, reasons, producers, mem,
                            tuple(uniform_of.get(gid, ()))))
    rewrites = tuple(Rewrite(r.node, rename_template(r.args, rename),
                             rename_template(r.kwargs, rename), r.target,
                             tuple(rename(l) for l in r.when)) for r in state.rewrites)
    attr_rewrites = tuple(AttrRewrite(a.module, a.attr, rename_template(a.value, rename))
                          for a in state.attr_rewrites)
    for node in gm.graph.nodes:
        if node in state.env:
            meta.set_value(node, _rename_value(state.env[node], rename))
        if node in state.node_notes:
            meta.set_blocked(node, tuple(state.node_notes[node]))
    spaces = {gid: Space(table.size(root), table.status(root), table.is_free(root))
              for root, gid in order.items()}
    return Analysis(gm, tuple(groups), spaces, members, rewrites, attr_rewrites, uniform,
                    pairings, halved, args, kwargs, offsets=dict(state.offsets),
                    head_dims=head_dims)


def _head_dims(state: WalkState, rename: Callable[[Layout], Layout], groups: Dict[int, Any],
               pairings: Tuple[Pairing, ...], halved: Dict[int, str]) -> FrozenSet[int]:
    """Groups a plain factor leaves: both sides of every product between activations
    (query/key head dims) and the per-head value dims of products whose batch dims
    hold neurons (heads)."""
    out = {g for p in pairings for g in (p.primary, p.rescaled)} | set(halved)
    for layout, heads in state.head_dims:
        if any(leaf.space in groups for h in heads for leaf in leaves(rename(h))):
            out |= {leaf.space for leaf in leaves(rename(layout))}
    return frozenset(g for g in out if g in groups)
