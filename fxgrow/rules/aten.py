"""The ATen front end of the rule table: ``torch.export`` graphs read as canonical ops.

Each ATen overload the vocabulary maps (:mod:`fxgrow.ops.aten`) runs the rule
of the canonical op it computes, through an argument adapter: the rule sees a
*view* of the node with the canonical target and arguments
(:class:`NodeView`), and everything else (spaces, weights, blocks, notes) goes
to the real node.  Rewrites a rule records (view sizes, split sizes, slice
bounds, ``normalized_shape``) come back in canonical form and are mapped back
to the overload's own argument names and positions here, at analysis time,
so the rewrite pass only evaluates them (``torch.split`` becomes
``aten.split_with_sizes``, a resized ``aten.view`` an ``aten.reshape``); a
rewrite that cannot be mapped back makes the node block instead of producing
a wrong graph.

:func:`fxgrow.rules.registry.lookup` consults :func:`aten_rule` after the
table itself, so a rule registered for an overload directly still wins, and
a canonical rule registered later (or replaced by the user) is used for the
ATen form too.  Ops dynamo leaves in the graph that compute no tensor
(guards, ``_assert_scalar``, ``sym_constrain_range``,
``_assert_tensor_metadata``) get rules that block nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx

from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.roles import PRODUCER
from ..ir.rewrites import layouts_in
from ..ir.values import TV
from ..ops.access import MISSING, node_arg, with_arg
from ..ops.aten import (BACK_TARGETS, FORMS, VIEWS, AtenForm, aten, bind, from_canonical,
                        overload, to_canonical)
from .elementwise import elementwise
from .registry import Rule, RuleSet, lookup

__all__ = ["RULES", "NodeView", "aten_rule"]

RULES = RuleSet()


# -- what a rule sees -------------------------------------------------------------
class NodeView:
    """A node as the canonical rule sees it: canonical target and arguments.

    Everything else (``name``, ``meta``, ``users``, ``format_node``) is the
    real node's.
    """

    def __init__(self, node: fx.Node, target: Any, args: tuple, kwargs: dict) -> None:
        self._node = node
        self.target = target
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.op = "call_method" if isinstance(target, str) else "call_function"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)


class _AdaptedContext:
    """A rule context whose node is a :class:`NodeView`.

    Reading arguments uses the view; rewrites are mapped back to the ATen
    overload; every other verb is the real context's, so weights are
    claimed, blocks noted and rewrites recorded on the real node.
    """

    def __init__(self, ctx, view: NodeView, back: Callable[[Any, tuple, dict], tuple]) -> None:
        self._ctx = ctx
        self.node = view
        self._back = back

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def arg(self, index: Optional[int], name: Optional[str] = None,
            default: Any = MISSING) -> Any:
        return node_arg(self.node, index, name, default)  # the canonical view's arguments

    def rewrite_arg(self, index: int, name: str, value: Any) -> None:
        # the canonical positions belong to the view: rewrite them there, then map back
        self.rewrite(*with_arg(self.node.args, self.node.kwargs, index, name, value))

    def rewrite(self, args: tuple, kwargs: dict, *, target: Any = None,
                when: Optional[Tuple[Any, ...]] = None) -> None:
        real = self._ctx.node
        if when is None:
            when = tuple(layouts_in((args, kwargs)))
        # a rewrite that cannot be expressed as an ATen call blocks the node now,
        # instead of breaking the rewrite pass later
        try:
            new_target, new_args, new_kwargs = self._back(target, tuple(args), dict(kwargs))
        except RuleError:
            raise
        except Exception as e:
            raise RuleError(f"cannot map the rewrite of `{real.name}` back to "
                            f"{real.target}: {type(e).__name__}: {e}") from e
        self._ctx.rewrite(new_args, new_kwargs, target=new_target, when=when)


def _extra_outputs(ctx, value: Any, how: str) -> tuple:
    """The canonical rule's value, then the overload's other tuple elements."""
    spec = ctx.out_spec
    if not isinstance(spec, tuple) or not spec or not isinstance(value, TV):
        raise RuleError("unexpected result of a tuple-returning overload")
    rest = []
    for s in spec[1:]:
        if how == "same" and isinstance(s, TensorSpec) and s.shape == spec[0].shape:
            rest.append(value)
        elif isinstance(s, TensorSpec):
            rest.append(TV(tuple(ctx.free(n) for n in s.shape)))
        else:
            rest.append(s)
    return (value,) + tuple(rest)


class _TupleSpecContext(_AdaptedContext):
    """The canonical rule sees the first tuple element as the node's output."""

    @property
    def out_spec(self) -> Any:
        return self._ctx.out_spec[0]

    @property
    def out_shape(self) -> Tuple[int, ...]:
        spec = self.out_spec
        if not isinstance(spec, TensorSpec):
            raise RuleError("the node does not return a tensor first")
        return spec.shape


