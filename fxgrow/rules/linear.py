"""Linear maps with weights: Linear, convolutions, embeddings (modules and functional).

A linear map's output dimension is a *fresh* space produced by its weight
rows (and bias); its input dimension is unified with its weight columns,
which consume the input's space.  Under Net2WiderNet new output neurons copy
rows, and every consumer divides the columns of all copies by the
replication count, so the sum over copies equals the old sum.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import RuleError
from ..ir.layout import Layout
from ..ir.roles import CONSUMER, FIXED, PASS, PRODUCER
from ..ir.values import TV, SizeOf, iter_sizes
from ..ops.access import with_arg
from ..ops.aten import canonical_target, overload
from ..ops.kinds import canonical_arg, is_op, rearranges
from .registry import RuleSet
from .reparam import reparametrized_weight

__all__ = ["RULES", "linear", "conv", "embedding", "module_weight", "functional_weight"]

RULES = RuleSet()

WeightFn = Callable[[str, int, str], Optional[Layout]]


def module_weight(ctx) -> WeightFn:
    def get(name: str, dim: int, role: str) -> Optional[Layout]:
        if not ctx.has_tensor(name):
            return None
        return ctx.param(name, dim, role)
    return get


def functional_weight(ctx, positions) -> WeightFn:
    """Weights given as arguments; ``positions`` maps a name to (index, kwarg).

    A parameter, or a parameter moved by views and casts, takes the role
    (:meth:`~fxgrow.analysis.context.RuleContext.weight`).  A tensor computed
    in the graph cannot be rescaled, but it need not be where it only acts
    per neuron, in place: a per-neuron tensor (role ``PASS``: a norm's weight,
    bias and statistics, ``(x - m) / sqrt(v + eps) * w + b``) and a bias
    (``F.linear(x, W, b) == F.linear(x, W) + b``) are elementwise terms, whose
    layout is returned for the caller to unify with the neurons they act on
    (what they are made of takes its roles through the ops that made it).  A
    computed bias also makes those neurons grow by uniform replication: the
    padding proofs (:mod:`fxgrow.analysis.padding`) read a layer's own
    parameters, not what its bias is computed from.  A computed matrix (rows
    and columns) is a RuleError.
    """
    def get(name: str, dim: int, role: str) -> Optional[Layout]:
        idx, kw = positions[name]
        a = ctx.arg(idx, kw, None)
        if a is None:
            return None
        lay = ctx.weight(a, dim, role)
        if lay is None:  # a weight norm: the effective weight grows, v and g are re-derived
            lay = reparametrized_weight(ctx, a, dim, role)
        if lay is not None:
            return lay
        if name == "bias" or role == PASS:
            lay = ctx.tensor(a).dims[dim]
            if role != PASS:
                ctx.uniform(lay, f"a bias computed in the graph (`{a.name}`) is added here, "
                                 "so these neurons grow by uniform replication")
            return lay
        raise RuleError(_computed(ctx, a, kw))
    return get


#: norms whose statistics, taken over a weight, a rescaled copy would change
_STANDARDISING = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm}
#: where each takes its per-channel gain
_GAIN_AT = {F.batch_norm: 3, F.instance_norm: 3, F.layer_norm: 2, F.group_norm: 2}


def _computed(ctx, a: Any, kw: str) -> str:
    """Why a weight computed in the graph cannot be rescaled, in the user's terms: a
    weight standardised by a norm over a parameter (weight-standardised convs, NF-Nets)
    is named as such, anything else by the node that computes it."""
    if not isinstance(a, fx.Node):
        return f"`{kw}` is computed in the graph, so it cannot be rescaled"
    gm = ctx.node.graph.owning_module
    n = a
    for _ in range(8):  # back through views and casts, and a tuple norm's first output
        if n.op == "call_function" and n.target is operator.getitem and n.args \
                and isinstance(n.args[0], fx.Node) and n.args[1] == 0:
            n = n.args[0]
        elif rearranges(gm, n) and n.args and isinstance(n.args[0], fx.Node) \
                and not is_op(n, _STANDARDISING):
            n = n.args[0]
        else:
            break
    if is_op(n, _STANDARDISING) and n.args and isinstance(n.args[0], fx.Node):
        src = n.args[0]
        while src.op != "get_attr" and rearranges(gm, src) and src.args \
                and isinstance(src.args[0], fx.Node):
            src = src.args[0]
        if src.op == "get_attr":
            layer = src.target.rpartition(".")[0] or src.target
            gained = canonical_arg(n, _GAIN_AT.get(canonical_target(n)), "weight",
                                   None) is not None
            return (f"the {kw} of `{layer}` is standardised over its input channels "
                    f"(node `{n.name}`): copies divided by their count change that "
                    "standardisation, so its channels cannot grow by copying"
                    + ("; with the per-channel gain applied after it, re-deriving the "
                       "gain from the grown weight would be exact, which fxgrow does not "
                       "do yet" if gained else ""))
    return f"`{kw}` is computed in the graph (node `{a.name}`), so it cannot be rescaled"


# -- Linear ---------------------------------------------------------------------
def _linear(ctx, x: TV, weight: WeightFn) -> TV:
    out = weight("weight", 0, PRODUCER)
    inp = weight("weight", 1, CONSUMER)
    ctx.unify(x.dims[-1], inp)
    bias = weight("bias", 0, PRODUCER)
    if bias is not None:
        ctx.unify(bias, out)
    return TV(x.dims[:-1] + (out,))


@RULES.rule(nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
def linear(ctx) -> TV:
    """``nn.Linear``: fresh output space, input unified with the weight columns."""
    x = ctx.tensor(ctx.arg(0, "input"))
    y = _linear(ctx, x, module_weight(ctx))
    ctx.module_attr("in_features", ctx.size(x.dims[-1]))
    ctx.module_attr("out_features", ctx.size(y.dims[-1]))
    return y


@RULES.rule(F.linear, torch.nn.functional.linear)
def linear_functional(ctx) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    return _linear(ctx, x, functional_weight(ctx, {"weight": (1, "weight"), "bias": (2, "bias")}))


# -- Convolutions ---------------------------------------------------------------
def _conv_channels(ctx, cin: Layout, groups: int, weight: WeightFn, cout: int,
                   transposed: bool) -> Layout:
    """Output channel layout of a (grouped) convolution.

    * ``groups == 1``: fresh output space; input unified with weight dim 1.
    * depthwise (one input channel per group): the groups *are* the input
      channels, so the output is ``Prod(C_in, M)`` for channel multiplier
      ``M`` (``C_in`` itself when ``M == 1``), and ``groups`` follows ``C_in``.
    * otherwise the input is refined into ``Prod(G, P_in)`` with the group
      count ``G`` fixed and each group widened alike; the output is
      ``Prod(G, P_out)``.
    """
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    if groups == 1:
        out = weight("weight", out_dim, PRODUCER)
        ctx.unify(cin, weight("weight", in_dim, CONSUMER))
    elif transposed:
        # the weight is [C_in, C_out / groups, *k]: its rows are the input channels of
        # every group, its columns one group's outputs, shared by all groups
        if cin.size == groups:  # depthwise: input channel c feeds outputs (c, 0..M-1) only
            mult = cout // groups
            ctx.unify(weight("weight", 0, PASS), cin)
            out = cin if mult == 1 else ctx.prod([cin, weight("weight", 1, PRODUCER)])
        else:
            g = ctx.table.fresh(groups, status=FIXED,
                                reason=f"the group count of grouped conv `{ctx.node.name}`")
            ctx.unify(cin, ctx.prod([g, ctx.fresh(cin.size // groups)]))
            ctx.unify(weight("weight", 0, CONSUMER), cin)
            out = ctx.prod([g, weight("weight", 1, PRODUCER)])
    elif cin.size == groups:
        mult = cout // groups
        if mult == 1:
            out = cin
            ctx.unify(weight("weight", 0, PASS), out)
        else:
            out = ctx.prod([cin, ctx.fresh(mult)])
            ctx.unify(weight("weight", 0, PRODUCER), out)
    else:
        g = ctx.table.fresh(groups, status=FIXED,
                            reason=f"the group count of grouped conv `{ctx.node.name}`")
        p_in = ctx.fresh(cin.size // groups)
        ctx.unify(cin, ctx.prod([g, p_in]))
        ctx.unify(weight("weight", 1, CONSUMER), p_in)
        out = ctx.prod([g, ctx.fresh(cout // groups)])
        ctx.unify(weight("weight", 0, PRODUCER), out)
    bias = weight("bias", 0, PASS if (groups > 1 and cin.size == groups and cout == groups)
                  else PRODUCER)
    if bias is not None:
        ctx.unify(bias, out)
    return out


def _per_dim(v: Any, nd: int) -> Tuple[Any, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _pointwise(kernel: Sequence[int], stride: Any, padding: Any, nd: int) -> Tuple[bool, ...]:
    """Along which spatial dims the convolution is the identity on positions (kernel 1,
    stride 1, no padding): a dim there may hold neurons, which then pass through."""
    if isinstance(padding, str):
        padding = 0 if padding in ("valid", "same") else None
    return tuple(k == 1 and s == 1 and p == 0 for k, s, p in
                 zip(kernel, _per_dim(stride, nd), _per_dim(padding, nd)))


def _conv(ctx, nd: int, groups: int, weight: WeightFn, transposed: bool,
          pointwise: Sequence[bool] = ()) -> TV:
    x = ctx.tensor(ctx.arg(0, "input"))
    out_shape = ctx.out_shape
    c = len(x.dims) - nd - 1
    if c < 0:
        raise RuleError("input has too few dims for the convolution")
    cin = ctx.norm(x.dims[c])
    pointwise = tuple(pointwise) or (False,) * nd
    spatial = []
    for d, n, through in zip(x.dims[c + 1:], out_shape[c + 1:], pointwise):
        if through:  # a 1-wide kernel at stride 1 reads each position alone
            spatial.append(d)
        else:  # the kernel slides along it, mixing positions
            ctx.mixes(d, "a convolution's kernel mixes positions along a dim that holds neurons")
            spatial.append(ctx.free(n))
    out = _conv_channels(ctx, cin, groups, weight, out_shape[c], transposed)
    return TV(x.dims[:c] + (out,) + tuple(spatial))


_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3,
         nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2, nn.ConvTranspose3d: 3}


@RULES.rule(*_CONV)
def conv(ctx) -> TV:
    """``nn.ConvNd`` / ``nn.ConvTransposeNd`` (see :func:`_conv_channels`)."""
    m = ctx.module
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    nd = len(m.kernel_size)  # a subclass kept as a leaf is read like its base
    x = ctx.tensor(ctx.arg(0, "input"))
    cin = x.dims[len(x.dims) - nd - 1]
    through = _pointwise(m.kernel_size, m.stride, m.padding, nd) if not transposed else ()
    y = _conv(ctx, nd, m.groups, module_weight(ctx), transposed, through)
    cout = y.dims[len(y.dims) - nd - 1]
    ctx.module_attr("in_channels", ctx.size(cin))
    ctx.module_attr("out_channels", ctx.size(cout))
    if m.groups > 1 and m.groups == ctx.norm(cin).size:  # depthwise: groups follow C_in
        ctx.module_attr("groups", ctx.size(cin))
    return y


def _concrete(v: Any) -> Any:
    """An argument's value with every int read from a size replaced by that int."""
    if isinstance(v, SizeOf):
        return v.value
    if isinstance(v, (tuple, list)):
        return type(v)(_concrete(e) for e in v)
    return v


