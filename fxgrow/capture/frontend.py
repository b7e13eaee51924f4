"""Capture a model as a ``torch.fx`` graph, with shapes from an example input.

:func:`capture` is the front end of every pass: it turns the user's model and
example input into a :class:`torch.fx.GraphModule` whose nodes carry their
output shapes (:mod:`fxgrow.capture.shapes`), by one of two tracers --
``torch.fx`` symbolic tracing (:mod:`fxgrow.capture.trace`) or ``torch.export``
(:mod:`fxgrow.capture.export`) -- chosen by :class:`CaptureOptions`.  A
``GraphModule`` or ``ExportedProgram`` given by the user is used as is.

The user's model is never changed: a traced ``GraphModule`` shares the
model's submodules, so nothing downstream writes to them, and the graph of a
user's ``GraphModule`` is copied before any metadata is written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

import torch
from torch import fx, nn

from .. import checks, meta
from ..errors import SpecError, TraceError
from .export import as_module, copy_exported, export_module, is_exported
from .inputs import ExampleInput, bind_inputs, normalize_input
from . import modes, signature
from .modules import complete_state
from .regions import inline_regions
from .memo import LeafMemo
from .shapes import propagate, run_recording
from .trace import trace

__all__ = ["CAPTURES", "CaptureOptions", "Captured", "capture"]

#: how ``capture`` obtains the graph (see :class:`CaptureOptions`)
CAPTURES = ("auto", "fx", "export")

LeafModules = Tuple[Union[str, Type[nn.Module]], ...]


@dataclass(frozen=True)
class CaptureOptions:
    """How a model becomes a graph.

    Parameters
    ----------
    method : {"auto", "fx", "export"}
        ``"fx"``: ``torch.fx`` symbolic tracing.  ``"export"``:
        ``torch.export.export(model, args, kwargs, strict=False).module()``,
        an ATen-level graph (see :mod:`fxgrow.capture.export`;
        ``leaf_modules`` and ``concrete_args`` do not apply).  ``"auto"``
        (default): fx, and export when fx cannot trace the model.
    leaf_modules : tuple of module types or qualified names
        Extra modules to keep as leaves instead of tracing through them (fx).
    concrete_args : dict, optional
        Values to specialise during tracing (see ``torch.fx.symbolic_trace``).
        Keyword parameters of ``forward`` that the example input does not
        give are specialised to their defaults.
    dynamic : bool
        torch.export only: keep input dims symbolic where the model allows
        (``Dim.AUTO``), so the graph accepts other batch and sequence sizes;
        falls back to static shapes with a warning (default True).
    check : bool
        Run the captured graph and the model on the example input and refuse a
        graph that computes something else (a branch on
        ``torch.compiler.is_exporting()``, say); with ``"auto"`` the next tracer
        is tried (default True; models on the ``meta`` device are not run).

    The entry points take ``capture="fx"`` (a method) or
    ``capture=CaptureOptions(...)``, and ``leaf_modules=`` / ``concrete_args=``
    as keyword shorthands (:meth:`of`).

    Examples
    --------
    >>> CaptureOptions.of("fx", leaf_modules=[nn.ReLU]).leaf_modules
    (<class 'torch.nn.modules.activation.ReLU'>,)
    """

    method: str = "auto"
    leaf_modules: LeafModules = ()
    concrete_args: Optional[Dict[str, Any]] = field(default=None, hash=False)
    dynamic: bool = True
    check: bool = True

    def __post_init__(self) -> None:
        if self.method not in CAPTURES:
            raise SpecError(f"unknown capture {self.method!r}; choose one of {CAPTURES}")
        object.__setattr__(self, "leaf_modules", checks.leaf_modules(self.leaf_modules))
        if self.concrete_args is not None and not isinstance(self.concrete_args, dict):
            raise SpecError(f"concrete_args must be a dict {{parameter name: value}}, not "
                            f"{type(self.concrete_args).__name__}")

    @classmethod
    def of(cls, capture: Union[str, "CaptureOptions"] = "auto", **options: Any) -> "CaptureOptions":
        """Options from an entry point's ``capture=`` and keyword shorthands."""
        unknown = set(options) - {"leaf_modules", "concrete_args", "dynamic", "check"}
        if unknown:
            raise SpecError(f"unknown capture option(s) {sorted(unknown)}; the options are "
                            "leaf_modules, concrete_args, dynamic and check")
        given = {k: v for k, v in options.items() if v is not None}
        if isinstance(capture, CaptureOptions):
            return capture.with_(**given) if given else capture
        if not isinstance(capture, str):
            raise SpecError(f"capture must be one of {CAPTURES} or a CaptureOptions, "
                            f"not {type(capture).__name__}")
        return cls(capture, **given)

    def with_(self, **changes: Any) -> "CaptureOptions":
        fields = {"method": self.method, "leaf_modules": self.leaf_modules,
                  "concrete_args": self.concrete_args, "dynamic": self.dynamic,
                  "check": self.check}
        fields.update(changes)
        return CaptureOptions(**fields)


@dataclass
class Captured:
    """A traced graph and the example input bound to its placeholders."""

    graph_module: fx.GraphModule
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


