"""The grown model as the user's own module: their class, their ``forward``.

``fxgrow.widen(..., output="module")`` grows a graph as usual, then writes the
grown tensors into a deep copy of the user's module under the same names and
resizes each layer's attributes (``in_features``, ``out_channels``,
``num_features``, ``normalized_shape``, ...), so the user's own ``forward``
runs on the bigger weights: any input shape, train and eval mode, hooks and
helper methods intact.

That is exact only if ``forward`` recomputes every number that depends on a
width by itself.  Sizes it reads at run time (``x.size(1)``) do; a literal it
holds (``x.view(b, 12, 64)``, a ``self.num_heads`` it reads) does not, and
neither does anything else the graph rewrite changed (SDPA's pinned scale, a
written-out RMSNorm's ``eps``).  :func:`eager_problems` lists those rewrites;
:func:`into_module` refuses when there is one, naming the node and the
literal, and points to :func:`fxgrow.grow_into`, which rebuilds the model from
the user's own code at the new sizes.

A model captured by ``torch.export`` under conditions on its inputs (a loop count
read from the batch size) keeps them as a forward pre-hook
(:func:`~fxgrow.capture.guards.guard_module`): outside them its ``forward`` would take
a path the growth was not planned for, so it stops with the reason instead.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

import torch
from torch import fx, nn

from .. import meta
from ..capture.guards import guard_module
from ..capture.modules import deepcopy_memo
from ..errors import SpecError
from ..ir.layout import leaves
from ..ir.rewrites import Item, evaluate, grows
from ..ir.values import SizeOf
from ..ops.access import owner_of
from .growth import GrowthPlan

__all__ = ["eager_problems", "into_module"]


def _differences(old: Any, new: Any, path: str, out: List[str]) -> None:
    """Differences a ``forward`` would not reproduce: a node read as a size at run time
    may become its new value (eager code reads the new size), anything else may not."""
    if isinstance(old, fx.Node):
        if not isinstance(new, fx.Node) and isinstance(meta.value(old), SizeOf):
            return
        if isinstance(new, fx.Node) and new.name == old.name:
            return
    elif isinstance(old, (tuple, list)) and isinstance(new, (tuple, list)) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _differences(a, b, f"{path}[{i}]", out)
        return
    elif isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        for k in old:
            _differences(old[k], new[k], f"{path}[{k!r}]", out)
        return
    elif isinstance(old, slice) and isinstance(new, slice):
        for part in ("start", "stop", "step"):
            _differences(getattr(old, part), getattr(new, part), f"{path}.{part}", out)
        return
    elif type(old) is type(new) and old == new:
        return
    out.append(f"{path} {_show(old)} -> {_show(new)}")


def _show(v: Any) -> str:
    if isinstance(v, Item):
        return f"`{v.node.name}[{v.index}]`"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(map(_show, v)) + ("," if len(v) == 1 else "") + ")"
    return f"`{v.name}`" if isinstance(v, fx.Node) else repr(v)


def eager_problems(plan: GrowthPlan) -> List[str]:
    """The rewrites of the grown graph that the user's ``forward`` would not make itself."""
    analysis, sizes = plan.analysis, plan.sizes
    nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    problems: List[str] = []
    for r in analysis.rewrites:
        if not grows(r.when, sizes):
            continue
        node = nodes[r.node]
        found: List[str] = []
        if r.target is not None and r.target != node.target:
            found.append(f"the op becomes {r.target}")
        _differences(tuple(node.args), tuple(evaluate(r.args, sizes)), "args", found)
        _differences(dict(node.kwargs), dict(evaluate(r.kwargs, sizes)), "kwargs", found)
        if found:
            op = meta.op(node) or str(node.target)
            problems.append(f"node `{node.name}` ({op}): {'; '.join(found)}")
    for gg in plan.padded.values():
        for site in gg.norms:
            if site.eps_node is not None:  # a written-out RMSNorm's eps is a literal
                problems.append(f"node `{site.eps_node}`: the literal eps of a written-out "
                                "RMSNorm is rescaled by the padding")
    return problems


