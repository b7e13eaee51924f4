"""What a rule sees of one node, and the verbs it may use.

A rule is a function of one :class:`RuleContext`.  It reads the node's
arguments (:meth:`~RuleContext.arg`), their abstract values and recorded
shapes, and describes what the op does to neurons with the verbs: build
layouts (``fresh``, ``free``, ``prod``, ``cat``, ``split_at``, ``factor``),
relate them (``unify``, ``contract``, ``head_dim``), constrain them (``fix``, ``block``,
``uniform``), name the tensors that produce, consume or pass them
(``param``, ``weight``), and say how literal arguments and module
attributes change with growth (``rewrite``, ``rewrite_arg``, ``module_attr``,
with ``size`` and ``if_grows`` placeholders).  Rules never see the walk's
state directly, and import nothing from :mod:`fxgrow.analysis`.
"""

from __future__ import annotations

import operator
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn

from .. import meta
from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.groups import UniformSite
from ..ir.layout import Axis, Layout, leaves
from ..ir.rewrites import AttrRewrite, IfGrows, Size, rewrite
from ..ir.roles import BLOCKED, FIXED
from ..ir.spaces import Contraction, Unalignable
from ..ir.values import TV, SizeOf
from ..ops.access import MISSING, node_arg, with_arg
from ..ops.kinds import is_op, reads_metadata, rearranges
from ..ops.aten import canonical_target
from .state import WalkState

__all__ = ["RuleContext"]

#: ops that cut a tensor into a tuple of pieces, and the op that picks one (or a part)
_SPLITS = {torch.split, "split", "split_with_sizes", torch.chunk, "chunk", torch.unbind,
           "unbind"}
_GETITEM = {operator.getitem}


def _holds_node(v: Any) -> bool:
    found: List[fx.Node] = []
    fx.node.map_arg(v, found.append)
    return bool(found)


def _position(node: fx.Node, a: fx.Node) -> Optional[Tuple[Any, ...]]:
    """Where ``node`` takes ``a``: ``("arg", i)`` or ``("kwarg", name)`` (None: nowhere
    directly, or in several places)."""
    where = [("arg", i) for i, v in enumerate(node.args) if v is a] + \
        [("kwarg", k) for k, v in node.kwargs.items() if v is a]
    return where[0] if len(where) == 1 else None


#: ops that only transpose a tensor's dims (so a transposed parameter is the parameter)
_TRANSPOSES = {"transpose", "permute", "t", torch.transpose, torch.permute, torch.t}


def _input_dim(node: fx.Node, d: int, ndim: int) -> Optional[int]:
    """The dim of ``node``'s input that its output dim ``d`` is, if ``node`` only
    transposes (positional arguments only), else None."""
    if node.op == "call_function" and node.target is getattr:
        if len(node.args) == 2 and node.args[1] == "T":
            return ndim - 1 - d
        if len(node.args) == 2 and node.args[1] == "mT" and ndim >= 2:
            return {ndim - 2: ndim - 1, ndim - 1: ndim - 2}.get(d, d)
        return None
    if node.kwargs:
        return None
    try:
        target = canonical_target(node)
    except TypeError:  # an unhashable target
        return None
    if target not in _TRANSPOSES:
        return None
    rest = node.args[1:]
    if target in ("t", torch.t) and not rest:
        return 1 - d if ndim == 2 else d
    if target in ("transpose", torch.transpose) and len(rest) == 2 \
            and all(isinstance(r, int) for r in rest):
        d0, d1 = (r % ndim for r in rest)
        return {d0: d1, d1: d0}.get(d, d)
    if target in ("permute", torch.permute):
        perm = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        if len(perm) == ndim and all(isinstance(r, int) for r in perm):
            return perm[d] % ndim
    return None


