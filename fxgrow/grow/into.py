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

import warnings
from typing import Any, Dict, List, Mapping, Optional, Set

import torch
from torch import fx, nn

from .. import checks
from ..api import analyze
from ..capture import ExampleInput
from ..capture.runner import preserved
from ..errors import ExampleInputError, GrowthWarning, SpecError, TargetMismatchError, UnknownInitError, \
    VerificationError
from ..verify import Report, verify as _verify
from ..widen import EXACT, INITS, apply_plan, plan_widening
from .correspond import correspond
from .identity import IdentityProof, prove_identity, region
from .match import target_sizes
from .names import LayerMap

__all__ = ["grow_into"]


def _analyze(model: nn.Module, example_input: ExampleInput, capture):
    # eval mode: the mode the function is preserved in (dropout off, BatchNorm's running
    # statistics); the user's flags come back when the block ends
    with preserved(model):
        model.eval()
        return analyze(model, example_input, capture=capture)


def _tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    out = dict(model.named_parameters(remove_duplicate=False))
    out.update(dict(model.named_buffers(remove_duplicate=False)))
    return out


def _new_roots(target: nn.Module, names: LayerMap) -> List[str]:
    roots = []
    for name, mod in target.named_modules():
        if name and names.is_new(name) and not names.is_new(name.rpartition(".")[0]):
            if any(True for _ in mod.parameters()) or any(True for _ in mod.buffers()):
                roots.append(name)
    return roots


def _identity_blocks(tgt_gm: fx.GraphModule, roots: List[str]):
    proofs: List[IdentityProof] = []
    skip: Set[fx.Node] = set()
    alias: Dict[fx.Node, fx.Node] = {}
    by_name = {n.name: n for n in tgt_gm.graph.nodes}
    for root in roots:
        proof = prove_identity(tgt_gm, root, lambda t, r=root: t.startswith(r + "."))
        proofs.append(proof)
        skip |= region(tgt_gm, root)
        for out, src in proof.passes.items():
            alias[by_name[out]] = by_name[src]
    return proofs, skip, alias


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
        ``target``, filled in place (its own class, parameters and flags).

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
    if not isinstance(source, nn.Module) or not isinstance(target, nn.Module):
        raise SpecError("grow_into needs two nn.Modules: the trained source and the bigger "
                        f"target, not {type(source).__name__} and {type(target).__name__}")
    if source is target:
        raise SpecError("grow_into: source and target are the same module")
    if example_input is None:
        raise ExampleInputError("grow_into needs an example input")
    if not isinstance(init, str) or init not in INITS:
        raise UnknownInitError(f"unknown init {init!r}; choose one of {INITS}")
    noise = checks.real(noise, "noise")
    seed = checks.seed(seed)
    verify = checks.flag(verify, "verify")
    trials = checks.integer(trials, "trials", minimum=0)
    shared = {id(t) for t in _tensors(source).values()} & {id(t) for t in _tensors(target).values()}
    if shared:
        raise SpecError("grow_into: source and target share tensors; build the target anew "
                        "(filling it would change the source)")

    a_src = _analyze(source, example_input, capture)
    a_tgt = _analyze(target, example_input, capture)
    names = LayerMap(layers, dict(source.named_modules()))
    for k in names.layers:
        if k not in dict(target.named_modules()):
            raise SpecError(f"layers names {k!r}, which is no module of the target")

    sizes = target_sizes(a_src, a_tgt, names)
    with warnings.catch_warnings():  # a deeper target of the same widths grows no group
        warnings.simplefilter("ignore", GrowthWarning)
        plan = plan_widening(a_src, sizes, seed=seed)
    grown = apply_plan(plan, init=init, noise=noise)

    tgt_gm = a_tgt.graph_module
    proofs, skip, alias = _identity_blocks(tgt_gm, _new_roots(target, names))
    pairs = correspond(tgt_gm, grown, skip, alias)
    _write(source, target, grown, pairs, names, proofs)

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


def _lookup(root: nn.Module, name: str) -> Any:
    obj: Any = root
    for part in name.split("."):
        obj = getattr(obj, part, None)
    return obj


@torch.no_grad()
def _write(source: nn.Module, target: nn.Module, grown: fx.GraphModule, pairs: Dict[str, str],
           names: LayerMap, proofs: List[IdentityProof]) -> None:
    """Every target tensor gets its grown tensor; new blocks keep their own init, with
    the tensors the identity proof names set to zero."""
    zeroed = set().union(*(p.zeroed for p in proofs)) if proofs else set()
    new_roots = [p.module for p in proofs]
    src_tensors = _tensors(source)
    plan: Dict[str, torch.Tensor] = {}
    tensors = _tensors(target)
    aliases: Dict[int, List[str]] = {}
    for name, t in tensors.items():
        aliases.setdefault(id(t), []).append(name)
    for name, t in tensors.items():
        # a tied tensor is read under one of its names
        name_read = next((a for a in aliases[id(t)] if a in pairs), None)
        if name_read is not None:
            value = _lookup(grown, pairs[name_read])
        elif name in zeroed:
            value = torch.zeros_like(t)
        elif any(name.startswith(r + ".") for r in new_roots):
            continue  # a new block's other tensors: the target's own initialisation
        else:
            # a tensor the traced graph does not read: the source's, if it is there unchanged
            src = names.tensor(name)
            value = src_tensors.get(src) if src is not None else None
            if value is None or value.shape != t.shape:
                raise TargetMismatchError(
                    f"target tensor {name!r} {tuple(t.shape)} is written by no grown tensor: "
                    + ("the traced graph does not read it and the source has "
                       + (f"{tuple(value.shape)} there" if value is not None else "no such tensor")
                       if not names.is_new(name.rpartition('.')[0]) else
                       "it belongs to no new block proved the identity"))
        if not isinstance(value, torch.Tensor) or value.shape != t.shape:
            raise TargetMismatchError(
                f"target tensor {name!r} has shape {tuple(t.shape)}, its grown tensor "
                f"{pairs.get(name, name)!r} {tuple(getattr(value, 'shape', ()))}")
        plan[name] = value
    # tied tensors (one storage under two names) must receive one value
    by_storage: Dict[int, str] = {}
    for name, t in _tensors(target).items():
        if name not in plan:
            continue
        first = by_storage.setdefault(id(t), name)
        if first != name and not torch.equal(plan[first].to(t.dtype), plan[name].to(t.dtype)):
            raise TargetMismatchError(
                f"target tensors {first!r} and {name!r} are one tensor (tied) but the grown "
                "source gives them different values: tie them in the source too, or untie them")
    targets = _tensors(target)
    for name, value in plan.items():
        targets[name].copy_(value)