def _run(op, form: AtenForm, rule: Rule, ctx) -> Any:
    node = ctx.node
    bound = bind(op, node.args, node.kwargs)
    if form.when is not None:
        why = form.when(bound)
        if why:
            raise RuleError(why)
    if form.adapt is not None:
        args, kwargs = form.adapt(ctx, bound)
    else:
        args, kwargs = to_canonical(form, bound)

    def back(target, c_args, c_kwargs):
        """``(target or None, args, kwargs)`` of the overload for a canonical rewrite."""
        if target is not None:  # the rule changes the op (split -> split with sizes)
            new_op, new_form = BACK_TARGETS.get(target, (None, None))
            if new_op is None:
                raise RuleError(f"no ATen overload for a rewrite to {target}")
            return (new_op,) + from_canonical(new_op, new_form, c_args, c_kwargs)
        if form.unadapt is not None:
            return (None,) + form.unadapt(ctx, c_args, c_kwargs, bound)
        args, kwargs = from_canonical(op, form, c_args, c_kwargs)
        # a resized view must be a reshape (see fxgrow.ops.aten.VIEWS): same values,
        # copying only when it has to
        return (aten.reshape.default if op in VIEWS else None), args, kwargs

    view = NodeView(node, form.canonical, args, kwargs)
    adapted = (_TupleSpecContext if form.extra else _AdaptedContext)(ctx, view, back)
    value = rule.fn(adapted)
    return _extra_outputs(ctx, value, form.extra) if form.extra else value


_CACHE: Dict[Tuple[Any, Rule], Rule] = {}


def aten_rule(op: Any) -> Optional[Rule]:
    """The rule of an ATen overload: its canonical op's rule through the adapter."""
    form = FORMS.get(op)
    if form is None:
        return None
    canon = lookup(form.canonical)
    if canon is None:
        return None
    key = (op, canon)
    if key not in _CACHE:
        def fn(ctx, op=op, form=form, canon=canon):
            return _run(op, form, canon, ctx)
        _CACHE[key] = Rule(fn, f"{canon.name} ({op})", canon.accepts_sizes)
    return _CACHE[key]



# ``aten.convolution`` carries the rank in its weight: it reads as F.conv1d/2d/3d
_CONV_FORM = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


@RULES.rule(*(op for op in (overload("convolution.default"),) if op is not None),
               name="convolution")
def convolution(ctx) -> Any:
    """``aten.convolution``: the functional ConvNd rule of its rank (not transposed)."""
    op = ctx.node.target
    bound = bind(op, ctx.node.args, ctx.node.kwargs)
    if bound.get("transposed", False):
        raise RuleError("a transposed aten.convolution has no functional rule")
    spec = ctx.spec(bound.get("weight"))
    nd = len(spec.shape) - 2 if isinstance(spec, TensorSpec) else 0
    canon = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(nd)
    rule = lookup(canon) if canon is not None else None
    if rule is None:
        raise RuleError(f"no rule for a {nd}-d convolution")
    form = AtenForm(canon, _CONV_FORM)
    return _run(op, form, rule, ctx)


