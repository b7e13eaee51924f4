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
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

from . import checks
from .capture.inputs import normalize_input
from .capture.memo import LeafMemo, detached_copy
from .capture.runner import call_pure, full_precision
from .errors import ExampleInputError
from .ops.kinds import stochastic_nodes

__all__ = ["OutputError", "Report", "verify", "verify_run", "default_rtol", "random_like_input",
           "compare_values", "train_mode_hint"]

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

    Floating tensors get Gaussian values with the example's mean and spread,
    complex tensors complex Gaussians (real and imaginary parts each with the
    example's spread); integer tensors (token ids) uniform values in the
    example's range; other values are kept.

    Examples
    --------
    >>> z = random_like_input(torch.randn(3, dtype=torch.complex64), torch.Generator())
    >>> z.dtype, z.shape
    (torch.complex64, torch.Size([3]))
    """
    def gauss(part: torch.Tensor) -> torch.Tensor:  # the example's mean and spread
        seen = part.detach().double()
        seen = seen[torch.isfinite(seen)]
        std = float(seen.std()) if seen.numel() > 1 else 1.0
        mean = float(seen.mean()) if seen.numel() else 0.0
        return torch.randn(part.shape, generator=gen, dtype=torch.float64) * (std or 1.0) + mean

    def one(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if t.is_complex():
            return torch.complex(gauss(t.real), gauss(t.imag)).to(t.dtype).to(t.device)
        if t.is_floating_point():
            return gauss(t).to(t.dtype).to(t.device)
        if t.dtype == torch.bool:
            return (torch.rand(t.shape, generator=gen) < 0.5).to(t.device)
        if t.numel() == 0:
            return t.clone()
        lo, hi = int(t.min()), int(t.max())
        return torch.randint(lo, hi + 1, t.shape, generator=gen, dtype=t.dtype).to(t.device)
    return pytree.tree_map(one, value)


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex32: torch.float16, torch.complex64: torch.float32,
            torch.complex128: torch.float64}.get(dtype, dtype)


def compare_values(a: torch.Tensor, b: torch.Tensor, rtol: Optional[float] = None
                   ) -> Tuple[float, float, float, bool, Optional[str]]:
    """``(max abs error, max relative error, tolerance, ok, problem)`` of two
    same-shape tensors (``a`` the reference).

    Floating and complex tensors: ``|a - b|`` over the entries finite in ``a``,
    relative to ``max |a|``, within ``rtol`` (default: by the real dtype);
    NaN and ±inf entries must sit at the same positions with the same values
    (a masked logit stays ``-inf``), else ``problem`` says where they differ.
    Other dtypes must be equal.

    Examples
    --------
    >>> inf = float("inf")
    >>> compare_values(torch.tensor([1.0, -inf]), torch.tensor([1.0, -inf]))
    (0.0, 0.0, 1e-05, True, None)
    >>> compare_values(torch.tensor([1.0, -inf]), torch.tensor([1.0, 2.0]))[4]
    '1 non-finite entries differ (first at (1,): -inf vs 2)'
    """
    if not (a.is_floating_point() or a.is_complex()):
        same = bool(torch.equal(a, b))
        return (0.0 if same else float("inf")), (0.0 if same else float("inf")), 0.0, same, None
    tol = rtol if rtol is not None else default_rtol(_real_dtype(a.dtype))
    wide = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
    a64, b64 = a.detach().to(wide), b.detach().to(wide)
    fa, fb = torch.isfinite(a64), torch.isfinite(b64)
    problem = None
    odd = ~fa | ~fb
    if bool(odd.any()):
        # same positions and same values (NaN matches NaN), else a problem
        same = (fa == fb) & ((a64 == b64) | (torch.isnan(a64) & torch.isnan(b64)))
        bad = odd & ~same
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0])
            problem = (f"{int(bad.sum())} non-finite entries differ (first at {first}: "
                       f"{a64[first].item():g} vs {b64[first].item():g})")
    keep = fa & fb
    err = float((a64 - b64)[keep].abs().max()) if bool(keep.any()) else 0.0
    scale = float(a64[keep].abs().max()) if bool(keep.any()) else 0.0
    rel = err / scale if scale > 0 else err
    return err, rel, tol, problem is None and err <= tol * max(scale, 1e-6), problem


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
        err, rel, tol, ok, problem = compare_values(a, b, rtol)
        if problem:
            report.problems.append(f"trial {trial}, {name}: {problem}")
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
    original = checks.module(original, "original")
    grown = checks.module(grown, "grown")
    trials = checks.integer(trials, "trials", minimum=0)
    rtol = None if rtol is None else checks.real(rtol, "rtol")
    seed = checks.seed(seed)
    checks.real_tensors(original, example_input, "verify")
    checks.real_tensors(grown, (), "verify")
    with full_precision():
        report = _verify(original, grown, example_input, trials, rtol, seed)
    if not report.ok:
        hint = train_mode_hint(original)
        if hint:
            report.problems.append(hint)
    return report


def verify_run(original: nn.Module, run: Callable[[int], Any], example_input: Any, *,
               rtol: Optional[float] = None, seed: int = 0,
               memo: Optional[LeafMemo] = None) -> Report:
    """:func:`verify` on the example input alone, the other side's output given by ``run(seed)``.

    For a caller that runs the other side itself (capture's faithfulness check runs the
    graph while recording its shapes).  ``run`` must run seeded with ``seed`` and change
    nothing (:func:`fxgrow.capture.runner.call_pure`).  When ``run`` fails and
    ``original`` fails too, the error is ``run``'s (which names the failing node); when
    only ``run`` fails, the report says so.

    With ``memo`` (a :class:`~fxgrow.capture.memo.LeafMemo` of ``original``), the
    original runs first and records its pure layers' outputs, which ``run`` may take
    from ``memo`` instead of computing them; the original's output is copied before
    ``run`` starts, so nothing ``run`` does in place can change it.

    Examples
    --------
    >>> m = torch.nn.Linear(3, 2)
    >>> verify_run(m, lambda seed: m(torch.ones(1, 3)), torch.ones(1, 3)).ok
    True
    """
    args, kwargs = normalize_input(example_input)
    checks.real_tensors(original, example_input, "verify")
    report = Report()
    ref = got = failure = refused = None
    with full_precision():
        if memo is not None:
            try:
                ref = detached_copy(call_pure(original, args, kwargs, seed=seed, fn=memo.call))
            except Exception as e:  # noqa: BLE001 - said below, once the graph has run
                refused = e
        try:
            got = run(seed)
        except Exception as e:  # noqa: BLE001 - is it the input, or the other side?
            failure = e
        finally:
            if memo is not None:
                memo.clear()
        if memo is None:
            try:
                ref = call_pure(original, args, kwargs, seed=seed)
            except Exception as e:  # noqa: BLE001
                refused = e
    if refused is not None:
        if failure is not None:
            raise failure
        raise ExampleInputError(f"the original model fails on the input: {refused}"
                                ) from refused
    if failure is not None:
        report.problems.append(f"trial 0: the grown model fails: "
                               f"{type(failure).__name__}: {failure}")
    else:
        _compare(0, ref, got, report, rtol)
    if not report.ok:
        hint = train_mode_hint(original)
        if hint:
            report.problems.append(hint)
    return report


def train_mode_hint(model: nn.Module) -> Optional[str]:
    """A hint when ``model`` draws random masks (dropout, stochastic depth in
    training mode): copies of a neuron draw different masks, so a grown model
    cannot match it; None otherwise.

    Examples
    --------
    >>> train_mode_hint(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))[:30]
    'hint: call model.eval() first '
    >>> train_mode_hint(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).eval()) is None
    True
    """
    where = stochastic_nodes(model)
    if not where:
        return None
    return ("hint: call model.eval() first (dropout in training mode draws masks per neuron, "
            f"so the grown model cannot draw the same ones; here: {', '.join(where[:3])}"
            + (", ..." if len(where) > 3 else "") + ")")


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
