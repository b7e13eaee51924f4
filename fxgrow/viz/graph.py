"""The analysed graph as a ``networkx.DiGraph``: what every picture is drawn from.

Only *reads* what the analysis wrote on the graph (``node.meta["fxgrow.*"]``,
:mod:`fxgrow.meta`) and the :class:`~fxgrow.analysis.result.Analysis` tables;
nothing is recomputed and nothing is changed.  :func:`to_networkx` gives one
node per fx node, with its op, target, shape, module, the groups of each
output dimension, the parameters it owns (with their roles), its status and
block reason; :func:`collapse` merges nodes by module; :func:`group_colours`
gives every group its fill colour.

Examples
--------
>>> import torch, fxgrow
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> a = fxgrow.analyze(m, torch.randn(1, 4))
>>> G = a.to_networkx()
>>> G.nodes["_0"]["op"], G.nodes["_0"]["groups"], G.nodes["_0"]["status"]
('Linear', (1,), 'growable')
"""

from __future__ import annotations

import colorsys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import networkx as nx
from torch import fx

from .. import checks, meta
from ..capture.shapes import TensorSpec
from ..ir.layout import leaves, new_size
from ..ir.roles import BLOCKED, FIXED, GROWABLE
from ..ir.values import TV

__all__ = ["to_networkx", "collapse", "group_colours", "NO_GROUP", "Plan", "HUES"]

#: status of a node none of whose output dimensions index neurons
NO_GROUP = "none"
_RANK = {NO_GROUP: -1, GROWABLE: 0, FIXED: 1, BLOCKED: 2}
_FX_OP_NAMES = {"placeholder": "input", "get_attr": "get_attr", "output": "output"}

Plan = Mapping[int, Tuple[int, int]]


# -- reading one node's metadata ---------------------------------------------
def _module_of(node: fx.Node) -> str:
    """The qualified name of the module a node belongs to ('' for the root)."""
    if node.op == "call_module":
        return str(node.target)
    if node.op == "get_attr":
        return str(node.target).rpartition(".")[0]
    stack = node.meta.get("nn_module_stack")
    return str(next(reversed(stack))) if stack else ""


def _target_of(node: fx.Node) -> str:
    if node.op == "call_function":
        try:
            return fx.node._get_qualified_name(node.target)
        except Exception:  # builtins without a qualified name
            return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _shape_of(spec: Any) -> Any:
    """Shape tuple of a tensor, tuple of shapes of a tuple, None otherwise."""
    if isinstance(spec, TensorSpec):
        return tuple(int(s) for s in spec.shape)
    if isinstance(spec, tuple) and any(isinstance(s, (TensorSpec, tuple)) for s in spec):
        return tuple(_shape_of(s) for s in spec)
    return None


def _dtype_of(spec: Any) -> str:
    if isinstance(spec, TensorSpec):
        return str(spec.dtype).replace("torch.", "")
    return ""


def _dim_groups(value: Any, is_group) -> Any:
    """Per output dimension, the ids of the groups it indexes (nested for tuples)."""
    if isinstance(value, TV):
        return tuple(tuple(dict.fromkeys(a.space for a in leaves(d) if is_group(a.space)))
                     for d in value.dims)
    if isinstance(value, tuple):
        return tuple(_dim_groups(v, is_group) for v in value)
    return ()


def _flat_groups(dim_groups: Any) -> Tuple[int, ...]:
    out: Dict[int, None] = {}

    def walk(x):
        for item in x:
            if isinstance(item, int):
                out[item] = None
            else:
                walk(item)

    walk(dim_groups)
    return tuple(out)


def _new_shape(value: Any, sizes: Mapping[int, int]) -> Any:
    if isinstance(value, TV):
        return tuple(new_size(d, sizes) for d in value.dims)
    if isinstance(value, tuple):
        return tuple(_new_shape(v, sizes) for v in value)
    return None


def _group_table(analysis, plan: Optional[Plan]) -> Dict[int, Dict[str, Any]]:
    """Size, status, reasons and producers of every non-free space, by id."""
    by_id = {g.id: g for g in analysis.groups}
    table: Dict[int, Dict[str, Any]] = {}
    for sid, (size, status, free) in sorted(analysis.spaces.items()):
        if free:
            continue
        g = by_id.get(sid)
        entry = {
            "size": size, "status": status,
            "reasons": tuple(g.reasons) if g else (),
            "producers": tuple(g.producers) if g else (),
            "members": len(g.members) if g else 0,
            "uniform": tuple(g.uniform) if g else (),
            "contraction": analysis.contraction_note(sid) if g else "",
        }
        if plan is not None and sid in plan:
            entry["new_size"] = int(plan[sid][1])
        table[sid] = entry
    return table


