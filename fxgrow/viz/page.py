"""The graph page: a self-contained HTML picture of an analysis.

Inline SVG and a little JavaScript, no network: a layered top-down layout
computed with networkx (:mod:`fxgrow.viz.placement`), nodes coloured by
group, fixed and blocked nodes marked with the reason, a legend, zoom/pan,
search and module-collapse levels (:mod:`fxgrow.viz.html`).
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Union

import networkx as nx

from .. import checks
from .graph import Plan, collapse, group_colours, to_networkx
from .html import render

__all__ = ["draw"]


def _default_levels(G: nx.DiGraph, most: int = 3) -> List[int]:
    """Collapse depths worth offering: each one must merge many nodes.

    From the deepest module level up, a depth is kept when it has fewer than
    60% of the nodes of the last view kept; the shallowest level that merges
    anything is always offered.  At most ``most`` depths.
    """
    deepest = max((len(d["module"].split(".")) for _, d in G.nodes(data=True) if d["module"]),
                  default=0)
    counts = {d: collapse(G, d).number_of_nodes() for d in range(deepest - 1, 0, -1)}
    counts = {d: n for d, n in counts.items() if n < G.number_of_nodes()}
    kept: List[int] = []
    last = G.number_of_nodes()
    for depth, n in counts.items():
        if n < 0.6 * last:
            kept.append(depth)
            last = n
    if counts and min(counts) not in kept:
        kept = kept[: most - 1] + [min(counts)]
    return sorted(kept[:most])


def draw(analysis, path: Union[str, os.PathLike, None] = None, *,
         plan: Optional[Plan] = None, levels: Optional[Iterable[int]] = None,
         title: Optional[str] = None, embed: bool = False) -> str:
    """A self-contained HTML page showing the groups on the graph.

    The page needs no network and no Graphviz: the layout (layers by
    topological generation, order within a layer by barycenter sweeps) is
    computed here with networkx and written as one inline SVG; a small inline
    script adds zoom (wheel), pan (drag), search, hover/click details and
    switching between module-collapse levels.  The page explains its
    controls at the top.

    Parameters
    ----------
    analysis : fxgrow.Analysis
    path : str or PathLike, optional
        Where to write the page; a missing folder is an
        :class:`~fxgrow.errors.OutputPathError`, checked before any work.
    plan : mapping ``{group id: (old, new)}``, optional
        Show ``old → new`` sizes (e.g. ``grown.meta["fxgrow.plan"]``).
    levels : iterable of int, optional
        Module depths to offer as collapsed views, besides the full graph.
        Default: every depth that merges nodes.
    title : str, optional
    embed : bool
        Return an HTML fragment (for Jupyter's ``_repr_html_``) rather than a
        whole page.

    Returns
    -------
    str
        The HTML.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> page = draw(fxgrow.analyze(m, torch.randn(1, 4)))
    >>> page.startswith("<!DOCTYPE html>"), page.count("<svg"), "http://" in page.replace(
    ...     "http://www.w3.org", "")
    (True, 1, False)
    """
    if path is not None:
        checks.output_path(path)  # before the layout is computed
    plan = checks.plan_sizes(plan)
    G = to_networkx(analysis, plan=plan)
    depths = _default_levels(G) if levels is None else sorted(set(int(d) for d in levels))
    views = [("full graph", G)] + [(f"modules collapsed to depth {d}", collapse(G, d))
                                   for d in depths]
    html = render(views, G.graph["groups"], group_colours(G.graph["groups"]),
                  title=title or f"fxgrow: {G.graph['name']}", plan=plan, embed=embed)
    if path is not None:
        checks.write_text(path, html)
    return html
