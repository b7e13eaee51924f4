"""The op vocabulary: what kind of computation each op is, in one table.

The rules say what each op does to neuron spaces (:mod:`fxgrow.rules`).  A few
passes need a coarser question answered about a node -- does it only *move*
values, *add* them, *scale* them, is it a linear *layer*, a norm, a
BatchNorm, an activation -- to prove something along a path:

* mean- and zero-padding (:mod:`fxgrow.analysis.padding`): new neurons stay
  the mean of the old ones (or zero) along an affine (linear) path;
* contraction rescaling (:mod:`fxgrow.analysis.contraction`): dividing a
  producer's rows by the counts divides what reaches the product;
* tied weights (:mod:`fxgrow.analysis.ties`): a per-neuron gain before a
  consumer;
* deepening (:mod:`fxgrow.ops.layers`, :mod:`fxgrow.ops.activations`): where a
  layer ends, which BatchNorm to mirror, which activation is idempotent.

All of those read this module, so an op is classified once.  ``torch.export``
graphs are read through :func:`fxgrow.ops.aten.canonical_target`, so
``aten.view.default`` is a move like ``Tensor.view``.

Examples
--------
>>> import torch
>>> from torch import fx
>>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Dropout(), torch.nn.ReLU()))
>>> [kind(gm, n) for n in gm.graph.nodes if n.op == "call_module"]
['move', None]
"""

from __future__ import annotations

import operator
from typing import Any, Collection, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import meta
from ..errors import RuleError
from .access import MISSING, node_arg
from .aten import FORMS, bind, canonical_target, to_canonical

__all__ = ["kind", "node_inputs", "is_op", "norm_kind", "value_users", "reads_values",
           "NO_VALUE_RULES", "default_rms_eps", "canonical_arg", "gain_operand", "CASTS", "MOVE",
           "ADD", "SCALE", "DIVIDE",
           "MUL", "SUM", "ACCUMULATE", "ZEROS", "POW", "SQUARE", "MEAN", "RSQRT", "LINEAR_LAYERS", "LINEAR_MODULES",
           "MOVE_MODULES", "PASSTHROUGH_MODULES", "CONV_MODULES", "BN_MODULES",
           "CONV_FUNCTIONS", "NORM_MODULES", "IDEMPOTENT_ACTIVATIONS", "OTHER_ACTIVATIONS",
           "STOCHASTIC_MODULES", "STOCHASTIC_FUNCTIONS", "stochastic_nodes", "REARRANGE",
           "rearranges", "METADATA", "reads_metadata"]

# -- arithmetic ---------------------------------------------------------------------
#: a sum of two values (``sub`` too: a difference is a sum of a negated value)
SUM = {operator.add, torch.add, "add"}
ADD = SUM | {operator.sub, operator.iadd, operator.isub, torch.sub, "sub", "add_", "sub_"}
#: a product of two values
MUL = {operator.mul, torch.mul, "mul"}
SCALE = MUL | {operator.imul, "mul_", operator.neg, torch.neg, "neg", torch.outer, torch.ger,
               "outer", "ger"}
#: writes that add ``source`` into positions of ``input`` (``input, dim, index, source``):
#: linear in ``input`` and ``source`` together (the MoE combine into zeros)
ACCUMULATE = {torch.index_add, "index_add", "index_add_", torch.scatter_add, "scatter_add",
              "scatter_add_"}
#: tensors of zeros (zero divided by any count is zero)
ZEROS = {torch.zeros, torch.zeros_like, "new_zeros"}
DIVIDE = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
POW = {torch.pow, operator.pow, "pow"}
SQUARE = {torch.square, "square"}
MEAN = {torch.mean, "mean"}
RSQRT = {torch.rsqrt, "rsqrt"}

#: casts: moves only between floating dtypes (see :func:`kind`)
CASTS = {"to", "float", "double", "half", "bfloat16", "type_as", "type"}

