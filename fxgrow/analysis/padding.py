"""Padding proofs: grow a LayerNorm'd or RMSNorm'd residual stream to any width, exactly.

Uniform replication keeps LayerNorm exact only for integer factors.  For
any other width, new neurons can instead take the **mean** of
the old ones: if every producer's new row is the mean of its old rows, every
value on an affine path (adds, scalar scales, dropout in eval, reshapes) has
new entries equal to the mean of its old entries.  At a LayerNorm over the
group the mean is then unchanged and the variance becomes ``var·n/n'``;
scaling ``γ`` by ``√(n/n')`` and ``ε`` by ``n/n'`` keeps the old outputs
exact, and ``β_new = 0`` makes the new outputs zero.  Consumers read the new
neurons through zero columns, so nothing they compute changes.

RMSNorm has no mean to keep, so its groups are **zero-padded** instead:
producers' new rows (and biases, and tensor attributes added in) are 0, so
every value on a *linear* path (no constant offsets) has new entries 0.  The
mean square over ``n'`` neurons is then ``ms·n/n'``; with ``γ·√(n/n')`` and
``ε·n/n'`` (``ε=None`` means ``finfo(dtype).eps``) the old outputs are exact
and the new ones are 0.

This holds only where it can be proved: every uniform-replication site of
the group must be a 1-D ``nn.LayerNorm`` (all of them) or ``nn.RMSNorm``
(all of them) over exactly that group, whose input is on an affine (for
LayerNorm) or linear (for RMSNorm) path from the group's producers (true
of pre-norm transformer residual streams; false after a ReLU, or in a
post-LN block whose normalised output is added back into the stream).
:func:`prove_padding` returns the mode and the norm sites it proved (what the
rewrite rescales), or says why not, and the plan then insists on integer
factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx

from .. import meta
from ..capture.shapes import TensorSpec
from ..ir.layout import Axis, leaves
from ..ir.roles import PRODUCER
from ..ir.values import TV
from ..ops.access import tensor_by_name
from ..ops.aten import canonical_target
from ..ops.kinds import (CASTS, MEAN, MUL, POW, RSQRT, SQUARE, SUM, canonical_arg,
                         default_rms_eps, gain_operand, is_op, kind, node_inputs, norm_kind,
                         value_users)
from .result import Analysis

__all__ = ["Padding", "NormSite", "prove_padding", "pad_mode", "mean_pad_problem",
           "written_rms", "WrittenRMS", "functional_norm", "MODES"]

#: what each pad mode normalises with: mean-padding keeps a LayerNorm's mean,
#: zero-padding an RMSNorm's mean square (up to the factor n/n' undone by γ, ε)
MODES = {"layer": ("mean", "LayerNorm"), "rms": ("zero", "RMSNorm")}


@dataclass(frozen=True)
class NormSite:
    """A norm over a padded group, and what padding rescales in it.

    ``weight`` (×√(n/n')) and ``bias`` (new entries 0) name its affine tensors;
    an ``nn.LayerNorm``/``nn.RMSNorm`` is ``module`` (its ``eps`` × n/n'), a
    written-out RMSNorm has its ``eps`` literal at argument ``eps_index`` of
    node ``eps_node`` instead.
    """

    node: str
    weight: Optional[str]
    bias: Optional[str] = None
    module: Optional[str] = None
    eps_node: Optional[str] = None
    eps_index: int = 0
    eps: float = 0.0
    #: the gain is ``offset + weight``: rescaled, ``w' = (offset + w)·√(n/n') - offset``
    offset: float = 0.0


@dataclass(frozen=True)
class Padding:
    """What :func:`prove_padding` found: ``mode`` (``"mean"``, ``"zero"`` or None),
    the ``problem`` when None, and the norm ``sites`` the rewrite rescales."""

    mode: Optional[str]
    problem: Optional[str] = None
    sites: Tuple[NormSite, ...] = ()


def _has(node: fx.Node, gid: int) -> bool:
    v = meta.value(node)
    return isinstance(v, TV) and any(leaf.space == gid for d in v.dims for leaf in leaves(d))


def _whole(node: fx.Node, gid: int) -> bool:
    """The group is a whole dim of the node's value (not inside a product or cut)."""
    v = meta.value(node)
    if not isinstance(v, TV):
        return False
    for d in v.dims:
        if any(leaf.space == gid for leaf in leaves(d)) and d != Axis(gid, d.size):
            return False
    return True


def _producing(analysis: Analysis, node: fx.Node, gid: int) -> bool:
    """``node`` is a layer whose output dim of the group is made by its own weight rows."""
    if node.op == "get_attr":
        return True
    if node.op == "call_module":
        owns = lambda t: t.startswith(f"{node.target}.")  # noqa: E731
    elif kind(analysis.graph_module, node) == "layer":
        # by identity: a tied weight's member is named by the tensor's first name
        gm = analysis.graph_module
        attrs = {id(tensor_by_name(gm, n.target)) for n in node_inputs(node) if n.op == "get_attr"}
        owns = lambda t: id(tensor_by_name(gm, t)) in attrs  # noqa: E731
    else:
        return False
    return any(m.role == PRODUCER and owns(m.tensor) and m.layout == Axis(gid, m.layout.size)
               for m in analysis.members.values() if any(l.space == gid for l in leaves(m.layout)))


def _affine(analysis: Analysis, node: fx.Node, gid: int, seen: Dict[fx.Node, Optional[str]],
            zero: bool = False) -> Optional[str]:
    """None if ``node``'s new entries along the group are the mean of its old ones
    (``zero``: are 0, so constants may not be added)."""
    if node in seen:
        return seen[node]
    seen[node] = "a cycle"  # graphs are acyclic; guards recursion
    result: Optional[str]
    if not _has(node, gid):
        result = None  # carries no neuron of the group: broadcast constants are fine
    elif not _whole(node, gid):
        result = f"node `{node.name}` holds the group inside a product or a slice"
    elif _producing(analysis, node, gid):
        result = None
    elif zero and kind(analysis.graph_module, node) == "add" and not _all_carry(node, gid):
        result = f"node `{node.name}` adds a constant to the group"
    elif kind(analysis.graph_module, node) in ("move", "add"):
        result = next((r for r in (_affine(analysis, n, gid, seen, zero)
                                   for n in node_inputs(node)) if r), None)
    elif kind(analysis.graph_module, node) in ("scale", "divide"):
        flat = node_inputs(node)
        carrying = [n for n in flat if _has(n, gid)]
        if len(carrying) != 1 or (kind(analysis.graph_module, node) == "divide"
                                  and flat and flat[-1] is carrying[0] and len(flat) > 1):
            result = f"node `{node.name}` multiplies neurons of the group together"
        else:
            result = _affine(analysis, carrying[0], gid, seen, zero)
    else:
        op = meta.op(node) or str(node.target)
        result = f"node `{node.name}` ({op}) is not {'linear' if zero else 'affine'}"
    seen[node] = result
    return result


@dataclass(frozen=True)
class WrittenRMS:
    """An RMSNorm written out, ``v * rsqrt(mean(v**2) + eps) * weight`` (LLaMA's form,
    or Gemma's ``* (1 + weight)``).

    Zero-padding rescales it like ``nn.RMSNorm``: the literal ``eps`` of node
    ``eps_node`` (argument ``eps_index``) by ``n/n'``, and the gain by ``√(n/n')``.
    """

    value: fx.Node
    eps_node: str
    eps_index: int
    eps: float
    weight: str
    #: the gain is ``offset + weight`` (Gemma's ``1 + w``)
    offset: float = 0.0


def _only_user(node: fx.Node) -> Optional[fx.Node]:
    """The one node using ``node``'s value (export's metadata asserts are no use)."""
    users = value_users(node)
    return users[0] if len(users) == 1 else None


def _square_of(node: fx.Node) -> Optional[fx.Node]:
    """``v`` if ``node`` is ``v ** 2``, ``v * v`` or ``square(v)``."""
    args = node.args
    if is_op(node, POW) and len(args) == 2 and args[1] == 2:
        return args[0] if isinstance(args[0], fx.Node) else None
    if is_op(node, MUL) and len(args) == 2 and args[0] is args[1]:
        return args[0] if isinstance(args[0], fx.Node) else None
    if is_op(node, SQUARE) and len(args) == 1:
        return args[0] if isinstance(args[0], fx.Node) else None
    return None


def _gain_member(analysis: Analysis, attr: fx.Node, gid: int) -> Optional[str]:
    """The tensor name of 1-D gain ``attr`` (a ``get_attr``) over exactly group ``gid``,
    if its one use is the norm that reads it: padding rescales it in place, so
    nothing else may read it (no other ``get_attr`` of it, no module owning it)."""
    gm = analysis.graph_module
    if not isinstance(attr, fx.Node) or attr.op != "get_attr":
        return None
    tensor = tensor_by_name(gm, attr.target)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1:
        return None
    reads = [n for n in gm.graph.nodes if n.op == "get_attr"
             and tensor_by_name(gm, n.target) is tensor]
    if len(reads) != 1 or len(value_users(attr)) != 1 or any(
            n.op == "call_module" and any(p is tensor for p in gm.get_submodule(n.target).parameters())
            for n in gm.graph.nodes):
        return None
    # members are named by a tensor's first name (tied weights are one tensor)
    member = analysis.members.get((attr.target, 0)) or next(
        (m for (t, d), m in analysis.members.items() if tensor_by_name(gm, t) is tensor), None)
    if member is None or member.layout != Axis(gid, member.layout.size):
        return None
    return member.tensor


#: functional norms: ``(mode key, label, index of weight, of bias (None: none), of eps,
#: the default eps (None: the dtype's, see :func:`~fxgrow.ops.kinds.default_rms_eps`))``
_FUNCTIONAL = {F.layer_norm: ("layer", "layer_norm", 2, 3, 4, 1e-5)}
if hasattr(F, "rms_norm"):
    _FUNCTIONAL[F.rms_norm] = ("rms", "rms_norm", 2, None, 3, None)


def functional_norm(analysis: Analysis, node: fx.Node,
                    gid: int) -> Tuple[Optional[str], Optional[NormSite], Optional[str]]:
    """``(mode key, site, problem)`` of a functional ``layer_norm``/``rms_norm`` node
    (``F.layer_norm`` traced, ``aten.layer_norm`` exported) over group ``gid``.

    It is padded like the module when its ``eps`` is a literal argument (rewritten
    ×n/n' in the graph, like a written-out RMSNorm's) and its weight (and bias) are
    1-D tensors of the group that only it reads (rescaled in place).  ``(None, None,
    None)`` if the node is no functional norm; ``problem`` says why one cannot be padded.
    """
    if node.op != "call_function" or not is_op(node, _FUNCTIONAL) \
            or not isinstance(meta.shape(node), TensorSpec):
        return None, None, None  # (native_layer_norm also returns statistics)
    key, label, wi, bi, ei, default = _FUNCTIONAL[canonical_target(node)]
    weight = canonical_arg(node, wi, "weight", None)
    if weight is None:
        return key, None, f"{label} `{node.name}` has no affine weight to rescale"
    tensors = [_gain_member(analysis, weight, gid)]
    bias = canonical_arg(node, bi, "bias", None) if bi is not None else None
    if bias is not None:
        tensors.append(_gain_member(analysis, bias, gid))
    if None in tensors:
        return key, None, (f"{label} `{node.name}`'s weight or bias is not a 1-D tensor of "
                           "the group that only it reads")
    eps = canonical_arg(node, ei, "eps", default)
    if eps is None:
        spec = meta.shape(canonical_arg(node, 0, "input"))
        eps = default_rms_eps(getattr(spec, "dtype", torch.get_default_dtype()))
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        return key, None, f"the eps of {label} `{node.name}` is not a literal"
    return key, NormSite(node.name, tensors[0], tensors[1] if bias is not None else None,
                         eps_node=node.name, eps_index=ei, eps=float(eps)), None


def written_rms(analysis: Analysis, mean: fx.Node, gid: int) -> Optional[WrittenRMS]:
    """The RMSNorm that mean node ``mean`` (over group ``gid``) belongs to, or None.

    Only the exact chain ``mean(v**2) -> + eps -> rsqrt -> v * . -> (casts) -> * weight``
    is recognised, each node used once, with ``eps`` a literal and ``weight`` a 1-D
    tensor of the group; anything else keeps integer factors.
    """
    gm = analysis.graph_module
    if not is_op(mean, MEAN) or not mean.args:
        return None
    value = _square_of(mean.args[0]) if isinstance(mean.args[0], fx.Node) else None
    add = _only_user(mean)
    if value is None or add is None or not is_op(add, SUM) or add.kwargs or len(add.args) != 2:
        return None
    index = 1 if add.args[0] is mean else 0
    eps = add.args[index]
    if add.args[1 - index] is not mean or isinstance(eps, bool) or not isinstance(eps, (int, float)):
        return None
    rsqrt = _only_user(add)
    if rsqrt is None or not is_op(rsqrt, RSQRT):
        return None
    scaled = _only_user(rsqrt)
    if scaled is None or not is_op(scaled, MUL) or set(scaled.args) != {value, rsqrt}:
        return None
    cur = scaled
    while True:  # casts back to the input dtype, then the weight
        user = _only_user(cur)
        if user is None:
            return None
        rest = list(user.args[1:]) + list(user.kwargs.values())
        if kind(gm, user) == "move" and user.args[:1] == (cur,) and (is_op(user, CASTS) or not any(
                isinstance(a, fx.Node) and isinstance(meta.value(a), TV) for a in rest)):
            cur = user  # `.to(x.dtype)`, `type_as(x)`: a cast, not a second tensor
            continue
        weights = [a for a in user.args if isinstance(a, fx.Node) and a is not cur]
        gain = gain_operand(weights[0]) if len(weights) == 1 else None  # w, or c + w
        if not is_op(user, MUL) or len(user.args) != 2 or gain is None:
            return None
        member = _gain_member(analysis, gain[0], gid)
        if member is None:
            return None
        return WrittenRMS(value, add.name, index, float(eps), member, gain[1])


def _all_carry(node: fx.Node, gid: int) -> bool:
    """Every operand of an addition is a tensor holding the group (no broadcast constant)."""
    operands = list(node.args) + [v for k, v in node.kwargs.items() if k != "alpha"]
    return all(isinstance(a, fx.Node) and _has(a, gid) for a in operands)


def prove_padding(analysis: Analysis, gid: int) -> Padding:
    """How group ``gid`` can grow to any width: by mean-padding (LayerNorm sites),
    zero-padding (RMSNorm sites), or not (``mode`` None, ``problem`` says why).

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.RMSNorm(4), torch.nn.Linear(4, 2))
    >>> p = prove_padding(fxgrow.analyze(m, torch.randn(2, 3)), 1)
    >>> p.mode, [s.module for s in p.sites]
    ('zero', ['1'])
    """
    group = analysis.group(gid)
    if not group.uniform:
        return Padding(None, "the group has no uniform-replication constraint")
    if len(analysis.family(gid)) > 1 or analysis.exponent(gid):
        return Padding(None, "it is one side of a product between activations, whose partner "
                             "copies its map")
    for m in group.members:
        if m.layout != Axis(gid, group.size):
            return Padding(None, f"`{m.tensor}` dim {m.dim} holds the group inside a larger "
                                 "layout")
    nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    seen: Dict[fx.Node, Optional[str]] = {}
    mode: Optional[str] = None
    sites = []
    for site in analysis.uniform:
        if not any(leaf.space == gid for leaf in leaves(site.layout)):
            continue
        name = site.node
        node = nodes[name]
        norm = analysis.graph_module.get_submodule(node.target) if node.op == "call_module" else None
        here, label = MODES.get(norm_kind(norm), (None, None))
        start = node.args[0] if node.args else None
        written = written_rms(analysis, node, gid) if norm is None else None
        key, functional, problem = functional_norm(analysis, node, gid) if norm is None \
            else (None, None, None)
        if written is not None:
            (here, label), start = MODES["rms"], written.value
            found = NormSite(name, written.weight, eps_node=written.eps_node,
                             eps_index=written.eps_index, eps=written.eps, offset=written.offset)
        elif key is not None:
            if problem:
                return Padding(None, problem)
            (here, label), found = MODES[key], functional
        elif here is None or len(norm.normalized_shape) != 1:
            return Padding(None, f"node `{name}` averages over the group and is not a 1-D "
                                 "LayerNorm, RMSNorm (module or function) or written-out RMSNorm")
        else:
            affine = [t if getattr(norm, t, None) is not None else None for t in ("weight", "bias")]
            found = NormSite(name, *(f"{node.target}.{t}" if t else None for t in affine),
                             module=node.target)
        if found.weight is None:
            # without γ nothing undoes the factor √(n'/n) the wider norm divides by
            return Padding(None, f"{label} `{name}` has no affine weight to rescale")
        if mode is not None and here != mode:
            return Padding(None, "the group is normalised by both LayerNorm and RMSNorm")
        mode = here
        if site.layout != Axis(gid, group.size):
            return Padding(None, f"{label} `{name}` normalises more than this group")
        problem = _affine(analysis, start, gid, seen, zero=(here == "zero"))
        if problem:
            path = "a linear" if here == "zero" else "an affine"
            return Padding(None, f"the input of {label} `{name}` is not on {path} path from "
                                 f"the group's producers: {problem}")
        sites.append(found)
    # A max over copies is the max, so replication leaves amax/amin alone.  A padded
    # group's new entries are the mean of the old ones (mean-padding) only on the
    # affine path from its producers, where a max over them is unchanged; anywhere
    # else (after the norm they are 0, after a nonlinear op f(mean)) and in
    # zero-padding (a new 0) a max or min could change.
    for node in analysis.graph_module.graph.nodes:
        if not (meta.rule(node) or "").startswith("reduce_max"):
            continue
        for n in node_inputs(node):
            if _has(n, gid) and (mode == "zero" or _affine(analysis, n, gid, {}) is not None):
                return Padding(None, f"node `{node.name}` takes a max or min over the group, "
                                     "which the new neurons could change")
    return Padding(mode, None, tuple(sites))


def pad_mode(analysis: Analysis, gid: int) -> Tuple[Optional[str], Optional[str]]:
    """``(mode, problem)`` of :func:`prove_padding`.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.RMSNorm(4), torch.nn.Linear(4, 2))
    >>> pad_mode(fxgrow.analyze(m, torch.randn(2, 3)), 1)
    ('zero', None)
    """
    p = prove_padding(analysis, gid)
    return p.mode, p.problem


def mean_pad_problem(analysis: Analysis, gid: int) -> Optional[str]:
    """Why group ``gid`` cannot grow to any width by padding (None if it can).

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    >>> a = fxgrow.analyze(m, torch.randn(2, 3))
    >>> mean_pad_problem(a, a.group("0").id) is None
    True
    """
    return prove_padding(analysis, gid).problem
