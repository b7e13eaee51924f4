"""Prove that a block the target adds starts as the identity, and say what to zero.

A new block (a target module the source lacks) is the identity when every
value it hands to the rest of the graph equals a value it received: its output
is ``x + f(x)`` (through any number of residual sums) and each branch ``f``
ends in a layer whose weights can be zeroed, so ``f(x) = 0`` exactly and
``x + 0 = x``.  A block that is the branch itself (``h = h + block(h)`` in its
parent) qualifies when its output can be zeroed and every reader adds it to
something: those sums become their other operand.  That is deepen's residual method, read off the target's own
graph: the proof walks back from each of the block's outputs through

* residual sums ``a + b`` / ``a - b`` (one side the identity, the other zero),
* value-preserving steps (``clone``, ``contiguous``, a cast to the same dtype),

and proves a branch zero through

* linear layers and convolutions (weight and bias zeroed; ``addmm``'s bias and
  matrix), products (one factor zero), and
* norms whose gain and bias are zeroed (BatchNorm, LayerNorm, GroupNorm:
  ``0 · x̂ + 0 = 0``, as timm's ``zero_init_last`` does),
* steps that keep a zero a zero (views, transposes, slices, dropout, sums of
  zeros);

and, after the sum, through an idempotent activation ``φ`` (ReLU, ReLU6,
Hardtanh: ``φ(φ(z)) = φ(z)``) when the value passed through is itself an output
of the same ``φ``: a ResNet block ``relu(x + f(x))`` whose input ``x`` is the
previous block's ``relu`` output (Net2DeeperNet's condition).

Anything else on the way (a norm after the sum: ``LN(x + 0) ≠ x``, another
activation of the sum) refuses the block, naming the node.

Examples
--------
>>> import torch, fxgrow
>>> from torch import nn
>>> class Block(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)
...     def forward(self, x):
...         return x + self.fc2(torch.relu(self.fc1(x)))
>>> net = nn.Sequential(nn.Linear(3, 4), Block(), nn.Linear(4, 2))
>>> a = fxgrow.analyze(net, torch.randn(2, 3))
>>> proof = prove_identity(a.graph_module, "1", lambda t: t.startswith("1."))
>>> sorted(proof.zeroed)
['1.fc2.bias', '1.fc2.weight']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

import torch
from torch import fx, nn
import torch.nn.functional as F

from .. import meta
from ..errors import NotIdentityError
from ..ops.kinds import IDEMPOTENT_ACTIVATIONS

__all__ = ["IdentityProof", "region", "prove_identity"]


@dataclass(frozen=True)
class IdentityProof:
    """Block ``module`` is the identity once the tensors ``zeroed`` are 0: each of its
    outputs equals an input (``passes``: output node name -> input node name)."""

    module: str
    zeroed: FrozenSet[str]
    passes: Dict[str, str]
    nodes: FrozenSet[str]  # the block's nodes
    #: sums outside the block that add its (zero) output to their other operand
    sums: FrozenSet[str] = frozenset()


def _paths(node: fx.Node) -> List[str]:
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for v in stack.values():
        path = v[0] if isinstance(v, tuple) else v
        out.append(str(path))
    if node.op == "call_module":
        out.append(str(node.target))
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + ".")


def region(gm: fx.GraphModule, root: str) -> Set[fx.Node]:
    """The nodes of module ``root``: called from inside it, or reading its tensors."""
    out = set()
    for n in gm.graph.nodes:
        if n.op == "get_attr" and _inside(str(n.target).rpartition(".")[0], root):
            out.add(n)
        elif n.op in ("call_function", "call_method", "call_module") and any(
                _inside(p, root) for p in _paths(n)):
            out.add(n)
    return out


def _name(target) -> str:
    """A short op name: ``aten.add.Tensor`` -> ``add``, ``operator.add`` -> ``add``."""
    if isinstance(target, str):
        return target.rstrip("_")
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1].rstrip("_")
    return getattr(target, "__name__", str(target)).rstrip("_")


_SUMS = {"add", "iadd"}
_DIFFS = {"sub", "isub"}
_PRODUCTS = {"mul", "imul", "matmul", "mm", "bmm", "einsum", "outer"}
_QUOTIENTS = {"div", "truediv"}  # 0 / c = 0 for a nonzero number c (0 / 0 is not 0)
_KEEP_VALUE = {"clone", "contiguous", "alias", "detach", "lift_fresh_copy"}
_CASTS = {"to", "_to_copy", "type_as", "float", "double", "half", "bfloat16"}
_KEEP_ZERO = _KEEP_VALUE | _CASTS | {
    "view", "reshape", "_unsafe_view", "view_as", "reshape_as", "permute", "transpose", "t",
    "unsqueeze", "squeeze", "flatten", "unflatten", "expand", "expand_as", "slice", "select",
    "getitem", "narrow", "split", "chunk", "unbind", "dropout", "native_dropout",
    "feature_dropout", "dropout1d", "dropout2d", "dropout3d", "neg", "roll",
    "repeat", "movedim", "swapaxes", "stochastic_depth", "drop_path", "split_with_sizes",
    "index_select", "gather"}
_LINEAR = {"linear", "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d", "_convolution"}
_ZERO_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                 nn.ConvTranspose2d, nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm2d,
                 nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm)
#: functional norms: (weight, bias) argument positions; affine zeroed -> output zero
_NORMS = {"layer_norm": (2, 3), "group_norm": (2, 3), "batch_norm": (1, 2),
          "_native_batch_norm_legit_no_training": (1, 2), "native_batch_norm": (1, 2),
          "_native_batch_norm_legit": (1, 2), "native_layer_norm": (2, 3),
          "native_group_norm": (1, 2)}
#: idempotent activations, functional (φ(φ(z)) = φ(z)); the module types are IDEMPOTENT
_IDEMPOTENT = {"relu", "relu6", "hardtanh"}
# (not AlphaDropout: in training it maps a dropped 0 to its saturation value)
_KEEP_ZERO_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                      nn.Identity, nn.Flatten, nn.Unflatten)


def _module_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    mod = gm.get_submodule(str(node.target))
    if isinstance(mod, _ZERO_MODULES):
        return "zero_module"
    if isinstance(mod, nn.Identity):
        return "keep_value"
    qual = f"{type(mod).__module__}.{type(mod).__qualname__}"
    if isinstance(mod, _KEEP_ZERO_MODULES) or qual.endswith(("StochasticDepth", "DropPath")):
        return "keep_zero"
    return type(mod).__name__


def _dtype(node) -> Optional[torch.dtype]:
    return getattr(meta.shape(node), "dtype", None)


def _describe(node: fx.Node, gm: Optional[fx.GraphModule] = None) -> str:
    what = node.target
    if node.op == "call_module":
        kind = type(gm.get_submodule(str(node.target))).__name__ if gm is not None else "module"
        what = f"{kind} {node.target}"
    return f"`{node.name}` ({what})"


class _Prover:
    def __init__(self, gm: fx.GraphModule, nodes: Set[fx.Node],
                 zeroable: Callable[[str], bool]) -> None:
        self.gm, self.nodes, self.zeroable = gm, nodes, zeroable
        self.memo: Dict[fx.Node, Optional[FrozenSet[str]]] = {}
        self.why: List[str] = []

    # -- a value that can be made exactly zero -------------------------------------------
    def zero(self, node) -> Optional[FrozenSet[str]]:
        if node is None:
            return frozenset()
        if not isinstance(node, fx.Node):
            return frozenset() if isinstance(node, (int, float)) and node == 0 else None
        if node not in self.nodes:
            return None  # a value from outside the block is not ours to zero
        if node not in self.memo:
            self.memo[node] = None  # no cycles in a graph; guards re-entry
            self.memo[node] = self._zero(node)
        return self.memo[node]

    def _all(self, *args) -> Optional[FrozenSet[str]]:
        out: FrozenSet[str] = frozenset()
        for a in args:
            z = self.zero(a)
            if z is None:
                return None
            out |= z
        return out

    def _any(self, *args) -> Optional[FrozenSet[str]]:
        for a in args:
            z = self.zero(a)
            if z is not None:
                return z
        return None

    def _zero(self, node: fx.Node) -> Optional[FrozenSet[str]]:
        if node.op == "get_attr":
            t = self.gm
            for part in str(node.target).split("."):
                t = getattr(t, part, None)
            ok = isinstance(t, torch.Tensor) and t.is_floating_point() and self.zeroable(
                str(node.target))
            return frozenset({str(node.target)}) if ok else None
        if node.op == "call_module":
            kind = _module_kind(self.gm, node)
            if kind == "zero_module":
                mod = self.gm.get_submodule(str(node.target))
                names = {f"{node.target}.{p}" for p, v in mod.named_parameters(recurse=False)
                         if v is not None}
                if not any(n.endswith(".weight") for n in names):
                    return None  # a norm without an affine gain does not output 0
                return frozenset(names) if all(map(self.zeroable, names)) else None
            if kind in ("keep_zero", "keep_value") and node.args:
                return self.zero(node.args[0])
            return None
        if node.op not in ("call_function", "call_method"):
            return None
        name = _name(node.target)
        args = list(node.args) + list(node.kwargs.values())
        tensors = [a for a in args if isinstance(a, fx.Node)]
        if name in _LINEAR or node.target in (F.linear,):
            weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            return self._all(weight, bias)
        if name in _NORMS:
            w, b = _NORMS[name]
            weight = node.args[w] if len(node.args) > w else node.kwargs.get("weight")
            bias = node.args[b] if len(node.args) > b else node.kwargs.get("bias")
            if weight is None:  # no gain to zero: the normalised value is not 0
                return None
            return self._all(weight, bias)
        if name in ("addmm", "addbmm", "baddbmm", "addmv"):
            bias, product = self._all(node.args[0]), self._any(*node.args[1:3])
            return None if bias is None or product is None else bias | product
        if name in _PRODUCTS:
            return self._any(*tensors)
        if name in _QUOTIENTS and len(node.args) == 2:
            d = node.args[1]
            ok = isinstance(d, (int, float)) and not isinstance(d, bool) and d != 0
            return self.zero(node.args[0]) if ok else None
        if name in _SUMS | _DIFFS | {"cat", "stack"}:
            flat = []
            for a in node.args:
                flat.extend(a if isinstance(a, (list, tuple)) else [a])
            return self._all(*[a for a in flat if isinstance(a, fx.Node)])
        if name in _KEEP_ZERO and node.args:
            return self.zero(node.args[0])
        return None

    def _activation(self, node: fx.Node) -> Optional[Tuple[str, str]]:
        """An idempotent activation's kind and settings, or None."""
        if node.op == "call_module":
            mod = self.gm.get_submodule(str(node.target))
            if isinstance(mod, IDEMPOTENT_ACTIVATIONS):
                return type(mod).__name__, mod.extra_repr().replace("inplace=True", "")
            return None
        if node.op in ("call_function", "call_method") and _name(node.target) in _IDEMPOTENT:
            extra = [a for a in node.args[1:] if not isinstance(a, bool)]
            return _name(node.target), repr(extra)
        return None

    # -- a value equal to one the block received -------------------------------------------
    def identity(self, node) -> Optional[Tuple[fx.Node, FrozenSet[str]]]:
        if not isinstance(node, fx.Node):
            self.why.append(f"{node!r} is a constant")
            return None
        if node not in self.nodes:
            return node, frozenset()
        if node.op == "call_module" and _module_kind(self.gm, node) == "keep_value":
            return self.identity(node.args[0])
        act = self._activation(node)
        if act is not None and node.args:
            inner = self.identity(node.args[0])
            if inner is not None and self._activation(inner[0]) == act:
                return inner  # φ(x + 0) = φ(x) = x where x = φ(...) already
            if inner is not None:
                self.why.append(
                    f"{_describe(node, self.gm)} after the residual sum is idempotent, but "
                    f"what the block passes through (`{inner[0].name}`) is not an output of it")
                return None
        if node.op in ("call_function", "call_method"):
            name = _name(node.target)
            alpha = node.kwargs.get("alpha", 1)
            if name in _SUMS | _DIFFS and len(node.args) == 2 and alpha == 1:
                a, b = node.args
                orders = [(a, b)] + ([(b, a)] if name in _SUMS else [])
                for keep, drop in orders:
                    z = self.zero(drop)
                    if z is None:
                        continue
                    inner = self.identity(keep)
                    if inner is not None:
                        return inner[0], inner[1] | z
                self.why.append(
                    f"the sum {_describe(node)} has no side that can be zeroed while the "
                    "other passes the input through")
                return None
            same = name in _KEEP_VALUE or (name in _CASTS and node.args and isinstance(
                node.args[0], fx.Node) and _dtype(node) == _dtype(node.args[0]) is not None)
            if same and node.args:
                return self.identity(node.args[0])
        self.why.append(f"its output passes through {_describe(node, self.gm)}, which is not a residual "
                        "sum x + f(x) with a branch that can be zeroed")
        return None