#: layer attributes that follow their weights' shapes (for graphs without module calls)
_SHAPES = (
    (nn.Linear, lambda m: dict(in_features=m.weight.shape[1], out_features=m.weight.shape[0])),
    (nn.modules.conv._ConvNd, lambda m: dict(
        in_channels=m.weight.shape[0 if m.transposed else 1] * (1 if m.transposed else m.groups),
        out_channels=m.weight.shape[1] * m.groups if m.transposed else m.weight.shape[0])),
    (nn.modules.batchnorm._NormBase, lambda m: dict(
        num_features=next(t.shape[0] for t in (m.weight, m.running_mean) if t is not None))),
    (nn.Embedding, lambda m: dict(num_embeddings=m.weight.shape[0],
                                  embedding_dim=m.weight.shape[1])),
    (nn.GroupNorm, lambda m: dict(num_channels=m.weight.shape[0]) if m.weight is not None else {}),
    (nn.LayerNorm, lambda m: dict(normalized_shape=tuple(m.weight.shape))
     if m.weight is not None else {}),
)


def _sync_attributes(model: nn.Module, grown_names: set) -> None:
    for path, m in model.named_modules():
        owned = {f"{path}.{n}" if path else n for n, _ in m.named_parameters(recurse=False)}
        if not owned & grown_names:
            continue
        for cls, read in _SHAPES:
            if isinstance(m, cls):
                for attr, value in read(m).items():
                    setattr(m, attr, value)
                break


def into_module(model: nn.Module, plan: GrowthPlan, grown: fx.GraphModule) -> nn.Module:
    """A deep copy of ``model`` holding ``grown``'s tensors, its layers resized.

    Raises
    ------
    SpecError
        The user's ``forward`` holds a number the growth changes (see :func:`eager_problems`).
    """
    problems = eager_problems(plan)
    if problems:
        raise SpecError(
            f"{type(model).__name__}'s forward holds numbers the growth changes, which its own "
            f"code would not recompute: {'; '.join(problems[:4])}"
            + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")
            + ". Grow the GraphModule (output='graph'), or build the bigger model with your own "
              "code and fill it with fxgrow.grow_into")
    analysis = plan.analysis
    growing = sorted({m.tensor for m in analysis.members.values()
                      if any(leaf.space in plan.growth for leaf in leaves(m.layout))})
    # the tensors about to be replaced are not copied (a grown model's memory, not two)
    memo: Dict[int, Any] = deepcopy_memo(model)
    originals = {}
    for name in growing:
        try:
            originals[name] = getattr(*owner_of(model, name))
        except Exception:  # noqa: BLE001 - a tensor of the graph alone (an fx constant)
            continue
        t = originals[name]
        empty = torch.empty(0, dtype=t.dtype, device=t.device)
        memo[id(t)] = nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty
    new = copy.deepcopy(model, memo)
    aliases: Dict[int, List[str]] = {}
    for prefix, mod in model.named_modules(remove_duplicate=False):
        for n, t in list(mod._parameters.items()) + list(mod._buffers.items()):
            if t is not None:
                aliases.setdefault(id(t), []).append(f"{prefix}.{n}" if prefix else n)
    for name, t in originals.items():
        value = getattr(*owner_of(grown, name))
        for q in aliases.get(id(t), [name]):
            owner, attr = owner_of(new, q)
            if attr in owner._parameters:
                owner._parameters[attr] = value if isinstance(value, nn.Parameter) else \
                    nn.Parameter(value, t.requires_grad)
            elif attr in owner._buffers:
                owner._buffers[attr] = value
            else:
                setattr(owner, attr, value)
    sizes = plan.sizes
    for a in analysis.attr_rewrites:  # what the rules know of their modules' attributes
        setattr(new.get_submodule(a.module), a.attr, evaluate(a.value, sizes))
    _sync_attributes(new, set(originals))  # layers a graph without module calls left out
    for gg in plan.padded.values():
        for site in gg.norms:  # the padded norms' eps, as the rewrite set them
            if site.module is not None:
                new.get_submodule(site.module).eps = grown.get_submodule(site.module).eps
    # the growth is proven on the path the capture took: outside torch.export's guards
    # the forward may route neurons through other layers, so the module checks them too
    return guard_module(new, analysis.graph_module)
