"""A layered top-down layout of a DAG, computed with networkx.

Sugiyama-style, kept small: layers are the topological generations (longest
path from an input), constants are pulled down next to their first use, the
order within each layer is improved by barycenter sweeps (crossing
reduction) and x positions are relaxed towards the mean of each node's
neighbours while keeping the order and a minimum gap.  Good enough for the
~1,600 nodes of torchvision's maxvit_t in well under a second.

Examples
--------
>>> import networkx as nx
>>> G = nx.DiGraph([("x", "a"), ("x", "b"), ("a", "y"), ("b", "y")])
>>> pos = layered_layout(G)
>>> [pos[n][1] for n in ("x", "a", "b", "y")]
[0, 1, 1, 2]
>>> pos["a"][0] < pos["b"][0]
True
"""

from __future__ import annotations

from typing import Callable, Dict, Hashable, List, Mapping, Optional, Tuple

import networkx as nx

__all__ = ["layered_layout", "layout_with_routes"]


def _layers(G: nx.DiGraph, keep_top: Callable[[Hashable], bool]) -> Dict[Hashable, int]:
    """Layer of each node; edges against the graph's node order are ignored.

    Nodes that depend on a kept source (a model input) get their topological
    generation.  The others (constants, parameters and what is computed from
    them alone) are placed as late as possible: just above their first use.
    """
    index = {n: i for i, n in enumerate(G)}
    dag = nx.DiGraph()
    dag.add_nodes_from(G)
    dag.add_edges_from((u, v) for u, v in G.edges if index[u] < index[v])
    layer = {n: i for i, gen in enumerate(nx.topological_generations(dag)) for n in gen}
    tops = [n for n in G if dag.in_degree(n) == 0 and keep_top(n)]
    fed = set(tops).union(*(nx.descendants(dag, n) for n in tops)) if tops else set(G)
    for n in reversed(list(G)):
        if n not in fed and dag.out_degree(n) > 0:
            layer[n] = min(layer[s] for s in dag.successors(n)) - 1
    low = min(layer.values(), default=0)
    return {n: v - low for n, v in layer.items()}


def _centred(order: List[Hashable]) -> Dict[Hashable, float]:
    half = (len(order) - 1) / 2
    return {n: i - half for i, n in enumerate(order)}


def _sweep(rows: List[List[Hashable]], neighbours: Callable[[Hashable], List[Hashable]],
           reverse: bool) -> None:
    pos: Dict[Hashable, float] = {}
    for row in rows:
        pos.update(_centred(row))
    seq = range(len(rows) - 1, -1, -1) if reverse else range(len(rows))
    for i in seq:
        row = rows[i]
        keys = {}
        for n in row:
            ps = [pos[m] for m in neighbours(n) if m in pos]
            keys[n] = sum(ps) / len(ps) if ps else pos[n]
        row.sort(key=keys.__getitem__)  # stable: ties keep their order
        pos.update(_centred(row))


def _place(row: List[Hashable], desired: Mapping[Hashable, float],
           width: Mapping[Hashable, float], gap: float) -> Dict[Hashable, float]:
    """x for each node of ``row`` (in order) closest to ``desired`` with no overlap.

    The average of the leftmost-pushed and rightmost-pushed placements: both
    respect the order and the gaps, so their average does too.
    """
    n = len(row)
    sep = [0.0] + [(width[row[i - 1]] + width[row[i]]) / 2 + gap for i in range(1, n)]
    left = [0.0] * n
    for i, v in enumerate(row):
        left[i] = desired[v] if i == 0 else max(desired[v], left[i - 1] + sep[i])
    right = [0.0] * n
    for i in range(n - 1, -1, -1):
        v = row[i]
        right[i] = desired[v] if i == n - 1 else min(desired[v], right[i + 1] - sep[i + 1])
    return {v: (left[i] + right[i]) / 2 for i, v in enumerate(row)}