#: ops that only move values: views, transposes, splits, copies (expand, repeat,
#: tile), casts, dropout (the identity in eval mode, and a per-element mask that
#: copies keep in training)
MOVE = {"contiguous", "clone", "to", "float", "double", "half", "bfloat16", "type_as",
        "permute", "transpose", "view", "reshape", "unsqueeze", "squeeze", "expand",
        "expand_as", "flatten", "unflatten", "split", "chunk", "unbind", "narrow", "select",
        "repeat_interleave", "repeat", "tile", torch.tile, "detach", "movedim", "swapaxes", "swapdims", "view_as",
        "reshape_as", torch.movedim, torch.swapaxes, torch.swapdims, torch.unflatten,
        torch.permute, torch.transpose, torch.reshape, torch.unsqueeze, torch.squeeze,
        torch.flatten, torch.split, torch.chunk, torch.unbind, torch.narrow, torch.select,
        torch.repeat_interleave, operator.getitem, torch.cat, torch.concat, torch.stack,
        F.dropout, torch.clone, torch.detach}

# -- layers -------------------------------------------------------------------------
#: functions whose output neuron ``i`` is linear in their producer rows ``i``
#: (weight row and bias entry): dividing those rows divides the output neuron
LINEAR_LAYERS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.embedding, torch.matmul,
                 operator.matmul, torch.mm, torch.bmm, torch.addmm, "matmul", "mm", "bmm",
                 "__matmul__"}
CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)
CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR_MODULES = (nn.Linear,) + CONV_MODULES + (nn.Embedding,)
BN_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: modules that compute the identity in eval mode
PASSTHROUGH_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
MOVE_MODULES = PASSTHROUGH_MODULES + (nn.Flatten, nn.Unflatten)
#: norms over the last dims whose affine weight (and bias) apply last, per neuron:
#: ``"layer"`` keeps a mean (mean-padding), ``"rms"`` a mean square (zero-padding)
NORM_MODULES = {nn.LayerNorm: "layer", **({nn.RMSNorm: "rms"} if hasattr(nn, "RMSNorm") else {})}

# -- random masks -------------------------------------------------------------------
#: modules drawing a random mask in training mode (copies of a neuron draw different ones)
STOCHASTIC_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                      nn.FeatureAlphaDropout)
#: functions doing the same: ``{function: (index of training, its default)}``
STOCHASTIC_FUNCTIONS = {F.dropout: (2, True), F.dropout1d: (2, True), F.dropout2d: (2, True),
                        F.dropout3d: (2, True), F.alpha_dropout: (2, False),
                        F.feature_alpha_dropout: (2, False)}
#: stochastic depth (torchvision), by qualified name: module, and function with its training
_STOCHASTIC_DEPTH = ("torchvision.ops.stochastic_depth.StochasticDepth",
                     "torchvision.ops.stochastic_depth.stochastic_depth")


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


def stochastic_nodes(model: nn.Module) -> List[str]:
    """Modules (and, in a ``GraphModule``, function calls) that draw random masks
    in training mode -- dropout, stochastic depth -- by name.

    >>> stochastic_nodes(nn.Sequential(nn.Linear(2, 2), nn.Dropout()))
    ['1']
    """
    found = [name for name, m in model.named_modules()
             if m.training and getattr(m, "p", 1) and (
                 isinstance(m, STOCHASTIC_MODULES) or _qualname(type(m)) == _STOCHASTIC_DEPTH[0])]
    graph = getattr(model, "graph", None)
    for node in graph.nodes if isinstance(graph, fx.Graph) else ():
        if node.op != "call_function":
            continue
        if _qualname(node.target) == _STOCHASTIC_DEPTH[1]:
            index, default = 3, True
        elif is_op(node, STOCHASTIC_FUNCTIONS):
            target = canonical_target(node)
            index, default = STOCHASTIC_FUNCTIONS[target]
        else:
            continue
        training = node.args[index] if len(node.args) > index else \
            node.kwargs.get("training", node.kwargs.get("train", default))
        p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.5)
        if training is not False and p != 0:
            found.append(node.name)
    return found


# -- activations --------------------------------------------------------------------
#: module types whose forward is an idempotent activation (φ(φ(z)) = φ(z))
IDEMPOTENT_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
#: other elementwise activations (fine inside a residual block)
OTHER_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SELU,
                     nn.CELU, nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.PReLU,
                     nn.Softsign, nn.Tanhshrink, nn.LogSigmoid)


