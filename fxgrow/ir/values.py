"""Abstract values that flow through the analysis.

Each node's output gets one abstract value, built by its rule:

* :class:`TV` for a tensor: one :class:`~fxgrow.ir.layout.Layout` per dimension;
* a tuple of values for tuples and lists (``split``, ``chunk``, ``size()``);
* :class:`SizeOf` for an integer read from tensor sizes, remembering which
  layouts it depends on (``x.size(1)``), so a rule that bakes it into the
  computation can be caught;
* plain Python values (or None) for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Tuple

from .layout import Layout

__all__ = ["TV", "SizeOf", "iter_tensors", "iter_sizes"]


@dataclass(frozen=True)
class TV:
    """A tensor: the layout of each dimension."""

    dims: Tuple[Layout, ...]

    @property
    def ndim(self) -> int:
        return len(self.dims)

    def __str__(self) -> str:
        return "[" + ", ".join(map(str, self.dims)) + "]"


@dataclass(frozen=True)
class SizeOf:
    """An int computed from the sizes of dimensions with these layouts."""

    layouts: Tuple[Layout, ...]
    value: int

    def __str__(self) -> str:
        return f"size({', '.join(map(str, self.layouts))})={self.value}"


def iter_tensors(value: Any) -> Iterator[TV]:
    """Every tensor value inside a (nested) value."""
    if isinstance(value, TV):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from iter_tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_tensors(v)


def iter_sizes(value: Any) -> Iterator[SizeOf]:
    """Every size-derived int inside a (nested) value."""
    if isinstance(value, SizeOf):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from iter_sizes(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_sizes(v)