class RuleContext:
    """What a rule sees of one node, and the verbs it may use.

    Attributes
    ----------
    node : fx.Node
        The node being analysed.
    module : nn.Module or None
        The submodule a ``call_module`` node calls.
    table : SpaceTable
        The space table (for rules that need more than the verbs below).
    """

    def __init__(self, state: WalkState, node: fx.Node) -> None:
        self._s = state
        self.node = node
        self.table = state.table
        self.module: Optional[nn.Module] = (
            state.gm.get_submodule(node.target) if node.op == "call_module" else None)

    # -- reading arguments ---------------------------------------------------
    def arg(self, index: int, name: Optional[str] = None, default: Any = MISSING) -> Any:
        """Raw argument by position or keyword (a Node or a Python value)."""
        return node_arg(self.node, index, name, default)

    def value(self, a: Any) -> Any:
        """Abstract value of a raw argument."""
        if isinstance(a, fx.Node):
            return self._s.env[a]
        if isinstance(a, (tuple, list)):
            return tuple(self.value(x) for x in a)
        if isinstance(a, dict):
            return {k: self.value(v) for k, v in a.items()}
        return a

    def tensor(self, a: Any) -> TV:
        """The tensor value of argument ``a`` (a RuleError if it is not one)."""
        v = self.value(a)
        if not isinstance(v, TV):
            raise RuleError(f"expected a tensor argument, got {type(v).__name__}")
        return v

    def spec(self, a: Any) -> Any:
        """Recorded shape metadata of a Node argument."""
        return meta.shape(a) if isinstance(a, fx.Node) else None

    @property
    def out_spec(self) -> Any:
        return meta.shape(self.node)

    @property
    def out_shape(self) -> Tuple[int, ...]:
        spec = self.out_spec
        if not isinstance(spec, TensorSpec):
            raise RuleError("the node does not return a single tensor")
        return spec.shape

    def int_value(self, a: Any) -> int:
        """A concrete int argument, whether literal or read from a size."""
        v = self.value(a)
        if isinstance(v, SizeOf):
            return v.value
        if isinstance(v, int):
            return v
        raise RuleError(f"expected an int, got {v!r}")

    # -- building layouts ----------------------------------------------------
    def fresh(self, size: int) -> Axis:
        """A new growable space (what a producer creates)."""
        return self.table.fresh(size)

    def free(self, size: int) -> Axis:
        """A new free space: a batch, time or spatial extent."""
        return self.table.fresh(size, free=True, status=FIXED,
                                reason=f"free dimension made by {self.node.name}")

    def unify(self, a: Layout, b: Layout) -> None:
        self.table.unify(a, b)

    def prod(self, layouts: Sequence[Layout]) -> Layout:
        return self.table.make_prod(layouts)

    def cat(self, layouts: Sequence[Layout]) -> Layout:
        return self.table.make_cat(layouts)

    def split_at(self, layout: Layout, bounds: Sequence[int]) -> List[Layout]:
        return self.table.split_at(layout, bounds)

    def factor(self, layout: Layout, sizes: Sequence[int]) -> List[Layout]:
        return self.table.factor(layout, sizes)

    def norm(self, layout: Layout) -> Layout:
        return self.table.norm(layout)

    # -- constraints ---------------------------------------------------------
    def fix(self, layout: Layout, why: str) -> None:
        """Spaces of ``layout`` must keep their size."""
        self.table.mark(layout, FIXED, f"{why} (node `{self.node.name}`)")

    def block(self, layout: Layout, why: str) -> None:
        """Spaces of ``layout`` cannot grow exactly through this node."""
        self.table.mark(layout, BLOCKED, f"{why} (node `{self.node.name}`)")
        self._s.note(self.node, why)

    def contract(self, a: Layout, b: Layout, why: str, *, operands: Sequence[Any] = (),
                 vouched: bool = False, sqrt_scale: bool = False) -> None:
        """This node sums over ``a`` (one operand's dim) paired with ``b`` (the other's).

        Copies would be counted twice, so the sides are recorded (two spaces
        kept apart, or one space contracted with itself); after the walk
        :mod:`fxgrow.analysis.contraction` proves how the counts can be divided out, or
        blocks them saying ``why``.  Free dims (the keys' positions in
        ``attn @ v``) are unified and blocked.  ``operands``: the argument
        nodes holding ``a`` and ``b`` (other tensor arguments pass through,
        linearly, like the values of attention).
        """
        na, nb = self.norm(a), self.norm(b)
        if na.size != nb.size:
            raise Unalignable(f"contracted dims of size {na.size} and {nb.size}")
        table = self.table
        try:
            pairs = table.pair(na, nb)
        except Unalignable:
            pairs = []
        if pairs and not any(table.is_free(x.space) or table.is_free(y.space) for x, y in pairs):
            for x, y in pairs:
                table.contractions.append(Contraction(
                    x, y, why, self.node.name, vouched, sqrt_scale,
                    tuple(n.name for n in operands if isinstance(n, fx.Node))))
            return
        # say why no division of the counts can be proven here
        why += (": the two sides' neurons are laid out differently, so they cannot be paired "
                "one to one" if not pairs else
                ": it is tied to a dim that holds no neurons (a size set by the input, or a "
                "table such as rotary frequencies), so neither side can be divided by the counts")
        self.unify(a, b)
        self.block(a, why)

    def head_dim(self, layout: Layout, heads: Sequence[Layout]) -> None:
        """``layout`` holds per-head features (attention's value head dim) when
        ``heads`` (the product's batch dims) hold neurons.  Nothing is constrained:
        a plain widening factor leaves such dims as they are and grows the heads
        (as HyperCloning and LEMON do); a spec that names them grows them."""
        self._s.head_dims.append((layout, tuple(heads)))

    def mixes(self, layout: Layout, why: str) -> None:
        """This node mixes or moves positions along a dim (pooling, a conv kernel,
        interpolation): whatever neurons the dim holds cannot grow.  Free extents
        (batch, time, space) are what such ops are for, and stay as they are."""
        neurons = [leaf for leaf in leaves(self.norm(layout))
                   if not self.table.is_free(leaf.space)]
        for leaf in neurons:
            self.table.mark(leaf, BLOCKED, f"{why} (node `{self.node.name}`)")
        if neurons:
            self._s.note(self.node, why)

    def averages(self, layout: Layout, why: str) -> None:
        """This node takes a mean or a population variance along a dim: the neurons it
        holds, if any, must be replicated uniformly (see :meth:`uniform`)."""
        if any(not self.table.is_free(leaf.space) for leaf in leaves(self.norm(layout))):
            self.uniform(layout, why)

    def uniform(self, layout: Layout, why: str) -> None:
        """Every neuron of ``layout`` must be replicated the same number of times."""
        self.table.uniform.append(UniformSite(layout, f"{why} (node `{self.node.name}`)",
                                              self.node.name))

    # -- parameters and literals ---------------------------------------------
    def param(self, name: str, dim: int, role: str) -> Axis:
        """Layout of dimension ``dim`` of this module's tensor ``name``."""
        prefix = f"{self.node.target}." if self.node.op == "call_module" else ""
        return self._s.param(prefix + name, dim, role, self.node)

    def has_tensor(self, name: str) -> bool:
        return self.module is not None and isinstance(getattr(self.module, name, None), torch.Tensor)

    def weight(self, a: Any, dim: int, role: str) -> Optional[Layout]:
        """Layout of dim ``dim`` of a weight passed as an argument.

        If ``a`` is a ``get_attr`` node the parameter gets ``role`` and this
        use is claimed (it is not a plain gathered use).  So it does if ``a``
        is a parameter *moved* by ops that only rearrange or cast its values
        one to one (``W.view(C, 1, k)``, ``W.t()``, ``W.float()``,
        ``W.contiguous()``; each used once): the moved dim's layout is made of
        the parameter's spaces, and the parameter dims inside it take the
        role.  Otherwise the weight is computed in the graph, fxgrow cannot
        rescale it, and None is returned. A parameter only transposed
        (``transpose``/``permute``/``t``/``.T``: MoE expert weights ``W.transpose(-2, -1)``)
        is followed dim by dim, so square weights whose dims share a space still land on
        the right dim.
        """
        if isinstance(a, fx.Node) and a.op == "get_attr":
            self._claim(self.node, a)
            return self._s.param(a.target, dim, role, self.node)
        moved = self._transposed_parameter(a, dim)
        if moved is not None:  # followed dim by dim: exact even where dims share a space
            src, first, d = moved
            self._claim(first, src)
            return self._s.param(src.target, d, role, self.node)
        moved, piece = self._moved_parameter(a), False
        if moved is None:
            moved = self._parameter_piece(a)
            piece = moved is not None
        if moved is None:
            return None
        src, first = moved
        value = self.tensor(a)
        if not -value.ndim <= dim < value.ndim:
            raise RuleError(f"`{a.name}` has no dim {dim}")
        dim %= value.ndim
        roots = lambda lay: {self.table.find(l.space) for l in leaves(self.norm(lay))}  # noqa: E731
        here = roots(value.dims[dim])
        elsewhere = set().union(*(roots(d) for i, d in enumerate(value.dims) if i != dim))
        taken = []
        for d in range(len(self.spec(src).shape)):
            mine = roots(self._s.param(src.target, d, None))
            if mine & here:
                # a piece (split, select) holds part of a parameter dim: every piece is
                # read the same way (_parameter_piece), so the role is the whole dim's
                if not (mine <= here or (piece and here <= mine)) or mine & elsewhere:
                    # the role would reach neurons of the parameter dim that this one
                    # does not hold (a view that cuts the dim in pieces)
                    raise RuleError(f"`{a.name}` spreads dim {d} of `{src.target}` over "
                                    "several dims of the weight")
                taken.append(d)
        if piece and not here <= set().union(
                *(roots(self._s.param(src.target, d, None)) for d in taken)):
            return None  # the piece holds values that are no part of the parameter's dims
        self._claim(first, src)
        for d in taken:
            self._s.param(src.target, d, role, self.node)
        return value.dims[dim]

    def _claim(self, user: fx.Node, src: fx.Node) -> None:
        """``user`` reads the tensor of ``src`` as its weight; so do the uses of ``src``
        that read only its metadata (``W.shape``): none of them reads it as a plain tensor."""
        self._s.claims.add((user, src))
        for u in src.users:
            if reads_metadata(u):
                self._s.claims.add((u, src))

    def _moved_parameter(self, a: Any) -> Optional[Tuple[fx.Node, fx.Node]]:
        """``(get_attr node, its user)`` if ``a`` is a parameter moved by
        :func:`~fxgrow.ops.kinds.rearranges` ops only, each used by the next
        alone (so no other node reads the moved values), else None."""
        node, user = a, self.node
        while isinstance(node, fx.Node) and node.op != "get_attr":
            if len(node.users) != 1 or user not in node.users or node in self._s.node_notes \
                    or not rearranges(self._s.gm, node):
                return None
            node, user = (node.args[0] if node.args else None), node
        if not isinstance(node, fx.Node) or node is a or not isinstance(self.value(node), TV):
            return None
        return node, user

    def _parameter_piece(self, a: Any) -> Optional[Tuple[fx.Node, fx.Node]]:
        """``(get_attr node, its user)`` if ``a`` is one piece of a parameter cut by
        ``split``/``chunk``/``unbind`` (and ``getitem``) or ``select``/slicing (the q, k, v
        weights of ``nn.MultiheadAttention`` under export, ``self.weight[i]`` per expert),
        and *every* piece of it is read by an op like this node, at the same argument, as
        this node reads ``a`` (so each piece takes the same role, and the role can be the
        whole parameter dim's); else None."""
        if not isinstance(a, fx.Node) or len(a.users) != 1 or self.node not in a.users:
            return None
        cut = a.args[0] if a.args and isinstance(a.args[0], fx.Node) else None
        if cut is None or _holds_node(a.args[1:]) or _holds_node(a.kwargs):
            return None  # indexed by a tensor: positions by value, no piece
        src = cut.args[0] if is_op(a, _GETITEM) and is_op(cut, _SPLITS) and cut.args \
            else cut
        if not isinstance(src, fx.Node) or src.op != "get_attr" \
                or not isinstance(self.value(src), TV):
            return None
        where = _position(self.node, a)
        pieces = []
        for u in src.users:
            if reads_metadata(u):
                continue
            if u is cut and cut is not src and is_op(cut, _SPLITS):
                pieces += list(cut.users)
            elif is_op(u, _GETITEM) and u.args[0] is src:
                pieces.append(u)
            else:
                return None
        for p in pieces:
            if not is_op(p, _GETITEM) or len(p.users) != 1:
                return None
            (reader,) = p.users
            if reader.op != self.node.op or reader.target != self.node.target \
                    or _position(reader, p) != where:
                return None
        return src, (cut if cut is not src else a)

    def _transposed_parameter(self, a: Any, dim: int
                              ) -> Optional[Tuple[fx.Node, fx.Node, int]]:
        """``(get_attr node, its user, its dim)`` if ``a`` is a parameter only transposed,
        by nodes each used by the next alone, and dim ``dim`` of ``a`` is that dim of the
        parameter (followed through each transpose), else None."""
        node, user = a, self.node
        while isinstance(node, fx.Node) and node.op != "get_attr":
            if len(node.users) != 1 or user not in node.users or not node.args:
                return None
            src = node.args[0]
            spec = self.spec(src) if isinstance(src, fx.Node) else None
            if not isinstance(spec, TensorSpec) or not spec.shape:
                return None  # not a tensor, or a 0-d one (a scale): nothing is transposed
            dim = _input_dim(node, dim % len(spec.shape), len(spec.shape))
            if dim is None:
                return None
            node, user = src, node
        if not isinstance(node, fx.Node) or node is a or not isinstance(self.value(node), TV):
            return None
        return node, user, dim

    def size(self, layout: Layout) -> Size:
        """The new size of ``layout``, as a placeholder in a rewrite template."""
        return Size(layout)

    def if_grows(self, layouts: Sequence[Layout], then: Any, otherwise: Any) -> IfGrows:
        """``then`` in a rewrite if any of ``layouts`` grows, else ``otherwise``."""
        return IfGrows(tuple(layouts), then, otherwise)

    def rewrite(self, args: tuple, kwargs: dict, *, target: Any = None,
                when: Optional[Sequence[Layout]] = None) -> None:
        """Record this node's call after growth: new ``args`` and ``kwargs`` (templates
        holding :meth:`size` placeholders), and ``target`` if the op changes.

        The rewrite is applied only if one of ``when`` grows (default: every
        layout the templates mention).
        """
        self._s.rewrites.append(rewrite(self.node.name, tuple(args), dict(kwargs), target,
                                        None if when is None else tuple(when)))

    def rewrite_arg(self, index: int, name: str, value: Any) -> None:
        """Recompute one argument (by position ``index`` or keyword ``name``) after growth.

        ``value`` is a template, e.g. ``ctx.size(heads)`` for a ``num_heads`` argument.
        """
        self.rewrite(*with_arg(self.node.args, self.node.kwargs, index, name, value))

    def module_attr(self, attr: str, value: Any) -> None:
        """Record attribute ``attr`` of this node's module after growth (a template).

        ``attr`` may name a submodule's attribute: ``"out_proj.in_features"``.
        """
        owner, _, name = f"{self.node.target}.{attr}".rpartition(".")
        self._s.attr_rewrites.append(AttrRewrite(owner, name, value))
