"""The canonical op vocabulary of ATen graphs: which op each overload computes.

A graph captured by ``torch.export`` (``ep.module()``) calls ATen overloads
(``aten.linear.default``, ``aten.view.default``, ...) where a
``symbolic_trace`` graph calls ``F.linear``, ``Tensor.view`` or an
``nn.Linear``.  Rather than a second copy of every rule, each overload is
mapped here to the *canonical* op it computes (a function, or a ``Tensor``
method name) and to how its arguments read as that op's:

* arguments are bound to the overload's schema by name (:func:`bind`),
  renamed to the canonical op's parameter names (``self`` -> ``input``,
  ``indices`` -> ``input``, ``split_sizes`` -> ``split_size_or_sections``)
  and laid out in the canonical positional order (:func:`to_canonical`), and
  mapped back for rewrites (:func:`from_canonical`);
* ``aten.slice`` and ``aten.select`` read as the basic indexing ``getitem``
  describes (``x[:, :, a:b]``, ``x[:, i]``);
* overloads returning tuples whose first element is the canonical result
  (``native_layer_norm``, ``_native_batch_norm_legit_no_training``,
  ``native_dropout``) say what their other elements are (``extra``).

This module is pure vocabulary: it knows no rules.  The rule table reads
ATen nodes through it (:mod:`fxgrow.rules.aten`), and so do the passes that
recognise ops by target (:func:`canonical_target`).  The mapping is
documented in ``docs/export.md``.

>>> canonical_target.__name__, FORMS[torch.ops.aten.linear.default].canonical is F.linear
('canonical_target', True)
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx

from ..capture.shapes import TensorSpec
from ..errors import RuleError
from ..ir.rewrites import IfGrows

__all__ = ["AtenForm", "FORMS", "BACK_TARGETS", "VIEWS", "bind", "to_canonical",
           "from_canonical", "canonical_target", "overload", "aten"]

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


def overload(path: str):
    """``"linear.default"`` -> ``torch.ops.aten.linear.default``, or None on this torch."""
    name, _, overload = path.partition(".")
    try:
        return getattr(getattr(aten, name), overload)
    except (AttributeError, RuntimeError):
        return None


def _add(paths, form: AtenForm) -> None:
    for path in paths.split():
        op = overload(path)
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


def to_canonical(form: AtenForm, bound: Dict[str, Any]) -> Tuple[tuple, dict]:
    ren = dict(form.rename)
    named = {ren.get(k, k): v for k, v in bound.items()}
    args = []
    for p in form.params:  # the contiguous given prefix is positional, the rest keywords
        if p not in named:
            break
        args.append(named.pop(p))
    return tuple(args), named


def from_canonical(op, form: AtenForm, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
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


def _bounds(item: Any) -> Tuple[Any, Any]:
    """``(start, stop)`` of a slice in a rewrite template (an IfGrows of two slices too)."""
    if isinstance(item, IfGrows):
        (s1, e1), (s2, e2) = _bounds(item.then), _bounds(item.otherwise)
        return IfGrows(item.layouts, s1, s2), IfGrows(item.layouts, e1, e2)
    if not isinstance(item, slice) or item.step not in (None, 1):
        raise RuleError("unexpected rewrite of a slice")
    return item.start, item.stop


def _slice_unadapt(ctx, args, kwargs, b):
    d = _norm_dim(ctx, b["self"], b.get("dim", 0))
    return (args[0], b.get("dim", 0)) + _bounds(_picked(args, d)), {}


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
_add("cat.default concat.default concatenate.default", AtenForm(torch.cat, ("tensors", "dim"), rename=()))
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
BACK_TARGETS = {
    torch.split: (aten.split_with_sizes.default, AtenForm(
        torch.split, ("input", "split_size_or_sections", "dim"),
        rename=(("self", "input"), ("split_sizes", "split_size_or_sections")))),
}

# reductions
_add("mean.dim mean.default", AtenForm(torch.mean, ("input", "dim", "keepdim")))
_add("sum.dim_IntList sum.default", AtenForm(torch.sum, ("input", "dim", "keepdim")))
_add("amax.default", AtenForm(torch.amax, ("input", "dim", "keepdim")))
_add("glu.default", AtenForm(F.glu, ("input", "dim")))
_add("logsumexp.default", AtenForm(torch.logsumexp, ("input", "dim", "keepdim")))
_add("nansum.default", AtenForm(torch.nansum, ("input", "dim", "keepdim")))
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
         # constants shaped like their input: not moves of it (fxgrow.ops.kinds)
         torch.zeros_like: "zeros_like", torch.ones_like: "ones_like",
         torch.full_like: "full_like"}


def _all_overloads(name: str):
    packet = getattr(aten, name, None)
    if packet is None:
        return []
    return [getattr(packet, o) for o in packet.overloads()]


for _canon, _names in list(_ELEMENTWISE.items()) + list(_CAST.items()):
    for _name in _names.split():
        for _op in _all_overloads(_name):
            FORMS.setdefault(_op, AtenForm(_canon))
_DROPOUT_ARGS = dict(params=("input", "p", "training"),
                     rename=(("self", "input"), ("train", "training")))
_add("dropout.default dropout_.default feature_dropout.default feature_dropout_.default "
     "alpha_dropout.default alpha_dropout_.default feature_alpha_dropout.default",
     AtenForm(F.dropout, **_DROPOUT_ARGS))
_add("native_dropout.default", AtenForm(F.dropout, extra="same", **_DROPOUT_ARGS))

#: overloads that are views: a resized one must become a reshape (export drops a
#: `.contiguous()` that was a no-op at trace time, so after growth the input's
#: strides may differ)
VIEWS = {aten.view.default, aten._unsafe_view.default}


# -- cov-weights: transposes of weights, antialiased resizes, shape-of aliases --------
def _numpy_t_adapt(ctx, b):
    """``x.T``: every dim reversed, a ``permute``."""
    return (b["self"], tuple(reversed(range(_ndim(ctx, b["self"]))))), {}


def _mt_adapt(ctx, b):
    """``x.mT``: the last two dims swapped, a ``transpose``."""
    return (b["self"], -2, -1), {}


_add("numpy_T.default", AtenForm("permute", adapt=_numpy_t_adapt))
_add("mT.default", AtenForm("transpose", adapt=_mt_adapt))
_add("_upsample_bilinear2d_aa.default _upsample_bilinear2d_aa.vec "
     "_upsample_bicubic2d_aa.default _upsample_bicubic2d_aa.vec", AtenForm(F.interpolate))
_add("reshape_as.default", AtenForm("reshape_as", ("input", "other")))
_add("view_as.default", AtenForm("view_as", ("input", "other")))
_add("expand_as.default", AtenForm("expand_as", ("input", "other")))
_add("tile.default", AtenForm(torch.tile, ("input", "dims")))
_add("im2col.default", AtenForm(F.unfold, ("input", "kernel_size", "dilation", "padding",
                                           "stride")))
_add("col2im.default", AtenForm(F.fold, ("input", "output_size", "kernel_size", "dilation",
                                         "padding", "stride")))
_add("unfold.default", AtenForm("unfold", ("input", "dimension", "size", "step")))
_add("linalg_vector_norm.default", AtenForm(torch.linalg.vector_norm,
                                            ("input", "ord", "dim", "keepdim")))


def _linalg_norm_adapt(ctx, b):
    """A vector norm over one dim, or the 2-norm of entries (``ord=None``); else a matrix norm."""
    ord_, dim = b.get("ord"), b.get("dim")
    dims = [dim] if isinstance(dim, int) else (list(dim) if dim is not None else None)
    if ord_ is not None and (dims is None or len(dims) != 1):
        raise RuleError("torch.linalg.norm with an ord over several dims: a matrix norm")
    return (b["self"], 2 if ord_ is None else ord_, dims, b.get("keepdim", False)), {}


_add("linalg_norm.default", AtenForm(torch.linalg.vector_norm, adapt=_linalg_norm_adapt))


# == indexing, gathers, tensors made in forward, experts (issue #16) =======================
# ``aten.index.Tensor(x, [i, None, j])`` is ``x[i, :, j]``: its ``None`` entries are
# dims it does not index (not new axes, as ``None`` is in Python indexing).
def _index_adapt(ctx, b):
    items = tuple(slice(None) if i is None else i for i in b["indices"])
    return (b["self"], items), {}


def _no_rewrite(ctx, args, kwargs, b):
    raise RuleError("advanced indexing has no bounds to rewrite")


_add("index.Tensor _unsafe_index.Tensor",
     AtenForm(operator.getitem, adapt=_index_adapt, unadapt=_no_rewrite))
_add("index_select.default", AtenForm(torch.index_select, ("input", "dim", "index")))
_add("gather.default", AtenForm(torch.gather, ("input", "dim", "index")))
_add("take_along_dim.default", AtenForm(torch.take_along_dim, ("input", "indices", "dim")))
_add("index_add.default index_add_.default",
     AtenForm(torch.index_add, ("input", "dim", "index", "source")))
_add("index_copy.default index_copy_.default",
     AtenForm(torch.index_copy, ("input", "dim", "index", "source")))
_add("scatter.src scatter.value scatter.reduce scatter.value_reduce scatter_.src scatter_.value "
     "scatter_.reduce scatter_.value_reduce",
     AtenForm(torch.scatter, ("input", "dim", "index", "src", "reduce")))
_add("scatter_add.default scatter_add_.default",
     AtenForm(torch.scatter_add, ("input", "dim", "index", "src")))
_add("scatter_reduce.two scatter_reduce_.two",
     AtenForm(torch.scatter_reduce, ("input", "dim", "index", "src", "reduce")))
_add("index_put.default index_put_.default _unsafe_index_put.default",
     AtenForm(torch.index_put, ("input", "indices", "values", "accumulate")))
_add("masked_scatter.default masked_scatter_.default", AtenForm(torch.masked_scatter, ("input", "mask", "source")))
_add("copy_.default copy.default", AtenForm("copy_", ("input", "src")))
_add("zeros.default", AtenForm(torch.zeros, ("size",), rename=()))
_add("ones.default", AtenForm(torch.ones, ("size",), rename=()))
_add("empty.memory_format", AtenForm(torch.empty, ("size",), rename=()))
_add("full.default", AtenForm(torch.full, ("size", "fill_value"), rename=()))
for _name in ("new_zeros", "new_ones", "new_empty"):
    _add(f"{_name}.default", AtenForm(_name, ("input", "size")))
_add("new_full.default", AtenForm("new_full", ("input", "size", "fill_value")))
_add("empty_like.default", AtenForm(torch.empty_like))
_add("arange.default", AtenForm(torch.arange, ("end",), rename=()))
_add("arange.start", AtenForm(torch.arange, ("start", "end"), rename=()))
_add("arange.start_step", AtenForm(torch.arange, ("start", "end", "step"), rename=()))
_add("eye.default", AtenForm(torch.eye, ("n",), rename=()))
_add("eye.m", AtenForm(torch.eye, ("n", "m"), rename=()))
_add("one_hot.default", AtenForm(F.one_hot, ("input", "num_classes")))
# ``min``/``max`` of two tensors are elementwise
_add("min.other fmin.default", AtenForm(torch.minimum, ("input", "other")))
_add("max.other fmax.default", AtenForm(torch.maximum, ("input", "other")))
# elementwise ops with a canonical twin the first table does not list
for _canon, _names in {torch.expm1: "expm1", torch.log1p: "log1p", torch.log2: "log2",
                       torch.log10: "log10", torch.exp2: "exp2", torch.atan: "atan",
                       torch.asin: "asin", torch.acos: "acos", torch.sinh: "sinh",
                       torch.cosh: "cosh", torch.asinh: "asinh", torch.atanh: "atanh",
                       torch.erfc: "erfc", torch.trunc: "trunc", torch.frac: "frac",
                       torch.atan2: "atan2", torch.hypot: "hypot", torch.logaddexp: "logaddexp",
                       torch.xlogy: "xlogy", torch.remainder: "remainder", torch.fmod: "fmod",
                       torch.logical_and: "__and__ __or__ __xor__ bitwise_xor"}.items():
    for _name in _names.split():
        for _op in _all_overloads(_name):
            FORMS.setdefault(_op, AtenForm(_canon))
_add("multiply.Tensor multiply.Scalar", AtenForm(torch.mul))
_add("subtract.Tensor subtract.Scalar", AtenForm(torch.sub))
_add("divide.Tensor divide.Scalar", AtenForm(torch.div))
# selections and norms (their rules: fxgrow.rules.reductions)
_add("topk.default", AtenForm(torch.topk, ("input", "k", "dim")))
_add("sort.default sort.stable", AtenForm(torch.sort, ("input", "dim")))
_add("argsort.default argsort.stable", AtenForm(torch.argsort, ("input", "dim")))
_add("max.dim", AtenForm(torch.max, ("input", "dim", "keepdim")))
_add("min.dim", AtenForm(torch.min, ("input", "dim", "keepdim")))
_add("max.default", AtenForm(torch.max))
_add("min.default", AtenForm(torch.min))
_add("histc.default", AtenForm(torch.histc, ("input", "bins", "min", "max")))
_add("baddbmm.default", AtenForm(torch.baddbmm, ("input", "batch1", "batch2")))
_add("addbmm.default", AtenForm(torch.addbmm, ("input", "batch1", "batch2")))
_add("tril.default tril_.default", AtenForm(torch.tril, ("input", "diagonal")))
_add("triu.default triu_.default", AtenForm(torch.triu, ("input", "diagonal")))
_add("flip.default", AtenForm(torch.flip, ("input", "dims")))
_add("diff.default", AtenForm(torch.diff, ("input", "n", "dim", "prepend", "append")))