def is_op(node: fx.Node, ops: Collection[Any]) -> bool:
    """Whether ``node`` calls one of ``ops`` (a function, method name or ATen form of one)."""
    if node.op not in ("call_function", "call_method"):
        return False
    try:
        return canonical_target(node) in ops
    except TypeError:  # an unhashable target
        return False


def norm_kind(module: Any) -> Optional[str]:
    """``"layer"`` or ``"rms"`` for an ``nn.LayerNorm`` / ``nn.RMSNorm`` (or a subclass
    that keeps its ``forward``: one that overrides it may compute something else), else None."""
    for cls, name in NORM_MODULES.items():
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return name
    return None


def default_rms_eps(dtype: torch.dtype) -> float:
    """The ``eps`` ``rms_norm`` (and ``nn.RMSNorm(eps=None)``) uses: the machine epsilon
    of the type it computes in, float32 for float16 and bfloat16 inputs.

    >>> default_rms_eps(torch.bfloat16) == torch.finfo(torch.float32).eps
    True
    """
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    return torch.finfo(dtype).eps


def _real_valued(node: Any) -> bool:
    spec = meta.shape(node) if isinstance(node, fx.Node) else None
    dtype = getattr(spec, "dtype", None)
    return isinstance(dtype, torch.dtype) and (dtype.is_floating_point or dtype.is_complex)


def _cast_moves(node: fx.Node) -> bool:
    """A cast moves values only between floating (or complex) dtypes: to an integer
    or bool dtype it truncates, which is not linear."""
    first = node.args[0] if node.args else None
    return _real_valued(node) and _real_valued(first)


def kind(gm: fx.GraphModule, node: fx.Node) -> Optional[str]:
    """``"move"``, ``"add"``, ``"scale"``, ``"divide"``, ``"layer"`` or None.

    ``"layer"`` is a linear layer (:data:`LINEAR_LAYERS`); for ``"scale"`` and
    ``"divide"`` the caller still checks which operand carries what.  A cast
    (:data:`CASTS`) is a move only between real-valued dtypes.
    """
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, MOVE_MODULES):
            return "move"
        return "layer" if isinstance(mod, LINEAR_MODULES) else None
    if node.op not in ("call_function", "call_method"):
        return None
    if str(canonical_target(node)) == "aten.addmm.default":
        return "layer"
    if is_op(node, CASTS) and not _cast_moves(node):
        return None
    for name, ops in (("move", MOVE), ("add", ADD), ("scale", SCALE), ("divide", DIVIDE),
                      ("layer", LINEAR_LAYERS)):
        if is_op(node, ops):
            return name
    return None


#: rules of nodes that compute nothing from their inputs' values: export's asserts, guards
#: and range constraints, its ``_assert_tensor_metadata`` (added for ``.to(dtype)``), and
#: grad-mode / autocast switches (see :mod:`fxgrow.rules.aten`, :mod:`fxgrow.rules.control`)
NO_VALUE_RULES = frozenset({"no_tensor", "export_guards", "assert_tensor_metadata", "switch"})


def reads_values(node: fx.Node) -> bool:
    """Whether ``node`` computes something from the values it reads (an assert that
    checks a dtype, a guard or a grad-mode switch does not).  Read from the rule the
    analysis gave the node, so it is meaningful once the walk has run."""
    return meta.rule(node, None) not in NO_VALUE_RULES


def value_users(node: fx.Node) -> List[fx.Node]:
    """The users of ``node`` that use its value (:func:`reads_values`).

    Proofs that count uses (a weight read once, a chain step used once) or walk
    the readers of a value count these: ``torch.export`` adds an
    ``_assert_tensor_metadata`` after every ``.to(dtype)``, which checks the
    tensor's metadata and computes nothing, so it is no second use.

    >>> from torch import fx
    >>> g = fx.Graph(); x = g.placeholder("x"); y = g.call_function(torch.relu, (x,))
    >>> [u.name for u in value_users(x)]
    ['relu']
    """
    return [u for u in node.users if reads_values(u)]


class _Call:
    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.args, self.kwargs = args, kwargs


