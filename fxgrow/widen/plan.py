"""Plan a widening: validate the request and draw the index maps (pure, cheap).

The plan (:class:`~fxgrow.widen.growth.GrowthPlan`) gives each growing group
an index map ``g`` whose first ``n`` entries map to themselves; the rest is
sampled as in Net2WiderNet, but in rounds of random permutations, so no
neuron is copied twice before every neuron has been copied once.  Groups under a uniform constraint (LayerNorm, GroupNorm,
a mean over neurons) use the tiling ``g(j) = j mod n`` and must grow by an
integer factor, which keeps every neuron's count equal and the mean and
variance exact.
"""

from __future__ import annotations

from typing import Dict, Mapping, Union

import numbers
import warnings

import torch

from .. import checks
from ..analysis.padding import prove_padding
from ..analysis.result import Analysis
from ..errors import (ConstraintError, GroupNotGrowableError, GrowthWarning, NarrowingError,
                      SpecError, UnknownTargetError)
from ..ir.groups import Group
from ..ir.layout import expand, leaves
from .budget import check_memory
from .growth import GroupGrowth, GrowthPlan

__all__ = ["GroupGrowth", "GrowthPlan", "plan_widening", "Spec"]

Spec = Union[float, int, Mapping[Union[str, int], Union[int, float]]]


def _target_size(group: Group, value: Union[int, float], key) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        new = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        factor = checks.real(value, f"the factor for {key!r}", minimum=None)
        new = int(round(group.size * factor))
    else:
        raise SpecError(f"size for {key!r} must be an int (new size) or a float (factor), "
                        f"not {value!r}")
    if new < group.size:
        raise NarrowingError(
            f"{key!r} asks for {new} neurons but group {group.id} has {group.size}; "
            "fxgrow only grows networks")
    return new


def _resolve(analysis: Analysis, spec: Spec, allow_blocked: bool = False) -> Dict[int, int]:
    """``{group id: new size}`` from a factor or a ``{module or group: size}`` dict."""
    if isinstance(spec, bool):
        raise SpecError(f"invalid widening spec {spec!r}")
    if isinstance(spec, numbers.Real):
        spec = checks.real(spec, "the widening factor", minimum=None)
        if spec < 1:
            raise NarrowingError(f"factor {spec} < 1 would narrow the network")
        # a factor grows the number of heads, not each head's width (HyperCloning,
        # LEMON); head dims grow when the spec names them
        groups = analysis.groups if allow_blocked else analysis.growable
        return {g.id: _target_size(g, float(spec), g.id) for g in groups
                if g.id not in analysis.head_dims}
    if not isinstance(spec, Mapping):
        raise SpecError(f"widening spec must be a factor or a dict, not {type(spec).__name__}")
    out: Dict[int, int] = {}
    for key, value in spec.items():
        groups = ([analysis.group(key)] if isinstance(key, int) and not isinstance(key, bool)
                  else analysis.groups_of(key))
        if len(groups) != 1 and not isinstance(value, float):
            raise UnknownTargetError(
                f"`{key}` produces {len(groups)} groups {[g.id for g in groups]}; give a "
                "factor (float) to grow all of them, or name each group by id")
        for group in groups:
            if not group.growable and not allow_blocked:
                raise GroupNotGrowableError(
                    f"group {group.id} ({key!r}, {group.size} neurons) is {group.status}: "
                    f"{group.reason}", group.reason)
            new = _target_size(group, value, key)
            if out.get(group.id, new) != new:
                raise SpecError(f"group {group.id} is asked for two sizes "
                                f"({out[group.id]} and {new})")
            out[group.id] = new
    return _whole_families(analysis, out)


def _whole_families(analysis: Analysis, sizes: Dict[int, int]) -> Dict[int, int]:
    """Groups that share an index map (contraction partners) grow to one size."""
    out = dict(sizes)
    for gid in sizes:
        family = analysis.family(gid)
        asked = {out[g] for g in family if g in out}
        if len(asked) > 1:
            raise SpecError(
                f"groups {family} are the two sides of a product between activations and "
                f"share one index map; they cannot grow to different sizes {sorted(asked)}")
        for g in family:
            out[g] = out[gid]
    return out


