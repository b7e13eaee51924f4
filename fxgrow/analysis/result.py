"""The result of the analysis: groups of neurons that grow together.

A *group* is one atomic neuron space after all unions and refinements.  It
lists its *members* (parameter and buffer dimensions, each with a role), the
modules that *produce* it, its status (``growable``, ``fixed`` or
``blocked``) and, when it cannot grow, the reasons.  Group ids are stable:
they follow the order in which node outputs first show each space, so the
same model gives the same ids every time.  Other spaces (spatial extents,
batch dims) take the ids after the groups'.

:class:`Analysis` is plain, frozen data: every layout in it (members,
uniform sites, rewrites, node values) is already in group ids, and literal
rewrites are templates (:mod:`fxgrow.ir.rewrites`), so the plan and the
rewrite pass read it without running any rule.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Dict, FrozenSet, List, Mapping, NamedTuple, Tuple, Union

from torch import fx

from ..errors import UnknownTargetError
from ..ir.groups import Group, Member, Pairing, UniformSite
from ..ir.rewrites import AttrRewrite, Rewrite
from ..ir.roles import CONSUMER

__all__ = ["Analysis", "Space", "Group", "Member"]


class Space(NamedTuple):
    """Size, status and whether it is a free extent, of one space (by id)."""

    size: int
    status: str
    free: bool


@dataclass(frozen=True, eq=False)
class Analysis:
    """What :func:`fxgrow.analyze` found: groups, members and constraints.

    Attributes
    ----------
    graph_module : fx.GraphModule
        The captured graph; nodes carry ``fxgrow.*`` metadata (:mod:`fxgrow.meta`).
    groups : tuple of Group
        Every group that touches a parameter or buffer.
    spaces : mapping of id to :class:`Space`
        Every space, groups and free extents alike.
    members : mapping of (tensor, dim) to Member
        Every parameter or buffer dimension the groups are made of.
    rewrites, attr_rewrites : tuple of Rewrite / AttrRewrite
        How literal graph arguments and module attributes follow the new sizes.
    uniform : tuple of UniformSite
        Every node that averages over neurons (uniform replication needed).
    pairings : tuple of Pairing
        Contractions between activations (see :mod:`fxgrow.analysis.contraction`).
    halved : mapping of group to node
        Groups contracted with themselves (``h @ hᵀ``): producers and consumers
        are both divided by ``sqrt(count)``.
    args, kwargs
        The example input, bound for calls.
    source : nn.Module, optional
        The user's model the graph was captured from.
    offsets : mapping of tensor to float
        Divided gains the graph uses as ``c + tensor`` (Gemma's ``1 + w``): dividing
        such a gain by ``s`` makes the tensor ``(c + w)/s - c``.
    head_dims : frozenset of int
        Groups a plain widening factor leaves as they are (a spec naming them grows
        them): both sides of every product between activations (query/key head
        dims, ``h @ hᵀ``) and attention's per-head value dims.  A factor grows the
        *number* of heads and keeps each head's width, as HyperCloning and LEMON do.
    """

    graph_module: fx.GraphModule
    groups: Tuple[Group, ...]
    spaces: Mapping[int, Space]
    members: Mapping[Tuple[str, int], Member]
    rewrites: Tuple[Rewrite, ...] = ()
    attr_rewrites: Tuple[AttrRewrite, ...] = ()
    uniform: Tuple[UniformSite, ...] = ()
    pairings: Tuple[Pairing, ...] = ()
    halved: Mapping[int, str] = field(default_factory=dict)
    args: tuple = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)
    #: the model the graph was captured from (fxgrow.analyze sets it): what widen verifies
    #: against, and what output="module" grows
    source: Any = field(default=None, repr=False)
    offsets: Mapping[str, float] = field(default_factory=dict)
    head_dims: FrozenSet[int] = frozenset()

    @cached_property
    def _by_id(self) -> Dict[int, Group]:
        return {g.id: g for g in self.groups}

    @cached_property
    def partners(self) -> Dict[int, int]:
        """``{rescaled group: primary group}``: the rescaled group copies the
        primary's index map, and its producer rows are divided by the counts."""
        return {p.rescaled: p.primary for p in self.pairings}

    def exponent(self, gid: int) -> float:
        """Producers of group ``gid`` are divided by ``count**exponent`` and its consumers
        by ``count**(1 - exponent)`` (0 for plain Net2WiderNet; see fxgrow.analysis.contraction)."""
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
            listed = ", ".join(f"{g.id} ({g.size} neurons, {g.status})" for g in found)
            growable = [g.id for g in found if g.growable]
            hint = (f"; the growable one is group {growable[0]}" if len(growable) == 1 else
                    f"; the growable ones are {growable}" if growable else
                    "; none of them can grow")
            raise UnknownTargetError(f"module `{key}` produces {len(found)} groups: {listed}"
                                     f"{hint}. Name one by its id")
        return found[0]

    def groups_of(self, module: str) -> List[Group]:
        """Groups ``module`` produces (or, for a module producing none, passes through)."""
        if not isinstance(module, str):
            raise UnknownTargetError(f"expected a module name or group id, got {module!r}")
        produced = [g for g in self.groups if module in g.producers]
        if produced:
            return produced
        touched = [g for g in self.groups
                   if any(m.module == module and m.role != CONSUMER for m in g.members)]
        if touched:
            return touched
        names = [n for n, _ in self.graph_module.named_modules() if n]
        if module not in names:
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

    # -- visualisation (see fxgrow.viz) --------------------------------
    def to_networkx(self, **kwargs):
        """The graph as a ``networkx.DiGraph`` annotated with groups and reasons."""
        from ..viz import to_networkx
        return to_networkx(self, **kwargs)

    def to_dot(self, path=None, **kwargs):
        """Graphviz DOT text (written to ``path`` if given)."""
        from ..viz import to_dot
        return to_dot(self, path, **kwargs)

    def draw(self, path=None, **kwargs):
        """A self-contained HTML page of the graph (written to ``path`` if given)."""
        from ..viz import draw
        return draw(self, path, **kwargs)

    def _repr_html_(self):
        from ..viz import draw
        return draw(self, None, embed=True)
