"""The ATen front end: ``torch.export`` graphs speak the canonical vocabulary.

A graph captured by ``torch.export`` (``ep.module()``) calls ATen overloads
(``aten.linear.default``, ``aten.view.default``, ...) where a
``symbolic_trace`` graph calls ``F.linear``, ``Tensor.view`` or an
``nn.Linear``.  Rather than a second copy of every rule, each overload is
mapped here to the *canonical* op it computes, a key of the one rule table
(:mod:`fxgrow.rules`), plus an argument adapter:

* arguments are bound to the overload's schema by name, renamed to the
  canonical op's parameter names (``self`` -> ``input``, ``indices`` ->
  ``input``, ``split_sizes`` -> ``split_size_or_sections``) and laid out in
  the canonical positional order; the rule sees a *view* of the node with
  the canonical target and arguments (:class:`NodeView`), and everything
  else (spaces, weights, blocks, notes) goes to the real node;
* literal rewrites a rule registers (view sizes, split sizes, slice
  bounds, ``normalized_shape``) come back in canonical form and are mapped
  back to the overload's own argument names and positions (``torch.split``
  becomes ``aten.split_with_sizes``); a rewrite that cannot be mapped back
  makes the node block instead of producing a wrong graph;
* ``aten.slice`` and ``aten.select`` become the basic indexing ``getitem``
  describes (``x[:, :, a:b]``, ``x[:, i]``);
* overloads returning tuples whose first element is the canonical result
  (``native_layer_norm``, ``_native_batch_norm_legit_no_training``,
  ``native_dropout``) get free dims for the statistics they also return.

:func:`fxgrow.rules.lookup` consults :data:`FORMS` after the table itself,
so a rule registered for an overload directly still wins, and a canonical
rule registered later (or replaced by the user) is used for the ATen form
too.  Ops dynamo leaves in the graph that compute no tensor (guards,
``_assert_scalar``, ``sym_constrain_range``, ``_assert_tensor_metadata``)
get rules that block nothing.  The mapping is documented in
``docs/export.md``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx

from ..errors import RuleError
from ..shapes import TensorSpec
from ..values import TV
from . import MISSING, Rule, node_arg, register_rule

__all__ = ["AtenForm", "FORMS", "aten_rule", "canonical_target", "NodeView"]

aten = torch.ops.aten

Adapter = Callable[[Any, Dict[str, Any]], Tuple[tuple, dict]]


@dataclass(frozen=True)
class AtenForm:
    """How one ATen overload reads as a canonical op.

    ``params``: the canonical op's positional parameter names; ``rename``:
    ATen argument name -> canonical name.  ``adapt``/``unadapt`` replace the
    name-based mapping for ops whose arguments differ in kind (slice ->
    getitem).  ``extra``: what the other elements of a tuple result are
    (``"free"`` statistics, or ``"same"`` layouts as the first one).
    ``when``: a predicate on the bound ATen arguments; the form applies only
    where it holds (a transposed ``aten.convolution`` has no functional twin).
    """

    canonical: Any
    params: Tuple[str, ...] = ("input",)
    rename: Tuple[Tuple[str, str], ...] = (("self", "input"),)
    adapt: Optional[Adapter] = None
    unadapt: Optional[Callable[[Any, tuple, dict, Dict[str, Any]], Tuple[tuple, dict]]] = None
    extra: Optional[str] = None
    when: Optional[Callable[[Dict[str, Any]], Optional[str]]] = None


#: ATen overload -> its canonical form (filled below)
FORMS: Dict[Any, AtenForm] = {}


def _overload(path: str):
    """``"linear.default"`` -> ``torch.ops.aten.linear.default``, or None on this torch."""
    name, _, overload = path.partition(".")
    try:
        return getattr(getattr(aten, name), overload)
    except (AttributeError, RuntimeError):
        return None


def _add(paths, form: AtenForm) -> None:
    for path in paths.split():
        op = _overload(path)
        if op is not None:
            FORMS[op] = form


# -- binding arguments ------------------------------------------------------------
def _schema_args(op):
    return list(op._schema.arguments)


def bind(op, args: tuple, kwargs: dict) -> Dict[str, Any]:
    """The given arguments of a call of ``op``, by schema name (defaults left out)."""
    names = [a.name for a in _schema_args(op)]
    if len(args) > len(names):
        raise RuleError(f"{op} takes {len(names)} arguments, got {len(args)}")
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names:
            raise RuleError(f"{op} has no argument `{k}`")
        bound[k] = v
    return bound


def _to_canonical(form: AtenForm, bound: Dict[str, Any]) -> Tuple[tuple, dict]:
    ren = dict(form.rename)
    named = {ren.get(k, k): v for k, v in bound.items()}
    args = []
    for p in form.params:  # the contiguous given prefix is positional, the rest keywords
        if p not in named:
            break
        args.append(named.pop(p))
    return tuple(args), named


def _from_canonical(op, form: AtenForm, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    if len(args) > len(form.params):
        raise RuleError(f"a rewrite of {op} gave {len(args)} positional arguments")
    schema = _schema_args(op)
    names = {a.name for a in schema}
    inv = {c: a for a, c in form.rename if a in names}
    named = {inv.get(k, k): v for k, v in {**dict(zip(form.params, args)), **kwargs}.items()}
    unknown = set(named) - names
    if unknown:
        raise RuleError(f"a rewrite of {op} uses arguments it does not have: {sorted(unknown)}")
    out_args, out_kwargs = [], {}
    positional = True
    for a in schema:
        if a.name not in named:
            positional = False
            continue
        if positional and not a.kwarg_only:
            out_args.append(named[a.name])
        else:
            out_kwargs[a.name] = named[a.name]
    return tuple(out_args), out_kwargs


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
    """A :class:`~fxgrow.analysis.RuleContext` whose node is a :class:`NodeView`.

    Reading arguments uses the view; literal rewrites are mapped back to the
    ATen overload; every other verb is the real context's, so weights are
    claimed, blocks noted and literals registered on the real node.
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

    def literal_arg(self, index: int, name: str, fn: Callable[[Callable[[Any], int]], Any]) -> None:
        # the canonical positions belong to the view: rewrite them there, then map back
        from ..analysis import RuleContext
        RuleContext.literal_arg(self, index, name, fn)

    def literal(self, fn: Callable[[Callable[[Any], int]], tuple]) -> None:
        back, real = self._back, self._ctx.node

        def aten_fn(size):
            result = fn(size)
            target, args, kwargs = result if len(result) == 3 else (None, *result)
            return back(target, args, kwargs)
        # dry run with today's sizes: a rewrite that cannot be expressed as
        # an ATen call blocks the node now, instead of breaking apply later
        try:
            aten_fn(lambda layout: self._ctx.norm(layout).size)
        except RuleError:
            raise
        except Exception as e:
            raise RuleError(f"cannot map the rewrite of `{real.name}` back to "
                            f"{real.target}: {type(e).__name__}: {e}") from e
        self._ctx.literal(aten_fn)


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
        args, kwargs = _to_canonical(form, bound)

    def back(target, c_args, c_kwargs):
        if target is not None:  # the rule changes the op (split -> split with sizes)
            new_op, new_form = _BACK_TARGETS.get(target, (None, None))
            if new_op is None:
                raise RuleError(f"no ATen overload for a rewrite to {target}")
            return (new_op,) + _from_canonical(new_op, new_form, tuple(c_args), dict(c_kwargs))
        if form.unadapt is not None:
            return form.unadapt(ctx, tuple(c_args), dict(c_kwargs), bound)
        args, kwargs = _from_canonical(op, form, tuple(c_args), dict(c_kwargs))
        if op in _VIEWS and (tuple(args), dict(kwargs)) != (tuple(node.args), dict(node.kwargs)):
            # export drops a `.contiguous()` that was a no-op at trace time; after
            # growth the input's strides may differ, so a resized view must be a
            # reshape (same values, copying only when it has to)
            return (torch.ops.aten.reshape.default, tuple(args), dict(kwargs))
        return args, kwargs

    view = NodeView(node, form.canonical, args, kwargs)
    adapted = (_TupleSpecContext if form.extra else _AdaptedContext)(ctx, view, back)
    value = rule.fn(adapted)
    return _extra_outputs(ctx, value, form.extra) if form.extra else value


