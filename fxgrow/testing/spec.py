"""A random architecture as data (:class:`ArchSpec`), and the model it builds.

The spec is a short, declarative list of layer dicts, so hypothesis shrinks a
failing example to a small model, and :meth:`ArchSpec.to_code` prints that
model as a self-contained PyTorch script (the built model *is* that script,
executed; see :mod:`fxgrow.testing.emitter`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch
from torch import nn

__all__ = ["ArchSpec", "Drawn", "perturb_norms", "RMSNORM"]


@dataclass
class ArchSpec:
    """A random architecture as data.

    Attributes
    ----------
    family : {"mlp", "cnn", "transformer"}
    input : dict
        ``{"kind": "vec"|"img"|"seq"|"tokens", "c": channels, "sp": spatial sizes
        (img: (H, W) or (L,); seq/tokens: (T,)), "n": batch, "vocab": int}``.
    layers : list of dict
        One dict per layer, ``{"op": ..., ...}``; see the ``_emit_*`` functions.
    seed : int
        Seeds the weights and the example input.
    """

    family: str
    input: Dict[str, Any]
    layers: List[Dict[str, Any]] = field(default_factory=list)
    seed: int = 0

    def to_code(self) -> str:
        """A self-contained script defining ``Net`` and ``make()`` for this spec."""
        from .emitter import Emitter  # the emitter builds code from specs
        return Emitter.render(self)

    def build(self) -> "Drawn":
        """Execute :meth:`to_code` and return ``Drawn((model, example_input), spec)``."""
        code = self.to_code()
        ns: Dict[str, Any] = {"__name__": "fxgrow_testing_generated"}
        exec(compile(code, "<fxgrow.testing ArchSpec>", "exec"), ns)
        model, x = ns["make"]()
        return Drawn((model, x), self)

    def __str__(self) -> str:
        return self.to_code()


class Drawn(tuple):
    """``(model, example_input)`` plus the :class:`ArchSpec` it was built from."""

    spec: ArchSpec

    def __new__(cls, pair, spec: ArchSpec):
        self = super().__new__(cls, pair)
        self.spec = spec
        return self

    @property
    def model(self) -> nn.Module:
        return self[0]

    @property
    def example_input(self) -> torch.Tensor:
        return self[1]

    def __repr__(self) -> str:
        return f"Drawn(\n{self.spec.to_code()})"


#: the RMSNorm module class where this torch has one
RMSNORM = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()


def perturb_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm layers non-trivial statistics and affine parameters (as if trained)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g).to(m.running_mean) * 0.3)
                m.running_var.copy_((torch.rand(n, generator=g) + 0.5).to(m.running_var))
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
                              + RMSNORM) and isinstance(p, torch.Tensor):
                    base = 1.0 if name == "weight" else 0.0
                    p.copy_((base + 0.3 * torch.randn(p.shape, generator=g)).to(p))
    return model

