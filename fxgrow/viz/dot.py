"""The analysed graph as Graphviz DOT text (no Graphviz needed to write it).

>>> import torch, fxgrow
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> "digraph" in fxgrow.analyze(m, torch.randn(1, 4)).to_dot()
True
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ..ir.roles import BLOCKED, FIXED
from .format import fmt_shape
from .. import checks
from .graph import Plan, group_colours, to_networkx

__all__ = ["to_dot"]


def _dot_str(s: Any) -> str:
    text = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def to_dot(analysis, path: Union[str, os.PathLike, None] = None, *,
           plan: Optional[Plan] = None) -> str:
    """Graphviz DOT text of the analysed graph (written to ``path`` if given).

    Nodes are filled with their first group's colour (see
    :func:`group_colours`); fixed nodes have a dashed outline, blocked ones a
    thick red one.  Every attribute of :func:`to_networkx` is also written as
    a DOT attribute (as text), so ``networkx.nx_pydot.read_dot`` gets them
    back.  No Graphviz binary is needed to write it; ``dot -Tsvg`` renders it.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    >>> text = to_dot(fxgrow.analyze(m, torch.randn(1, 4)))
    >>> print(text.splitlines()[0])
    digraph "Sequential" {
    >>> '"_0" -> "_1"' in text
    True
    """
    if path is not None:
        checks.output_path(path)
    G = to_networkx(analysis, plan=plan)
    colours = group_colours(G.graph["groups"])
    lines = [f"digraph {_dot_str(G.graph['name'])} {{",
             "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, '
             'fillcolor="#ffffff"];',
             '  edge [color="#888888", arrowsize=0.6];']
    for n, d in G.nodes(data=True):
        groups = d["groups"]
        label = f"{d['op']}\n{n}"
        if d["shape"] is not None:
            label += f"\n{fmt_shape(d['shape'])}"
        if groups:
            label += "\ngroups " + ",".join(map(str, groups))
        attrs = {
            "fillcolor": colours.get(groups[0], "#ffffff") if groups else "#ffffff",
            "tooltip": d["reason"] or d["target"],
        }
        style = ["rounded", "filled"]
        if d["status"] == FIXED:
            style.append("dashed")
        if d["status"] == BLOCKED:
            attrs["color"] = "#d00000"
            attrs["penwidth"] = "3" if d["cause"] else "2"
        attrs["style"] = ",".join(style)
        for k in ("opcode", "op", "target", "module", "dtype", "status", "reason", "layout"):
            attrs[f"fx_{k}"] = d[k]
        attrs["fx_shape"] = fmt_shape(d["shape"])
        attrs["fx_groups"] = ",".join(map(str, groups))
        attrs["fx_params"] = "; ".join(f"{t}[{dim}] {role}" for t, dim, role, _ in d["params"])
        body = ", ".join(f"{k}={_dot_str(v)}" for k, v in attrs.items())
        lines.append(f"  {_dot_str(n)} [label={_dot_str(label)}, {body}];")
    for u, v in G.edges:
        lines.append(f"  {_dot_str(u)} -> {_dot_str(v)};")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if path is not None:
        checks.write_text(path, text)
    return text