def prove_identity(gm: fx.GraphModule, root: str, zeroable: Callable[[str], bool]
                   ) -> IdentityProof:
    """Prove module ``root`` of ``gm`` the identity once some of its tensors are zeroed.

    Parameters
    ----------
    gm : fx.GraphModule
        An analysed graph (node shapes in ``meta``).
    root : str
        The block's qualified module name.
    zeroable : callable
        Which tensors (by qualified name) may be zeroed: the new block's own.

    Raises
    ------
    NotIdentityError
        An output of the block is not a residual sum whose branch can be zeroed;
        the message names the node.
    """
    nodes = region(gm, root)
    prover = _Prover(gm, nodes, zeroable)
    zeroed: FrozenSet[str] = frozenset()
    passes: Dict[str, str] = {}
    sums: Set[str] = set()
    for node in gm.graph.nodes:
        if node not in nodes or all(u in nodes for u in node.users):
            continue
        if node.op == "get_attr":
            raise NotIdentityError(f"new module {root!r} cannot start as the identity: its "
                                   f"tensor {node.target!r} is read outside it")
        proof = prover.identity(node)
        if proof is None:
            # a block that is the branch itself, summed outside: `h = h + block(h)`
            z = prover.zero(node)
            outer = _outer_sums(node, nodes) if z is not None else None
            if outer is None:
                raise NotIdentityError(
                    f"new module {root!r} cannot start as the identity: {prover.why[-1]} "
                    "(a norm or activation after the residual sum, as in a post-LN block, "
                    "maps x + 0 to something else than x); map it to a source module with "
                    "layers=..., or grow a target whose new blocks are residual")
            for total, other in outer:
                _same_kind(root, total, other)
                passes[total.name] = other.name
                sums.add(total.name)
            zeroed |= z
            continue
        source, z = proof
        _same_kind(root, node, source)
        passes[node.name] = source.name
        zeroed |= z
    return IdentityProof(root, zeroed, passes, frozenset(n.name for n in nodes),
                         frozenset(sums))


def _same_kind(root: str, node: fx.Node, source: fx.Node) -> None:
    if getattr(meta.shape(node), "shape", None) != getattr(meta.shape(source), "shape", None) \
            or _dtype(node) != _dtype(source):
        raise NotIdentityError(
            f"new module {root!r} cannot start as the identity: `{node.name}` would equal "
            f"`{source.name}`, which has another shape or dtype")


def _outer_sums(node: fx.Node, nodes: Set[fx.Node]):
    """``[(sum, other operand)]`` if every reader outside the block adds ``node`` to
    something (``x + 0 = x``), else None."""
    out = []
    for u in node.users:
        if u in nodes:
            continue
        if u.op not in ("call_function", "call_method") or _name(u.target) not in _SUMS \
                or len(u.args) != 2 or u.kwargs.get("alpha", 1) != 1:
            return None
        a, b = u.args
        other = b if a is node else a
        if not isinstance(other, fx.Node) or other is node:
            return None
        out.append((u, other))
    return out