_VIEWS = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default}

_CACHE: Dict[Tuple[Any, Rule], Rule] = {}


def aten_rule(op: Any) -> Optional[Rule]:
    """The rule of an ATen overload: its canonical op's rule through the adapter."""
    form = FORMS.get(op)
    if form is None:
        return None
    from . import lookup
    canon = lookup(form.canonical)
    if canon is None:
        return None
    key = (op, canon)
    if key not in _CACHE:
        def fn(ctx, op=op, form=form, canon=canon):
            return _run(op, form, canon, ctx)
        _CACHE[key] = Rule(fn, f"{canon.name} ({op})", canon.accepts_sizes)
    return _CACHE[key]


def canonical_target(node: fx.Node) -> Any:
    """The canonical op an ATen node computes (its own target otherwise).

    For passes that recognise ops by target, e.g. ``aten.relu_.default`` ->
    ``torch.relu``.
    """
    form = FORMS.get(node.target) if node.op == "call_function" else None
    return form.canonical if form is not None else node.target


# -- slicing as indexing ------------------------------------------------------------
def _ndim(ctx, x: Any) -> int:
    spec = ctx.spec(x)
    if not isinstance(spec, TensorSpec):
        raise RuleError("slicing a non-tensor")
    return len(spec.shape)


def _norm_dim(ctx, x: Any, d: Any) -> int:
    n = _ndim(ctx, x)
    if not isinstance(d, int) or not -n <= d < n:
        raise RuleError(f"bad dim {d!r}")
    return d % n