def canonical_arg(node: fx.Node, index: Optional[int], name: Optional[str] = None,
                  default: Any = MISSING) -> Any:
    """:func:`~fxgrow.ops.access.node_arg` in the canonical op's terms: an ATen node's
    arguments are bound by name first (``aten.batch_norm(input, weight, bias, ...)``
    reads as ``F.batch_norm(input, running_mean, running_var, weight, bias, ...)``)."""
    form = FORMS.get(node.target) if node.op == "call_function" else None
    if form is not None and form.adapt is None:
        try:
            node = _Call(*to_canonical(form, bind(node.target, node.args, node.kwargs)))
        except RuleError:
            pass
    return node_arg(node, index, name, default)


def _number(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def gain_operand(node: fx.Node) -> Optional[Tuple[fx.Node, float]]:
    """``(attr, c)`` if ``node`` computes ``c + attr`` (``c`` a literal, 0 if none) from a
    tensor attribute ``attr`` through floating casts, each step used only by the next.

    What a per-neuron gain is made of: ``w``, ``w.float()``, Gemma's ``1.0 + w.float()``.
    """
    offset = 0.0
    if is_op(node, SUM) and not node.kwargs and len(node.args) == 2:
        nodes = [a for a in node.args if isinstance(a, fx.Node)]
        consts = [a for a in node.args if not isinstance(a, fx.Node)]
        if len(nodes) != 1 or len(consts) != 1 or not _number(consts[0]):
            return None  # (an `alpha` keyword would scale the tensor)
        offset, node = float(consts[0]), nodes[0]
        if len(value_users(node)) != 1:
            return None
    while node.op != "get_attr":
        if not (is_op(node, CASTS) and _cast_moves(node)) or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
        if len(value_users(node)) != 1:
            return None
    return node, offset


def node_inputs(node: fx.Node) -> List[fx.Node]:
    """Every node among ``node``'s arguments, nested ones included."""
    flat: List[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), flat.append)
    return flat


# -- one-to-one rearrangements (cov-weights) ----------------------------------------
#: ops whose output holds each input value once, unchanged: views, transposes,
#: (un)squeezes, copies -- and real-to-real casts (:data:`CASTS`, see :func:`kind`).
#: A weight reached from a parameter through them is the parameter, moved: a rule
#: can claim the parameter's dims (:meth:`fxgrow.analysis.context.RuleContext.weight`).
#: Not ``expand``/``repeat`` (copies), ``split``/``select`` (parts) or ``cat``.
REARRANGE = {"view", "reshape", "view_as", "reshape_as", "permute", "transpose", "t",
             "unsqueeze", "squeeze", "flatten", "unflatten", "contiguous", "clone", "detach",
             "movedim", "swapaxes", "swapdims", torch.reshape, torch.permute, torch.transpose,
             torch.t, torch.unsqueeze, torch.squeeze, torch.flatten, torch.unflatten,
             torch.movedim, torch.swapaxes, torch.swapdims, torch.clone, torch.detach}


def rearranges(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` only rearranges (or casts between real dtypes) the values of its
    first argument: :data:`REARRANGE`, a real cast, or ``x.T`` / ``x.mT``.

    >>> gm = fx.symbolic_trace(lambda x: x.t().T.view(-1).expand(2, -1) * 2)
    >>> [rearranges(gm, n) for n in gm.graph.nodes if n.op != "placeholder"][:-1]
    [True, True, True, False, False]
    """
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) == 2 and node.args[1] in ("T", "mT")
    if is_op(node, CASTS):
        return kind(gm, node) == "move"
    return is_op(node, REARRANGE)


#: ops that read a tensor's metadata (sizes, rank, dtype, device), never its values
METADATA = {"size", "dim", "ndimension", "numel", torch.numel}
_METADATA_ATTRS = ("shape", "dtype", "device", "ndim", "is_cuda", "requires_grad")
_ASSERT_METADATA = getattr(getattr(torch.ops.aten, "_assert_tensor_metadata", None), "default", None)


def reads_metadata(node: fx.Node) -> bool:
    """Whether ``node`` reads only the metadata of its first argument (``x.shape``,
    ``x.size(1)``, ``x.dtype``, export's ``_assert_tensor_metadata``): such a use of a
    parameter is no use of its values."""
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) == 2 and node.args[1] in _METADATA_ATTRS
    if node.op == "call_function" and _ASSERT_METADATA is not None \
            and node.target is _ASSERT_METADATA:
        return True
    return is_op(node, METADATA)
