"""Elementwise ops: activations, arithmetic, dropout, casts.

Widening copies neurons, and an elementwise op applied to copies gives
copies, so every aligned neuron dimension passes through.  With several
tensor operands (``x + y``, an SE gate ``x * s``) the dims are aligned from
the right as broadcasting does; dims of equal size index the same neurons and
are unified (a residual add joins the spaces of its branches); a size-1 dim
broadcast against a larger one is fixed, since growing it would change the
broadcast.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import RuleError
from ..ir.roles import PASS
from ..ir.values import TV, SizeOf, iter_sizes
from .common import broadcast, dim_index
from .registry import RuleSet
from .sizes import COMPARISONS, compare

__all__ = ["RULES", "elementwise", "same_as_input", "arithmetic", "glu"]

RULES = RuleSet()


def _tensor_operands(ctx):
    out = []
    for a in list(ctx.node.args) + list(ctx.node.kwargs.values()):
        if isinstance(a, fx.Node):
            v = ctx.value(a)
            if isinstance(v, TV):
                out.append((v, ctx.spec(a).shape))
    return out


def elementwise(ctx) -> TV:
    """Broadcasting elementwise op over every tensor argument."""
    operands = _tensor_operands(ctx)
    return TV(tuple(broadcast(ctx, [tv.dims for tv, _ in operands],
                              [shape for _, shape in operands], ctx.out_shape)))


def same_as_input(ctx) -> TV:
    """The output indexes exactly what the first argument does (casts, copies)."""
    x = ctx.tensor(ctx.arg(0, "input"))
    if len(x.dims) != len(ctx.out_shape):
        raise RuleError("output rank differs from input rank")
    return x


def arithmetic(ctx):
    """Python operators: tensors broadcast; ints read from sizes stay tracked."""
    values = [ctx.value(a) for a in list(ctx.node.args) + list(ctx.node.kwargs.values())]
    if any(isinstance(v, TV) for v in values):
        for v in values:
            for sz in iter_sizes(v):
                for lay in sz.layouts:
                    ctx.block(lay, "a neuron count read by `size` scales a tensor, "
                                   "and would change with the width")
        return elementwise(ctx)
    sizes = tuple(l for v in values for sz in iter_sizes(v) for l in sz.layouts)
    out = ctx.out_spec
    if sizes and isinstance(out, int) and not isinstance(out, bool):
        return SizeOf(sizes, out)
    if sizes and ctx.node.target in COMPARISONS:  # a model checking its own widths
        return compare(ctx)
    if sizes:  # a float computed from neuron counts
        for lay in sizes:
            ctx.block(lay, f"a neuron count read by `size` flows into {ctx.node.target.__name__}")
    return out


_ACT_MODULES = [
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish, nn.Softsign,
    nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.Identity,
]
_DROPOUT_MODULES = [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                    nn.FeatureAlphaDropout]
_DROPOUT_FUNCTIONS = [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                      F.feature_alpha_dropout]
_FUNCTIONS = [
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardswish, F.hardsigmoid, F.hardtanh,
    F.elu, F.selu, F.celu, F.softplus, F.softsign, F.logsigmoid, F.tanhshrink, F.threshold,
    F.hardshrink, F.softshrink,
    torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.abs, torch.neg, torch.square,
    torch.clamp, torch.clip, torch.pow, torch.sin, torch.cos, torch.erf, torch.reciprocal,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.true_divide, torch.maximum, torch.minimum, torch.where, torch.lerp,
    torch.nan_to_num, torch.sign, torch.floor, torch.ceil, torch.round, torch.atan,
    torch.asin, torch.acos, torch.sinh, torch.cosh, torch.asinh, torch.atanh, torch.expm1,
    torch.log1p, torch.log2, torch.log10, torch.exp2, torch.sigmoid_, torch.special.expit,
    torch.special.erf, torch.erfc, torch.logit, torch.frac, torch.trunc, torch.fmod,
    torch.remainder, torch.atan2, torch.hypot, torch.float_power, torch.logaddexp,
    torch.xlogy, torch.heaviside, torch.clamp_min, torch.clamp_max, torch.addcmul,
    torch.addcdiv,
]
_METHODS = [
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "log", "sqrt", "rsqrt",
    "abs", "neg", "square", "clamp", "clamp_", "clamp_min", "clamp_max", "clip", "pow",
    "reciprocal", "sin", "cos", "erf", "add", "add_", "sub", "sub_", "mul", "mul_", "div",
    "div_", "masked_fill", "masked_fill_", "maximum", "minimum", "where", "lerp", "sign",
    "floor", "ceil", "round", "atan", "sinh", "cosh", "expm1", "log1p", "trunc", "frac",
    "erfc", "square_", "exp_", "abs_", "neg_", "tanh_", "pow_", "sqrt_",
]
_CASTS = [
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type",
    "type_as", "cpu", "cuda", "requires_grad_",
]

RULES.rule(*_ACT_MODULES, *_FUNCTIONS, *_METHODS)(elementwise)
RULES.rule(*_CASTS, torch.clone, torch.detach, name="same_as_input")(same_as_input)
# Stochastic depth / drop path scales whole samples (or the whole batch) by one random
# draw whose shape has no neuron dim: copies stay copies, in training mode too.  As
# modules they stay leaves (they have a rule), so the grown graph follows train()/eval().
RULES.rule("torchvision.ops.stochastic_depth.stochastic_depth",
           "torchvision.ops.stochastic_depth.StochasticDepth", "timm.layers.drop.DropPath",
           name="stochastic_depth")(elementwise)
RULES.rule(operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
              operator.mod, operator.neg, operator.pow, operator.iadd, operator.imul,
              operator.isub, operator.itruediv, math.sqrt,
              # export's symbolic ints: `max(0, n - seq)` of a slice bound
              torch.sym_max, torch.sym_min,
              # comparisons and logic: elementwise on tensors (masks), plain on ints
              operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
              operator.and_, operator.or_, operator.invert, operator.not_,
              accepts_sizes=True)(arithmetic)
RULES.rule(torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge, torch.logical_and,
              torch.logical_or, torch.logical_not, torch.logical_xor, torch.isnan, torch.isinf,
              torch.isfinite, "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or",
              "logical_not", "bool", "long", "int", name="comparison")(elementwise)


@RULES.rule(*_DROPOUT_MODULES, *_DROPOUT_FUNCTIONS, "dropout", name="dropout")
def dropout(ctx) -> TV:
    """Dropout: the identity in eval mode, so copies stay copies.

    In training mode it draws a mask per neuron (or per channel), and copies of
    a neuron get different masks: the grown model would not compute the same
    function, so the dims it masks are blocked (call ``model.eval()`` first).
    """
    if ctx.module is not None:
        active = ctx.module.training and ctx.module.p > 0
    else:
        p, training = ctx.arg(1, "p", 0.5), ctx.arg(2, "training", True)
        active = not (isinstance(training, bool) and not training) and p != 0
    out = elementwise(ctx)
    if active:
        for d in out.dims:
            ctx.mixes(d, "dropout in training mode draws a mask per neuron (call model.eval() "
                         "before growing)")
    return out


@RULES.rule(torch.zeros_like, torch.ones_like, torch.full_like,
            name="constant_like")
def constant_like(ctx) -> TV:
    """``zeros_like(x)``/``ones_like``/``full_like``: a constant laid out like ``x``.

    Copies of a constant are the same constant, so the layouts pass; the value
    carries no neuron's signal, which the proofs of :mod:`fxgrow.ops.kinds` see
    (it is no move of ``x``).
    """
    return same_as_input(ctx)


@RULES.rule(nn.PReLU)
def prelu(ctx) -> TV:
    """PReLU: one slope per channel (dim 1) is a pass-through of that channel."""
    out = elementwise(ctx)
    if ctx.module.weight.numel() > 1:
        ctx.unify(ctx.param("weight", 0, PASS), out.dims[1])
        ctx.module_attr("num_parameters", ctx.size(out.dims[1]))
    return out


@RULES.rule(F.glu, nn.GLU)
def glu(ctx) -> TV:
    """``glu(x, dim)``: ``a * sigmoid(b)`` of the two halves of ``dim``.

    The halves are multiplied neuron by neuron, so they are one space (like
    ``chunk(2)`` then a product): grown alike, they stay halves of the grown
    dim, and each output neuron's copies are products of copies.
    """
    x = ctx.tensor(ctx.arg(0, "input"))
    d = dim_index(ctx.module.dim if ctx.module is not None else ctx.arg(1, "dim", -1), x.ndim)
    n = ctx.spec(ctx.arg(0, "input")).shape[d]
    if n % 2:
        raise RuleError("glu of an odd-sized dimension")
    a, b = ctx.split_at(x.dims[d], [n // 2])
    ctx.unify(a, b)
    dims = list(x.dims)
    dims[d] = a
    return TV(tuple(dims))
