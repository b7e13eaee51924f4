"""The result of the analysis: groups of neurons that grow together.

A *group* is one atomic neuron space after all unions and refinements.  It
lists its *members* (parameter and buffer dimensions, each with a role), the
modules that *produce* it, its status (``growable``, ``fixed`` or
``blocked``) and, when it cannot grow, the reasons.  Group ids are stable:
they follow the order in which node outputs first show each space, so the
same model gives the same ids every time.  Other spaces (spatial extents,
batch dims) take the ids after the groups'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from torch import fx

from .contraction import Pairing
from .errors import UnknownTargetError
from .layout import Axis, Layout, leaves, map_layout
from .spaces import GROWABLE
from .values import TV, SizeOf

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import _State

__all__ = ["Member", "Group", "Analysis"]


@dataclass(frozen=True)
class Member:
    """One dimension of one parameter or buffer, in terms of groups.

    ``role`` is ``"producer"`` (its rows make the group's neurons: gathered),
    ``"consumer"`` (its columns read them: gathered and divided by the
    replication counts), ``"pass-through"`` (per-neuron values such as
    BatchNorm statistics: gathered) or ``"attr"`` (a tensor attribute read
    by the graph: gathered).
    """

    tensor: str
    dim: int
    role: str
    layout: Layout

    @property
    def module(self) -> str:
        return self.tensor.rpartition(".")[0]


@dataclass(frozen=True)
class Group:
    """Neurons that must be widened by one index map."""

    id: int
    size: int
    status: str
    reasons: Tuple[str, ...]
    producers: Tuple[str, ...]
    members: Tuple[Member, ...]
    uniform: Tuple[str, ...] = ()

    @property
    def growable(self) -> bool:
        return self.status == GROWABLE

    @property
    def reason(self) -> str:
        """Why the group cannot grow ('' if it can)."""
        return "; ".join(self.reasons)

    def __str__(self) -> str:
        return (f"group {self.id}: {self.size} neurons, {self.status}"
                + (f" ({self.reason})" if self.reasons else ""))


class Analysis:
    """What :func:`fxgrow.analyze` found: groups, members and constraints.

    Attributes
    ----------
    graph_module : fx.GraphModule
        The captured graph; nodes carry ``fxgrow.*`` metadata.
    groups : tuple of Group
        Every group that touches a parameter or buffer.
    args, kwargs
        The example input, bound for calls.
    """

    def __init__(self, graph_module: fx.GraphModule, groups: Tuple[Group, ...],
                 spaces: Dict[int, Tuple[int, str, bool]],
                 members: Dict[Tuple[str, int], Member],
                 resolve: Callable[[Layout], Layout],
                 node_literals: List[Tuple[str, Callable[..., Any]]],
                 module_literals: List[Tuple[str, str, Callable[..., Any]]],
                 uniform: List[Tuple[Layout, str]],
                 args: tuple, kwargs: dict,
                 uniform_sites: Optional[List[Tuple[Layout, str]]] = None,
                 pairings: Tuple[Pairing, ...] = (),
                 halved: Optional[Dict[int, str]] = None) -> None:
        self.graph_module = graph_module
        self.groups = groups
        self.spaces = spaces
        self.members = members
        self.resolve = resolve
        self.node_literals = node_literals
        self.module_literals = module_literals
        self.uniform = uniform
        self.args = args
        self.kwargs = kwargs
        self._by_id = {g.id: g for g in groups}
        #: (layout, node name) of every uniform-replication constraint
        self.uniform_sites: List[Tuple[Layout, str]] = list(uniform_sites or [])
        #: contractions between activations (see fxgrow.contraction), in group ids
        self.pairings: Tuple[Pairing, ...] = tuple(pairings)
        #: ``{rescaled group: primary group}``: the rescaled group copies the
        #: primary's index map, and its producer rows are divided by the counts
        self.partners: Dict[int, int] = {p.rescaled: p.primary for p in self.pairings}
        #: ``{group: node}`` for groups contracted with themselves (``h @ hᵀ``):
        #: producers and consumers are both divided by ``sqrt(count)``
        self.halved: Dict[int, str] = dict(halved or {})

    def exponent(self, gid: int) -> float:
        """Producers of group ``gid`` are divided by ``count**exponent`` and its consumers
        by ``count**(1 - exponent)`` (0 for plain Net2WiderNet; see fxgrow.contraction)."""
        return 1.0 if gid in self.partners else 0.5 if gid in self.halved else 0.0

    def family(self, gid: int) -> List[int]:
        """Groups that share ``gid``'s index map (itself and its contraction partners)."""
        primary = self.partners.get(gid, gid)
        return [primary] + [g for g, p in self.partners.items() if p == primary]

    # -- lookup --------------------------------------------------------------
    def group(self, key: Union[int, str]) -> Group:
        """A group by id, or the one group a module produces."""
        if isinstance(key, int) and not isinstance(key, bool):
            if key not in self._by_id:
                raise UnknownTargetError(
                    f"no group {key}; group ids are {sorted(self._by_id)}")
            return self._by_id[key]
        found = self.groups_of(key)
        if len(found) != 1:
            ids = [g.id for g in found]
            raise UnknownTargetError(
                f"module `{key}` produces {len(found)} groups {ids}; name them by id")
        return found[0]

    def groups_of(self, module: str) -> List[Group]:
        """Groups ``module`` produces (or, for a module producing none, passes through)."""
        if not isinstance(module, str):
            raise UnknownTargetError(f"expected a module name or group id, got {module!r}")
        produced = [g for g in self.groups if module in g.producers]
        if produced:
            return produced
        touched = [g for g in self.groups
                   if any(m.module == module and m.role != "consumer" for m in g.members)]
        if touched:
            return touched
        names = [n for n, _ in self.graph_module.named_modules() if n]
        if module not in names:
            import difflib
            close = difflib.get_close_matches(module, names, n=3)
            raise UnknownTargetError(
                f"no module named `{module}`" + (f"; did you mean {close}?" if close else ""))
        raise UnknownTargetError(f"module `{module}` produces no neuron group")

    def contraction_note(self, gid: int) -> str:
        """How a product between activations shapes the group's growth ('' if none)."""
        if gid in self.partners:
            p = next(p for p in self.pairings if p.rescaled == gid)
            return (f"copies group {p.primary}'s map; its rows are divided by the counts "
                    f"(the other side of `{p.node}`)")
        if gid in self.halved:
            return (f"both sides of `{self.halved[gid]}`: rows and columns divided by "
                    "sqrt(count)")
        return ""

    @property
    def growable(self) -> List[Group]:
        return [g for g in self.groups if g.growable]

    # -- display -------------------------------------------------------------
    def table(self, width: int = 110) -> str:
        """The group table as text."""
        rows = [("group", "size", "status", "producers", "reason")]
        for g in self.groups:
            prods = ", ".join(g.producers) or "-"
            note = g.reason or "; ".join(filter(None, (
                self.contraction_note(g.id),
                "uniform replication: " + "; ".join(g.uniform) if g.uniform else "")))
            rows.append((str(g.id), str(g.size), g.status, prods, note))
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        w[3] = min(w[3], 40)
        lines = []
        for r in rows:
            prods = r[3] if len(r[3]) <= w[3] else r[3][: w[3] - 1] + "…"
            line = f"{r[0]:>{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {prods:<{w[3]}}  {r[4]}"
            lines.append(line if len(line) <= width else line[: width - 1] + "…")
        return "\n".join(lines)

    def __str__(self) -> str:
        n = len(self.groups)
        grow = len(self.growable)
        return (f"Analysis of {self.graph_module.__class__.__name__}: {n} groups, "
                f"{grow} growable\n" + self.table())

    def __repr__(self) -> str:
        return f"<Analysis: {len(self.groups)} groups, {len(self.growable)} growable>"

    # -- visualisation (see fxgrow.visualize) --------------------------------
    def to_networkx(self, **kwargs):
        """The graph as a ``networkx.DiGraph`` annotated with groups and reasons."""
        from .visualize import to_networkx
        return to_networkx(self, **kwargs)

    def to_dot(self, path=None, **kwargs):
        """Graphviz DOT text (written to ``path`` if given)."""
        from .visualize import to_dot
        return to_dot(self, path, **kwargs)

    def draw(self, path=None, **kwargs):
        """A self-contained HTML page of the graph (written to ``path`` if given)."""
        from .visualize import draw
        return draw(self, path, **kwargs)

    def _repr_html_(self):
        from .visualize import draw
        return draw(self, None, embed=True)


def _rename_value(value: Any, rename: Callable[[Layout], Layout]) -> Any:
    if isinstance(value, TV):
        return TV(tuple(rename(d) for d in value.dims))
    if isinstance(value, SizeOf):
        return SizeOf(tuple(rename(l) for l in value.layouts), value.value)
    if isinstance(value, tuple):
        return tuple(_rename_value(v, rename) for v in value)
    return value


def build_analysis(state: "_State", gm: fx.GraphModule, args: tuple, kwargs: dict) -> Analysis:
    """Turn the walk's state into an :class:`Analysis` (numbering the groups)."""
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
    for node in gm.graph.nodes:
        for lay in _layouts(state.env.get(node)):
            visit(lay)
    for key in state.param_order:
        visit(state.params[key])
    n_groups = len(order)
    for node in gm.graph.nodes:
        for lay in _layouts(state.env.get(node)):
            visit(lay, only_groups=False)

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
        role = next((r for r in ("consumer", "producer", "pass-through", "attr") if r in roles))
        m = Member(key[0], key[1], role, rename(state.params[key]))
        members[key] = m
        for leaf in leaves(m.layout):
            by_group.setdefault(leaf.space, {})[m] = None

    uniform = [(rename(lay), why) for lay, why, _ in table.uniform]
    uniform_sites = [(rename(lay), node) for lay, _, node in table.uniform]
    uniform_of: Dict[int, Dict[str, None]] = {}
    for lay, why in uniform:
        for leaf in leaves(lay):
            uniform_of.setdefault(leaf.space, {})[why] = None

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
    groups = []
    for gid in range(n_groups):
        root = inverse[gid]
        mem = tuple(by_group.get(gid, ()))
        if not mem:
            continue
        producers = tuple(dict.fromkeys(m.module for m in mem if m.role == "producer"))
        status, reasons = table.status(root), tuple(table.reasons(root))
        if status == GROWABLE and not any(m.role in ("producer", "consumer") for m in mem):
            # Only tensor attributes read by the graph touch these neurons (an
            # index buffer, say): no layer gives them a meaning to preserve.
            status, reasons = "fixed", ("no layer produces or consumes these neurons; "
                                        f"only {', '.join(m.tensor for m in mem)} reads them",)
        groups.append(Group(gid, table.size(root), status, reasons, producers, mem,
                            tuple(uniform_of.get(gid, ()))))
    spaces = {gid: (table.size(root), table.status(root), table.is_free(root))
              for root, gid in order.items()}
    for node in gm.graph.nodes:
        if node in state.env:
            node.meta["fxgrow.value"] = _rename_value(state.env[node], rename)
        if node in state.node_notes:
            node.meta["fxgrow.blocked"] = tuple(state.node_notes[node])
    return Analysis(gm, tuple(groups), spaces, members, rename, state.node_literals,
                    state.module_literals, uniform, args, kwargs, uniform_sites, pairings,
                    {order[root]: node for root, node in state.halved.items()})


def _layouts(value: Any) -> Iterable[Layout]:
    if isinstance(value, TV):
        yield from value.dims
    elif isinstance(value, SizeOf):
        yield from value.layouts
    elif isinstance(value, tuple):
        for v in value:
            yield from _layouts(v)
