"""The ops the identity proof reads, by name, and how in-place writes reach a value.

Names are normalised across torch.fx and torch.export spellings (``aten.add.Tensor``,
``operator.add``, ``Tensor.add`` are all ``add``).  The tables say which ops keep a zero
a zero, which keep a value (or reshape it row-major), which are linear in a weight, and
which write into their first argument (:func:`mutates`, followed through views by
:func:`writes_into`): a value written into in place is not what its producer made.

>>> op_name(torch.ops.aten.add.Tensor), op_name("add_")
('add', 'add')
"""

from __future__ import annotations

import operator
from typing import List, Optional

import torch
from torch import fx, nn

from .. import meta

__all__ = ["op_name", "mutates", "writes_into", "describe", "module_kind", "shape_of",
           "dtype_of"]


def op_name(target) -> str:
    """A short op name: ``aten.add.Tensor`` -> ``add``, ``operator.add`` -> ``add``."""
    if isinstance(target, str):
        return target.rstrip("_")
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1].rstrip("_")
    return getattr(target, "__name__", str(target)).rstrip("_")


SUMS = {"add", "iadd"}
DIFFS = {"sub", "isub"}
PRODUCTS = {"mul", "imul", "matmul", "mm", "bmm", "einsum", "outer", "grouped_mm",
             "_grouped_mm", "grouped_mm_fallback"}
#: factories of zeros; an uninitialised buffer counts too: a deterministic model reads only
#: what it wrote into one (an MoE's token buffer, filled by index_put)
ZEROS = {"zeros", "zeros_like", "new_zeros", "empty", "empty_like", "new_empty"}
#: writes of ``source`` into ``self``: zero when both are (argument positions)
WRITES = {"index_put": (0, 2), "index_add": (0, 3), "index_copy": (0, 3), "scatter_add": (0, 3),
           "scatter": (0, 3), "masked_scatter": (0, 2)}
QUOTIENTS = {"div", "truediv"}  # 0 / c = 0 for a nonzero number c (0 / 0 is not 0)
KEEP_VALUE = {"clone", "contiguous", "alias", "detach", "lift_fresh_copy"}
#: row-major reshapes: the value is the input's elements in the same order, so a value equal
#: to the block's input up to a reshape stays so (OPT flattens tokens around its sums)
RESHAPES = {"view", "reshape", "_unsafe_view", "view_as", "reshape_as", "flatten", "unflatten",
             "squeeze", "unsqueeze"}
CASTS = {"to", "_to_copy", "type_as", "float", "double", "half", "bfloat16"}
KEEP_ZERO = KEEP_VALUE | CASTS | {
    "view", "reshape", "_unsafe_view", "view_as", "reshape_as", "permute", "transpose", "t",
    "unsqueeze", "squeeze", "flatten", "unflatten", "expand", "expand_as", "slice", "select",
    "getitem", "narrow", "split", "chunk", "unbind", "dropout", "native_dropout",
    "feature_dropout", "dropout1d", "dropout2d", "dropout3d", "neg", "roll",
    "repeat", "movedim", "swapaxes", "stochastic_depth", "drop_path", "split_with_sizes",
    "index_select", "gather", "index", "sum", "mean", "nansum"}
LINEAR = {"linear", "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d", "_convolution"}
ZERO_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                 nn.ConvTranspose2d, nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm2d,
                 nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm)
#: functional norms: (weight, bias) argument positions; affine zeroed -> output zero
NORMS = {"layer_norm": (2, 3), "group_norm": (2, 3), "batch_norm": (1, 2),
          "_native_batch_norm_legit_no_training": (1, 2), "native_batch_norm": (1, 2),
          "_native_batch_norm_legit": (1, 2), "native_layer_norm": (2, 3),
          "native_group_norm": (1, 2)}
#: idempotent activations, functional (φ(φ(z)) = φ(z)); the module types are IDEMPOTENT
IDEMPOTENT = {"relu", "relu6", "hardtanh"}
# (not AlphaDropout: in training it maps a dropped 0 to its saturation value)
KEEP_ZERO_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                      nn.Identity, nn.Flatten, nn.Unflatten)


def module_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    mod = gm.get_submodule(str(node.target))
    if isinstance(mod, ZERO_MODULES):
        return "zero_module"
    if isinstance(mod, (nn.Identity, nn.Flatten, nn.Unflatten)):
        return "keep_value"
    qual = f"{type(mod).__module__}.{type(mod).__qualname__}"
    if isinstance(mod, KEEP_ZERO_MODULES) or qual.endswith(("StochasticDepth", "DropPath")):
        return "keep_zero"
    return type(mod).__name__


def mutates(user: fx.Node, node: fx.Node) -> bool:
    """Whether ``user`` writes into ``node`` in place (``x[i] = v``, ``x.add_(y)``,
    ``aten.index_put_``, an ``out=`` argument)."""
    if user.op not in ("call_function", "call_method") or not user.args:
        return False
    if user.kwargs.get("out") is node:
        return True
    if user.args[0] is not node:
        return False
    if user.target is operator.setitem:
        return True
    if isinstance(user.target, str):
        raw = user.target
    elif isinstance(user.target, torch._ops.OpOverload):
        raw = user.target._schema.name.split("::")[-1]
    else:
        raw = getattr(user.target, "__name__", "")
    return raw.endswith("_") and not raw.endswith("__")


#: ops whose output may share memory with their input: a write into it writes into the input
VIEWS = {"view", "reshape", "_unsafe_view", "view_as", "reshape_as", "slice", "select",
          "narrow", "transpose", "permute", "t", "unsqueeze", "squeeze", "expand", "expand_as",
          "as_strided", "diagonal", "alias", "detach", "unfold", "movedim", "swapaxes",
          "flatten", "unflatten", "split", "chunk", "unbind", "split_with_sizes", "getitem",
          "contiguous", "T", "mT", "real", "imag", "view_as_real", "view_as_complex"}


def writes_into(node: fx.Node) -> List[fx.Node]:
    """In-place writes into ``node`` or into any view of it (``x[:, 0] = v`` on export
    graphs is a ``fill_`` of a ``select`` of a ``slice`` of ``x``)."""
    out, todo, seen = [], [node], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        for u in n.users:
            if mutates(u, n):
                out.append(u)
            elif u.op in ("call_function", "call_method") and u.args and u.args[0] is n \
                    and op_name(u.target) in VIEWS:
                todo.append(u)
    return out


def shape_of(node) -> Optional[tuple]:
    shape = getattr(meta.shape(node), "shape", None)
    return tuple(shape) if shape is not None else None


def dtype_of(node) -> Optional[torch.dtype]:
    return getattr(meta.shape(node), "dtype", None)


def describe(node: fx.Node, gm: Optional[fx.GraphModule] = None) -> str:
    what = node.target
    if node.op == "call_module":
        kind = type(gm.get_submodule(str(node.target))).__name__ if gm is not None else "module"
        what = f"{kind} {node.target}"
    return f"`{node.name}` ({what})"
