"""The equivalence check: does the grown model compute what the original does?

:func:`verify` runs both models on the example input and on fresh random
inputs of the same shapes and dtypes, and reports, for every output tensor,
the maximum absolute error and the error relative to the output's magnitude.
Tolerances follow the dtype.  Both runs use the same RNG seed and private
copies of buffers (:mod:`fxgrow.capture.runner`), so neither model is changed.

This is the one equivalence helper of the project: the test-suite uses it
too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .capture.inputs import normalize_input
from .capture.runner import call_pure, full_precision
from .errors import ExampleInputError

__all__ = ["OutputError", "Report", "verify", "default_rtol", "random_like_input"]

_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2,
         torch.bfloat16: 2e-2}


def default_rtol(dtype: torch.dtype) -> float:
    """Relative tolerance for outputs of ``dtype`` (errors relative to max |output|)."""
    return _RTOL.get(dtype, 1e-5)


@dataclass(frozen=True)
class OutputError:
    """Error on one output tensor for one input."""

    trial: int
    output: str
    max_abs: float
    max_rel: float
    tolerance: float
    ok: bool


@dataclass
class Report:
    """Errors of every output on every trial input; ``ok`` if all are within tolerance."""

    errors: List[OutputError] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(e.ok for e in self.errors)

    @property
    def max_abs(self) -> float:
        return max((e.max_abs for e in self.errors), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((e.max_rel for e in self.errors), default=0.0)

    def per_output(self) -> Dict[str, Tuple[float, float]]:
        """``{output: (max abs error, max relative error)}`` over all trials."""
        out: Dict[str, Tuple[float, float]] = {}
        for e in self.errors:
            a, r = out.get(e.output, (0.0, 0.0))
            out[e.output] = (max(a, e.max_abs), max(r, e.max_rel))
        return out

    def __str__(self) -> str:
        lines = [f"verify: {'OK' if self.ok else 'MISMATCH'} over "
                 f"{len({e.trial for e in self.errors})} inputs"]
        for name, (a, r) in self.per_output().items():
            tol = max(e.tolerance for e in self.errors if e.output == name)
            lines.append(f"  {name}: max abs {a:.3g}, max rel {r:.3g} (tolerance {tol:.0e})")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def random_like_input(value: Any, gen: torch.Generator) -> Any:
    """A random input with the same structure, shapes and dtypes as ``value``.

    Floating tensors get Gaussian values with the example's mean and spread;
    integer tensors (token ids) uniform values in the example's range; other
    values are kept.
    """
    def one(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if t.is_floating_point():
            std = float(t.float().std()) if t.numel() > 1 else 1.0
            mean = float(t.float().mean()) if t.numel() else 0.0
            r = torch.randn(t.shape, generator=gen, dtype=torch.float64) * (std or 1.0) + mean
            return r.to(t.dtype).to(t.device)
        if t.dtype == torch.bool:
            return (torch.rand(t.shape, generator=gen) < 0.5).to(t.device)
        if t.numel() == 0:
            return t.clone()
        lo, hi = int(t.min()), int(t.max())
        return torch.randint(lo, hi + 1, t.shape, generator=gen, dtype=t.dtype).to(t.device)
    return pytree.tree_map(one, value)


def _compare(trial: int, ref: Any, got: Any, report: Report, rtol: Optional[float]) -> None:
    ref_leaves, ref_spec = pytree.tree_flatten(ref)
    got_leaves, got_spec = pytree.tree_flatten(got)
    if ref_spec != got_spec:
        report.problems.append(f"output structure differs: {ref_spec} vs {got_spec}")
        return
    for i, (a, b) in enumerate(zip(ref_leaves, got_leaves)):
        name = f"output[{i}]" if len(ref_leaves) > 1 else "output"
        if not isinstance(a, torch.Tensor):
            if a != b:
                report.problems.append(f"{name}: {a!r} != {b!r}")
            continue
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            report.problems.append(
                f"{name}: shape {tuple(a.shape)} vs "
                f"{tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}")
            continue
        if not a.is_floating_point():
            same = bool(torch.equal(a, b))
            report.errors.append(OutputError(trial, name, 0.0 if same else float("inf"),
                                             0.0 if same else float("inf"), 0.0, same))
            continue
        tol = rtol if rtol is not None else default_rtol(a.dtype)
        a64, b64 = a.detach().double(), b.detach().double()
        err = float((a64 - b64).abs().max()) if a.numel() else 0.0
        scale = float(a64.abs().max()) if a.numel() else 0.0
        rel = err / scale if scale > 0 else err
        finite = bool(torch.isfinite(b64).all() == torch.isfinite(a64).all())
        ok = finite and err <= tol * max(scale, 1e-6)
        report.errors.append(OutputError(trial, name, err, rel, tol, ok))


def verify(original: nn.Module, grown: nn.Module, example_input: Any, *, trials: int = 3,
           rtol: Optional[float] = None, seed: int = 0) -> Report:
    """Compare ``original`` and ``grown`` on the example input and random inputs.

    Parameters
    ----------
    original, grown : nn.Module
    example_input : Tensor, tuple or dict
        As for :func:`fxgrow.widen`.
    trials : int
        Random inputs besides the example input.
    rtol : float, optional
        Allowed ``max |a - b| / max |a|``; by default from the output dtype
        (1e-5 for float32, 1e-10 for float64, 1e-2 for float16).
    seed : int
        Seeds the random inputs and both forward passes.

    Returns
    -------
    Report

    Notes
    -----
    Both models run with TF32 disabled (:func:`fxgrow.capture.runner.full_precision`),
    so float32 tolerances hold on GPUs whose convolutions default to TF32.

    Examples
    --------
    >>> import copy, torch
    >>> m = torch.nn.Linear(3, 2)
    >>> verify(m, copy.deepcopy(m), torch.randn(4, 3)).ok
    True
    """
    with full_precision():
        return _verify(original, grown, example_input, trials, rtol, seed)


def _verify(original, grown, example_input, trials, rtol, seed) -> Report:
    args, kwargs = normalize_input(example_input)
    report = Report()
    gen = torch.Generator().manual_seed(seed)
    for trial in range(trials + 1):
        a, k = (args, kwargs) if trial == 0 else random_like_input((args, kwargs), gen)
        try:
            ref = call_pure(original, a, k, seed=seed + trial)
        except Exception as e:
            raise ExampleInputError(f"the original model fails on the input: {e}") from e
        try:
            got = call_pure(grown, a, k, seed=seed + trial)
        except Exception as e:
            report.problems.append(f"trial {trial}: the grown model fails: "
                                   f"{type(e).__name__}: {e}")
            continue
        _compare(trial, ref, got, report, rtol)
    return report
