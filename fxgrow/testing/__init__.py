"""Hypothesis strategies that draw random architectures, for fuzzing fxgrow.

Every strategy draws a :class:`Drawn` value: a ``(model, example_input)``
pair (unpack it like a tuple) that also carries the :class:`ArchSpec` it was
built from.  The spec is a short, declarative list of layer dicts, so
hypothesis shrinks a failing example to a small model, and
:meth:`ArchSpec.to_code` prints that model as a self-contained PyTorch script
(the drawn model *is* that script, executed).

>>> from hypothesis import given
>>> from fxgrow.testing import architectures
>>> @given(architectures())
... def test_widen_is_exact(drawn):
...     model, x = drawn
...     ...

Strategies
----------
``architectures()``
    Any of the three families below.
``mlps()``
    ``(N, C)`` stacks: Linear, BatchNorm1d, LayerNorm, activations,
    residual blocks, adds joining several producers, concat, split/chunk,
    learned scales, reductions and ops fxgrow has no rule for.
``cnns()``
    ``(N, C, H, W)`` or ``(N, C, L)`` stacks: ConvNd (plain, grouped,
    depthwise), BatchNorm, GroupNorm, pooling, SE gates, channel shuffle,
    residual blocks, concat/split, then flatten (or global pooling) into an
    MLP tail.
``transformers()``
    ``(N, T, C)`` stacks (optionally from token ids through an Embedding):
    attention blocks with random heads (plain PyTorch q/k/v, or packed
    qkv), LayerNorm, MLP blocks, then pooling into an MLP tail.

Models are built in float64 (so the 1e-10 verification tolerance separates
exact from wrong), in eval mode, with BatchNorm statistics perturbed as a
trained model's are.  hypothesis is an optional dependency of fxgrow: it is
imported when a strategy is first used.

The package also holds what tests, benchmarks and the demo share:
:mod:`.models` (the built-in models), :mod:`.zoo` (torchvision's classifiers,
built small), :mod:`.campaign` (long fuzz campaigns), :mod:`.emitter` (specs
as code) and :mod:`.vocabulary` (the ops architectures draw from).
"""

from importlib import import_module
from typing import Any

from .spec import ArchSpec, Drawn, perturb_norms
from .vocabulary import ACTIVATIONS, REDUCTIONS, UNKNOWN_OPS

__all__ = ["ArchSpec", "Drawn", "architectures", "mlps", "cnns", "transformers",
           "arch_specs", "perturb_norms", "one_size_per_family", "ACTIVATIONS", "UNKNOWN_OPS",
           "REDUCTIONS", "campaign"]

_LAZY = {"architectures": "strategies", "mlps": "strategies", "cnns": "strategies",
         "transformers": "strategies", "arch_specs": "strategies",
         "one_size_per_family": "strategies", "campaign": "campaign"}


def __getattr__(name: str) -> Any:
    # the strategies need hypothesis, an optional dependency: import them on first use
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
