"""Literal rewrites as data: how graph arguments and module attributes change with growth.

Some numbers in a model are neuron counts: a view's sizes, a split's sizes,
slice bounds, ``normalized_shape``, a conv's ``groups``, ``in_features``.
After growth they must be recomputed from the new sizes.  Rules record each
one as a *template*: the node's new arguments (or the attribute's new value)
with :class:`Size` placeholders where a count goes, and :class:`IfGrows`
where the value depends on whether some layouts grow.  The analysis renames
the layouts in templates to group ids once; the rewrite pass only evaluates
them (:func:`evaluate`) with the plan's sizes, so it runs no rule code.

Templates are plain nested Python values (tuples, lists, dicts, slices) whose
leaves may be :class:`Size` and :class:`IfGrows`; anything else (ints, graph
nodes, dtypes, :class:`Item`) is kept as it is.  An :class:`Item` asks the
rewrite pass for an element of a graph value (one entry of ``x.shape``), so a
size that does not grow stays read from the graph rather than baked in.

Examples
--------
>>> from fxgrow.ir.layout import Axis, Prod
>>> h, d = Axis(0, 4), Axis(1, 8)
>>> template = (-1, Size(h), Size(d))
>>> evaluate(template, {0: 6})
(-1, 6, 8)
>>> evaluate(slice(Size(h), Size(Prod((h, d)))), {0: 6})
slice(6, 48, None)
>>> evaluate(IfGrows((d,), "grown", "as before"), {0: 6})
'as before'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple

from .layout import Layout, new_size

__all__ = ["Size", "IfGrows", "Item", "Rewrite", "AttrRewrite", "evaluate", "rename", "layouts_in",
           "grows"]


@dataclass(frozen=True)
class Size:
    """The new size of ``layout``."""

    layout: Layout


@dataclass(frozen=True)
class IfGrows:
    """``then`` if any of ``layouts`` changes size, else ``otherwise``.

    For a value that must be recomputed only when it would change, e.g. a view
    size read from another tensor's ``size()``: kept while nothing it counts
    grows, a literal of the new size once something does.
    """

    layouts: Tuple[Layout, ...]
    then: Any
    otherwise: Any


@dataclass(frozen=True)
class Item:
    """``node[index]`` read in the grown graph (an entry of a size tuple the graph
    computes): the rewrite pass inserts the ``getitem``."""

    node: Any  # an fx.Node of the analysed graph
    index: int


@dataclass(frozen=True)
class Rewrite:
    """Node ``node``'s new call, applied only when one of ``when`` changes size.

    ``target`` None keeps the node's target (else the op it becomes: ``split``
    with explicit sizes, an ATen ``reshape`` for a resized ``view``); ``args``
    and ``kwargs`` are templates of the whole new argument lists.
    """

    node: str
    args: Any
    kwargs: Any
    target: Any = None
    when: Tuple[Layout, ...] = ()


@dataclass(frozen=True)
class AttrRewrite:
    """Attribute ``attr`` of submodule ``module`` becomes ``value`` (a template)."""

    module: str
    attr: str
    value: Any


def _map(template: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(template, (Size, IfGrows)):
        return leaf(template)
    if isinstance(template, tuple):
        return tuple(_map(t, leaf) for t in template)
    if isinstance(template, list):
        return [_map(t, leaf) for t in template]
    if isinstance(template, dict):
        return {k: _map(v, leaf) for k, v in template.items()}
    if isinstance(template, slice):
        return slice(_map(template.start, leaf), _map(template.stop, leaf),
                     _map(template.step, leaf))
    return template


def grows(layouts: Tuple[Layout, ...], sizes: Mapping[int, int]) -> bool:
    """Whether any of ``layouts`` changes size under ``sizes``."""
    return any(new_size(lay, sizes) != lay.size for lay in layouts)


def evaluate(template: Any, sizes: Mapping[int, int]) -> Any:
    """The value of ``template`` once each space ``s`` has ``sizes.get(s, old)`` neurons."""
    def leaf(t: Any) -> Any:
        if isinstance(t, Size):
            return new_size(t.layout, sizes)
        return evaluate(t.then if grows(t.layouts, sizes) else t.otherwise, sizes)
    return _map(template, leaf)


def rename(template: Any, fn: Callable[[Layout], Layout]) -> Any:
    """``template`` with every layout ``lay`` in it replaced by ``fn(lay)``."""
    def leaf(t: Any) -> Any:
        if isinstance(t, Size):
            return Size(fn(t.layout))
        return IfGrows(tuple(fn(l) for l in t.layouts), rename(t.then, fn),
                       rename(t.otherwise, fn))
    return _map(template, leaf)


def layouts_in(template: Any) -> Iterator[Layout]:
    """Every layout a template mentions (what it depends on)."""
    found = []

    def leaf(t: Any) -> Any:
        if isinstance(t, Size):
            found.append(t.layout)
        else:
            found.extend(t.layouts)
            found.extend(layouts_in(t.then))
            found.extend(layouts_in(t.otherwise))
        return t
    _map(template, leaf)
    return iter(found)


def rewrite(node: str, args: Any, kwargs: Any, target: Any = None,
            when: Optional[Tuple[Layout, ...]] = None) -> Rewrite:
    """A :class:`Rewrite` whose ``when`` defaults to every layout the templates mention."""
    if when is None:
        when = tuple(layouts_in((args, kwargs)))
    return Rewrite(node, args, kwargs, target, tuple(when))
