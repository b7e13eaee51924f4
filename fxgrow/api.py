"""Public entry points: ``analyze`` and ``widen``.

They chain the passes (capture -> analyze -> plan -> apply -> verify) and add
the user's context to errors; every step is also importable on its own.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from torch import fx, nn

from . import meta
from .analysis import Analysis, analyze_graph
from .capture import CaptureOptions, ExampleInput, bind_inputs, capture as _capture
from .capture.export import as_module
from .errors import ExampleInputError, UnknownInitError, VerificationError
from .verify import verify
from .widen import EXACT, INITS, Spec, apply_plan, first_divergence, plan_widening

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
    cap = _capture(model, example_input, CaptureOptions.of(capture, **capture_options))
    return analyze_graph(cap.graph_module, cap.args, cap.kwargs)


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
    **capture_options: Any,
) -> fx.GraphModule:
    """Widen a model with Net2WiderNet (or a baseline initialiser).

    Parameters
    ----------
    model : nn.Module, fx.GraphModule or Analysis
        The model (never modified), or an analysis of it to reuse.
    example_input : Tensor, tuple or dict
        One batch the model runs on (optional when ``model`` is an Analysis).
    spec : float, int or dict
        ``2.0`` grows every growable group twofold; ``{"layer2.0.conv1": 192}``
        grows the group a module produces to 192 neurons (group ids work as
        keys too; float values are factors).
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

    Returns
    -------
    torch.fx.GraphModule
        Same module names and ``state_dict`` keys, new sizes.  ``meta`` holds
        ``"fxgrow.plan"`` (``{group: (old, new)}``), ``"fxgrow.growth"`` (the
        gradient map :func:`fxgrow.grow_optimizer` reads) and, when verified,
        ``"fxgrow.report"``.

    Examples
    --------
    >>> import torch, fxgrow
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> g = fxgrow.widen(m, torch.randn(3, 4), 2.0)
    >>> g.get_submodule("0").out_features, g.meta["fxgrow.report"].ok
    (16, True)
    """
    if init not in INITS:
        raise UnknownInitError(f"unknown init {init!r}; choose one of {INITS}")
    if isinstance(model, Analysis):
        analysis = model
        original: nn.Module = analysis.graph_module
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
    exact = init in EXACT and not noise
    if verify is None:
        verify = exact
    if verify:
        report = _verify(original, grown, example_input, trials=trials, rtol=rtol, seed=seed)
        grown.meta[meta.REPORT] = report
        if not report.ok:
            where = first_divergence(plan, grown, bind_inputs(analysis.graph_module, analysis.args,
                                                              analysis.kwargs))
            if where:
                report.problems.append(f"first divergence from the analysis: {where}")
            raise VerificationError(
                "the widened model does not match the original"
                + ("" if exact else f" (init={init!r}, noise={noise} is not function "
                                    "preserving; pass verify=False)")
                + f"\n{report}", report)
    return grown


_verify = verify  # the keyword argument shadows the function inside widen
