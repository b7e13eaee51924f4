"""The analysis pass: infer which neurons of which tensors must grow together.

``analyze_graph`` walks a captured graph once, in topological order.  Every
node's rule (from :mod:`fxgrow.rules`) receives a :class:`RuleContext` and
returns the abstract value of the node's output, recording on the way which
parameter dimensions produce, consume or pass through which spaces, which
literal arguments depend on them, and what must stay fixed.  The pass never
touches weights; it writes its findings to ``node.meta["fxgrow.*"]`` and
returns an :class:`~fxgrow.groups.Analysis`.

Op knowledge lives only in the rules; this module only dispatches, checks
that each rule's result matches the shapes the example input produced, and
turns anything a rule cannot represent into a block with a reason naming the
node.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
from torch import fx, nn

from . import rules as _rules
from .contraction import Pairing, resolve as resolve_contractions
from .errors import AnalysisError, RuleError
from .roles import ATTR, CONSUMER, PASS, PRODUCER
from .groups import Analysis, build_analysis
from .layout import Axis, Layout
from .shapes import TensorSpec
from .spaces import BLOCKED, FIXED, Contraction, SpaceTable, Unalignable
from .values import TV, SizeOf, iter_sizes, iter_tensors

__all__ = ["RuleContext", "analyze_graph"]



def _get_tensor(root: nn.Module, qualname: str) -> torch.Tensor:
    obj: Any = root
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, torch.Tensor):
        raise RuleError(f"`{qualname}` is not a tensor")
    return obj


class _State:
    """Everything the walk accumulates; private to this module."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.table = SpaceTable()
        self.env: Dict[fx.Node, Any] = {}
        self.params: Dict[Tuple[str, int], Axis] = {}
        self.roles: Dict[Tuple[str, int], Set[str]] = {}
        self.param_order: List[Tuple[str, int]] = []
        self.claims: Set[Tuple[fx.Node, fx.Node]] = set()
        self.node_literals: List[Tuple[str, Callable[..., Any]]] = []
        self.module_literals: List[Tuple[str, str, Callable[..., Any]]] = []
        self.node_notes: Dict[fx.Node, List[str]] = {}
        self.consumer_uses: Dict[Tuple[str, int], List[fx.Node]] = {}
        self.pairings: List[Pairing] = []  # set once the walk is done
        self.halved: Dict[int, str] = {}  # spaces contracted with themselves -> node
        # one tensor reachable under several names (tied weights) is one tensor
        self.canonical: Dict[str, str] = {}
        first: Dict[int, str] = {}
        for name, t in list(gm.named_parameters(remove_duplicate=False)) + \
                list(gm.named_buffers(remove_duplicate=False)):
            self.canonical[name] = first.setdefault(id(t), name)

    def param(self, qualname: str, dim: int, role: Optional[str],
              node: Optional[fx.Node] = None) -> Axis:
        """The space of dim ``dim`` of tensor ``qualname``; record ``role`` if given."""
        qualname = self.canonical.get(qualname, qualname)
        key = (qualname, dim)
        if key not in self.params:
            t = _get_tensor(self.gm, qualname)
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

    def __init__(self, state: _State, node: fx.Node) -> None:
        self._s = state
        self.node = node
        self.table = state.table
        self.module: Optional[nn.Module] = (
            state.gm.get_submodule(node.target) if node.op == "call_module" else None)

    # -- reading arguments ---------------------------------------------------
    def arg(self, index: int, name: Optional[str] = None, default: Any = _rules.MISSING) -> Any:
        """Raw argument by position or keyword (a Node or a Python value)."""
        return _rules.node_arg(self.node, index, name, default)

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
        return a.meta.get("fxgrow.shape") if isinstance(a, fx.Node) else None

    @property
    def out_spec(self) -> Any:
        return self.node.meta.get("fxgrow.shape")

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
        self._s.node_notes.setdefault(self.node, []).append(why)

    def contract(self, a: Layout, b: Layout, why: str, *, operands: Sequence[Any] = (),
                 vouched: bool = False, sqrt_scale: bool = False) -> None:
        """This node sums over ``a`` (one operand's dim) paired with ``b`` (the other's).

        Copies would be counted twice, so the sides are recorded (two spaces
        kept apart, or one space contracted with itself); after the walk
        :mod:`fxgrow.contraction` proves how the counts can be divided out, or
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
        self.unify(a, b)
        self.block(a, why)

    def uniform(self, layout: Layout, why: str) -> None:
        """Every neuron of ``layout`` must be replicated the same number of times."""
        self.table.uniform.append((layout, f"{why} (node `{self.node.name}`)", self.node.name))

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
        use is claimed (it is not a plain gathered use).  Otherwise the
        weight is computed in the graph, fxgrow cannot rescale it, and None
        is returned.
        """
        if isinstance(a, fx.Node) and a.op == "get_attr":
            self._s.claims.add((self.node, a))
            return self._s.param(a.target, dim, role, self.node)
        return None

    def literal(self, fn: Callable[[Callable[[Layout], int]], Tuple[tuple, dict]]) -> None:
        """Register how this node's arguments are recomputed after growth.

        ``fn(size)`` gets a function giving the new size of a layout and
        returns the node's new ``(args, kwargs)``.
        """
        self._s.node_literals.append((self.node.name, fn))

    def literal_arg(self, index: int, name: str,
                    fn: Callable[[Callable[[Layout], int]], Any]) -> None:
        """Recompute one argument (by position ``index`` or keyword ``name``) after growth.

        ``fn(size)`` gives its new value, e.g. ``lambda size: size(heads)`` for a
        ``num_heads`` argument.
        """
        node = self.node

        def rewrite(size):
            args, kwargs = list(node.args), dict(node.kwargs)
            if len(args) > index:
                args[index] = fn(size)
            else:
                kwargs[name] = fn(size)
            return tuple(args), kwargs
        self.literal(rewrite)

    def module_attr(self, attr: str, fn: Callable[[Callable[[Layout], int]], Any]) -> None:
        """Register how attribute ``attr`` of this node's module is recomputed.

        ``attr`` may name a submodule's attribute: ``"out_proj.in_features"``.
        """
        self._s.module_literals.append((self.node.target, attr, fn))