def _index_map(old: int, new: int, uniform: bool, gen: torch.Generator) -> torch.Tensor:
    """``[0, ..., old-1]`` then copies: a tiling for uniform groups, else rounds of
    random permutations (every neuron copied once before any is copied twice),
    drawn for all rounds at once."""
    if uniform:
        return torch.arange(new) % old
    rounds = -(-(new - old) // old)
    draws = torch.rand(rounds, old, generator=gen, dtype=torch.float64)
    perms = torch.argsort(draws, dim=1, stable=True).reshape(-1)
    return torch.cat([torch.arange(old), perms[: new - old]])


def plan_widening(analysis: Analysis, spec: Spec, seed: int = 0, *,
                  _allow_blocked: bool = False) -> GrowthPlan:
    """Validate a widening request and draw the index maps.

    Parameters
    ----------
    analysis : Analysis
    spec : float, int or dict
        A factor for every growable group (``2.0``) except the head dims
        (``analysis.head_dims``: attention grows by heads, each head keeping its
        width), or ``{name: size}`` where name is a producing module's qualified
        name or a group id (head dims included), and size an int (new size) or a
        float (factor).
    seed : int
        Seeds the sampled part of every index map (each group draws from its
        own generator, so adding a group to the request does not change the
        others).
    _allow_blocked : bool
        Test-only: plan fixed and blocked groups too (the result is generally
        *not* function preserving; the fuzz tests use it to show blocks are
        needed).

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> p = plan_widening(fxgrow.analyze(m, torch.randn(1, 4)), {"0": 5})
    >>> p.growth[p.analysis.group("0").id].index[:3].tolist()
    [0, 1, 2]
    """
    if not isinstance(analysis, Analysis):
        raise SpecError(f"plan_widening needs an Analysis (from fxgrow.analyze), not "
                        f"{type(analysis).__name__}")
    seed = checks.seed(seed)
    requested = _resolve(analysis, spec, _allow_blocked)
    check_memory(analysis, {g: n for g, n in requested.items() if n != analysis.group(g).size})
    growth: Dict[int, GroupGrowth] = {}
    for gid in sorted(requested):
        group = analysis.group(gid)
        new = requested[gid]
        if new == group.size or gid in analysis.partners:
            continue
        if group.uniform and new % group.size and not _allow_blocked:
            padding = prove_padding(analysis, gid)
            if padding.mode is not None:
                growth[gid] = GroupGrowth(gid, group.size, new,
                                          torch.arange(new) % group.size,
                                          torch.ones(group.size, dtype=torch.long), padding.mode,
                                          padding.sites)
                continue
            raise ConstraintError(
                f"group {gid} ({', '.join(group.producers) or 'no producer'}, {group.size} "
                f"neurons) can only grow by an integer factor: {'; '.join(group.uniform)}; "
                f"{new} is not a multiple of {group.size}, and mean- or zero-padding does not "
                f"apply ({padding.problem})")
        gen = torch.Generator().manual_seed(hash((seed, gid)) & 0x7FFF_FFFF_FFFF)
        index = _index_map(group.size, new, bool(group.uniform), gen)
        counts = torch.bincount(index, minlength=group.size)
        growth[gid] = GroupGrowth(gid, group.size, new, index, counts)
    for gid, primary in analysis.partners.items():
        if primary in growth:  # one index map: the same copies on both sides
            gg = growth[primary]
            growth[gid] = GroupGrowth(gid, gg.old, gg.new, gg.index, gg.counts, gg.mode)
    growth = dict(sorted(growth.items()))
    notes = () if growth else (_nothing_grows(analysis, spec, requested),)
    for note in notes:
        warnings.warn(note, GrowthWarning, stacklevel=2)
    plan = GrowthPlan(analysis, growth, seed, notes)
    if not _allow_blocked:
        _check_uniform(plan)
    return plan


def _nothing_grows(analysis: Analysis, spec: Spec, requested: Dict[int, int]) -> str:
    """Why a request grows no group, said as a warning."""
    if isinstance(spec, Mapping) and not spec:
        why = "the spec {} names no group"
    elif isinstance(spec, Mapping):
        why = "every size asked for is the group's current size"
    elif not analysis.growable:
        blocked = sum(g.status == "blocked" for g in analysis.groups)
        why = (f"no group can grow ({len(analysis.groups) - blocked} fixed, {blocked} blocked; "
               "print(fxgrow.analyze(...)) says why)")
    elif all(g.id in analysis.head_dims for g in analysis.growable):
        why = (f"the only growable groups {sorted(g.id for g in analysis.growable)} are head "
               "dims, which a factor leaves as they are; name them to grow them "
               "({group id: size})")
    else:
        small = min((g for g in analysis.growable if g.id not in analysis.head_dims),
                    key=lambda g: g.size)
        why = (f"factor {spec:g} rounds every growable group back to its size (e.g. group "
               f"{small.id}: {small.size} x {spec:g} -> {requested.get(small.id, small.size)}"
               " neurons); ask for a larger factor or for sizes")
    return f"nothing grows: {why}"


def _check_uniform(plan: GrowthPlan) -> None:
    """Every uniformly-averaged dim must replicate each of its neurons equally."""
    counted = {g: (gg.index, gg.counts.to(torch.float64)[gg.index])
               for g, gg in plan.growth.items() if gg.mode == "replicate"}
    for site in plan.analysis.uniform:
        _, counts = expand(site.layout, counted)
        if counts.numel() and not torch.all(counts == counts[0]):
            groups = sorted({leaf.space for leaf in leaves(site.layout)})
            raise ConstraintError(
                f"{site.why}: groups {groups} must all grow by the same integer factor "
                "(uniform replication keeps the mean and variance exact)")
