"""What the analysis walk accumulates, in walk-time space ids.

The walk (:mod:`.walk`) visits every node once; the rules (through
:class:`~fxgrow.analysis.context.RuleContext`) write what they find here:
each node's abstract value, which tensor dimension is which space with which
roles, rewrites of literal arguments and module attributes, and notes on the
nodes that blocked something.  :mod:`.build` turns it into the result.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from torch import fx

from ..ir.groups import Pairing
from ..ir.layout import Axis, Layout
from ..ir.rewrites import AttrRewrite, Rewrite
from ..ir.roles import CONSUMER
from ..ir.spaces import SpaceTable
from ..errors import RuleError
from ..ops.access import tensor_by_name

__all__ = ["WalkState", "TensorDim"]

#: a tensor dimension: (qualified tensor name, dim)
TensorDim = Tuple[str, int]


class WalkState:
    """Everything the walk accumulates (the spaces live in :attr:`table`)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.table = SpaceTable()
        self.env: Dict[fx.Node, Any] = {}
        self.params: Dict[TensorDim, Axis] = {}
        self.roles: Dict[TensorDim, Set[str]] = {}
        self.param_order: List[TensorDim] = []
        #: (user, get_attr node) pairs where a rule read the tensor as its weight
        self.claims: Set[Tuple[fx.Node, fx.Node]] = set()
        self.rewrites: List[Rewrite] = []
        self.attr_rewrites: List[AttrRewrite] = []
        self.node_notes: Dict[fx.Node, List[str]] = {}
        #: the nodes that read each tensor dim as a consumer
        self.consumer_uses: Dict[TensorDim, List[fx.Node]] = {}
        #: (per-head feature dim, the product's batch dims) pairs (``ctx.head_dim``)
        self.head_dims: List[Tuple[Layout, Tuple[Layout, ...]]] = []
        self.pairings: List[Pairing] = []  # set once the walk is done
        self.halved: Dict[int, str] = {}  # spaces contracted with themselves -> node
        #: gains used as ``c + tensor``: ``{tensor: c}`` (dividing them keeps ``c``; ties)
        self.offsets: Dict[str, float] = {}
        # one tensor reachable under several names (tied weights) is one tensor
        self.canonical: Dict[str, str] = {}
        first: Dict[int, str] = {}
        for name, t in list(gm.named_parameters(remove_duplicate=False)) + \
                list(gm.named_buffers(remove_duplicate=False)):
            self.canonical[name] = first.setdefault(id(t), name)

    def name(self, qualname: str) -> str:
        """The first name of the tensor ``qualname`` (tied tensors are one)."""
        return self.canonical.get(qualname, qualname)

    def param(self, qualname: str, dim: int, role: Optional[str],
              node: Optional[fx.Node] = None) -> Axis:
        """The space of dim ``dim`` of tensor ``qualname``; record ``role`` if given."""
        qualname = self.name(qualname)
        key = (qualname, dim)
        if key not in self.params:
            t = tensor_by_name(self.gm, qualname)
            if not -t.dim() <= dim < t.dim():
                raise RuleError(f"`{qualname}` has no dim {dim}")
            dim = dim % t.dim()
            key = (qualname, dim)
            if key not in self.params:
                self.params[key] = self.table.fresh(t.shape[dim])
                self.roles[key] = set()
                self.param_order.append(key)
        if role is not None:
            self.roles[key].add(role)
            if role == CONSUMER and node is not None:
                self.consumer_uses.setdefault(key, []).append(node)
        return self.params[key]

    def note(self, node: fx.Node, why: str) -> None:
        """Remember that ``node`` blocked something, and why."""
        self.node_notes.setdefault(node, []).append(why)

    def node_named(self, name: str) -> fx.Node:
        return next(n for n in self.gm.graph.nodes if n.name == name)
