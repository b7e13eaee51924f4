"""``fxgrow.grow_into``: grow a trained model into a bigger one the user built.

The target is the user's own model at the new sizes (``LlamaForCausalLM(bigger_config)``,
``wide_resnet50_2()``, their class with bigger arguments), so it keeps every
method (``generate``, ``save_pretrained``), every input shape and both modes.
The steps, each a pass of its own:

1. analyse both models (in eval mode, their flags restored afterwards);
2. :mod:`~fxgrow.grow.names`: which target module continues which source module;
   the rest are new blocks;
3. :mod:`~fxgrow.grow.match`: each source group's size, read off the target's analysis;
4. widen the source to those sizes (the widening passes: plan, then apply);
5. :mod:`~fxgrow.grow.identity`: every new block starts as the identity (its residual
   branches' last layers zeroed), or the call is refused naming the block;
6. :mod:`~fxgrow.grow.correspond`: the target's graph without its new blocks *is* the
   grown graph, op for op, which pairs every target tensor with a grown one;
7. write the tensors into the target in place, then verify on fresh inputs.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from .. import checks, meta
from ..capture import ExampleInput
from ..capture.guards import guard_module
from ..capture.runner import preserved
from ..ops.access import attr_by_name
from ..errors import TargetMismatchError, VerificationError
from ..optim import register_growth
from ..verify import Report, verify as _verify
from ..widen import EXACT
from .prepare import Prepared, assignments, prepare, tensors as _tensors

__all__ = ["grow_into"]


def grow_into(
    source: nn.Module,
    target: nn.Module,
    example_input: ExampleInput,
    *,
    layers: Optional[Mapping[str, Optional[str]]] = None,
    init: str = "net2net",
    noise: float = 0.0,
    seed: int = 0,
    verify: Optional[bool] = None,
    trials: int = 3,
    rtol: Optional[float] = None,
    capture: str = "auto",
) -> nn.Module:
    """Fill ``target`` (a bigger model built by the user's code) with ``source`` grown.

    Parameters
    ----------
    source : nn.Module
        The trained model (never modified).
    target : nn.Module
        The same architecture at larger sizes, and possibly deeper: built by the
        user (any weights; they are overwritten, except those of new blocks'
        layers that are not zeroed, which keep the target's initialisation).
    example_input : Tensor, tuple or dict
        One batch both models run on.  For HuggingFace models give
        ``use_cache=False``: a returned cache would make its widths outputs, which
        cannot grow.
    layers : dict, optional
        Target module -> source module it continues, or ``None`` for a new block
        (``{"model.layers.3": None, "model.layers.2": "model.layers.1"}``).  By
        default target modules continue the source modules of their names, and
        target modules the source lacks are new.  Every new block must start as
        the identity: residual branches whose last layers are zeroed.
    init, noise, seed :
        As for :func:`fxgrow.widen` (``"net2net"``, ``"split"``, ``"zero_out"``
        preserve the function; ``"random_pad"``, ``"random_init"`` are baselines).
    verify : bool, optional
        Compare ``target`` with ``source`` in eval mode on the example and fresh
        inputs; default: when the initialiser preserves the function.
    trials, rtol :
        Passed to :func:`fxgrow.verify`.
    capture : {"auto", "fx", "export"}
        How both graphs are obtained.

    Returns
    -------
    nn.Module
        ``target``, filled in place (its own class, parameters and flags).  Captured by
        ``torch.export`` under conditions on the inputs (a loop count read from the
        batch size), it checks them in a forward pre-hook and raises
        :class:`~fxgrow.errors.ShapeGuardError` outside them, where its forward would
        take a path the growth was not planned for.

    Raises
    ------
    TargetMismatchError
        The target is not the source grown: a tensor no growth explains, an op
        the target computes differently (the node is named), a tensor left unwritten.
    NotIdentityError
        A new block cannot start as the identity (a post-LN block: ``LN(x + 0) ≠ x``).
    NarrowingError, GroupNotGrowableError
        The target is narrower, or wider where the source cannot grow (with the reason).

    Examples
    --------
    >>> import torch, fxgrow
    >>> from torch import nn
    >>> small = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> big = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    >>> x = torch.randn(5, 4)
    >>> out = fxgrow.grow_into(small, big, x)
    >>> out is big, torch.allclose(big(x), small(x), atol=1e-6)
    (True, True)
    """
    verify = checks.flag(verify, "verify")
    trials = checks.integer(trials, "trials", minimum=0)
    prep = prepare(source, target, example_input, layers=layers, init=init, noise=noise,
                   seed=seed, capture=capture)
    _write(source, target, prep)
    # grow_optimizer(opt, source, target) finds the gradient map and the names here
    register_growth(target, prep.grown.meta.get(meta.GROWTH),
                    {k: v for k, v in prep.pairs.items()})
    # the growth was planned on the captured path: outside torch.export's guards the
    # target's forward may route neurons through other layers, so it checks them
    guard_module(target, prep.grown)

    exact = init in EXACT and not noise
    if verify is None:
        verify = exact
    if verify:
        report = _check(source, target, example_input, trials, rtol, seed)
        if not report.ok:
            raise VerificationError(
                "the filled target does not match the source"
                + ("" if exact else f" (init={init!r}, noise={noise} is not function "
                                    "preserving; pass verify=False)") + f"\n{report}", report)
    return target


def _check(source, target, example_input, trials, rtol, seed) -> Report:
    with preserved(source), preserved(target):
        source.eval()
        target.eval()
        return _verify(source, target, example_input, trials=trials, rtol=rtol, seed=seed)


@torch.no_grad()
def _write(source: nn.Module, target: nn.Module, prep: Prepared) -> None:
    """Every target tensor gets its grown tensor; new blocks keep their own init, with
    the tensors the identity proof names set to zero."""
    src = _tensors(source)
    tgt = _tensors(target)
    todo = assignments(prep, tgt, {k: tuple(v.shape) for k, v in src.items()})
    values: Dict[str, torch.Tensor] = {}
    for name, (kind, other) in todo.items():
        t = tgt[name]
        if kind == "keep":
            continue
        value = (torch.zeros_like(t) if kind == "zero" else torch.ones_like(t) if kind == "one"
                 else src[other] if kind == "source" else attr_by_name(prep.grown, other))
        if not isinstance(value, torch.Tensor) or value.shape != t.shape:
            raise TargetMismatchError(
                f"target tensor {name!r} has shape {tuple(t.shape)}, its grown tensor "
                f"{other!r} {tuple(getattr(value, 'shape', ()))}")
        values[name] = value
    for name, value in values.items():  # nothing is written before everything is checked
        tgt[name].copy_(value)