def _defaults_as_concrete(model: nn.Module, args: tuple, kwargs: dict,
                          concrete: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword parameters the example does not give, specialised to their defaults."""
    return {**signature.specialised(model, args, kwargs), **concrete}


def capture(model: nn.Module, example_input: ExampleInput,
            options: CaptureOptions = CaptureOptions(),
            faithful: Optional[Callable[..., Optional[str]]] = None,
            is_leaf: Optional[Callable[[nn.Module], bool]] = None) -> Captured:
    """Trace ``model`` and record every node's output shape.

    Parameters
    ----------
    model : nn.Module, fx.GraphModule or ExportedProgram
        The model.  A ``GraphModule`` is used as is (its graph is copied so
        the metadata fxgrow writes does not land on the user's graph).
    example_input : Tensor, tuple or dict
        One batch the model runs on.
    options : CaptureOptions
        Which tracer, and its options.
    faithful : callable, optional
        ``faithful(gm, run_graph)`` says how a captured graph differs from the
        model (None: it does not); ``run_graph(seed)`` runs the graph on the
        example input (recording its shapes) and returns its output.  A
        tracer whose graph differs is not used: with ``"auto"`` the next one
        is tried, otherwise a TraceError says why.
    is_leaf : callable, optional
        Modules to keep whole while tracing with torch.fx (e.g. those the rule
        table has a rule for), besides ``options.leaf_modules``.

    Returns
    -------
    Captured
        ``graph_module.meta["fxgrow.capture"]`` records
        ``{"method", "fallback_reason"}``.

    Examples
    --------
    >>> cap = capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), torch.randn(2, 4))
    >>> [meta.shape(n).shape for n in cap.graph_module.graph.nodes][:2]
    [(2, 4), (2, 8)]
    """
    how: Dict[str, Any] = {"method": options.method, "fallback_reason": None}
    if isinstance(model, torch.export.ExportedProgram):
        if options.method == "fx":
            raise TraceError("an ExportedProgram is already an ATen graph; capture='fx' "
                             "needs the nn.Module")
        model, how["method"] = as_module(model), "export"
    if not isinstance(model, nn.Module):
        raise TraceError(f"expected an nn.Module, GraphModule or ExportedProgram, got "
                         f"{type(model).__name__}")
    args, kwargs = normalize_input(example_input)
    if isinstance(model, fx.GraphModule):  # the user's own graph: used as is
        gm = _given_graph(model, how)
        propagate(gm, bind_inputs(gm, args, kwargs))
    else:
        gm = _traced(model, args, kwargs, options, how, faithful, is_leaf)
        how["specialised"] = signature.specialised(model, args, kwargs)
    gm.meta[meta.CAPTURE] = how
    modes.guard(gm, how)
    return Captured(gm, args, kwargs)


def _given_graph(model: fx.GraphModule, how: Dict[str, Any]) -> fx.GraphModule:
    if is_exported(model):  # ep.module(), given by the user
        gm = copy_exported(model)
        inline_regions(gm)
        how["method"] = "export"
    else:
        gm = fx.GraphModule(model, copy.deepcopy(model.graph), model.__class__.__name__)
        how["method"] = "graph_module"
    modes.inherit(how, model)  # a graph fxgrow grew keeps what its capture knew of modes
    return gm


def _check_and_record(gm: fx.GraphModule, values: Tuple[Any, ...],
                      faithful: Optional[Callable[..., Optional[str]]]) -> Optional[str]:
    """Record every node's shape, and say how ``gm`` differs from the model (None: it does not).

    The faithfulness check runs the graph on the example input anyway; the shapes are
    recorded during that run (:func:`run_recording`), so the graph is run once, on real
    tensors.  Only when the check does not run the graph (no check, or a model on the
    ``meta`` device) are the shapes propagated on fake tensors.
    """
    ran = []

    def run_graph(seed: Optional[int] = None, memo: Optional[LeafMemo] = None) -> Any:
        ran.append(True)
        return run_recording(gm, values, seed, memo)

    problem = faithful(gm, run_graph) if faithful is not None else None
    if not ran:
        propagate(gm, values)
    return problem


def _traced(model, args, kwargs, options, how, faithful, is_leaf) -> fx.GraphModule:
    """The first tracer's graph that runs and computes what the model computes."""
    if options.method == "export" and (options.leaf_modules or options.concrete_args):
        raise SpecError("leaf_modules and concrete_args apply to torch.fx tracing, not to "
                        "capture='export'")
    failures = []
    for method in (("fx", "export") if options.method == "auto" else (options.method,)):
        try:
            if method == "fx":
                checks.leaf_names(model, options.leaf_modules)
                checks.concrete_args(model, options.concrete_args)
                concrete = _defaults_as_concrete(model, args, kwargs, options.concrete_args or {})
                watch = modes.TrainingWatch(model)
                gm = trace(model, options.leaf_modules, concrete, is_leaf, watch)
                how["modes"] = modes.fx_dependence(
                    model, gm, lambda: trace(model, options.leaf_modules, concrete, is_leaf),
                    watch)
            else:
                gm = export_module(model, args, kwargs, options.dynamic, how)
                nn.Module.train(gm, model.training)  # ep.module() says True whatever it traced
                how["modes"] = modes.export_dependence(gm)
            how["training"] = model.training
            complete_state(gm, model)
            problem = _check_and_record(gm, bind_inputs(gm, args, kwargs), faithful)
            if problem:
                raise TraceError(f"the graph torch.{method} captured of {type(model).__name__} "
                                 f"does not compute what the model computes: {problem}")
        except TraceError as e:
            failures.append(e)
            if len(failures) == 1 and options.method == "auto":
                how["fallback_reason"] = str(e).splitlines()[0]
            continue
        how["method"] = method
        return gm
    if len(failures) == 1:
        raise failures[0]
    raise TraceError(f"{failures[0]}\n\nThe torch.export fallback failed too:\n{failures[1]}"
                     ) from failures[1]