def _slice_adapt(ctx, b):
    x, d = b["self"], _norm_dim(ctx, b["self"], b.get("dim", 0))
    item = slice(b.get("start"), b.get("end"), b.get("step", 1))
    return (x, tuple([slice(None)] * d + [item])), {}


def _select_adapt(ctx, b):
    x, d = b["self"], _norm_dim(ctx, b["self"], b["dim"])
    return (x, tuple([slice(None)] * d + [b["index"]])), {}


def _picked(args: tuple, d: int) -> Any:
    if len(args) != 2 or not isinstance(args[1], tuple) or len(args[1]) <= d:
        raise RuleError("unexpected rewrite of an indexing")
    if any(it != slice(None) for it in args[1][:d]):
        raise RuleError("an indexing rewrite touches another dim")
    return args[1][d]


def _slice_unadapt(ctx, args, kwargs, b):
    d = _norm_dim(ctx, b["self"], b.get("dim", 0))
    item = _picked(args, d)
    if not isinstance(item, slice) or item.step not in (None, 1):
        raise RuleError("unexpected rewrite of a slice")
    return (args[0], b.get("dim", 0), item.start, item.stop), {}


def _select_unadapt(ctx, args, kwargs, b):
    d = _norm_dim(ctx, b["self"], b["dim"])
    item = _picked(args, d)
    if isinstance(item, slice):
        raise RuleError("unexpected rewrite of a select")
    return (args[0], b["dim"], item), {}


def _einsum_adapt(ctx, b):
    return (b["equation"], *b["tensors"]), {}


def _einsum_unadapt(ctx, args, kwargs, b):
    return (args[0], list(args[1:])), kwargs


# -- the table --------------------------------------------------------------------
_SELF = (("self", "input"),)

# layers
_add("linear.default", AtenForm(F.linear, ("input", "weight", "bias")))
for _nd, _fn in ((1, F.conv1d), (2, F.conv2d), (3, F.conv3d)):
    _add(f"conv{_nd}d.default conv{_nd}d.padding",
         AtenForm(_fn, ("input", "weight", "bias", "stride", "padding", "dilation", "groups")))
