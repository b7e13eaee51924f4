"""Prove the target computes the grown source, node by node, and pair their tensors.

Growing the source to the target's sizes gives a graph ``G`` (the widening
pass's output).  The target's own graph ``T`` is captured from the user's
code.  If ``T``, with its new identity blocks taken out (each block's outputs
replaced by the inputs they equal, see :mod:`fxgrow.grow.identity`), is ``G``
op for op — same ops, same literals (a head count in a ``view``, a norm's
``eps``, an attention scale), same modules with the same settings — then the
target filled with ``G``'s tensors computes ``G``, which computes the source.
Both graphs come from tracing in program order, so their nodes are compared
in order; the first difference is reported by name.

The pairing of ``get_attr`` nodes (and of leaf modules' tensors) is the map
from each target tensor to the grown tensor it receives.

Examples
--------
>>> import torch, fxgrow
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> a = fxgrow.analyze(m, torch.randn(3, 4))
>>> pairs = correspond(a.graph_module, a.graph_module, set(), {})
>>> sorted(pairs)[:2]
['0.bias', '0.weight']
"""

from __future__ import annotations

import math
import operator
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
from torch import fx, nn

from .. import meta
from ..ops.access import attr_by_name
from ..errors import TargetMismatchError

__all__ = ["correspond"]


def _dropped(gm: fx.GraphModule, skip: Set[fx.Node], keep: Set[fx.Node]) -> Set[fx.Node]:
    """``skip`` and every node only they use (what is left of a block once it is out),
    except ``keep``: the values the blocks pass through, used in their stead."""
    out = set(skip)
    for node in reversed(list(gm.graph.nodes)):
        if node.users and all(u in out for u in node.users) and node.op != "output" \
                and node not in keep:
            out.add(node)
    return out


_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)


def _plain(v: Any) -> bool:
    return isinstance(v, _PLAIN) or (isinstance(v, (tuple, list)) and all(map(_plain, v)))


def _settings(mod: nn.Module) -> Any:
    """What a leaf module computes with besides its tensors: its type, its ``extra_repr``
    and every plain attribute (``nn.MultiheadAttention``'s ``num_heads`` is in no repr)."""
    if isinstance(mod, fx.GraphModule):
        return mod.code
    attrs = tuple(sorted((k, repr(v)) for k, v in vars(mod).items()
                         if k != "training" and not k.endswith("hooks") and _plain(v)))
    return type(mod), mod.extra_repr(), attrs


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and \
            a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a.cpu(), b.cpu()))
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - objects without a comparison are not equal
        return a is b


class _Mismatch(Exception):
    pass


def _op_name(target: Any) -> Any:
    name = str(target)
    # a resized view the widening turned into a reshape (export drops `.contiguous()`)
    # computes the same values wherever the view does
    return "aten.reshape.default" if name in (
        "aten.view.default", "aten._unsafe_view.default", "aten.reshape.default") else target


class _Pairing:
    """The node pairs found so far; tensors (``get_attr``) pair where they are used."""

    def __init__(self, target: fx.GraphModule, grown: fx.GraphModule,
                 alias: Dict[fx.Node, fx.Node], writable: Set[str]) -> None:
        self.target, self.grown, self.alias, self.writable = target, grown, alias, writable
        self.pairs: Dict[fx.Node, fx.Node] = {}
        self.tensors: Dict[str, str] = {}

    def attr(self, t: fx.Node, g: fx.Node) -> None:
        tt, gt = attr_by_name(self.target, str(t.target)), attr_by_name(self.grown, str(g.target))
        if isinstance(tt, torch.Tensor) and isinstance(gt, torch.Tensor):
            if tt.shape != gt.shape:
                raise _Mismatch(f"tensor {t.target!r} has shape {tuple(tt.shape)}, the grown "
                                f"source's {g.target!r} {tuple(gt.shape)}")
            if str(t.target) not in self.writable and not (tt.is_meta or gt.is_meta) and not \
                    _same(tt, gt):
                # a constant of the graph (made in forward), not a tensor the target holds:
                # nothing will write it, so the two must already agree
                raise _Mismatch(f"constant {t.target!r} differs from the grown source's "
                                f"{g.target!r}")
            self.tensors[str(t.target)] = str(g.target)
        elif type(tt) is not type(gt):
            raise _Mismatch(f"{t.target!r} is a {type(tt).__name__}, the grown source's "
                            f"{g.target!r} a {type(gt).__name__}")
        elif isinstance(tt, fx.GraphModule) and tt.code != gt.code:
            # a subgraph (a higher-order op's body): the same code, literals included
            raise _Mismatch(f"subgraph {t.target!r} differs from the grown source's "
                            f"{g.target!r}")
        elif not isinstance(tt, nn.Module) and _plain(tt) and not _same(tt, gt):
            raise _Mismatch(f"{t.target!r} is {tt!r}, the grown source's {gt!r}")
        self.pairs[t] = g

    def compare(self, t: Any, g: Any, path: str) -> None:
        if isinstance(t, fx.Node):
            while t in self.alias:
                t = self.alias[t]
            if t.op == "get_attr" and t not in self.pairs and isinstance(g, fx.Node) \
                    and g.op == "get_attr" and g not in self.pairs.values():
                self.attr(t, g)
            if not isinstance(g, fx.Node) or self.pairs.get(t) is not g:
                raise _Mismatch(f"{path} is `{t.name}` in the target, "
                                f"{'`' + g.name + '`' if isinstance(g, fx.Node) else repr(g)} "
                                "in the grown source")
            return
        if isinstance(t, (tuple, list)) and isinstance(g, (tuple, list)) and len(t) == len(g):
            for i, (a, b) in enumerate(zip(t, g)):
                self.compare(a, b, f"{path}[{i}]")
            return
        if isinstance(t, dict) and isinstance(g, dict) and t.keys() == g.keys():
            for k in t:
                self.compare(t[k], g[k], f"{path}[{k!r}]")
            return
        if isinstance(t, slice) and isinstance(g, slice):
            for part in ("start", "stop", "step"):
                self.compare(getattr(t, part), getattr(g, part), f"{path}.{part}")
            return
        if not _same(t, g):
            hint = (" (a number the target's code derives from its config or its width: a "
                    "norm's eps that padding to a non-multiple width rescales, a scale such as "
                    "sqrt(hidden); where it is a setting, build the target with the grown "
                    "source's value)") if isinstance(t, float) and isinstance(g, float) \
                else ""
            raise _Mismatch(f"{path} is {t!r} in the target, {g!r} in the grown source{hint}")


