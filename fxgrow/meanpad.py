"""Mean-padding: grow a LayerNorm'd residual stream to any width, exactly.

Uniform replication keeps LayerNorm exact only for integer factors.  For
any other width (DESIGN.md §4), new neurons can instead take the **mean** of
the old ones: if every producer's new row is the mean of its old rows, every
value on an affine path (adds, scalar scales, dropout in eval, reshapes) has
new entries equal to the mean of its old entries.  At a LayerNorm over the
group the mean is then unchanged and the variance becomes ``var·n/n'``;
scaling ``γ`` by ``√(n/n')`` and ``ε`` by ``n/n'`` keeps the old outputs
exact, and ``β_new = 0`` makes the new outputs zero.  Consumers read the new
neurons through zero columns, so nothing they compute changes.

This holds only where it can be proved: every uniform-replication site of
the group must be a LayerNorm over exactly that group whose input is on an
affine path from the group's producers (true of pre-LN transformer residual
streams; false after a ReLU, or in a post-LN block whose normalised output
is added back into the stream).  :func:`mean_pad_problem` says why not, when
it cannot be proved, and the plan then insists on integer factors.
"""

from __future__ import annotations

from typing import Dict, Optional

from torch import fx, nn

from .groups import Analysis
from .layout import Axis, leaves
from .linearity import kind, node_inputs
from .values import TV

__all__ = ["mean_pad_problem"]

def _has(node: fx.Node, gid: int) -> bool:
    v = node.meta.get("fxgrow.value")
    return isinstance(v, TV) and any(leaf.space == gid for d in v.dims for leaf in leaves(d))


def _whole(node: fx.Node, gid: int) -> bool:
    """The group is a whole dim of the node's value (not inside a product or cut)."""
    v = node.meta.get("fxgrow.value")
    if not isinstance(v, TV):
        return False
    for d in v.dims:
        if any(leaf.space == gid for leaf in leaves(d)) and d != Axis(gid, d.size):
            return False
    return True


def _producing(analysis: Analysis, node: fx.Node, gid: int) -> bool:
    """``node`` is a layer whose output dim of the group is made by its own weight rows."""
    if node.op == "get_attr":
        return True
    if node.op == "call_module":
        owns = lambda t: t.startswith(f"{node.target}.")  # noqa: E731
    elif kind(analysis.graph_module, node) == "layer":
        attrs = {n.target for n in node_inputs(node) if n.op == "get_attr"}
        owns = attrs.__contains__
    else:
        return False
    return any(m.role == "producer" and owns(m.tensor) and m.layout == Axis(gid, m.layout.size)
               for m in analysis.members.values() if any(l.space == gid for l in leaves(m.layout)))


def _affine(analysis: Analysis, node: fx.Node, gid: int, seen: Dict[fx.Node, Optional[str]]) -> Optional[str]:
    """None if ``node``'s new entries along the group are the mean of its old ones."""
    if node in seen:
        return seen[node]
    seen[node] = "a cycle"  # graphs are acyclic; guards recursion
    result: Optional[str]
    if not _has(node, gid):
        result = None  # carries no neuron of the group: broadcast constants are fine
    elif not _whole(node, gid):
        result = f"node `{node.name}` holds the group inside a product or a slice"
    elif _producing(analysis, node, gid):
        result = None
    elif kind(analysis.graph_module, node) in ("move", "add"):
        result = next((r for r in (_affine(analysis, n, gid, seen) for n in node_inputs(node)) if r),
                      None)
    elif kind(analysis.graph_module, node) in ("scale", "divide"):
        flat = node_inputs(node)
        carrying = [n for n in flat if _has(n, gid)]
        if len(carrying) != 1 or (kind(analysis.graph_module, node) == "divide"
                                  and flat and flat[-1] is carrying[0] and len(flat) > 1):
            result = f"node `{node.name}` multiplies neurons of the group together"
        else:
            result = _affine(analysis, carrying[0], gid, seen)
    else:
        op = node.meta.get("fxgrow.op") or str(node.target)
        result = f"node `{node.name}` ({op}) is not affine"
    seen[node] = result
    return result


def mean_pad_problem(analysis: Analysis, gid: int) -> Optional[str]:
    """Why group ``gid`` cannot be mean-padded (None if it can).

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    >>> a = fxgrow.analyze(m, torch.randn(2, 3))
    >>> mean_pad_problem(a, a.group("0").id) is None
    True
    """
    group = analysis.group(gid)
    if not group.uniform:
        return "the group has no uniform-replication constraint"
    if len(analysis.family(gid)) > 1 or analysis.exponent(gid):
        return "it is one side of a product between activations, whose partner copies its map"
    for m in group.members:
        if m.layout != Axis(gid, group.size):
            return f"`{m.tensor}` dim {m.dim} holds the group inside a larger layout"
    nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    seen: Dict[fx.Node, Optional[str]] = {}
    for layout, name in analysis.uniform_sites:
        if not any(leaf.space == gid for leaf in leaves(layout)):
            continue
        node = nodes[name]
        ln = analysis.graph_module.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(ln, nn.LayerNorm) or len(ln.normalized_shape) != 1:
            return f"node `{name}` averages over the group and is not a 1-D nn.LayerNorm"
        if layout != Axis(gid, group.size):
            return f"LayerNorm `{name}` normalises more than this group"
        problem = _affine(analysis, node.args[0], gid, seen)
        if problem:
            return f"the input of LayerNorm `{name}` is not on an affine path from the " \
                   f"group's producers: {problem}"
    return None