def _blocked_like(ctx: RuleContext, spec: Any, why: str) -> Any:
    """A value shaped like ``spec`` whose tensor dims are new blocked spaces."""
    if isinstance(spec, TensorSpec):
        dims = tuple(ctx.table.fresh(s, free=True) for s in spec.shape)
        for d in dims:
            ctx.block(d, why)
        return TV(dims)
    if isinstance(spec, tuple):
        return tuple(_blocked_like(ctx, s, why) for s in spec)
    return None


def _block_node(ctx: RuleContext, why: str) -> Any:
    """Block every space the node reads and return a blocked output value."""
    for a in list(ctx.node.args) + list(ctx.node.kwargs.values()):
        v = ctx.value(a)
        for tv in iter_tensors(v):
            for d in tv.dims:
                ctx.block(d, why)
        for sz in iter_sizes(v):
            for lay in sz.layouts:
                ctx.block(lay, why)
    return _blocked_like(ctx, ctx.out_spec, why)


def _check(ctx: RuleContext, value: Any, spec: Any) -> None:
    """The rule's value must describe the recorded shapes exactly."""
    if isinstance(spec, TensorSpec):
        if not isinstance(value, TV) or len(value.dims) != len(spec.shape):
            raise RuleError(f"rule returned {value} for a tensor of shape {spec.shape}")
        for lay, n in zip(value.dims, spec.shape):
            if ctx.norm(lay).size != n:
                raise RuleError(f"rule returned {value} for a tensor of shape {spec.shape}")
    elif isinstance(spec, tuple) and isinstance(value, tuple):
        if len(spec) != len(value):
            raise RuleError("rule returned a tuple of the wrong length")
        for v, s in zip(value, spec):
            _check(ctx, v, s)


def _op_name(node: fx.Node, module: Optional[nn.Module]) -> str:
    if node.op == "call_module":
        return type(module).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    if isinstance(t, torch._ops.OpOverload):  # ATen, from torch.export
        return str(t)
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", str(t))
    if "_VariableFunctions" in name or "TensorBase" in name:  # torch builtins
        name = getattr(t, "__name__", name)
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{mod}.{name}" if mod else name


def _rule_key(node: fx.Node, module: Optional[nn.Module]) -> Any:
    if node.op == "call_module":
        return type(module)
    return node.target


def _walk_node(state: _State, node: fx.Node) -> Any:
    ctx = RuleContext(state, node)
    spec = node.meta.get("fxgrow.shape")
    if node.op == "placeholder":
        if isinstance(spec, TensorSpec):
            return TV(tuple(state.table.fresh(n, free=True, status=FIXED,
                                               reason=f"model input `{node.target}`")
                            for n in spec.shape))
        return spec
    if node.op == "get_attr":
        if isinstance(spec, TensorSpec):
            # roles come from the uses: a claimed weight use or a plain (gathered) one
            return TV(tuple(state.param(node.target, d, None) for d in range(len(spec.shape))))
        return spec
    if node.op == "output":
        for tv in iter_tensors(ctx.value(node.args[0])):
            for d in tv.dims:
                state.table.mark(d, FIXED, "reaches the model output")
        for sz in iter_sizes(ctx.value(node.args[0])):
            for lay in sz.layouts:
                state.table.mark(lay, FIXED, "its size reaches the model output")
        return None

    rule = _rules.lookup(_rule_key(node, ctx.module))
    op = _op_name(node, ctx.module)
    node.meta["fxgrow.op"] = op
    if rule is None:
        node.meta["fxgrow.rule"] = None
        return _block_node(ctx, f"no rule for {op}")
    node.meta["fxgrow.rule"] = rule.name
    if not rule.accepts_sizes:
        for a in list(node.args) + list(node.kwargs.values()):
            for sz in iter_sizes(ctx.value(a)):
                for lay in sz.layouts:
                    ctx.block(lay, f"a neuron count read by `size` is used by {op}, "
                                   "whose result would change with the width")
    try:
        value = rule.fn(ctx)
        _check(ctx, value, spec)
        return value
    except (Unalignable, RuleError) as e:
        return _block_node(ctx, f"{op}: {e}")