_CONV_ARGS = ((3, "stride"), (4, "padding"), (5, "dilation"), (6, "groups"))
#: ``F.conv_transposeNd(input, weight, bias, stride, padding, output_padding, groups,
#: dilation)``, and the ATen overloads of the same signature
_CONV_T_ARGS = ((3, "stride"), (4, "padding"), (5, "output_padding"), (6, "groups"),
                (7, "dilation"))


def _conv_functional(nd: int, transposed: bool = False):
    conv_args = _CONV_T_ARGS if transposed else _CONV_ARGS

    def rule(ctx) -> TV:
        """``F.convNd`` / ``F.conv_transposeNd``: the weight (a parameter, or one moved by
        views and casts) as in :func:`_conv_channels`.  Literal arguments read from sizes
        (``groups=w.shape[0]``) become literals once what they read grows: a depthwise
        ``groups`` the new ``C_in``, stride, padding and dilation their old values."""
        raw = {name: ctx.arg(i, name, None) for i, name in conv_args}
        value = {name: ctx.value(a) for name, a in raw.items()}
        read = {name: tuple(l for sz in iter_sizes(v) for l in sz.layouts)
                for name, v in value.items()}
        groups = _concrete(value["groups"]) if raw["groups"] is not None else 1
        if not isinstance(groups, int) or isinstance(groups, bool):
            raise RuleError("non-literal groups")
        weight = functional_weight(ctx, {"weight": (1, "weight"), "bias": (2, "bias")})
        x = ctx.tensor(ctx.arg(0, "input"))
        cin = x.dims[len(x.dims) - nd - 1]
        depthwise = groups > 1 and ctx.norm(cin).size == groups
        w = ctx.spec(ctx.arg(1, "weight"))
        through = _pointwise(tuple(w.shape[2:]), _concrete(value["stride"] or 1),
                             _concrete(value["padding"] or 0), nd) \
            if w is not None and not transposed else ()
        y = _conv(ctx, nd, groups, weight, transposed, through)
        args, kwargs = ctx.node.args, ctx.node.kwargs
        for i, name in conv_args:
            if name == "groups" and depthwise:
                # the group count is the channel count, so it follows C_in
                new = ctx.if_grows((cin,) + read[name], ctx.size(cin), raw[name]) \
                    if read[name] else ctx.size(cin)
            elif read[name]:  # keep what the sizes gave, whatever grows
                new = ctx.if_grows(read[name], _concrete(value[name]), raw[name])
            else:
                continue
            args, kwargs = with_arg(args, kwargs, i, name, new)
        if (args, kwargs) != (ctx.node.args, ctx.node.kwargs):
            ctx.rewrite(args, kwargs)
        return y
    rule.__name__ = f"conv{'_transpose' if transposed else ''}{nd}d_functional"
    return rule