# ``aten.addmm(bias, x, W)`` (GPT-2's Conv1D): the matmul rule, then a bias add
@RULES.rule(*(op for op in (overload("addmm.default"),) if op is not None), name="addmm")
def addmm(ctx) -> Any:
    """``beta * bias + alpha * (x @ W)``: the canonical matmul rule for ``x @ W``;
    a parameter bias is produced like a Linear's, a computed one broadcasts."""
    op = ctx.node.target
    bound = bind(op, ctx.node.args, ctx.node.kwargs)
    rule = lookup(torch.matmul)
    if rule is None:
        raise RuleError("no matmul rule")
    bias = bound["self"]
    form = AtenForm(torch.matmul, ("input", "other"),
                    adapt=lambda c, b: ((b["mat1"], b["mat2"]), {}),
                    unadapt=lambda c, a, k, b: (_ for _ in ()).throw(
                        RuleError("addmm operands cannot be rewritten")))
    out = _run(op, form, rule, ctx)
    if not isinstance(bias, fx.Node):
        return out
    spec, out_shape = ctx.spec(bias), ctx.out_shape
    if not isinstance(spec, TensorSpec):
        raise RuleError("addmm bias is not a tensor")
    if len(spec.shape) == 1 and spec.shape[0] == out_shape[-1] and bias.op == "get_attr":
        ctx.unify(ctx.weight(bias, 0, PRODUCER), out.dims[-1])
        return out
    b = ctx.tensor(bias)
    for k in range(1, len(spec.shape) + 1):
        if spec.shape[-k] == out_shape[-k]:
            ctx.unify(b.dims[-k], out.dims[-k])
        else:
            ctx.fix(b.dims[-k], "broadcast against a larger dimension")
    return out


# -- ATen-only elementwise ops (no canonical twin with a rule) --------------------------
def _overloads(*names: str):
    return [getattr(getattr(aten, n), o) for n in names if hasattr(aten, n)
            for o in getattr(aten, n).overloads()]


# integer index arithmetic (MoE routing: ``perm // top_k``): elementwise
RULES.rule(*_overloads("floor_divide", "floor_divide_"), name="aten_elementwise")(elementwise)


# -- ops that compute no tensor -------------------------------------------------------
def _no_tensor(ctx) -> Any:
    """Asserts, guards and range constraints: they read sizes but compute nothing."""
    spec = ctx.out_spec
    if isinstance(spec, TensorSpec):  # a dependency token
        return TV(tuple(ctx.free(n) for n in spec.shape))
    return spec


@RULES.rule(*(op for op in (overload("_assert_scalar.default"),
                               overload("_assert_async.default"),
                               overload("_assert_async.msg"),
                               overload("_functional_assert_async.msg"),
                               overload("_functional_assert_scalar.default"),
                               overload("sym_constrain_range.default"),
                               overload("sym_constrain_range_for_size.default"),
                               overload("_functional_sym_constrain_range.default"),
                               overload("_functional_sym_constrain_range_for_size.default"))
                 if op is not None), accepts_sizes=True, name="no_tensor")
def no_tensor(ctx) -> Any:
    return _no_tensor(ctx)


@RULES.rule(*(op for op in (overload("_assert_tensor_metadata.default"),) if op is not None),
               accepts_sizes=True, name="assert_tensor_metadata")
def assert_tensor_metadata(ctx) -> Any:
    """dtype/device checks block nothing; an asserted size or stride fixes the dims."""
    node = ctx.node
    a = node.args[0] if node.args else node.kwargs.get("a")
    checks_size = any(node.kwargs.get(k) is not None for k in ("size", "stride")) or \
        any(v is not None for v in node.args[1:3])
    if checks_size and isinstance(a, fx.Node):
        for d in ctx.tensor(a).dims:
            ctx.fix(d, "its size is asserted by torch.export")
    return _no_tensor(ctx)


def _register_guards() -> None:
    from ..capture.guards import GuardCheck  # export's guards, failing with a reason
    targets: Tuple[Any, ...] = (GuardCheck,)
    try:
        from torch.export._unlift import GuardsFn
        targets += (GuardsFn,)
    except ImportError:  # older torch: no guard module in ep.module()
        pass
    RULES.rule(*targets, accepts_sizes=True, name="export_guards")(no_tensor)


_register_guards()