def _gains(state: _State, node: fx.Node) -> Optional[List[Tuple[str, int]]]:
    """Per-neuron gain tensors applied last by ``node`` (a norm's affine weight and
    bias, or a multiplication by a 1-D parameter), or None."""
    if node.op == "call_module":
        mod = state.gm.get_submodule(node.target)
        calls = sum(1 for n in node.graph.nodes if n.op == "call_module" and n.target == node.target)
        if calls == 1 and type(mod).__name__ in ("LayerNorm", "RMSNorm") \
                and getattr(mod, "weight", None) is not None and mod.weight.dim() == 1:
            names = ["weight"] + (["bias"] if getattr(mod, "bias", None) is not None else [])
            return [(state.canonical.get(f"{node.target}.{n}", f"{node.target}.{n}"), 0)
                    for n in names]
        return None
    if node.op == "call_function" and node.target in (operator.mul, torch.mul):
        attrs = [a for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"]
        if len(attrs) == 1 and isinstance(state.env.get(attrs[0]), TV) \
                and state.env[attrs[0]].ndim == 1 and len(attrs[0].users) == 1 \
                and sum(1 for n in node.graph.nodes
                        if n.op == "get_attr" and n.target == attrs[0].target) == 1:
            return [(state.canonical.get(attrs[0].target, attrs[0].target), 0)]
    return None


def _move_scaling(state: _State, key: Tuple[str, int]) -> bool:
    """Tied weights: move a consumer's 1/count scaling onto the gain before it.

    A tensor dim that produces a group (an embedding's columns) and also
    consumes it (the tied output layer's columns) cannot be both copied and
    divided.  If every consuming use reads the output of a per-neuron gain
    (the final norm's weight and bias, or ``x * weight``) that nothing else
    reads (the norm is called once, the weight read once), dividing that gain by the counts instead gives the consumer copies
    that are already divided: ``Σ_j W[g(j)] γ[g(j)]/c · n[g(j)] = Σ_i W[i] γ[i] n[i]``.
    """
    uses = state.consumer_uses.get(key, [])
    moves = []
    for use in uses:
        src = use.args[0] if use.args else None
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            return False
        gains = _gains(state, src)
        if not gains or any(g not in state.params for g in gains):
            return False
        lay = state.table.norm(state.params[key])
        if any(state.table.norm(state.params[g]) != lay for g in gains):
            return False
        moves += gains
    if not moves:
        return False
    state.roles[key].discard(CONSUMER)
    for g in moves:
        state.roles[g] = {CONSUMER}
    return True


def analyze_graph(gm: fx.GraphModule, args: tuple = (), kwargs: Optional[dict] = None) -> Analysis:
    """Analyse a captured graph (every node must carry ``fxgrow.shape``).

    Most users call :func:`fxgrow.analyze`, which captures the model first.
    """
    state = _State(gm)
    for node in gm.graph.nodes:
        try:
            state.env[node] = _walk_node(state, node)
        except Exception as e:
            raise AnalysisError(f"internal error while analysing {node.format_node()}: "
                                f"{type(e).__name__}: {e}") from e
    # A get_attr tensor used anywhere except as a claimed weight is gathered
    # along every dim like a pass-through; scaling it there would be wrong.
    for node in gm.graph.nodes:
        if node.op == "get_attr" and isinstance(state.env[node], TV):
            if any((user, node) not in state.claims for user in node.users):
                for d in range(state.env[node].ndim):
                    state.param(node.target, d, ATTR)
    # One tensor dimension has one index map: it cannot be both divided by the
    # replication counts (consumer) and copied unscaled (producer/pass-through).
    for key, roles in state.roles.items():
        if CONSUMER in roles and roles & {PRODUCER, PASS} and _move_scaling(state, key):
            continue
        if CONSUMER in roles and roles & {PRODUCER, PASS}:
            state.table.mark(state.params[key], BLOCKED,
                             f"`{key[0]}` dim {key[1]} is used both as a consumer "
                             f"(scaled) and unscaled (e.g. tied weights)")
    # Products between activations: prove one side can be divided by the counts.
    state.pairings, state.halved = resolve_contractions(state)
    state.table.finalize()
    return build_analysis(state, gm, args, kwargs or {})
