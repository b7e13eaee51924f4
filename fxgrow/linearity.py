"""Which ops act linearly, neuron by neuron, on the values they pass on.

Two proofs need this: mean-padding (:mod:`fxgrow.meanpad`: new neurons stay
the mean of the old ones along an affine path) and contraction rescaling
(:mod:`fxgrow.contraction`: dividing a producer's rows by the counts divides
what reaches the product).  Both walk the graph and ask one question of each
node: does it only *move* values (views, transposes, splits, casts, dropout
in eval), *add* them, or *scale* them by something that does not depend on
the neurons being followed?  Anything else ends the proof, with the node's
name in the reason.

``torch.export`` graphs are read through :func:`fxgrow.rules.aten.canonical_target`,
so ``aten.view.default`` is a move like ``Tensor.view``.

Examples
--------
>>> import operator, torch
>>> from torch import fx
>>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Dropout(), torch.nn.ReLU()))
>>> [kind(gm, n) for n in gm.graph.nodes if n.op == "call_module"]
['move', None]
"""

from __future__ import annotations

import operator
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from .rules.aten import canonical_target

__all__ = ["kind", "node_inputs", "MOVE", "ADD", "SCALE", "DIVIDE", "LINEAR_LAYERS"]

ADD = {operator.add, operator.sub, operator.iadd, operator.isub, torch.add, torch.sub,
       "add", "sub", "add_", "sub_"}
SCALE = {operator.mul, operator.imul, torch.mul, "mul", "mul_", operator.neg, torch.neg, "neg",
         torch.outer, torch.ger, "outer", "ger"}
DIVIDE = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
MOVE = {"contiguous", "clone", "to", "float", "double", "half", "bfloat16", "type_as",
        "permute", "transpose", "view", "reshape", "unsqueeze", "squeeze", "expand",
        "expand_as", "flatten", "unflatten", "split", "chunk", "unbind", "narrow", "select",
        "repeat_interleave", "detach", "movedim", "swapaxes", "swapdims", "view_as",
        "reshape_as", torch.movedim, torch.swapaxes, torch.swapdims, torch.unflatten, torch.permute, torch.transpose, torch.reshape,
        torch.unsqueeze, torch.squeeze, torch.flatten, torch.split, torch.chunk,
        torch.unbind, torch.narrow, torch.select, torch.repeat_interleave, operator.getitem,
        torch.cat, torch.concat, torch.stack, F.dropout, torch.clone, torch.detach}
MOVE_MODULES = (nn.Dropout, nn.Identity, nn.Flatten, nn.Unflatten)

#: layers whose output neuron ``i`` is linear in their producer rows ``i``
#: (weight row and bias entry): dividing those rows divides the output neuron
LINEAR_LAYERS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.embedding, torch.matmul,
                 operator.matmul, torch.mm, torch.bmm, torch.addmm, "matmul", "mm", "bmm",
                 "__matmul__"}
LINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def kind(gm: fx.GraphModule, node: fx.Node) -> Optional[str]:
    """``"move"``, ``"add"``, ``"scale"``, ``"divide"``, ``"layer"`` or None.

    ``"layer"`` is a linear layer (:data:`LINEAR_LAYERS`); for ``"scale"`` and
    ``"divide"`` the caller still checks which operand carries what.
    """
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, MOVE_MODULES):
            return "move"
        return "layer" if isinstance(mod, LINEAR_MODULES) else None
    if node.op not in ("call_function", "call_method"):
        return None
    target = canonical_target(node)
    if str(target) == "aten.addmm.default":
        return "layer"
    for name, ops in (("move", MOVE), ("add", ADD), ("scale", SCALE), ("divide", DIVIDE),
                      ("layer", LINEAR_LAYERS)):
        try:
            if target in ops:
                return name
        except TypeError:  # unhashable target
            return None
    return None


def node_inputs(node: fx.Node) -> List[fx.Node]:
    """Every node among ``node``'s arguments, nested ones included."""
    flat: List[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), flat.append)
    return flat
