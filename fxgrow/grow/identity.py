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
* gains the block owns on the path passed through (``s * x``, ``x *= s``), which are
  set to 1 (``1 · x = x``),

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

import operator
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

import torch
from torch import fx
import torch.nn.functional as F

from .. import meta
from ..errors import NotIdentityError
from ..ops.access import attr_by_name
from ..ops.kinds import IDEMPOTENT_ACTIVATIONS
from .vocabulary import (CASTS, DIFFS, IDEMPOTENT, KEEP_VALUE, KEEP_ZERO, LINEAR, NORMS,
                         PRODUCTS, QUOTIENTS, RESHAPES, SUMS, WRITES, ZEROS, describe,
                         dtype_of, module_kind, mutates, op_name, shape_of, writes_into)

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
    #: the block's gains on the path passed through (``s * x``), set to 1
    ones: FrozenSet[str] = frozenset()


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


class _Prover:
    def __init__(self, gm: fx.GraphModule, nodes: Set[fx.Node],
                 zeroable: Callable[[str], bool]) -> None:
        self.gm, self.nodes, self.zeroable = gm, nodes, zeroable
        self.memo: Dict[fx.Node, Optional[FrozenSet[str]]] = {}
        self.why: List[str] = []
        self.not_zero: List[fx.Node] = []  # where proofs of a zero stopped, deepest first

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
            z = self._zero(node)
            # a value written into in place is zero only if what is written is: writes of
            # known ops straight into it count, a write into a view of it refuses
            for u in writes_into(node) if z is not None else ():
                w = self._written(u) if mutates(u, node) else None
                z = None if w is None else z | w
            self.memo[node] = z
            if self.memo[node] is None and node.op != "get_attr":
                self.not_zero.append(node)
        return self.memo[node]

    def _written(self, user: fx.Node) -> Optional[FrozenSet[str]]:
        """What an in-place write puts in: zero (and which tensors that needs) or None."""
        name = op_name(user.target) if user.target is not operator.setitem else "index_put"
        if name not in WRITES:
            return None
        src = WRITES[name][1]
        if len(user.args) <= src:
            return None
        value = user.args[src]
        return frozenset() if isinstance(value, (int, float)) and value == 0 else self.zero(value)

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
            kind = module_kind(self.gm, node)
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
        name = op_name(node.target)
        args = list(node.args) + list(node.kwargs.values())
        tensors = [a for a in args if isinstance(a, fx.Node)]
        if name in LINEAR or node.target in (F.linear,):
            weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            return self._all(weight, bias)
        if name in NORMS:
            # F.batch_norm(input, running_mean, running_var, weight, bias) puts the affine
            # after the statistics; aten's batch_norm (and the NORMS table) puts it first
            w, b = (3, 4) if node.target is F.batch_norm else NORMS[name]
            weight = node.args[w] if len(node.args) > w else node.kwargs.get("weight")
            bias = node.args[b] if len(node.args) > b else node.kwargs.get("bias")
            if weight is None:  # no gain to zero: the normalised value is not 0
                return None
            return self._all(weight, bias)
        if name in ("addmm", "addbmm", "baddbmm", "addmv"):
            bias, product = self._all(node.args[0]), self._any(*node.args[1:3])
            return None if bias is None or product is None else bias | product
        if name in PRODUCTS:
            return self._any(*tensors)
        if name in ZEROS:
            return frozenset()
        if name in ("full", "full_like", "new_full"):
            fill = node.args[1] if len(node.args) > 1 else node.kwargs.get("fill_value")
            return frozenset() if isinstance(fill, (int, float)) and fill == 0 else None
        if name in WRITES:
            base, src = WRITES[name]
            if len(node.args) <= src:
                return None
            value = node.args[src]
            zero_value = frozenset() if isinstance(value, (int, float)) and value == 0 \
                else self.zero(value)
            into = self._all(node.args[base])
            return None if into is None or zero_value is None else into | zero_value
        if name in QUOTIENTS and len(node.args) == 2:
            d = node.args[1]
            ok = isinstance(d, (int, float)) and not isinstance(d, bool) and d != 0
            return self.zero(node.args[0]) if ok else None
        if name in SUMS | DIFFS:
            # every term must be zero, constants included: ``1 + w`` (a zero-centred norm
            # gain, as in Gemma's and Qwen3-Next's RMSNorm) is 1, not 0, when w is zeroed
            return self._all(*node.args[:2])
        if name in ("cat", "stack"):
            parts = node.args[0] if node.args else node.kwargs.get("tensors", ())
            return self._all(*parts) if isinstance(parts, (list, tuple)) else None
        if name in KEEP_ZERO and node.args:
            src = node.args[0]
            if name == "getitem" and isinstance(src, fx.Node) and src.op != "call_module" \
                    and op_name(src.target) in NORMS and node.args[1] != 0:
                return None  # a native norm's other outputs are its statistics, not 0
            return self.zero(src)
        return None

    def _activation(self, node: fx.Node) -> Optional[Tuple[str, str]]:
        """An idempotent activation's kind and settings, or None."""
        if node.op == "call_module":
            mod = self.gm.get_submodule(str(node.target))
            if isinstance(mod, IDEMPOTENT_ACTIVATIONS):
                return type(mod).__name__, mod.extra_repr().replace("inplace=True", "")
            return None
        if node.op in ("call_function", "call_method") and op_name(node.target) in IDEMPOTENT:
            extra = [a for a in node.args[1:] if not isinstance(a, bool)]
            return op_name(node.target), repr(extra)
        return None

    def _gain(self, node: fx.Node) -> Optional[Tuple[fx.Node, str]]:
        """``(x, s)`` for ``x * s`` (or ``s * x``, in place too) where ``s`` is one of the
        block's own floating tensors and broadcasting does not widen ``x``: with s = 1
        it is ``x`` exactly (Doge's ``input_residual * residual``, Gemma-4's
        ``hidden *= layer_scalar``)."""
        if op_name(node.target) not in ("mul", "imul") or len(node.args) != 2 or node.kwargs:
            return None
        for x, s in (node.args, node.args[::-1]):
            if isinstance(x, fx.Node) and isinstance(s, fx.Node) and s.op == "get_attr" \
                    and x.op != "get_attr" and shape_of(x) is not None \
                    and shape_of(x) == shape_of(node) and dtype_of(x) == dtype_of(node):
                t = attr_by_name(self.gm, str(s.target))
                if isinstance(t, torch.Tensor) and t.is_floating_point() \
                        and self.zeroable(str(s.target)):
                    return x, str(s.target)
        return None

    # -- a value equal to one the block received -------------------------------------------
    def identity(self, node, through: Optional[fx.Node] = None
                 ) -> Optional[Tuple[fx.Node, FrozenSet[str], FrozenSet[str]]]:
        """``(x, zeroed, ones)``: ``node``'s value is the block's input ``x``, reshaped to
        ``node``'s shape (the caller checks the shapes agree where it matters), once the
        tensors ``zeroed`` are 0 and the gains ``ones`` are 1; None (and a reason in
        ``why``) if not provable.  ``through``: an in-place ``x *= s`` reached from, whose
        write into ``x`` is the step being proved (a no-op once s = 1)."""
        if not isinstance(node, fx.Node):
            self.why.append(f"{node!r} is a constant")
            return None
        mutated = next((u for u in writes_into(node) if u in self.nodes and u is not through),
                       None)
        if mutated is not None:
            self.why.append(f"{describe(mutated, self.gm)} writes in place into `{node.name}`, "
                            "which the block passes through")
            return None
        if node not in self.nodes:
            return node, frozenset(), frozenset()
        if node.op == "call_module" and module_kind(self.gm, node) == "keep_value":
            return self.identity(node.args[0])
        act = self._activation(node)
        if act is not None and node.args:
            inner = self.identity(node.args[0])
            if inner is not None and self._activation(inner[0]) == act:
                return inner  # φ(x + 0) = φ(x) = x where x = φ(...) already
            if inner is not None:
                self.why.append(
                    f"{describe(node, self.gm)} after the residual sum is idempotent, but "
                    f"what the block passes through (`{inner[0].name}`) is not an output of it")
                return None
        if node.op in ("call_function", "call_method"):
            name = op_name(node.target)
            alpha = node.kwargs.get("alpha", 1)
            if name in SUMS | DIFFS and len(node.args) == 2 and alpha == 1:
                a, b = node.args
                before = len(self.why)
                orders = [(a, b)] + ([(b, a)] if name in SUMS else [])
                for keep, drop in orders:
                    z = self.zero(drop)
                    if z is None or not isinstance(keep, fx.Node) or \
                            shape_of(keep) is None or shape_of(keep) != shape_of(node):
                        continue  # (a zero broadcast wider would copy the input)
                    inner = self.identity(keep)
                    if inner is not None:
                        return inner[0], inner[1] | z, inner[2]
                stop = next((n for n in self.not_zero if n in (a, b) or n in self.nodes), None)
                self.why.append(
                    f"the sum {describe(node)} has no side that can be zeroed while the "
                    "other passes the input through"
                    + (f" (a zero stops at {describe(stop, self.gm)}, which fxgrow does not "
                       "know to give 0 from zeroed weights)" if stop is not None else "")
                    + "".join(f"; {w}" for w in self.why[before:]))
                return None
            same = name in KEEP_VALUE | RESHAPES or (
                name in CASTS and node.args and isinstance(node.args[0], fx.Node)
                and dtype_of(node) == dtype_of(node.args[0]) is not None)
            if same and node.args:
                return self.identity(node.args[0])
            gain = self._gain(node)
            if gain is not None:
                x, s = gain
                inner = self.identity(x, through=node if mutates(node, x) else None)
                if inner is not None:
                    return inner[0], inner[1], inner[2] | {s}
                return None
        self.why.append(f"its output passes through {describe(node, self.gm)}, which is not a residual "
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
    ones: FrozenSet[str] = frozenset()
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
        source, z, o = proof
        _same_kind(root, node, source)
        passes[node.name] = source.name
        zeroed, ones = zeroed | z, ones | o
    both = sorted(zeroed & ones)
    if both:  # one tensor cannot be 0 for one path and 1 for another
        raise NotIdentityError(
            f"new module {root!r} cannot start as the identity: {both[0]!r} would have to be "
            "0 (to zero a branch) and 1 (as the gain on the path passed through)")
    return IdentityProof(root, zeroed, passes, frozenset(n.name for n in nodes),
                         frozenset(sums), ones)


def _same_kind(root: str, node: fx.Node, source: fx.Node) -> None:
    if getattr(meta.shape(node), "shape", None) != getattr(meta.shape(source), "shape", None) \
            or dtype_of(node) != dtype_of(source):
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
        if u.op not in ("call_function", "call_method") or op_name(u.target) not in SUMS \
                or len(u.args) != 2 or u.kwargs.get("alpha", 1) != 1:
            return None
        a, b = u.args
        other = b if a is node else a
        if not isinstance(other, fx.Node) or other is node:
            return None
        out.append((u, other))
    return out