def layered_layout(
    G: nx.DiGraph,
    width: Optional[Mapping[Hashable, float]] = None,
    *,
    gap: float = 1.0,
    sweeps: int = 4,
    keep_top: Optional[Callable[[Hashable], bool]] = None,
) -> Dict[Hashable, Tuple[float, int]]:
    """``{node: (x, layer)}`` for a top-down drawing of ``G``.

    The positions of :func:`layout_with_routes`, without the edge routes.
    """
    return layout_with_routes(G, width, gap=gap, sweeps=sweeps, keep_top=keep_top)[0]


class _Dummy(tuple):
    """A bend point of a long edge (one per layer it crosses)."""


def layout_with_routes(
    G: nx.DiGraph,
    width: Optional[Mapping[Hashable, float]] = None,
    *,
    gap: float = 1.0,
    sweeps: int = 4,
    keep_top: Optional[Callable[[Hashable], bool]] = None,
) -> Tuple[Dict[Hashable, Tuple[float, int]], Dict[Tuple[Hashable, Hashable], List[Tuple[float, int]]]]:
    """Node positions and the bend points of edges that span several layers.

    Parameters
    ----------
    G : networkx.DiGraph
        Its node order must be topological (fx graphs are); an edge going
        against that order (possible after collapsing modules) is drawn but
        ignored by the layout.
    width : mapping node -> float, optional
        Width of each node in x units (default 1).
    gap : float
        Minimum space between neighbouring nodes of a layer; a long edge's
        bend point takes ``gap`` too, so edges do not run through nodes.
    sweeps : int
        Rounds of barycenter ordering and of x relaxation.
    keep_top : callable, optional
        Sources for which it returns True stay in layer 0; other sources are
        moved next to their first use.  Default: every source stays on top.

    Returns
    -------
    pos : dict
        ``{node: (x, layer)}``: x of the centre (width units), layer index.
    routes : dict
        ``{(u, v): [(x, layer), ...]}`` for every edge spanning more than one
        layer: where it crosses each layer in between.

    Examples
    --------
    >>> G = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c")])
    >>> pos, routes = layout_with_routes(G)
    >>> [layer for _, layer in routes[("a", "c")]]
    [1]
    >>> routes[("a", "c")][0][0] != pos["b"][0]
    True
    """
    if keep_top is None:
        keep_top = lambda n: True  # noqa: E731
    width = dict(width) if width is not None else {n: 1.0 for n in G}
    layer = _layers(G, keep_top)
    index = {n: i for i, n in enumerate(G)}
    # the proper graph: every long edge becomes a chain through dummy nodes
    H = nx.DiGraph()
    H.add_nodes_from(G)
    chains: Dict[Tuple[Hashable, Hashable], List[_Dummy]] = {}
    for u, v in G.edges:
        if index[u] >= index[v] or layer[v] - layer[u] <= 1:
            if index[u] < index[v]:
                H.add_edge(u, v)
            continue
        chain = [_Dummy((u, v, k)) for k in range(layer[u] + 1, layer[v])]
        for k, d in zip(range(layer[u] + 1, layer[v]), chain):
            layer[d] = k
            width[d] = 0.0
        nx.add_path(H, [u, *chain, v])
        chains[(u, v)] = chain
    rows: List[List[Hashable]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in H:
        rows[layer[n]].append(n)
    preds = lambda n: list(H.predecessors(n))  # noqa: E731
    succs = lambda n: list(H.successors(n))  # noqa: E731
    for _ in range(sweeps):
        _sweep(rows, preds, reverse=False)
        _sweep(rows, succs, reverse=True)
    _sweep(rows, preds, reverse=False)

    x: Dict[Hashable, float] = {}
    for row in rows:  # initial: packed and centred
        x.update(_place(row, {n: 0.0 for n in row}, width, gap))
    for i in range(2 * sweeps + 1):
        down = i % 2 == 0
        for row in (rows if down else rows[::-1]):
            desired = {}
            for n in row:
                nbrs = preds(n) if down else succs(n)
                desired[n] = sum(x[m] for m in nbrs) / len(nbrs) if nbrs else x[n]
            x.update(_place(row, desired, width, gap))
    pos = {n: (x[n], layer[n]) for n in G}
    routes = {e: [(x[d], layer[d]) for d in chain] for e, chain in chains.items()}
    return pos, routes
