"""The analysis pass: infer which neurons of which tensors must grow together.

``analyze_graph`` walks a captured graph once, in topological order.  Every
node's rule (from :mod:`fxgrow.rules`) receives a
:class:`~fxgrow.analysis.context.RuleContext` and returns the abstract value
of the node's output, recording on the way which parameter dimensions
produce, consume or pass through which spaces, which literal arguments
depend on them, and what must stay fixed.  The pass never touches weights;
it writes its findings to ``node.meta["fxgrow.*"]`` (:mod:`fxgrow.meta`) and
returns an :class:`~fxgrow.analysis.result.Analysis`.

What an op does to neurons is the rules' knowledge; this module dispatches,
checks that each rule's result matches the shapes the example input
produced, and turns anything a rule cannot represent into a block with a
reason naming the node.  After the walk, two whole-graph steps settle what no
single rule can: tensors with conflicting roles (:mod:`.ties`) and products
between activations (:mod:`.contraction`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx, nn

from .. import meta
from ..capture.modules import hidden_computation
from ..capture.shapes import TensorSpec
from ..errors import AnalysisError, RuleError
from ..ir.roles import ATTR, FIXED
from ..ir.spaces import Unalignable
from ..ir.values import TV, iter_sizes, iter_tensors
from ..rules import lookup
from .build import build_analysis
from .context import RuleContext
from .contraction import resolve as resolve_contractions
from .result import Analysis
from .state import WalkState
from .ties import resolve_ties

__all__ = ["analyze_graph"]


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
    elif isinstance(spec, dict) and isinstance(value, dict):
        if spec.keys() != value.keys():
            raise RuleError("rule returned a dict with other keys")
        for k, s in spec.items():
            _check(ctx, value[k], s)


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


def _walk_node(state: WalkState, node: fx.Node) -> Any:
    ctx = RuleContext(state, node)
    spec = meta.shape(node)
    if node.op == "placeholder":
        def model_input(s: Any) -> Any:  # tensors anywhere in the input: fixed extents
            if isinstance(s, TensorSpec):
                return TV(tuple(state.table.fresh(n, free=True, status=FIXED,
                                                   reason=f"model input `{node.target}`")
                                for n in s.shape))
            if isinstance(s, tuple):
                return tuple(model_input(v) for v in s)
            if isinstance(s, dict):
                return {k: model_input(v) for k, v in s.items()}
            return s
        return model_input(spec)
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

    rule = lookup(_rule_key(node, ctx.module))
    op = _op_name(node, ctx.module)
    meta.set_op(node, op)
    hidden = hidden_computation(ctx.module) if ctx.module is not None else None
    if hidden:
        meta.set_rule(node, None)
        return _block_node(ctx, f"{op} `{node.target}` computes more than its forward: {hidden}")
    if rule is None:
        meta.set_rule(node, None)
        return _block_node(ctx, f"no rule for {op}")
    meta.set_rule(node, rule.name)
    if not rule.accepts_sizes:
        for a in list(node.args) + list(node.kwargs.values()):
            for sz in iter_sizes(ctx.value(a)):
                for lay in sz.layouts:
                    ctx.block(lay, f"a neuron count read by `size` is used by {op}, "
                                   "whose result would change with the width")
    recorded = (len(state.rewrites), len(state.attr_rewrites))
    try:
        value = rule.fn(ctx)
        _check(ctx, value, spec)
        return value
    except (Unalignable, RuleError) as e:
        # the node is blocked: rewrites the rule recorded before it failed must not run
        del state.rewrites[recorded[0]:], state.attr_rewrites[recorded[1]:]
        return _block_node(ctx, f"{op}: {e}")


def analyze_graph(gm: fx.GraphModule, args: tuple = (), kwargs: Optional[dict] = None) -> Analysis:
    """Analyse a captured graph (every node must carry ``fxgrow.shape``).

    Most users call :func:`fxgrow.analyze`, which captures the model first.
    """
    state = WalkState(gm)
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
    resolve_ties(state)
    # Products between activations: prove one side can be divided by the counts.
    state.pairings, state.halved = resolve_contractions(state)
    state.table.finalize()
    return build_analysis(state, gm, args, kwargs or {})
