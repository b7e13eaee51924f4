"""Read each source group's new size off the target's analysis.

Both models are analysed.  A member is one dimension of one tensor, and its
layout lists the groups along that dimension (a query projection's rows are
``kv heads ⊗ heads per kv ⊗ head dim``).  Leaf ``i`` of source tensor ``t``'s
dimension ``d`` and leaf ``i`` of the target tensor that continues ``t`` (see
:class:`~fxgrow.grow.names.LayerMap`) index the same neurons, so the source
group there grows to the target group's size.  Sizes are never guessed from a
flat shape: a (256, 64) target projection says nothing about heads, the
target's own analysis does.

Examples
--------
>>> import torch, fxgrow
>>> from torch import nn
>>> from fxgrow.grow.names import LayerMap
>>> small = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> big = nn.Sequential(nn.Linear(4, 20), nn.ReLU(), nn.Linear(20, 2))
>>> x = torch.randn(3, 4)
>>> a, b = fxgrow.analyze(small, x), fxgrow.analyze(big, x)
>>> names = LayerMap(None, dict(small.named_modules()))
>>> target_sizes(a, b, names)
{1: 20}
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from ..analysis.result import Analysis
from ..errors import GroupNotGrowableError, NarrowingError, TargetMismatchError
from ..ir.layout import leaves
from .names import LayerMap

__all__ = ["target_sizes"]

Key = Tuple[str, int, int]  # (source tensor, dim, leaf position)


def _leaf_groups(analysis: Analysis) -> Dict[Key, Tuple[int, int]]:
    """``{(tensor, dim, leaf position): (group id, leaf size)}``; layouts name group ids."""
    out: Dict[Key, Tuple[int, int]] = {}
    for g in analysis.groups:
        for m in g.members:
            for i, leaf in enumerate(leaves(m.layout)):
                out[(m.tensor, m.dim, i)] = (leaf.space, leaf.size)
    return out


def _leaf_counts(analysis: Analysis) -> Dict[Tuple[str, int], int]:
    counts: Dict[Tuple[str, int], int] = {}
    for g in analysis.groups:
        for m in g.members:
            counts[(m.tensor, m.dim)] = sum(1 for _ in leaves(m.layout))
    return counts


def target_sizes(source: Analysis, target: Analysis, names: LayerMap) -> Dict[int, int]:
    """``{source group id: target size}`` for every source group that changes size.

    Raises
    ------
    TargetMismatchError
        A target dimension lays out its neurons differently (another number of
        groups along it), or one source group is asked for two sizes.
    NarrowingError
        The target is narrower than the source somewhere.
    GroupNotGrowableError
        The target is wider where the source's analysis blocks growth (the
        group's reason says why).
    """
    src_leaves = _leaf_groups(source)
    src_counts, tgt_counts = _leaf_counts(source), _leaf_counts(target)
    asked: Dict[int, Dict[int, str]] = {}  # source group -> {size: a target tensor asking it}
    for g in target.groups:
        for m in g.members:
            tensor = names.tensor(m.tensor)
            if tensor is None or (tensor, m.dim) not in src_counts:
                continue  # a new block's tensor, or one the source's graph does not use
            if src_counts[(tensor, m.dim)] != tgt_counts[(m.tensor, m.dim)]:
                raise TargetMismatchError(
                    f"target tensor {m.tensor!r} dim {m.dim} lays out its neurons as "
                    f"{m.layout}, source tensor {tensor!r} as another number of groups: "
                    "no growth of the source explains that shape")
            for i, leaf in enumerate(leaves(m.layout)):
                gid, _ = src_leaves[(tensor, m.dim, i)]
                asked.setdefault(gid, {}).setdefault(leaf.size, m.tensor)
    out: Dict[int, int] = {}
    for gid, sizes in sorted(asked.items()):
        group = source.group(gid)
        if len(sizes) > 1:
            detail = ", ".join(f"{n} (from {t!r})" for n, t in sorted(sizes.items()))
            raise TargetMismatchError(
                f"source group {gid} ({_where(group)}, {group.size} neurons) is one index map "
                f"but the target gives it several sizes: {detail}")
        (size, tensor), = sizes.items()
        if size < group.size:
            raise NarrowingError(
                f"target tensor {tensor!r} has {size} neurons where source group {gid} "
                f"({_where(group)}) has {group.size}: grow_into only grows")
        if size == group.size:
            continue
        if not group.growable:
            raise GroupNotGrowableError(
                f"target tensor {tensor!r} needs source group {gid} ({_where(group)}) to grow "
                f"{group.size} -> {size}, but it is {group.status}: {group.reason}", group.reason)
        out[gid] = size
    return out


def _where(group) -> str:
    names: List[str] = list(group.producers) or [m.tensor for m in group.members[:1]]
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
