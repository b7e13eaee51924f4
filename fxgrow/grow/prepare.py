"""The plan ``grow_into`` and ``grow_checkpoint`` share: from two models to tensor pairs.

Analyse both models, map the target's modules to the source's, read the group
sizes off the target's analysis, widen the source's graph to them, prove the new
blocks the identity and the rest of the target's graph the grown graph.  What
comes out is data: which grown tensor each target tensor receives, and which
tensors of new blocks are zeroed.  Filling a model (:mod:`fxgrow.grow.into`) or
streaming a checkpoint (:mod:`fxgrow.grow.checkpoint`) only carries it out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Mapping, Optional, Set, Tuple

import torch
from torch import fx, nn

from .. import checks
from ..analysis.result import Analysis
from ..api import analyze
from ..capture import ExampleInput
from ..capture.runner import preserved
from ..ops.access import attr_by_name
from ..errors import (ExampleInputError, GrowthWarning, SpecError, TargetMismatchError,
                      UnknownInitError)
from ..widen import INITS, GrowthPlan, apply_plan, plan_widening
from .correspond import correspond
from .identity import IdentityProof, prove_identity, region
from .match import target_sizes
from .names import LayerMap

__all__ = ["Prepared", "prepare", "assignments", "tensors"]


@dataclass(frozen=True)
class Prepared:
    """Everything needed to write the target: ``pairs`` maps each target tensor the
    graph reads to the grown tensor (a source name in ``grown``) it receives."""

    plan: GrowthPlan
    grown: fx.GraphModule
    pairs: Dict[str, str]
    names: LayerMap
    proofs: Tuple[IdentityProof, ...]
    init: str

    @property
    def zeroed(self) -> FrozenSet[str]:
        return frozenset().union(*(p.zeroed for p in self.proofs))

    @property
    def ones(self) -> FrozenSet[str]:
        return frozenset().union(*(p.ones for p in self.proofs))

    @property
    def new_roots(self) -> List[str]:
        return [p.module for p in self.proofs]

    def in_new_block(self, name: str) -> bool:
        return any(name.startswith(r + ".") for r in self.new_roots)


def assignments(prep: Prepared, target: Mapping[str, torch.Tensor],
                source: Mapping[str, Tuple[int, ...]]) -> Dict[str, Tuple[str, Optional[str]]]:
    """What each target tensor receives, as data: ``("grown", name)`` the grown graph's
    tensor, ``("source", name)`` a source tensor the graph does not read (unchanged),
    ``("zero", None)`` a new block's zeroed tensor, ``("one", None)`` a gain of a new
    block on the path it passes through, set to 1, ``("keep", None)`` a new block's
    other tensors (the target's own initialisation).

    ``target``: the target's tensors by every name; ``source``: the source's shapes.
    A tied tensor is read under one of its names, and all its names receive that.

    Raises
    ------
    TargetMismatchError
        A target tensor nothing writes.
    """
    aliases: Dict[int, List[str]] = {}
    for name, t in target.items():
        aliases.setdefault(id(t), []).append(name)
    out: Dict[str, Tuple[str, Optional[str]]] = {}
    zeroed, ones = prep.zeroed, prep.ones
    for name, t in target.items():
        read = [a for a in aliases[id(t)] if a in prep.pairs]
        if read:
            grown = {prep.pairs[a] for a in read}
            # several names of one grown tensor (tied in the source too) are one source
            if len({id(attr_by_name(prep.grown, g)) for g in grown}) > 1:
                raise TargetMismatchError(
                    f"target tensors {sorted(read)} are one tensor (tied) but the graph reads "
                    f"them as different source tensors {sorted(grown)}: tie them in the source "
                    "too, or untie them")
            out[name] = ("grown", prep.pairs[read[0]])
        elif name in zeroed:
            out[name] = ("zero", None)
        elif name in ones:
            out[name] = ("one", None)
        elif prep.in_new_block(name):
            out[name] = ("keep", None)
        else:
            src = prep.names.tensor(name)
            if src is None or tuple(source.get(src, ())) != tuple(t.shape) or src not in source:
                have = (f"the source has {tuple(source[src])} there" if src in source
                        else "the source has no such tensor")
                raise TargetMismatchError(
                    f"target tensor {name!r} {tuple(t.shape)} is written by no grown tensor: the "
                    f"traced graph does not read it and {have}"
                    + ("" if src is not None else " (it lies in no new block proved the identity)"))
            out[name] = ("source", src)
    return out


def tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every parameter and buffer under every name (tied ones twice)."""
    out = dict(model.named_parameters(remove_duplicate=False))
    out.update(dict(model.named_buffers(remove_duplicate=False)))
    return out


def _analyze(model: nn.Module, example_input: ExampleInput, capture) -> Analysis:
    # eval mode: the mode the function is preserved in (dropout off, BatchNorm's running
    # statistics); the user's flags come back when the block ends
    with preserved(model):
        model.eval()
        return analyze(model, example_input, capture=capture)


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
        skip |= region(tgt_gm, root) | {by_name[n] for n in proof.sums}
        for out, src in proof.passes.items():
            alias[by_name[out]] = by_name[src]
    return tuple(proofs), skip, alias


def prepare(source: nn.Module, target: nn.Module, example_input: ExampleInput, *,
            layers: Optional[Mapping[str, Optional[str]]] = None, init: str = "net2net",
            noise: float = 0.0, seed: int = 0, capture: str = "auto",
            what: str = "grow_into") -> Prepared:
    """Check the call, analyse both models and prove the target is the source grown.

    Examples
    --------
    >>> import torch
    >>> small = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> big = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> p = prepare(small, big, torch.randn(3, 4))
    >>> p.pairs["0.weight"], p.grown.get_parameter("0.weight").shape
    ('0.weight', torch.Size([16, 4]))
    """
    if not isinstance(source, nn.Module) or not isinstance(target, nn.Module):
        raise SpecError(f"{what} needs two nn.Modules: the trained source and the bigger "
                        f"target, not {type(source).__name__} and {type(target).__name__}")
    if source is target:
        raise SpecError(f"{what}: source and target are the same module")
    if example_input is None:
        raise ExampleInputError(f"{what} needs an example input")
    if not isinstance(init, str) or init not in INITS:
        raise UnknownInitError(f"unknown init {init!r}; choose one of {INITS}")
    noise = checks.real(noise, "noise")
    seed = checks.seed(seed)
    shared = {id(t) for t in tensors(source).values()} & {id(t) for t in tensors(target).values()}
    if shared:
        raise SpecError(f"{what}: source and target share tensors; build the target anew "
                        "(filling it would change the source)")
    a_src = _analyze(source, example_input, capture)
    a_tgt = _analyze(target, example_input, capture)
    names = LayerMap(layers, dict(source.named_modules()))
    modules = dict(target.named_modules())
    for k in names.layers:
        if k not in modules:
            raise SpecError(f"layers names {k!r}, which is no module of the target")

    sizes = target_sizes(a_src, a_tgt, names)
    with warnings.catch_warnings():  # a deeper target of the same widths grows no group
        warnings.simplefilter("ignore", GrowthWarning)
        plan = plan_widening(a_src, sizes, seed=seed)
    grown = apply_plan(plan, init=init, noise=noise)

    tgt_gm = a_tgt.graph_module
    proofs, skip, alias = _identity_blocks(tgt_gm, _new_roots(target, names))
    pairs = correspond(tgt_gm, grown, skip, alias, set(tensors(target)))
    return Prepared(plan, grown, pairs, names, proofs, init)
