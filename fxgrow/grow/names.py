"""Which source module each target module continues: the layer map of ``grow_into``.

A target module keeps the name of the source module it grows from, unless the
user's ``layers`` mapping says otherwise: ``{"model.layers.2": "model.layers.1"}``
puts source layer 1 at target position 2, ``{"model.layers.3": None}`` makes
target layer 3 a new block.  A source module moved elsewhere no longer fills
the target module of its own name, and a target module whose name the source
lacks is new.  New modules are the blocks ``grow_into`` starts as the identity.

Examples
--------
>>> m = LayerMap({"model.layers.3": None, "model.layers.2": "model.layers.1"},
...              source_modules={"", "model", "model.layers", "model.layers.0",
...                              "model.layers.1", "model.layers.1.mlp"})
>>> [m.source_of(t) for t in ("model.layers.0", "model.layers.1", "model.layers.2",
...                           "model.layers.3")]
['model.layers.0', None, 'model.layers.1', None]
>>> m.tensor("model.layers.2.mlp.weight")
'model.layers.1.mlp.weight'
"""

from __future__ import annotations

from typing import Collection, Dict, Mapping, Optional

from ..errors import SpecError

__all__ = ["LayerMap"]


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


class LayerMap:
    """Target module name -> source module name (``None``: a new module)."""

    def __init__(self, layers: Optional[Mapping[str, Optional[str]]],
                 source_modules: Collection[str]) -> None:
        layers = {} if layers is None else layers
        if not isinstance(layers, Mapping):
            raise SpecError(f"layers must be a dict of target module -> source module or None, "
                            f"not {type(layers).__name__}")
        for k, v in layers.items():
            if not isinstance(k, str) or not (v is None or isinstance(v, str)):
                raise SpecError(f"layers maps a target module name to a source module name or "
                                f"None, not {k!r}: {v!r}")
            if v is not None and v not in source_modules:
                raise SpecError(f"layers[{k!r}] = {v!r}: the source has no module {v!r}")
        moved = [v for v in layers.values() if v is not None]
        twice = sorted({v for v in moved if moved.count(v) > 1})
        if twice:
            raise SpecError(f"layers puts source module {twice[0]!r} in two places: a source "
                            "block can fill one target block (a copy would not preserve the "
                            "function)")
        self.layers: Dict[str, Optional[str]] = dict(layers)
        self.moved = set(moved) - {k for k, v in layers.items() if v == k}
        self.source_modules = set(source_modules)
        self._memo: Dict[str, Optional[str]] = {}

    def source_of(self, module: str) -> Optional[str]:
        """The source module target ``module`` continues, or ``None`` if it is new."""
        if module in self._memo:
            return self._memo[module]
        if module in self.layers:
            out = self.layers[module]
        elif module == "":
            out = ""
        else:
            parent = self.source_of(_parent(module))
            last = module.rpartition(".")[2]
            out = None if parent is None else (f"{parent}.{last}" if parent else last)
            if out is not None and (out not in self.source_modules or out in self.moved):
                out = None
        self._memo[module] = out
        return out

    def is_new(self, module: str) -> bool:
        return self.source_of(module) is None

    def new_root(self, module: str) -> str:
        """The outermost new module containing the new module ``module``."""
        while module and self.is_new(_parent(module)):
            module = _parent(module)
        return module

    def tensor(self, name: str) -> Optional[str]:
        """The source tensor a target tensor (``module.attr``) continues, or ``None``."""
        module, _, attr = name.rpartition(".")
        src = self.source_of(module)
        if src is None:
            return None
        return f"{src}.{attr}" if src else attr
