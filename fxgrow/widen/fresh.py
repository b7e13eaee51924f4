"""Where a fresh neuron is harmless: the proof behind ``init="zero_out"``.

``zero_out`` gives the new neurons of a group random incoming weights and
zero outgoing weights.  Unlike a Net2WiderNet copy, a fresh neuron computes
something no old neuron computes, so the grown model is exact only if nothing
the old neurons feed ever reads it except through a zero weight.  That holds
when every node reading a value that carries the group is

* a **consumer**: a layer reading the group through weight columns that
  ``zero_out`` sets to 0 (a member with the consumer role, owned by the node);
* a **contraction** between activations the analysis paired
  (:mod:`fxgrow.analysis.contraction`): the other side's new entries are
  divided by the shares, which are 0 for new neurons, so every product with
  a fresh entry is 0;
* **position-wise** along the group: an elementwise op, a move (views,
  transposes, cats, splits, slices), a per-channel op (BatchNorm, pooling
  over space), a size read -- each output position reads the same positions
  of its inputs, so new positions stay apart from old ones -- or a layer,
  attention or product that keeps the group in its output as a batch-like
  dim (``attn @ v`` over the head dim of ``v``).

Anything else that reads the group -- a norm or a mean over it (a uniform
site), a max or min over it, a product over both sides of one space
(``analysis.halved``), the model output, an op fxgrow has no proof for --
is a *problem*, and :func:`fresh_problem` names the node.  The proof reads
the analysis as data (node layouts from :func:`fxgrow.meta.value`, rule
names, members, pairings); it runs no rule.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from torch import fx

from .. import meta
from ..ir.layout import leaves
from ..ir.roles import CONSUMER
from ..ir.values import iter_tensors
from ..ops.access import tensor_by_name
from ..ops.kinds import node_inputs

__all__ = ["fresh_problem", "POSITIONWISE", "ALONG_OTHER_DIMS", "PRODUCTS"]

#: rules whose every output position reads only the same positions of its inputs
#: along every neuron dim (names as :func:`fxgrow.meta.rule` reports them)
POSITIONWISE = frozenset({
    "elementwise", "same_as_input", "arithmetic", "comparison", "dropout", "stochastic_depth",
    "constant_like", "prelu", "batch_norm", "batch_norm_functional", "instance_norm",
    "reshape", "reshape_as", "flatten", "flatten_module", "unflatten", "permute", "transpose",
    "t", "unsqueeze", "squeeze", "expand", "expand_as", "repeat", "repeat_interleave", "cat",
    "stack", "split", "unbind", "getitem", "spatial1d", "spatial2d", "spatial3d", "resize",
    # these read sizes, dtypes or nothing at all
    "size", "ndim", "numel", "getattr_rule", "no_tensor", "assert_tensor_metadata",
    "export_guards",
})

#: rules that reduce or normalise along some dims: position-wise along the group when
#: they keep it.  A mean, norm or variance over a growable group is a uniform site
#: (checked first); a softmax, sum or argmax over one blocks it; a max over it drops it
#: from the output, which the count of its leaves shows.
ALONG_OTHER_DIMS = frozenset({
    "reduce_mean", "reduce_var", "reduce_sum", "reduce_max", "argmax", "softmax",
    "layer_norm", "layer_norm_functional", "rms_norm", "rms_norm_functional", "group_norm",
    "group_norm_functional",
})

#: rules that may contract a dim: exact for a fresh group only through a consumer
#: member, a proved pairing, or by keeping the group in their output
PRODUCTS = frozenset({
    "linear", "linear_functional", "conv", "conv1d_functional", "conv2d_functional",
    "conv3d_functional", "convolution", "addmm", "embedding", "embedding_functional",
    "matmul", "outer", "sdpa", "einsum", "multihead_attention", "transformer_encoder_layer",
    "transformer_encoder",
})


def _count(value: Any, gid: int) -> int:
    """How many leaves of the group the (nested) value's dims hold."""
    return sum(1 for tv in iter_tensors(value) for d in tv.dims for leaf in leaves(d)
               if leaf.space == gid)