_add("batch_norm.default", AtenForm(
    F.batch_norm, ("input", "running_mean", "running_var", "weight", "bias", "training",
                   "momentum", "eps")))
_add("_native_batch_norm_legit_no_training.default native_batch_norm.default",
     AtenForm(F.batch_norm, ("input", "running_mean", "running_var", "weight", "bias"),
              extra="free"))
_add("layer_norm.default", AtenForm(F.layer_norm, ("input", "normalized_shape", "weight",
                                                   "bias", "eps")))
_add("native_layer_norm.default", AtenForm(
    F.layer_norm, ("input", "normalized_shape", "weight", "bias", "eps"), extra="free"))
if hasattr(F, "rms_norm"):
    _add("rms_norm.default", AtenForm(F.rms_norm, ("input", "normalized_shape", "weight", "eps")))
_add("group_norm.default", AtenForm(F.group_norm, ("input", "num_groups", "weight", "bias",
                                                   "eps")))
_add("embedding.default", AtenForm(F.embedding, ("input", "weight"),
                                   rename=(("indices", "input"),)))

# attention and products
_add("scaled_dot_product_attention.default", AtenForm(
    F.scaled_dot_product_attention, ("query", "key", "value", "attn_mask", "dropout_p",
                                     "is_causal", "scale", "enable_gqa"), rename=()))
_add("matmul.default", AtenForm(torch.matmul, ("input", "other")))
_add("bmm.default", AtenForm(torch.bmm, ("input", "other"), rename=(("self", "input"),
                                                                     ("mat2", "other"))))
_add("mm.default", AtenForm(torch.mm, ("input", "other"), rename=(("self", "input"),
                                                                   ("mat2", "other"))))
_add("einsum.default", AtenForm(torch.einsum, adapt=_einsum_adapt, unadapt=_einsum_unadapt))
_add("outer.default", AtenForm(torch.outer, ("input", "vec2")))

# shapes
_add("view.default _unsafe_view.default", AtenForm("view", ("input", "size")))
_add("reshape.default", AtenForm("reshape", ("input", "size"),
                                 rename=(("self", "input"), ("shape", "size"))))
_add("permute.default", AtenForm("permute", ("input", "dims")))
_add("transpose.int", AtenForm("transpose", ("input", "dim0", "dim1")))
_add("t.default", AtenForm("t"))
_add("unsqueeze.default", AtenForm("unsqueeze", ("input", "dim")))
_add("squeeze.default squeeze.dim squeeze.dims", AtenForm("squeeze", ("input", "dim")))
_add("flatten.using_ints", AtenForm(torch.flatten, ("input", "start_dim", "end_dim")))
_add("unflatten.int", AtenForm(torch.unflatten, ("input", "dim", "sizes")))
_add("expand.default", AtenForm("expand", ("input", "size")))
_add("repeat.default", AtenForm("repeat", ("input", "repeats")))
_add("repeat_interleave.self_int", AtenForm(torch.repeat_interleave,
                                            ("input", "repeats", "dim")))
_add("cat.default", AtenForm(torch.cat, ("tensors", "dim"), rename=()))
_add("stack.default", AtenForm(torch.stack, ("tensors", "dim"), rename=()))
_SPLIT = AtenForm(torch.split, ("input", "split_size_or_sections", "dim"),
                  rename=(("self", "input"), ("split_size", "split_size_or_sections"),
                          ("split_sizes", "split_size_or_sections")))
_add("split.Tensor split_with_sizes.default", _SPLIT)
_add("chunk.default", AtenForm(torch.chunk, ("input", "chunks", "dim")))
_add("unbind.int", AtenForm(torch.unbind, ("input", "dim")))
_add("slice.Tensor", AtenForm(operator.getitem, adapt=_slice_adapt, unadapt=_slice_unadapt))
_add("select.int", AtenForm(operator.getitem, adapt=_select_adapt, unadapt=_select_unadapt))
_add("sym_size.int", AtenForm("size", ("input", "dim")))
_add("sym_numel.default", AtenForm("numel"))
_add("constant_pad_nd.default", AtenForm(F.pad, ("input", "pad")))
_add("pad.default", AtenForm(F.pad, ("input", "pad", "mode", "value")))