_SPLITS = ("aten.split.Tensor", "aten.split_with_sizes.default", "split",
           "<built-in method split", "<function split")
_CHUNKS = ("aten.chunk.default", "chunk", "<built-in method chunk")


def _split_form(node: fx.Node, shapes: bool) -> Optional[Tuple[Any, List[int], int]]:
    """``(input, sizes, dim)`` of a split, whichever way it is spelled (an int size, the
    sizes listed, ``torch.split``, ``Tensor.split``, ``aten.split*``); ``shapes``: the
    node's shapes in ``meta`` are its graph's own, so an int size can be spelled out."""
    chunks = str(node.target).startswith(_CHUNKS)
    if not (chunks or str(node.target).startswith(_SPLITS)) or not node.args:
        return None
    x = node.args[0]
    size = node.args[1] if len(node.args) > 1 else next(
        (node.kwargs[k] for k in ("split_size", "split_size_or_sections", "split_sizes", "chunks")
         if k in node.kwargs), None)
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    spec = meta.shape(x) if isinstance(x, fx.Node) else None
    ndim = len(getattr(spec, "shape", ()) or ())
    if isinstance(dim, int) and dim < 0 and ndim:
        dim += ndim
    if isinstance(size, int):
        if not shapes or not ndim or not isinstance(spec.shape[dim], int):
            return None
        length = spec.shape[dim]
        if chunks:  # torch.chunk: pieces of ceil(length / chunks)
            size = max(1, -(-length // size))
        size = [size] * (length // size) + ([length % size] if length % size else [])
    if not isinstance(size, (list, tuple)):
        return None
    return x, list(size), dim


def _slice_form(node: fx.Node, length: int) -> Optional[Tuple[Any, int, int, int, int]]:
    """``(input, dim, start, stop, step)`` of an ATen slice, bounds clamped to ``length``
    (``end=2**63-1`` and ``end=length`` cut the same)."""
    if str(node.target) != "aten.slice.Tensor":
        return None
    args = list(node.args) + [None] * (5 - len(node.args))
    x, dim, start, end, step = args[:5]
    dim = node.kwargs.get("dim", 0 if dim is None else dim)
    start = node.kwargs.get("start", start)
    end = node.kwargs.get("end", end)
    step = node.kwargs.get("step", 1 if step is None else step)
    if not all(isinstance(v, int) or v is None for v in (start, end)):
        return None
    a, b, _ = slice(start, end).indices(length)
    return x, dim, a, b, step


def _index_form(node: fx.Node, dims: Tuple[int, ...]) -> Optional[Tuple[Any, Tuple[Any, ...]]]:
    """``x[index]`` with the ellipsis spelled out and every slice clamped to the lengths
    ``dims`` (``x[..., :n]`` and ``x[:, :, :n]`` index alike)."""
    if node.target is not operator.getitem or len(node.args) != 2:
        return None
    x, index = node.args
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (fx.Node, list)) for i in index) or \
            sum(i is Ellipsis for i in index) > 1:
        return None
    used = sum(1 for i in index if i is not None and i is not Ellipsis)
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (len(dims) - used) + index[k + 1:]
    out, d = [], 0
    for i in index:
        if i is None:
            out.append(None)
            continue
        if d >= len(dims) or not isinstance(dims[d], int):
            return None
        if isinstance(i, slice):
            if not all(isinstance(v, int) or v is None for v in (i.start, i.stop, i.step)):
                return None
            out.append(("slice",) + i.indices(dims[d]))
        else:
            out.append(i)
        d += 1
    out.extend(("slice", 0, n, 1) for n in dims[d:])  # trailing dims taken whole
    return x, tuple(out)


def _call(p: _Pairing, t: fx.Node, g: fx.Node) -> None:
    try:
        if _op_name(t.target) != _op_name(g.target):
            raise _Mismatch(f"the grown source calls {g.target} (`{g.name}`)")
        p.compare(t.args, g.args, "args")
        p.compare(t.kwargs, g.kwargs, "kwargs")
    except _Mismatch:
        # the widening spells a split's sizes out (its pieces may no longer be equal)
        ts, gs = _split_form(t, shapes=True), _split_form(g, shapes=False)
        if ts is not None and gs is not None:
            p.compare(ts, gs, "split")
            return
        # and a slice's end as the grown length where the target slices "to the end"
        spec = meta.shape(t.args[0]) if t.args and isinstance(t.args[0], fx.Node) else None
        dims = getattr(spec, "shape", None)
        if dims is not None and t.target is operator.getitem:
            ti, gi = _index_form(t, tuple(dims)), _index_form(g, tuple(dims))
            if ti is None or gi is None:
                raise
            p.compare(ti, gi, "index")
            return
        d = t.args[1] if len(t.args) > 1 else t.kwargs.get("dim", 0)
        if dims is None or not isinstance(d, int) or not isinstance(dims[d], int):
            raise
        ts, gs = _slice_form(t, dims[d]), _slice_form(g, dims[d])
        if ts is None or gs is None:
            raise
        p.compare(ts, gs, "slice")


def correspond(target: fx.GraphModule, grown: fx.GraphModule, skip: Set[fx.Node],
               alias: Dict[fx.Node, fx.Node], writable: Optional[Set[str]] = None
               ) -> Dict[str, str]:
    """``{target tensor: grown tensor}`` once ``target`` minus ``skip`` is proved ``grown``.

    Parameters
    ----------
    target, grown : fx.GraphModule
    skip : set of target nodes
        The new identity blocks' nodes.
    alias : dict
        Target nodes (block outputs) -> the nodes they equal (block inputs).
    writable : set of str, optional
        The tensors the target holds (parameters and buffers), which will be written;
        any other tensor the graph reads (a constant made in ``forward``) must equal
        the grown source's.  Default: every parameter and buffer of ``target``.

    Raises
    ------
    TargetMismatchError
        The graphs differ: the message names the first target node that does and how.
    """
    dropped = _dropped(target, skip, set(alias.values()))
    # tensors pair where they are read (their get_attr nodes sit in registration order)
    t_nodes: List[fx.Node] = [n for n in target.graph.nodes
                              if n not in dropped and n.op != "get_attr"]
    g_nodes: List[fx.Node] = [n for n in grown.graph.nodes if n.op != "get_attr"]
    if writable is None:
        writable = {k for k, _ in list(target.named_parameters()) + list(target.named_buffers())}
    p = _Pairing(target, grown, alias, writable)
    for i, t in enumerate(t_nodes):
        if i >= len(g_nodes):
            raise TargetMismatchError(
                f"the target computes more than the grown source: node `{t.name}` ({t.target}) "
                "has no counterpart (a new module that is not a block of its own?)")
        g = g_nodes[i]
        where = f"target node `{t.name}` ({t.target})"
        try:
            if t.op != g.op:
                raise _Mismatch(f"it is a {t.op}, the grown source has a {g.op} `{g.name}`")
            if t.op == "call_module":
                tm, gm = target.get_submodule(str(t.target)), grown.get_submodule(str(g.target))
                ts, gs = _settings(tm), _settings(gm)
                if ts != gs:
                    ta = ts[2] if isinstance(ts, tuple) else ()
                    ga = gs[2] if isinstance(gs, tuple) else ()
                    diff = [f"{k}={v}" for k, v in sorted(set(ta) - set(ga))][:4]
                    grown_diff = [f"{k}={v}" for k, v in sorted(set(ga) - set(ta))][:4]
                    raise _Mismatch(
                        f"module {t.target!r} is a {type(tm).__name__}({tm.extra_repr()}) with "
                        f"{', '.join(diff) or 'the same attributes'}, the grown source's "
                        f"{g.target!r} a {type(gm).__name__}({gm.extra_repr()}) with "
                        f"{', '.join(grown_diff) or 'the same attributes'}")
                for name, _ in list(tm.named_parameters()) + list(tm.named_buffers()):
                    p.tensors[f"{t.target}.{name}"] = f"{g.target}.{name}"
            elif t.op == "placeholder":
                if t.target != g.target:
                    raise _Mismatch(f"input {t.target!r} is {g.target!r} in the grown source")
            else:
                _call(p, t, g)
        except _Mismatch as e:
            raise TargetMismatchError(
                f"the target does not compute the grown source: at {where}, {e}") from None
        p.pairs[t] = g
    if len(g_nodes) > len(t_nodes):
        extra = g_nodes[len(t_nodes)]
        raise TargetMismatchError(
            f"the target computes less than the grown source: its node `{extra.name}` "
            f"({extra.target}) has no counterpart in the target")
    return p.tensors
