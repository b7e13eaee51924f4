"""Symmetry-breaking initialisers that keep the function: ``split`` and ``zero_out``.

A Net2WiderNet copy has the same incoming weights as the neuron it copies and
an equal share ``1/c`` of its outgoing weights, so the copies receive equal
gradients forever and the wide network trains as the narrow one.  Both
initialisers here stay exact and break that symmetry.  Each is a function of
the plan and the source tensors: :func:`prepare` turns a plan into the plan of
the initialiser (per group, each copy's *share* of its neuron's outgoing
weight, :attr:`fxgrow.widen.growth.GroupGrowth.shares`), and the ordinary
gather (:func:`fxgrow.widen.gather.grow_tensor`) carries it out;
:func:`initialise` does both for any caller that has the tensors (the rewrite
pass, :func:`fxgrow.widen.apply.apply_plan`, and a grower into a model of the
user's own class).

``split`` (LEMON, Wang et al., ICLR 2024)
    Copies as in Net2WiderNet, but the ``c`` copies of neuron ``i`` take
    unequal shares ``w_1 … w_c`` of its outgoing weight, ``Σ_k w_k = 1``:
    ``w_k = u_k / Σ u``, ``u_k ~ U(0.5, 1.5)`` i.i.d. (:data:`SPLIT_RANGE`; with
    two copies each share lies in ``(0.25, 0.75)``; in general no share is more
    than three times another), seeded by the plan's seed and the group.
    *Why exact:* a consumer sums ``Σ_j w_j W[:, g(j)] h_g(j) = Σ_i W[:, i] h_i
    Σ_{g(j)=i} w_j = Σ_i W[:, i] h_i``: Net2WiderNet's argument needs only that
    the shares of each neuron's copies sum to 1, never that they are equal.
    It carries over to every case the plan scales: the divided side of a
    contraction (a key head dim, :meth:`GrowthPlan.rescaled`) has its rows
    multiplied by ``w`` instead of ``1/c`` (``Σ_j q_g(j) k_g(j) w_j = Σ_i q_i
    k_i``), a group on both sides of a product (``analysis.halved``) by
    ``√w`` on each side, and uniformly replicated groups (LayerNorm, a mean)
    keep their statistics because those are computed on the copies, which are
    still equal -- shares only scale what consumers read.  Mean- and
    zero-padded groups (``plan.padded``) have no copies and are padded as by
    every initialiser.  *Why asymmetric:* the gradient a copy's incoming row
    receives is its share times the neuron's, so one step moves the copies
    by different amounts.
``zero_out`` (GradMax, Evci et al., ICLR 2022; Firefly, Wu et al., 2020)
    New neurons take fresh incoming weights (the layer's own initialisation)
    and zero outgoing weights; old neurons keep theirs, unscaled (shares
    ``1`` for the old neuron, ``0`` for each new one).  *Why exact:* a fresh
    neuron is read only through zero columns, by contractions whose other
    side is zero there, or by position-wise ops on the way to those;
    :func:`fxgrow.widen.fresh.fresh_problem` proves it from the graph, and a
    group where it does not hold is refused with a :class:`ConstraintError`
    naming the node.  On a normalised stream (``group.uniform``: a
    LayerNorm, RMSNorm or mean averages over the group) a fresh neuron would
    change the statistics, so there the new neurons are copies (integer
    factors: the statistics of copies are exact) with zero outgoing weights,
    or are mean- or zero-padded as the plan decided (other factors; a
    zero-padded neuron starts at zero in and out, a saddle point).  The
    divided side of a contraction gets zero rows for its new neurons (its
    shares are 0), so its partner's fresh entries meet zeros; a group on both
    sides of one product (``analysis.halved``) would get zero rows *and*
    columns, a saddle, and is refused.

>>> import torch, fxgrow
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> a = fxgrow.analyze(m, torch.randn(5, 3))
>>> p = prepare(fxgrow.plan_widening(a, 2.0), "split")
>>> gg = p.growth[1]
>>> s = torch.zeros(4, dtype=torch.float64).index_add_(0, gg.index, gg.shares)
>>> bool(torch.allclose(s, torch.ones(4, dtype=torch.float64)))
True
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence

import torch

from ..errors import ConstraintError, SpecError
from ..ir.groups import Member
from ..ir.layout import expand, leaves
from ..ir.roles import CONSUMER, PRODUCER
from .fresh import fresh_problem
from .gather import Expander, grow_tensor
from .growth import GroupGrowth, GrowthPlan
from .pad import Padder

__all__ = ["INITS", "SPLIT_RANGE", "prepare", "split_shares", "fresh_groups", "fresh_mask",
           "initialise", "Fresh"]

#: the exact, symmetry-breaking initialisers of this module
INITS = ("split", "zero_out")
#: ``split``: raw weights ``u ~ U(low, high)``, normalised per old neuron into shares
SPLIT_RANGE = (0.5, 1.5)

#: ``fresh(name, shape, like)``: a freshly initialised tensor of the grown shape
Fresh = Callable[[str, torch.Size, torch.Tensor], torch.Tensor]


def split_shares(gg: GroupGrowth, seed: int) -> torch.Tensor:
    """Unequal shares for the copies of each neuron, summing to 1 per neuron (float64).

    A neuron with one copy (itself) keeps share 1.

    >>> gg = GroupGrowth(0, 2, 4, torch.tensor([0, 1, 0, 1]), torch.tensor([2, 2]))
    >>> w = split_shares(gg, seed=0)
    >>> bool(((w > 0.25) & (w < 0.75)).all()), torch.allclose(w[:2] + w[2:], torch.ones(2, dtype=w.dtype))
    (True, True)
    """
    low, high = SPLIT_RANGE
    gen = torch.Generator().manual_seed(hash((seed, gg.group, 0x5E1)) & 0x7FFF_FFFF_FFFF)
    u = torch.rand(gg.new, generator=gen, dtype=torch.float64) * (high - low) + low
    total = torch.zeros(gg.old, dtype=torch.float64).index_add_(0, gg.index, u)
    return u / total[gg.index]


def _old_flags(gg: GroupGrowth) -> torch.Tensor:
    return (torch.arange(gg.new) < gg.old).to(torch.float64)


def _describe(plan: GrowthPlan, gid: int) -> str:
    group = plan.analysis.group(gid)
    return f"group {gid} ({', '.join(group.producers) or 'no producer'}, {group.size} neurons)"


def fresh_groups(plan: GrowthPlan) -> FrozenSet[int]:
    """Groups whose new neurons ``zero_out`` initialises fresh: replicated, not under a
    uniform constraint, producer rows not divided (the undivided side of a contraction)."""
    a = plan.analysis
    return frozenset(g for g, gg in plan.growth.items()
                     if gg.mode == "replicate" and not a.group(g).uniform and not a.exponent(g))


def prepare(plan: GrowthPlan, init: str) -> GrowthPlan:
    """The plan ``init`` carries out: ``split`` and ``zero_out`` set every replicated
    group's shares; any other initialiser gets the plan back unchanged.

    Raises
    ------
    ConstraintError
        ``zero_out`` on a group whose fresh neurons the graph could let reach
        what old neurons compute, or on a group on both sides of one product.
    """
    if init not in INITS:
        return plan
    growth = dict(plan.growth)
    a = plan.analysis
    for gid, gg in plan.growth.items():
        if gg.mode != "replicate":
            continue  # mean- or zero-padded: no copies to share between
        if init == "split":
            growth[gid] = dataclasses.replace(gg, shares=split_shares(gg, plan.seed))
            continue
        if gid in a.halved:
            raise ConstraintError(
                f"init='zero_out': {_describe(plan, gid)} is on both sides of the product "
                f"`{a.halved[gid]}` (rows and columns divided by √count): its new neurons "
                "would start with zero rows and zero columns, a saddle point training never "
                "leaves; leave the group out of the spec, or use init='split'")
        growth[gid] = dataclasses.replace(gg, shares=_old_flags(gg))
    new = dataclasses.replace(plan, growth=growth)
    if init == "zero_out":
        for gid in sorted(fresh_groups(new)):
            problem = fresh_problem(a, gid)
            if problem:
                raise ConstraintError(
                    f"init='zero_out': {_describe(plan, gid)} cannot take fresh neurons: "
                    f"{problem}, so a fresh neuron would change what the old ones compute; "
                    "leave the group out of the spec, or use init='split'")
    return new


def _flags(plan: GrowthPlan, groups: FrozenSet[int]) -> Dict[int, tuple]:
    """Index maps of every replicated group, with scale 0 at new neurons of ``groups``."""
    return {g: (gg.index, _old_flags(gg) if g in groups else
                torch.ones(gg.new, dtype=torch.float64))
            for g, gg in plan.growth.items() if gg.mode == "replicate"}


def _bcast(v: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.view(shape)


def fresh_mask(plan: GrowthPlan, ex: Expander, members: Sequence[Member],
               groups: FrozenSet[int], shape: Sequence[int],
               device=None) -> Optional[torch.Tensor]:
    """Where a grown tensor takes fresh values under ``zero_out`` (None: nowhere).

    Positions new along a producer dim of a fresh group, except positions the
    shares set to 0 (a new neuron's outgoing column, the divided side's rows):
    new neurons keep exactly zero outgoing weights, also towards each other.
    """
    flags = _flags(plan, groups)
    fresh = zeroed = None
    ndim = len(shape)
    for m in members:
        if not ex.grows(m.layout):
            continue
        if m.role == PRODUCER and any(leaf.space in groups for leaf in leaves(m.layout)):
            b = _bcast(expand(m.layout, flags)[1].to(device) == 0, m.dim, ndim)
            fresh = b if fresh is None else fresh | b
        if m.role == CONSUMER:
            z = ex.index_scale(m.layout, device)[1] == 0
        elif m.role == PRODUCER:
            rows = ex.producer_scale(m.layout, device)
            z = None if rows is None else rows == 0
        else:
            z = None
        if z is not None:
            b = _bcast(z, m.dim, ndim)
            zeroed = b if zeroed is None else zeroed | b
    if fresh is None:
        return None
    if zeroed is not None:
        fresh = fresh & ~zeroed
    return fresh.expand(tuple(shape))


def initialise(plan: GrowthPlan, tensors: Mapping[str, torch.Tensor], init: str = "split", *,
               fresh: Optional[Fresh] = None) -> Dict[str, torch.Tensor]:
    """Grow the tensors of the plan's model with an exact initialiser.

    Parameters
    ----------
    plan : GrowthPlan
        From :func:`fxgrow.plan_widening`.
    tensors : mapping of qualified name to tensor
        The source model's parameters and buffers (names as in the analysis's
        members; tensors the plan does not grow are skipped).
    init : {"net2net", "split", "zero_out"}
    fresh : callable, optional
        ``fresh(name, shape, like)`` returns a freshly initialised tensor of the
        grown shape (e.g. the parameter of a new model built at the new sizes);
        required by ``zero_out`` where it puts fresh neurons.

    Returns
    -------
    dict of name to tensor
        The grown tensors (new storage).  Module attributes and graph literals
        (sizes, a padded norm's ``ε``) are the caller's to set.

    Examples
    --------
    >>> import torch, fxgrow
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> plan = fxgrow.plan_widening(fxgrow.analyze(m, torch.randn(5, 3)), 2.0)
    >>> new = initialise(plan, dict(m.named_parameters()), "zero_out",
    ...                  fresh=lambda name, shape, like: torch.randn(shape))
    >>> new["2.weight"][:, 4:].abs().sum().item(), tuple(new["0.weight"].shape)
    (0.0, (8, 3))
    """
    if init not in INITS + ("net2net",):
        raise SpecError(f"initialise takes 'net2net', 'split' or 'zero_out', not {init!r}")
    plan = prepare(plan, init)
    ex, mp = Expander(plan), Padder(plan)
    groups = fresh_groups(plan) if init == "zero_out" else frozenset()
    by_tensor: Dict[str, List[Member]] = {}
    for m in plan.analysis.members.values():
        by_tensor.setdefault(m.tensor, []).append(m)
    out: Dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        members = by_tensor.get(name, [])
        if not any(ex.grows(m.layout) or mp.grows(m) for m in members):
            continue
        grown, _ = grow_tensor(t, members, ex, scale_consumers=True, mp=mp)
        mask = fresh_mask(plan, ex, members, groups, grown.shape, grown.device) if groups else None
        if mask is not None and bool(mask.any()):
            if fresh is None:
                raise SpecError(f"init='zero_out' puts fresh neurons into `{name}`: pass fresh=")
            new = fresh(name, grown.shape, grown).to(dtype=grown.dtype, device=grown.device)
            grown = torch.where(mask, new, grown)
        out[name] = grown
    return out