# the op a rewrite switches to (``split`` with explicit sizes)
_BACK_TARGETS = {
    torch.split: (aten.split_with_sizes.default, AtenForm(
        torch.split, ("input", "split_size_or_sections", "dim"),
        rename=(("self", "input"), ("split_sizes", "split_size_or_sections")))),
}

# reductions
_add("mean.dim mean.default", AtenForm(torch.mean, ("input", "dim", "keepdim")))
_add("sum.dim_IntList sum.default", AtenForm(torch.sum, ("input", "dim", "keepdim")))
_add("amax.default", AtenForm(torch.amax, ("input", "dim", "keepdim")))
_add("amin.default", AtenForm(torch.amin, ("input", "dim", "keepdim")))
_add("var.correction var.dim", AtenForm(torch.var, ("input", "dim")))
_add("std.correction std.dim", AtenForm(torch.std, ("input", "dim")))
_add("softmax.int _softmax.default", AtenForm(torch.softmax, ("input", "dim")))
_add("log_softmax.int _log_softmax.default", AtenForm(torch.log_softmax, ("input", "dim")))
_add("cumsum.default", AtenForm(torch.cumsum, ("input", "dim")))
_add("argmax.default", AtenForm(torch.argmax, ("input", "dim", "keepdim")))
_add("argmin.default", AtenForm(torch.argmin, ("input", "dim", "keepdim")))

# pooling and resizing (the rules read only the input)
for _name, _fn in (("max_pool1d", F.max_pool1d), ("max_pool2d", F.max_pool2d),
                   ("max_pool3d", F.max_pool3d), ("avg_pool1d", F.avg_pool1d),
                   ("avg_pool2d", F.avg_pool2d), ("avg_pool3d", F.avg_pool3d),
                   ("adaptive_avg_pool1d", F.adaptive_avg_pool1d),
                   ("adaptive_avg_pool2d", F.adaptive_avg_pool2d),
                   ("adaptive_avg_pool3d", F.adaptive_avg_pool3d),
                   ("_adaptive_avg_pool2d", F.adaptive_avg_pool2d),
                   ("_adaptive_avg_pool3d", F.adaptive_avg_pool3d)):
    _add(f"{_name}.default", AtenForm(_fn))
_add("upsample_nearest1d.vec upsample_nearest2d.vec upsample_nearest3d.vec "
     "upsample_bilinear2d.vec upsample_linear1d.vec upsample_trilinear3d.vec "
     "upsample_bicubic2d.vec upsample_nearest2d.default upsample_bilinear2d.default",
     AtenForm(F.interpolate))