RULES.rule(F.conv1d, accepts_sizes=True)(_conv_functional(1))
RULES.rule(F.conv2d, accepts_sizes=True)(_conv_functional(2))
RULES.rule(F.conv3d, accepts_sizes=True)(_conv_functional(3))
# the ATen overloads share F.conv_transposeNd's signature, so one rule reads both
for _nd, _fn, _aten in ((1, F.conv_transpose1d, "conv_transpose1d.default"),
                        (2, F.conv_transpose2d, "conv_transpose2d.input"),
                        (3, F.conv_transpose3d, "conv_transpose3d.input")):
    RULES.rule(_fn, *(op for op in (overload(_aten),) if op is not None),
               accepts_sizes=True)(_conv_functional(_nd, transposed=True))


# -- Embedding ------------------------------------------------------------------
def _embedding(ctx, idx: TV, weight: WeightFn, max_norm) -> TV:
    vocab = weight("weight", 0, PASS)
    ctx.fix(vocab, "embedding vocabulary (indexed by token ids)")
    out = weight("weight", 1, PRODUCER)
    if max_norm is not None:
        # the rows it reads are renormalised to a norm over this dim, which copies change
        ctx.block(out, "max_norm renormalises each embedding row over this dimension")
    return TV(idx.dims + (out,))


@RULES.rule(nn.Embedding)
def embedding(ctx) -> TV:
    """Embedding: the table's columns produce a fresh space; its rows are fixed."""
    idx = ctx.tensor(ctx.arg(0, "input"))
    y = _embedding(ctx, idx, module_weight(ctx), ctx.module.max_norm)
    ctx.module_attr("embedding_dim", ctx.size(y.dims[-1]))
    return y


@RULES.rule(F.embedding)
def embedding_functional(ctx) -> TV:
    idx = ctx.tensor(ctx.arg(0, "input"))
    return _embedding(ctx, idx, functional_weight(ctx, {"weight": (1, "weight")}),
                      ctx.arg(3, "max_norm", None))