def _base_rule(node: fx.Node) -> Optional[str]:
    """The rule's name; an ATen node's is ``"<canonical rule> (aten...)"``."""
    name = meta.rule(node, None)
    return name.split(" (", 1)[0] if name else name


def _owned(gm: fx.GraphModule, node: fx.Node) -> Set[int]:
    """Identities of the tensors ``node`` reads as weights: its module's, or get_attr inputs."""
    out: Set[int] = set()
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        out |= {id(t) for t in mod.parameters()} | {id(t) for t in mod.buffers()}
    for n in node_inputs(node):
        if n.op == "get_attr":
            t = tensor_by_name(gm, n.target)
            if t is not None:
                out.add(id(t))
    return out


class _Proof:
    def __init__(self, analysis: Any) -> None:
        self.a = analysis
        self.gm = analysis.graph_module
        self.consumers: Dict[int, Set[int]] = {}  # group -> ids of tensors consuming it
        for m in analysis.members.values():
            if m.role == CONSUMER:
                t = tensor_by_name(self.gm, m.tensor)
                for leaf in leaves(m.layout):
                    self.consumers.setdefault(leaf.space, set()).add(id(t))
        self.paired: Dict[str, Set[int]] = {}
        for p in analysis.pairings:
            self.paired.setdefault(p.node, set()).update((p.primary, p.rescaled))
        self.uniform = {(s.node, leaf.space) for s in analysis.uniform
                        for leaf in leaves(s.layout)}

    def reader_problem(self, node: fx.Node, gid: int, carried: List[fx.Node]) -> Optional[str]:
        op = meta.op(node) or str(node.target)
        where = f"node `{node.name}` ({op})"
        if node.op == "output":
            return f"the group reaches the model output at `{node.name}`"
        if (node.name, gid) in self.uniform:
            return f"{where} averages over the group (a norm or a mean)"
        if gid in self.a.halved and self.a.halved[gid] == node.name:
            return f"{where} multiplies the group with itself"
        if gid in self.paired.get(node.name, ()):
            return None  # the paired side's new entries are 0: every product with them is 0
        rule = _base_rule(node)
        if rule is None:
            return f"{where} has no rule"
        if rule in POSITIONWISE:
            return None
        if rule in PRODUCTS and self.consumers.get(gid, set()) & _owned(self.gm, node):
            return None  # reads the group through weight columns, 0 for new neurons
        kept = all(_count(meta.value(n), gid) <= _count(meta.value(node), gid) for n in carried)
        if rule in PRODUCTS:
            return None if kept else f"{where} sums over the group with no weight to zero"
        if rule in ALONG_OTHER_DIMS:
            return None if kept else f"{where} takes a max or min over the group"
        return f"{where} reads the group and is not proved to keep new neurons apart"


def fresh_problem(analysis: Any, gid: int) -> Optional[str]:
    """Why group ``gid``'s new neurons may not be fresh (None: they may).

    Parameters
    ----------
    analysis : fxgrow.Analysis
    gid : int
        A group id.

    Returns
    -------
    str or None
        The first node that would let a fresh neuron reach what old neurons
        compute, described; None when every reader is a consumer, a paired
        contraction or position-wise (see the module documentation).

    Examples
    --------
    >>> import torch, fxgrow
    >>> from torch import nn
    >>> mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> fresh_problem(fxgrow.analyze(mlp, torch.randn(3, 4)), 1) is None
    True
    >>> class Top(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         h = self.fc(x)
    ...         return self.out(h - h.amax(-1, keepdim=True))
    >>> fresh_problem(fxgrow.analyze(Top(), torch.randn(3, 4)), 1)
    'node `amax` (Tensor.amax) takes a max or min over the group'
    """
    proof = _Proof(analysis)
    carrying = {n for n in proof.gm.graph.nodes if _count(meta.value(n), gid)}
    for node in proof.gm.graph.nodes:
        carried = [n for n in node_inputs(node) if n in carrying]
        if carried:
            problem = proof.reader_problem(node, gid, carried)
            if problem:
                return problem
    return None
