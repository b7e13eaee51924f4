"""Carry out a growth plan: build the widened ``GraphModule``.

Apply only executes a plan; every decision was made by the analysis and the
plan, and everything it reads is data: the members of each growing tensor
(grown by :func:`fxgrow.widen.gather.grow_tensor`, padded groups by
:class:`fxgrow.widen.pad.Padder`), and the rewrite templates of literal
graph arguments (view sizes, split sizes, slice bounds) and module
attributes (``in_features``, ``num_features``, ...), evaluated with the new
sizes (:func:`fxgrow.ir.rewrites.evaluate`).  The result is a new
``GraphModule``; the user's model and the analysed graph are left as they
were.

Initialisers
------------
``net2net``
    Function preserving: new neurons copy old ones, consumers divide by the
    replication counts.
``split``, ``zero_out``
    Function preserving and symmetry breaking: copies with unequal shares of
    the outgoing weights, or fresh neurons with zero outgoing weights; see
    :mod:`fxgrow.widen.inits`.
``net2net`` with ``noise > 0``
    As above, then Gaussian noise of ``noise * std(tensor)`` added to the
    new neurons' producer rows (the paper's symmetry breaking). Not exact.
``random_pad``
    Old neurons keep their weights unscaled; every slice that belongs to a
    new neuron takes a fresh initialisation. Not function preserving.
``random_init``
    The widened architecture with every parameter re-initialised. Not
    function preserving.
"""

from __future__ import annotations

import copy
import operator
from typing import Any, Dict, List

import torch
from torch import fx, nn

from .. import checks, meta
from ..capture import modes
from ..capture.modules import deepcopy_memo
from ..errors import SpecError, UnknownInitError
from ..ir.groups import Member
from ..ir.rewrites import Item, evaluate, grows
from ..ir.roles import PRODUCER
from ..ops.access import attr_by_name, owner_of
from . import inits
from .gather import Expander, _real, grow_tensor
from .pad import Padder
from .reparam import Reparametrized
from .growth import GrowthPlan
from .record import GrowthRecord, share_maps, tensor_growth

__all__ = ["apply_plan", "INITS", "EXACT"]

INITS = ("net2net", "split", "zero_out", "random_pad", "random_init")
#: initialisers that scale consumers by the shares (function preserving without noise)
EXACT = ("net2net",) + inits.INITS


def _aliases(root: nn.Module) -> Dict[int, List[str]]:
    """Every qualified name of every tensor, keyed by tensor identity."""
    out: Dict[int, List[str]] = {}
    for prefix, mod in root.named_modules(remove_duplicate=False):
        for name, t in list(mod._parameters.items()) + list(mod._buffers.items()):
            if t is not None:
                q = f"{prefix}.{name}" if prefix else name
                lst = out.setdefault(id(t), [])
                if q not in lst:
                    lst.append(q)
        for name, t in vars(mod).items():
            if isinstance(t, torch.Tensor) and not name.startswith("_"):
                q = f"{prefix}.{name}" if prefix else name
                out.setdefault(id(t), [q])
    return out


def _set_tensor(root: nn.Module, qualnames: List[str], old: torch.Tensor,
                new: torch.Tensor) -> None:
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(new, requires_grad=old.requires_grad)
    for q in qualnames:
        mod, name = owner_of(root, q)
        if name in mod._parameters:
            mod._parameters[name] = new
        elif name in mod._buffers:
            mod._buffers[name] = new
        else:
            setattr(mod, name, new)


def _fresh_like(new: nn.Module, qualname: str, shape, like: torch.Tensor,
                fresh_modules: Dict[str, nn.Module]) -> torch.Tensor:
    """A freshly initialised tensor for ``qualname`` of the widened model."""
    path, _, name = qualname.rpartition(".")
    mod = new.get_submodule(path) if path else new
    reset = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None)
    if reset is not None and path:
        if path not in fresh_modules:
            clone = copy.deepcopy(mod)
            getattr(clone, reset.__name__)()
            fresh_modules[path] = clone
        t = getattr(fresh_modules[path], name, None)
        if isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(shape):
            return t.detach().to(like.dtype)
    if not _real(like):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    std = like.detach().float().std() if like.numel() > 1 else torch.tensor(1.0)
    std = float(std) if float(std) > 0 else 1.0
    return (torch.randn(shape, device=like.device) * std).to(like.dtype)