# elementwise: activations, arithmetic, dropout (the rule aligns every tensor operand)
_ELEMENTWISE = {
    torch.relu: "relu relu_", F.relu6: "relu6 hardtanh hardtanh_", F.gelu: "gelu gelu_",
    F.silu: "silu silu_", torch.sigmoid: "sigmoid sigmoid_", torch.tanh: "tanh tanh_",
    F.hardswish: "hardswish hardswish_", F.hardsigmoid: "hardsigmoid hardsigmoid_",
    F.leaky_relu: "leaky_relu leaky_relu_", F.elu: "elu elu_", F.selu: "selu selu_",
    F.celu: "celu celu_", F.softplus: "softplus", F.mish: "mish mish_",
    F.logsigmoid: "log_sigmoid", F.softshrink: "softshrink", F.hardshrink: "hardshrink",
    F.threshold: "threshold threshold_",
    F.dropout: "dropout dropout_ feature_dropout feature_dropout_ alpha_dropout "
               "alpha_dropout_ feature_alpha_dropout",
    torch.exp: "exp exp_", torch.log: "log log_", torch.sqrt: "sqrt sqrt_",
    torch.rsqrt: "rsqrt rsqrt_", torch.abs: "abs abs_", torch.neg: "neg neg_",
    torch.square: "square", torch.sin: "sin sin_", torch.cos: "cos cos_", torch.erf: "erf",
    torch.reciprocal: "reciprocal", torch.sign: "sign", torch.floor: "floor",
    torch.ceil: "ceil", torch.round: "round", torch.clamp: "clamp clamp_ clamp_min clamp_max",
    torch.pow: "pow", torch.add: "add add_", torch.sub: "sub sub_ rsub",
    torch.mul: "mul mul_", torch.div: "div div_", torch.maximum: "maximum",
    torch.minimum: "minimum", torch.where: "where", torch.lerp: "lerp",
    torch.nan_to_num: "nan_to_num", "masked_fill": "masked_fill masked_fill_",
    torch.eq: "eq ne lt le gt ge logical_and logical_or logical_not logical_xor isnan isinf "
              "isfinite bitwise_not bitwise_and bitwise_or",
}
_CAST = {"contiguous": "contiguous", "clone": "clone lift_fresh_copy",
         "detach": "detach detach_ alias", "to": "to _to_copy type_as",
         torch.clone: "zeros_like ones_like full_like"}


def _all_overloads(name: str):
    packet = getattr(aten, name, None)
    if packet is None:
        return []
    return [getattr(packet, o) for o in packet.overloads()]


for _canon, _names in list(_ELEMENTWISE.items()) + list(_CAST.items()):
    for _name in _names.split():
        for _op in _all_overloads(_name):
            FORMS.setdefault(_op, AtenForm(_canon))
_add("native_dropout.default", AtenForm(F.dropout, extra="same"))


# ``aten.convolution`` carries the rank in its weight: it reads as F.conv1d/2d/3d
_CONV_FORM = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


@register_rule(*(op for op in (_overload("convolution.default"),) if op is not None),
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
    from . import lookup
    rule = lookup(canon) if canon is not None else None
    if rule is None:
        raise RuleError(f"no rule for a {nd}-d convolution")
    form = AtenForm(canon, _CONV_FORM)
    return _run(op, form, rule, ctx)


# ``aten.addmm(bias, x, W)`` (GPT-2's Conv1D): the matmul rule, then a bias add
@register_rule(*(op for op in (_overload("addmm.default"),) if op is not None), name="addmm")
def addmm(ctx) -> Any:
    """``beta * bias + alpha * (x @ W)``: the canonical matmul rule for ``x @ W``;
    a parameter bias is produced like a Linear's, a computed one broadcasts."""
    from . import lookup
    from ..roles import PRODUCER
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


# -- ops that compute no tensor -------------------------------------------------------
def _no_tensor(ctx) -> Any:
    """Asserts, guards and range constraints: they read sizes but compute nothing."""
    spec = ctx.out_spec
    if isinstance(spec, TensorSpec):  # a dependency token
        return TV(tuple(ctx.free(n) for n in spec.shape))
    return spec


@register_rule(*(op for op in (_overload("_assert_scalar.default"),
                               _overload("_assert_async.default"),
                               _overload("_assert_async.msg"),
                               _overload("_functional_assert_async.msg"),
                               _overload("_functional_assert_scalar.default"),
                               _overload("sym_constrain_range.default"),
                               _overload("sym_constrain_range_for_size.default"),
                               _overload("_functional_sym_constrain_range.default"),
                               _overload("_functional_sym_constrain_range_for_size.default"))
                 if op is not None), accepts_sizes=True, name="no_tensor")
def no_tensor(ctx) -> Any:
    return _no_tensor(ctx)


@register_rule(*(op for op in (_overload("_assert_tensor_metadata.default"),) if op is not None),
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
    try:
        from torch.export._unlift import GuardsFn
    except ImportError:  # older torch: no guard module in ep.module()
        return
    register_rule(GuardsFn, accepts_sizes=True, name="export_guards")(no_tensor)


_register_guards()
