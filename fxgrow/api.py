"""Public entry points: ``analyze`` and ``widen``.

They chain the passes (capture -> analyze -> plan -> apply -> verify) and add
the user's context to errors; every step is also importable on its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from torch import fx, nn

from . import checks, meta
from .analysis import Analysis, analyze_graph
from .capture import CaptureOptions, ExampleInput, bind_inputs, capture as _capture
from .capture.export import as_module
from .capture.memo import LeafMemo
from .rules import has_module_rule
from .errors import ExampleInputError, SpecError, UnknownInitError, VerificationError
from .verify import train_mode_hint, verify, verify_run
from .widen import EXACT, INITS, Spec, apply_plan, first_divergence, plan_widening
from .widen.module import into_module

__all__ = ["analyze", "widen", "CaptureOptions"]


def analyze(
    model: nn.Module,
    example_input: ExampleInput,
    *,
    capture: Union[str, CaptureOptions] = "auto",
    **capture_options: Any,
) -> Analysis:
    """Find the groups of neurons that must grow together.

    Pure: the model's weights, buffers and graph are not touched.

    Parameters
    ----------
    model : nn.Module, fx.GraphModule or ExportedProgram
    example_input : Tensor, tuple of positional inputs, or dict of keyword inputs
    capture : {"auto", "fx", "export"} or CaptureOptions
        How the graph is obtained (see :class:`~fxgrow.capture.CaptureOptions`):
        torch.fx symbolic tracing, ``torch.export``, or fx with export as the
        fallback (default).
    **capture_options
        ``leaf_modules`` (module types or qualified names to keep as opaque
        leaves) and ``concrete_args`` (values to specialise while tracing),
        shorthands for the fields of :class:`~fxgrow.capture.CaptureOptions`.

    Returns
    -------
    Analysis
        ``print(a)`` shows the group table; ``a.groups`` lists the groups.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> a = fxgrow.analyze(m, torch.randn(1, 4))
    >>> [(g.size, g.status) for g in a.groups]
    [(4, 'fixed'), (8, 'growable'), (2, 'fixed')]
    """
    options = CaptureOptions.of(capture, **capture_options)
    cap = _capture(model, example_input, options,
                   faithful=_faithfulness(model, example_input) if options.check else None,
                   is_leaf=has_module_rule)
    analysis = analyze_graph(cap.graph_module, cap.args, cap.kwargs)
    # the user's model, to verify against and to grow into (output="module")
    return dataclasses.replace(analysis, source=as_module(model))


def _faithfulness(model: Any, example_input: ExampleInput):
    """How a captured graph differs from ``model`` on the example input (None: it does
    not, or the model has no data to run on: a model on the ``meta`` device)."""
    def check(gm: fx.GraphModule, run_graph) -> Optional[str]:
        tensors = list(model.parameters()) + list(model.buffers()) if isinstance(
            model, nn.Module) else []
        if any(t.is_meta for t in tensors):
            return None
        # the graph's run is capture's (it records the shapes as it goes); it takes the
        # outputs of pure layers the model's run computed on the same inputs (capture.memo)
        memo = LeafMemo(model) if isinstance(model, nn.Module) else None
        run = run_graph if memo is None else lambda seed: run_graph(seed, memo)
        report = verify_run(model, run, example_input, memo=memo)
        return None if report.ok else str(report).replace("\n", "; ")
    return check


def widen(
    model: Union[nn.Module, Analysis],
    example_input: Optional[ExampleInput] = None,
    spec: Spec = 2.0,
    *,
    init: str = "net2net",
    noise: float = 0.0,
    seed: int = 0,
    verify: Optional[bool] = None,
    trials: int = 3,
    rtol: Optional[float] = None,
    capture: Union[str, CaptureOptions] = "auto",
    output: str = "graph",
    **capture_options: Any,
) -> nn.Module:
    """Widen a model with Net2WiderNet (or a baseline initialiser).

    Parameters
    ----------
    model : nn.Module, fx.GraphModule or Analysis
        The model (never modified), or an analysis of it to reuse.
    example_input : Tensor, tuple or dict
        One batch the model runs on (optional when ``model`` is an Analysis).
    spec : float, int or dict
        ``2.0`` grows every growable group twofold except the head dims
        (``Analysis.head_dims``: attention grows by heads, each head keeping
        its width, as in HyperCloning and LEMON); ``{"layer2.0.conv1": 192}``
        grows the group a module produces to 192 neurons (group ids work as
        keys too, head dims included; float values are factors).
    init : {"net2net", "split", "zero_out", "random_pad", "random_init"}
        ``net2net`` (default) preserves the function exactly when ``noise`` is
        0; ``split`` (copies with unequal shares of the outgoing weights) and
        ``zero_out`` (fresh neurons with zero outgoing weights) preserve it and
        break the copies' symmetry (see :mod:`fxgrow.widen.inits`); the two
        baselines do not (see :mod:`fxgrow.widen.apply`).
    noise : float
        Relative noise added to new neurons (net2net only; breaks exactness).
    seed : int
        Seeds the sampled index maps and any random initialisation.
    verify : bool, optional
        Compare outputs with the original and raise
        :class:`~fxgrow.errors.VerificationError` on a mismatch.  Default:
        on exactly when the initialiser is function preserving.
    trials, rtol :
        Passed to :func:`fxgrow.verify`.
    capture, **capture_options :
        As for :func:`analyze`.
    output : {"graph", "module"}
        ``"graph"`` (default): a ``torch.fx.GraphModule``.  ``"module"``: a deep
        copy of the user's own module with every grown layer resized, running
        the user's ``forward`` (any input shape, train and eval mode, its hooks
        and methods); refused (``SpecError``) where ``forward`` holds a number
        the growth changes, such as a literal head count (see
        :mod:`fxgrow.widen.module`; :func:`fxgrow.grow_into` handles those).

    Returns
    -------
    torch.fx.GraphModule or the user's module class
        Same module names and ``state_dict`` keys, new sizes.  A GraphModule's
        ``meta`` holds ``"fxgrow.plan"`` (``{group: (old, new)}``), ``"fxgrow.growth"``
        (the gradient map :func:`fxgrow.grow_optimizer` reads) and, when verified,
        ``"fxgrow.report"``.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> g = fxgrow.widen(m, torch.randn(3, 4), 2.0)
    >>> g.get_submodule("0").out_features, g.meta["fxgrow.report"].ok
    (16, True)
    """
    if not isinstance(init, str) or init not in INITS:
        raise UnknownInitError(f"unknown init {init!r}; choose one of {INITS}")
    noise = checks.real(noise, "noise")
    seed = checks.seed(seed)
    verify = checks.flag(verify, "verify")
    trials = checks.integer(trials, "trials", minimum=0)
    rtol = None if rtol is None else checks.real(rtol, "rtol")
    if output not in ("graph", "module"):
        raise SpecError(f"output must be 'graph' or 'module', not {output!r}")
    if isinstance(model, Analysis):
        given = (["capture"] if not (isinstance(capture, str) and capture == "auto") else []) \
            + sorted(k for k, v in capture_options.items() if v is not None)
        if given:
            raise SpecError(
                f"{' and '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to an "
                "Analysis, which is captured already: pass capture options to fxgrow.analyze, "
                "or give widen the model")
        analysis = model
        original: nn.Module = analysis.source or analysis.graph_module
        if example_input is None:
            example_input = analysis.kwargs or analysis.args
    else:
        if example_input is None:
            raise ExampleInputError("widen needs an example input")
        model = as_module(model)  # an ExportedProgram runs as ep.module()
        analysis = analyze(model, example_input, capture=capture, **capture_options)
        original = model
    plan = plan_widening(analysis, spec, seed=seed)
    grown = apply_plan(plan, init=init, noise=noise)
    if output == "module":
        if analysis.source is None or isinstance(analysis.source, fx.GraphModule):
            raise SpecError("output='module' needs the user's own module: give widen the model "
                            "(or an Analysis made from it by fxgrow.analyze)")
        grown = into_module(analysis.source, plan, grown)
    exact = init in EXACT and not noise
    if verify is None:
        verify = exact
    if verify:
        report = _verify(original, grown, example_input, trials=trials, rtol=rtol, seed=seed)
        if isinstance(grown, fx.GraphModule):
            grown.meta[meta.REPORT] = report
        if not report.ok:
            where = first_divergence(plan, grown, bind_inputs(
                analysis.graph_module, analysis.args, analysis.kwargs)) \
                if isinstance(grown, fx.GraphModule) else None
            if where:
                report.problems.append(f"first divergence: {where}")
            hint = train_mode_hint(analysis.graph_module)  # functional dropout too
            if hint and not any(p.startswith("hint: ") for p in report.problems):
                report.problems.append(hint)
            raise VerificationError(
                "the widened model does not match the original"
                + ("" if exact else f" (init={init!r}, noise={noise} is not function "
                                    "preserving; pass verify=False)")
                + f"\n{report}", report)
    return grown


_verify = verify  # the keyword argument shadows the function inside widen