def _params_by_owner(analysis) -> Dict[str, List[Tuple[str, int, str, Tuple[int, ...]]]]:
    """``{module or tensor name: [(tensor, dim, role, groups), ...]}``."""
    owners: Dict[str, List[Tuple[str, int, str, Tuple[int, ...]]]] = {}
    for (tensor, dim), m in analysis.members.items():
        gids = tuple(dict.fromkeys(a.space for a in leaves(m.layout)))
        row = (tensor, int(dim), m.role, gids)
        owners.setdefault(m.module, []).append(row)
        owners.setdefault(tensor, []).append(row)
    return owners


def _node_status(groups: Sequence[int], table: Mapping[int, Mapping[str, Any]],
                 cause: Tuple[str, ...]) -> Tuple[str, str]:
    """A node's status (worst of its groups, blocked if it blocks) and reason."""
    if cause:
        return BLOCKED, "; ".join(cause)
    status = max((table[g]["status"] for g in groups), key=_RANK.__getitem__, default=NO_GROUP)
    if status in (FIXED, BLOCKED):
        reasons = [r for g in groups if table[g]["status"] == status for r in table[g]["reasons"]]
        return status, "; ".join(dict.fromkeys(reasons))
    return status, ""


# -- public API ----------------------------------------------------------------
def to_networkx(analysis, *, plan: Optional[Plan] = None) -> nx.DiGraph:
    """The analysed graph as a ``networkx.DiGraph``.

    Parameters
    ----------
    analysis : fxgrow.Analysis
    plan : mapping ``{group id: (old, new)}`` or GrowthPlan, optional
        A widening's sizes (``grown.meta["fxgrow.plan"]``); adds ``new_shape``
        to nodes and ``new_size`` to groups.  Anything else is a ``SpecError``.

    Returns
    -------
    networkx.DiGraph
        Nodes are keyed by fx node name, in graph (topological) order, with
        attributes ``opcode`` (fx op kind), ``op`` (fxgrow op name), ``target``,
        ``module`` (qualified name of the owning module, '' for the root),
        ``shape``, ``dtype``, ``layout`` (text of each dim's layout, e.g.
        ``[s8:2, s0:16]``), ``dim_groups`` (per output dim, the group ids it
        indexes), ``groups`` (all of them, flat), ``params`` (``(tensor, dim,
        role, group ids)`` of the parameters the node owns), ``status``
        (worst status of its groups, ``"blocked"`` if the node blocks,
        ``"none"`` without groups), ``reason``, ``cause`` (True if this node
        is where a block comes from), ``rule`` and, with a plan,
        ``new_shape``.  An edge ``u -> v`` means ``v`` reads ``u``; it carries
        ``groups`` (those of ``u``'s output).  ``G.graph["groups"]`` maps
        every group id to its ``size``, ``status``, ``reasons``,
        ``producers``, ``members`` (count) and, with a plan, ``new_size``.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> a = fxgrow.analyze(m, torch.randn(1, 4))
    >>> G = to_networkx(a, plan={1: (8, 16)})
    >>> list(G)
    ['input_1', '_0', '_1', '_2', 'output']
    >>> G.nodes["_1"]["dim_groups"], G.nodes["_1"]["new_shape"]
    (((), (1,)), (1, 16))
    >>> G.nodes["_2"]["params"][0]
    ('2.weight', 0, 'producer', (2,))
    >>> G.graph["groups"][1]["new_size"]
    16
    """
    plan = checks.plan_sizes(plan)
    table = _group_table(analysis, plan)
    owners = _params_by_owner(analysis)
    sizes = {g: int(new) for g, (_, new) in plan.items()} if plan else None
    gm = analysis.graph_module
    G = nx.DiGraph(name=type(gm).__name__, groups=table,
                   plan=dict(plan) if plan is not None else None)
    for node in gm.graph.nodes:
        spec = meta.shape(node)
        value = meta.value(node)
        dims = _dim_groups(value, table.__contains__)
        groups = _flat_groups(dims)
        cause = meta.blocked(node)
        status, reason = _node_status(groups, table, cause)
        module = _module_of(node)
        if node.op == "call_module":
            params = owners.get(module, [])
        elif node.op == "get_attr":
            params = owners.get(str(node.target), [])
        else:
            params = []
        attrs = dict(
            opcode=node.op,
            op=meta.op(node) or _FX_OP_NAMES.get(node.op, node.op),
            target=_target_of(node),
            module=module,
            shape=_shape_of(spec),
            dtype=_dtype_of(spec),
            layout=str(value) if isinstance(value, (TV, tuple)) else "",
            dim_groups=dims,
            groups=groups,
            params=tuple(dict.fromkeys(params)),
            status=status,
            reason=reason,
            cause=bool(cause),
            rule=meta.rule(node),
        )
        if sizes is not None:
            attrs["new_shape"] = _new_shape(value, sizes)
        G.add_node(node.name, **attrs)
        for inp in node.all_input_nodes:
            G.add_edge(inp.name, node.name, groups=G.nodes[inp.name]["groups"])
    return G