def apply_plan(plan: GrowthPlan, init: str = "net2net", noise: float = 0.0) -> fx.GraphModule:
    """Build the grown model a plan describes.

    Parameters
    ----------
    plan : GrowthPlan
    init : {"net2net", "split", "zero_out", "random_pad", "random_init"}
        See the module documentation; ``net2net`` (with ``noise=0``),
        ``split`` and ``zero_out`` preserve the function.
    noise : float
        Relative noise on the new neurons' producer rows (``net2net`` only).

    Returns
    -------
    torch.fx.GraphModule
        A new module; ``meta["fxgrow.plan"]`` holds ``plan.summary()``,
        ``meta["fxgrow.growth"]`` the gradient map (:mod:`fxgrow.widen.record`).
    """
    if not isinstance(init, str) or init not in INITS:
        raise UnknownInitError(f"unknown init {init!r}; choose one of {INITS}")
    if not isinstance(plan, GrowthPlan):
        raise SpecError(f"apply_plan needs a GrowthPlan (from fxgrow.plan_widening), not "
                        f"{type(plan).__name__}")
    noise = checks.real(noise, "noise")
    plan = inits.prepare(plan, init)  # split, zero_out: each copy's share (and the proof)
    analysis = plan.analysis
    old = analysis.graph_module
    ex = Expander(plan)
    mp = Padder(plan)
    by_tensor: Dict[str, List[Member]] = {}
    for m in analysis.members.values():
        by_tensor.setdefault(m.tensor, []).append(m)
    growing = {q: ms for q, ms in by_tensor.items()
               if any(ex.grows(m.layout) or mp.grows(m) for m in ms)}
    originals = {q: attr_by_name(old, q) for q in growing}
    derived = Reparametrized(old, originals)  # weight norms: grow W = g v/|v|, then re-derive
    # Tensors about to be replaced are not copied: the peak is old + new
    # weights, not twice the old ones plus the new.
    memo: Dict[int, Any] = deepcopy_memo(old)
    for t in originals.values():
        empty = torch.empty(0, dtype=t.dtype, device=t.device)
        memo[id(t)] = nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty
    new = copy.deepcopy(old, memo)
    aliases = _aliases(old)  # names of each original tensor, by identity

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        fresh_modules: Dict[str, nn.Module] = {}
        # module attributes first: fresh modules for random_pad need the new sizes
        sizes = plan.sizes
        for a in analysis.attr_rewrites:
            setattr(new.get_submodule(a.module), a.attr, evaluate(a.value, sizes))
        mp.rescale_eps(new)
        pending, records, record_of = [], {}, {}
        scaled = init in EXACT
        shares = share_maps(plan, old_only=not scaled)
        fresh_groups = inits.fresh_groups(plan) if init == "zero_out" else frozenset()
        for qualname, members in growing.items():
            t = originals[qualname]
            grown, mask = grow_tensor(derived.source(qualname, t), members, ex,
                                       scale_consumers=scaled, mp=mp,
                                       want_mask=(init == "random_pad" or bool(noise)))
            if fresh_groups:  # zero_out: fresh rows of new neurons, filled below
                mask = inits.fresh_mask(plan, ex, members, fresh_groups, grown.shape,
                                        grown.device)
            # tensors read along the same dims the same way (a norm's weight, bias and
            # statistics) share one record: it is plain data, never written to
            key = tuple((m.dim, m.layout, m.role, mp.grows(m)) for m in members)
            if key not in record_of:
                record_of[key] = tensor_growth(members, ex, mp, shares, scaled)
            for q in aliases.get(id(t), [qualname]):
                records[q] = record_of[key]
            if init == "net2net" and noise and mask is not None and _real(grown):
                if any(m.role == PRODUCER and ex.grows(m.layout) for m in members):
                    std = float(t.detach().float().std()) if t.numel() > 1 else 1.0
                    grown = grown + noise * std * torch.randn_like(grown) * mask
            _set_tensor(new, aliases.get(id(t), [qualname]), t, grown)
            pending.append((qualname, t, mask))
        if init in ("random_pad", "zero_out"):
            # fresh values come from modules that already have the new shapes
            for qualname, t, mask in pending:
                if mask is None:
                    continue
                current = attr_by_name(new, qualname)
                fresh = _fresh_like(new, qualname, current.shape, current, fresh_modules)
                _set_tensor(new, aliases.get(id(t), [qualname]), t,
                            torch.where(mask, fresh.to(current.device), current.detach()))
        derived.finish(new, lambda q, t, v: _set_tensor(new, aliases.get(id(t), [q]), t, v))
        if init == "random_init":
            _reinit_all(new)

    _rewrite_nodes(new, analysis.rewrites, sizes)
    mp.rescale_eps_literals(new)
    new.recompile()
    new.meta[meta.PLAN] = plan.summary()
    if plan.notes:
        new.meta[meta.WARNINGS] = list(plan.notes)
    new.meta[meta.INIT] = init
    new.meta[meta.GROWTH] = GrowthRecord(init, records, reinitialised=(init == "random_init"))
    modes.guard(new, new.meta.get(meta.CAPTURE, {}))  # a graph's deepcopy drops its hooks
    return new


def _reinit_all(root: nn.Module) -> None:
    """Re-initialise every parameter: module defaults, else N(0, std of the old values)."""
    covered = set()
    for mod in root.modules():
        reset = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None)
        if reset is not None and mod is not root:
            reset()
            covered.update(id(p) for p in mod.parameters(recurse=False))
    with torch.no_grad():
        for p in root.parameters():
            if id(p) not in covered and _real(p):
                std = float(p.detach().std()) if p.numel() > 1 else 1.0
                p.normal_(0.0, std if std > 0 else 1.0)


def _rewrite_nodes(new: fx.GraphModule, rewrites, sizes: Dict[int, int]) -> None:
    """Give every node whose literal arguments count growing neurons its new call."""
    nodes = {n.name: n for n in new.graph.nodes}
    # analysed graph's nodes -> new graph's (the getitems inserted below are the new graph's)
    remap = lambda n: n if n.graph is new.graph else nodes[n.name]  # noqa: E731
    for r in rewrites:
        if not grows(r.when, sizes):
            continue
        node = nodes[r.node]
        items: Dict[Item, fx.Node] = {}

        def read(t):  # an Item: the entry, read in the grown graph just before the node
            if isinstance(t, Item):
                if t not in items:
                    with new.graph.inserting_before(node):
                        items[t] = new.graph.call_function(operator.getitem,
                                                           (remap(t.node), t.index))
                return items[t]
            if isinstance(t, (tuple, list)):
                return type(t)(read(v) for v in t)
            if isinstance(t, dict):
                return {k: read(v) for k, v in t.items()}
            return t
        node.args = fx.map_arg(tuple(read(evaluate(r.args, sizes))), remap)
        node.kwargs = fx.map_arg(dict(read(evaluate(r.kwargs, sizes))), remap)
        if r.target is not None:
            node.target = r.target
