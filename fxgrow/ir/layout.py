"""Layouts: how one tensor dimension indexes neurons.

A layout is a small expression tree, in the spirit of einops' axis
expressions.  Its leaves are :class:`Axis` objects, each naming an atomic
neuron *space* (an integer id) of a given size.  :class:`Cat` lays its parts
one after the other; :class:`Prod` combines its factors row-major, so
``Prod(C, H, W)`` is what ``flatten`` makes of a ``(C, H, W)`` block.

Widening gives each atomic space an index map ``g`` (new neuron ``j`` is a
copy of old neuron ``g(j)``) and a per-neuron scale.  :func:`expand` turns the
maps of the leaves into the map of a whole dimension, which is the only
gather rule the rewrite needs.

Examples
--------
>>> import torch
>>> lay = Prod((Axis(0, 2), Axis(1, 3)))
>>> lay.size
6
>>> idx, scale = expand(lay, {0: (torch.tensor([0, 1, 0]), torch.tensor([.5, 1., .5]))})
>>> idx.tolist()
[0, 1, 2, 3, 4, 5, 0, 1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Callable, Iterator, Mapping, Optional, Tuple, Union

import torch

__all__ = ["Axis", "Cat", "Prod", "Layout", "expand", "leaves", "new_size"]


@dataclass(frozen=True)
class Axis:
    """A leaf: atomic neuron space ``space`` with ``size`` neurons."""

    space: int
    size: int

    def __str__(self) -> str:
        return f"s{self.space}:{self.size}"


@dataclass(frozen=True)
class Cat:
    """Parts laid out one after the other along the dimension."""

    parts: Tuple["Layout", ...]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", sum(p.size for p in self.parts))

    def __str__(self) -> str:
        return "(" + " ⊕ ".join(map(str, self.parts)) + ")"


@dataclass(frozen=True)
class Prod:
    """Factors combined row-major: the first factor is the outermost."""

    factors: Tuple["Layout", ...]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", prod(f.size for f in self.factors))

    def __str__(self) -> str:
        if not self.factors:
            return "1"
        return "(" + " ⊗ ".join(map(str, self.factors)) + ")"


Layout = Union[Axis, Cat, Prod]

#: an index map and per-neuron scale for one atomic space
Map = Tuple[torch.Tensor, torch.Tensor]


def leaves(layout: Layout) -> Iterator[Axis]:
    """Yield the leaves of ``layout`` left to right."""
    if isinstance(layout, Axis):
        yield layout
    else:
        for child in layout.parts if isinstance(layout, Cat) else layout.factors:
            yield from leaves(child)


def new_size(layout: Layout, sizes: Mapping[int, int]) -> int:
    """Size of ``layout`` once each space ``s`` has ``sizes.get(s, old)`` neurons."""
    if isinstance(layout, Axis):
        return sizes.get(layout.space, layout.size)
    if isinstance(layout, Cat):
        return sum(new_size(p, sizes) for p in layout.parts)
    return prod(new_size(f, sizes) for f in layout.factors)


def expand(
    layout: Layout,
    maps: Mapping[int, Map],
    device: Optional[torch.device] = None,
) -> Map:
    """Index map and scale of a whole dimension from the maps of its spaces.

    Parameters
    ----------
    layout : Layout
        The dimension's layout, in terms of atomic spaces.
    maps : mapping of space id to ``(index, scale)``
        Spaces that grow.  ``index[j]`` is the old neuron that new neuron
        ``j`` copies; ``scale[j]`` is what a consumer multiplies it by.
        Spaces not in ``maps`` keep their neurons (identity, scale 1).
    device : torch.device, optional
        Where to build the result.

    Returns
    -------
    index : LongTensor
        For each position of the new dimension, the old position it copies.
    scale : Tensor
        For each new position, the product of the scales of its leaves, so a
        neuron of ``Prod(H, D)`` copied ``c_h`` times along ``H`` and ``c_d``
        times along ``D`` is divided by ``c_h * c_d``.
    """
    if isinstance(layout, Axis):
        if layout.space in maps:
            idx, scale = maps[layout.space]
            return idx.to(device), scale.to(device)
        return (
            torch.arange(layout.size, device=device),
            torch.ones(layout.size, dtype=torch.float64, device=device),
        )
    if isinstance(layout, Cat):
        idx, scales, offset = [], [], 0
        for part in layout.parts:
            i, s = expand(part, maps, device)
            idx.append(i + offset)
            scales.append(s)
            offset += part.size
        return torch.cat(idx), torch.cat(scales)
    # row-major product: position (i_1, ..., i_k) -> ((i_1 * n_2) + i_2) * n_3 ...
    idx = torch.zeros(1, dtype=torch.long, device=device)
    scale = torch.ones(1, dtype=torch.float64, device=device)
    for factor in layout.factors:
        i, s = expand(factor, maps, device)
        idx = (idx[:, None] * factor.size + i[None, :]).reshape(-1)
        scale = (scale[:, None] * s[None, :]).reshape(-1)
    return idx, scale


def map_layout(layout: Layout, leaf: Callable[[Axis], Layout]) -> Layout:
    """Rebuild ``layout`` with every leaf replaced by ``leaf(axis)``."""
    if isinstance(layout, Axis):
        return leaf(layout)
    if isinstance(layout, Cat):
        return Cat(tuple(map_layout(p, leaf) for p in layout.parts))
    return Prod(tuple(map_layout(f, leaf) for f in layout.factors))