def collapse(G: nx.DiGraph, depth: int) -> nx.DiGraph:
    """Merge the nodes of every module ``depth`` levels deep into one node.

    A node whose ``module`` has more than ``depth`` dotted components (or
    exactly ``depth``, for code in that module's ``forward`` such as a
    residual add) is replaced by a node named after the first ``depth``
    components (e.g. ``layer1.0`` for ``layer1.0.conv1`` at depth 2); other
    nodes, and modules holding a single node, stay as they are.  Merged nodes get ``opcode="module"``,
    ``count`` (how many fx nodes), ``nodes`` (their names), the union of
    their ``groups``, the worst ``status`` and every block ``reason``.

    Examples
    --------
    >>> G = nx.DiGraph()
    >>> G.add_node("x", module="", groups=(), status="none", reason="", cause=False)
    >>> for n in ("a", "b"):
    ...     G.add_node(n, module="blk." + n, groups=(0,), status="growable", reason="", cause=False)
    >>> G.add_edges_from([("x", "a"), ("a", "b")])
    >>> C = collapse(G, 1)
    >>> list(C.edges), C.nodes["blk"]["count"]
    ([('x', 'blk')], 2)
    """
    key: Dict[Any, Any] = {}
    for n, d in G.nodes(data=True):
        parts = d.get("module", "").split(".") if d.get("module") else []
        inside = len(parts) > depth or (len(parts) == depth and d.get("opcode") not in
                                         ("call_module", "get_attr"))
        key[n] = ".".join(parts[:depth]) if inside else n
    sizes: Dict[Any, int] = {}
    for k in key.values():
        sizes[k] = sizes.get(k, 0) + 1
    for n, k in key.items():  # a module with one node stays that node
        if sizes[k] == 1:
            key[n] = n
    Q = nx.DiGraph(**G.graph)
    for n, d in G.nodes(data=True):
        k = key[n]
        if k == n and n not in Q:
            Q.add_node(n, **d)
            continue
        if k not in Q:
            Q.add_node(k, opcode="module", op="module", target=k, module=k, count=0, nodes=[],
                       groups=(), status=NO_GROUP, reason="", cause=False, shape=None,
                       dtype="", params=())
        c = Q.nodes[k]
        c["count"] += 1
        c["nodes"].append(n)
        c["groups"] = tuple(dict.fromkeys(c["groups"] + tuple(d.get("groups", ()))))
        c["params"] = tuple(dict.fromkeys(c["params"] + tuple(d.get("params", ()))))
        if _RANK[d.get("status", NO_GROUP)] > _RANK[c["status"]]:
            c["status"] = d["status"]
        if d.get("cause"):
            c["cause"] = True
        if d.get("reason") and (d.get("cause") or d.get("status") == BLOCKED):
            c["reason"] = "; ".join(filter(None, dict.fromkeys([c["reason"], d["reason"]])))
    for u, v, d in G.edges(data=True):
        if key[u] != key[v]:
            Q.add_edge(key[u], key[v], **d)
    return Q


#: hues of growable and blocked groups' fills, in degrees: yellow through green, cyan and
#: blue to violet, never near red (red outlines mark blocked nodes in the legend)
HUES = (50.0, 290.0)


def group_colours(groups: Mapping[int, Mapping[str, Any]]) -> Dict[int, str]:
    """A fill colour (``#rrggbb``) per group.

    Growable and blocked groups get well separated hues (golden-angle steps
    through :data:`HUES`, which keeps every fill away from red, the colour of
    the blocked outline); fixed groups get greys, so what can grow stands out.

    Examples
    --------
    >>> group_colours({0: {"status": "growable"}, 1: {"status": "fixed"}, 2: {"status": "growable"}})
    {0: '#f0e4a8', 1: '#c7c7c7', 2: '#86eaaa'}
    """
    out: Dict[int, str] = {}
    k = 0
    lo, hi = HUES
    for gid, info in groups.items():
        if info["status"] == FIXED:
            light = (0.85, 0.78, 0.91)[gid % 3]
            r, g, b = light, light, light
        else:
            hue = (lo + (k * 0.381966) % 1.0 * (hi - lo)) / 360.0
            light = 0.80 if k % 2 == 0 else 0.72
            r, g, b = colorsys.hls_to_rgb(hue, light, 0.70)
            k += 1
        out[gid] = "#%02x%02x%02x" % tuple(int(round(c * 255)) for c in (r, g, b))
    return out
