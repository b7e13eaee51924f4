"""Net2DeeperNet: insert layers that start as the identity.

:func:`deepen` chains small passes, like :func:`fxgrow.widen`:

1. **analyze** the model (:func:`fxgrow.analyze`): every node's output gets
   layouts saying which dims index neurons and whether they are fixed;
2. **plan** (:func:`fxgrow.deepen.plan.plan_deepening`, pure): resolve
   ``after`` to nodes, check each one, choose layer kind, activation,
   BatchNorm and method, name the new modules;
3. **build** the blocks (:mod:`fxgrow.deepen.blocks`) and **calibrate** their
   BatchNorms from data (:mod:`fxgrow.deepen.calibrate`);
4. **rewrite** a copy of the graph: each block's leaves are called after its
   node, and the node's users read the block's output instead;
5. **verify** against the original (:func:`fxgrow.verify`).

See ``docs/deepen.md`` for what is exact and why.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Union

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from .. import checks, meta
from ..api import analyze
from ..capture import CaptureOptions
from ..capture.export import as_module, is_exported
from ..capture import modes
from ..capture.modules import deepcopy_memo
from ..capture.inputs import ExampleInput, normalize_input
from ..errors import MissingCalibrationError, SpecError, VerificationError
from ..verify import verify as _verify
from .blocks import build_block
from .calibrate import batches, channel_stats, fixed_size
from .plan import METHODS, DeepeningPlan, Location, plan_deepening
from .transformer import BlockSpec

__all__ = ["deepen"]


def deepen(
    model: nn.Module,
    example_input: ExampleInput,
    after: Location = "all",
    *,
    method: Optional[str] = None,
    calibration: Any = None,
    batchnorm: Optional[bool] = None,
    kernel_size: Optional[int] = None,
    block: Union[None, str, BlockSpec] = None,
    seed: int = 0,
    verify: Optional[bool] = None,
    trials: int = 3,
    rtol: Optional[float] = None,
    capture: Union[str, CaptureOptions] = "auto",
    **capture_options: Any,
) -> fx.GraphModule:
    """Insert new layers that leave the function unchanged (Net2DeeperNet).

    Parameters
    ----------
    model : nn.Module or fx.GraphModule
        The model (never modified), e.g. the result of :func:`fxgrow.widen`.
    example_input : Tensor, tuple or dict
        One batch the model runs on.
    after : str, list of str, callable or "all"
        Where to insert: module names (``"layer1.0.relu"``; a module called
        several times gets a block after each call; a container such as
        ``"blocks.0"`` means the node(s) its call outputs; in graphs from
        ``capture="export"`` they are read from ``nn_module_stack``), node names
        (``"layer1_0_relu_1"``), a predicate on ``fx.Node``, or ``"all"``:
        the end of every layer (after conv/linear -> BN -> activation, and
        after residual adds) whose channels are not fixed.
    method : {"identity", "residual", "auto"}, optional
        Default ``identity``, or ``residual`` when ``block`` is given.
        ``identity``: a Linear with ``I`` / ConvNd with a centred Dirac kernel
        (same padding), then a BatchNorm if the surrounding layer has one,
        then the node's activation if the node is an idempotent activation
        (ReLU, ReLU6, Hardtanh); refused after any other activation.
        ``residual``: ``x + L2(act(BN(L1(x))))`` with ``L2 = 0``; exact for
        every activation.  ``auto``: identity where it is exact, else residual.
    calibration : tensor, tuple, dict or iterable of batches, optional
        Data to set inserted BatchNorms from (running mean/var = the data's
        statistics at the insertion point; identity blocks get
        γ = √(var + ε), β = mean).  Required when an identity block mirrors
        a BatchNorm.
    batchnorm : bool, optional
        Mirror BatchNorm where the location's layer has one (None, default),
        always (True) or never (False: no calibration needed).
    kernel_size : int, optional
        Odd kernel size of inserted convs; default: the producing conv's
        (if odd), else 3.
    block : {"mlp", "attention", "transformer"} or BlockSpec, optional
        Insert a zero-residual transformer sub-block instead of the default
        residual block, on token sequences ``(N, T, C)``:
        ``x + W2(act(W1(norm(x))))`` (``"mlp"``), ``x + Wo(attn(norm(x)))``
        (``"attention"``: multi-head self-attention, q/k/v Linears and SDPA),
        or both in turn (``"transformer"``), with ``W2``/``Wo`` zero.  A
        :class:`~fxgrow.deepen.transformer.BlockSpec` sets heads, MLP width,
        norm, activation and causality (defaults: read from the model where
        it has them, else ``C // 64`` or a small divisor of ``C`` heads,
        ``4 C``, LayerNorm, GELU, not causal).  Implies
        ``method="residual"``; locations that are no token sequence raise
        :class:`NotDeepenableError` (``after="all"`` skips them).
    seed : int
        Seeds the random first layer of residual blocks and verification.
    verify : bool, optional
        Compare with the original and raise :class:`VerificationError` on a
        mismatch.  Default: on; when a block is not exact by construction
        (an identity BatchNorm in training mode) the report is attached
        but a mismatch does not raise.
    trials, rtol :
        Passed to :func:`fxgrow.verify`.
    capture, **capture_options :
        As for :func:`fxgrow.analyze`; ``model`` may be an ``ExportedProgram``.

    Returns
    -------
    torch.fx.GraphModule
        The deepened model.  New blocks are submodules named
        ``<module or node>_deepen<k>``.  ``meta["fxgrow.deepen"]`` lists one
        record per block (location, module, method, layer, activation,
        batchnorm, why), ``meta["fxgrow.deepen_skipped"]`` the locations
        ``after="all"`` left out and why, ``meta["fxgrow.report"]`` the
        verification report.

    Raises
    ------
    UnknownLocationError
        ``after`` names nothing in the graph.
    NotDeepenableError
        The location's channels are fixed, or its output is no neuron tensor.
    NotIdempotentError
        ``method="identity"`` after a non-idempotent activation.
    MissingCalibrationError, CalibrationError
        A BatchNorm to calibrate but no data, or data of the wrong shape.

    Examples
    --------
    >>> import torch, fxgrow
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
    >>> x = torch.randn(5, 4)
    >>> g = fxgrow.deepen(m, x, after="all", method="auto")
    >>> [(r["module"], r["method"]) for r in g.meta["fxgrow.deepen"]]
    [('1_deepen0', 'identity'), ('3_deepen0', 'residual')]
    >>> g.meta["fxgrow.report"].ok
    True
    >>> fxgrow.widen(g, x, 2.0).meta["fxgrow.report"].ok   # the new layers can grow
    True

    A transformer layer (attention then MLP, both zero-residual) on tokens:

    >>> enc = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Linear(16, 3))
    >>> tokens = torch.randn(2, 5, 6)
    >>> g = fxgrow.deepen(enc, tokens, after="1", block="transformer")
    >>> r = g.meta["fxgrow.deepen"][0]
    >>> (r["module"], r["layer"], r["heads"], r["hidden"], g.meta["fxgrow.report"].ok)
    ('1_deepen0', 'transformer', 2, 64, True)
    """
    after = checks.location(after)
    kernel_size = checks.kernel_size(kernel_size)
    batchnorm = checks.flag(batchnorm, "batchnorm")
    seed = checks.seed(seed)
    verify = checks.flag(verify, "verify")
    trials = checks.integer(trials, "trials", minimum=0)
    rtol = None if rtol is None else checks.real(rtol, "rtol")
    if method is not None and not isinstance(method, str):
        raise SpecError(f"method must be one of {METHODS}, got {method!r}")
    model = as_module(model)  # an ExportedProgram runs as ep.module()
    analysis = analyze(model, example_input, capture=capture, **capture_options)
    plan = plan_deepening(analysis, after, method=method, batchnorm=batchnorm,
                          kernel_size=kernel_size, training=model.training, block=block)
    if plan.needs_calibration and calibration is None:
        where = ", ".join(f"`{i.node}`" for i in plan.needs_calibration)
        raise MissingCalibrationError(
            f"the layer(s) after {where} use BatchNorm, so the inserted block mirrors it and "
            "its statistics must come from data: pass calibration=<a batch, or an iterable of "
            "batches> (or batchnorm=False to insert no BatchNorm)")
    grown = _rewrite(plan, calibration, example_input, seed)
    grown.training = model.training  # root flag only: submodules keep their own modes
    exact = all(i.exact for i in plan.insertions)
    if verify is None or verify:
        report = _verify(model, grown, example_input, trials=trials, rtol=rtol, seed=seed)
        grown.meta[meta.REPORT] = report
        if not report.ok and (verify or exact):
            raise VerificationError(f"the deepened model does not match the original\n{report}",
                                    report)
    return grown


def _device(gm: nn.Module) -> Optional[torch.device]:
    t = next(iter(gm.parameters()), None)
    if t is None:
        t = next(iter(gm.buffers()), None)
    return t.device if t is not None else None


def _batch_size(example_input: Any) -> int:
    args, kwargs = normalize_input(example_input)
    t = next(t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
    return t.shape[0]


def _rewrite(plan: DeepeningPlan, calibration: Any, example_input: Any,
             seed: int) -> fx.GraphModule:
    old = plan.analysis.graph_module
    new = copy.deepcopy(old, deepcopy_memo(old))
    nodes = {n.name: n for n in new.graph.nodes}
    device = _device(old)
    blocks = {}
    with torch.random.fork_rng(devices=[]):
        for k, ins in enumerate(plan.insertions):
            torch.manual_seed(seed + k)  # residual first layers: reproducible per block
            mode = ins.batchnorm.training if ins.batchnorm else old.training
            ndim = len(meta.shape(nodes[ins.node]).shape)
            blocks[ins.name] = build_block(ins, ndim, device=device, mode=mode)
    calibrated = [i for i in plan.insertions if i.batchnorm is not None]
    if calibration is not None and calibrated:
        data = batches(calibration, example_input)
        if is_exported(old):  # export fixed the batch size: feed it batches of that size
            data = fixed_size(data, _batch_size(example_input))
        stats = channel_stats(old, data, {i.node: blocks[i.name].bn_input for i in calibrated})
        for ins in calibrated:
            blocks[ins.name].calibrate(*stats[ins.node])
    graph = new.graph
    for ins in plan.insertions:
        node, block = nodes[ins.node], blocks[ins.name]
        new.add_submodule(ins.name, block)
        before = len(graph.nodes)
        with graph.inserting_before(node.next):  # keeps the new nodes in call order
            out = block.emit(graph, node, ins.name)
        created = set()
        cur = node.next
        for _ in range(len(graph.nodes) - before):
            created.add(cur)
            cur = cur.next
        # every former reader of the node now reads the block, which computes the same value
        node.replace_all_uses_with(out, delete_user_cb=lambda user: user not in created)
    for n in graph.nodes:  # the old analysis' annotations do not describe the new graph
        meta.clear(n)
    graph.lint()
    new.recompile()
    new.meta[meta.DEEPEN] = [dict(i.record(), calibrated=calibration is not None
                                      and i.batchnorm is not None) for i in plan.insertions]
    modes.guard(new, new.meta.get(meta.CAPTURE, {}))  # a graph's copy loses its hooks
    new.meta[meta.DEEPEN_SKIPPED] = dict(plan.skipped)
    return new
