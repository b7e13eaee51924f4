"""The zoos: torchvision's, timm's and HuggingFace's models, built small enough to grow quickly.

Used by the zoo tests and by ``benchmarks/zoo.py``, ``zoo_timm.py`` and
``zoo_hf.py`` (which write ``docs/zoo.md``); handy for reproducing a row of
those tables.  torchvision, timm and transformers are imported only when a
function that needs them is called.

* torchvision: :func:`cnn_names`, :func:`transformer_names`, :func:`build`.
* timm: :func:`build_timm` (any registered model, random weights made to look
  trained, float64 where it fits, a small input it accepts), from
  :mod:`.zoo_timm`.
* transformers: :func:`build_hf` (one small config per model type of the auto
  registry, random weights), from :mod:`.zoo_hf`.
* shared: :func:`make_trained` (non-trivial norm statistics and affines, no
  constant-initialised parameter), :func:`output_error` (the comparison the
  zoos use), :func:`fingerprint` (the mutation check), :func:`widen_specs`
  (the zoo's widening steps).

>>> "resnet18" in cnn_names()  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
from importlib import import_module
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

__all__ = ["cnn_names", "transformer_names", "build", "input_size", "deepen_locations",
           "widen_specs", "DEEPEN_ALL_MAX_PARAMS", "make_trained", "output_error",
           "fingerprint", "coverage", "check_exact", "build_timm", "build_hf"]

#: built by the timm and HF modules (imported on first use)
_LAZY = {"build_timm": "zoo_timm", "build_hf": "zoo_hf"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"{__package__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: models up to this many parameters are deepened at every eligible location;
#: larger ones at a spread of them, so the zoo stays within a CI machine's memory
DEEPEN_ALL_MAX_PARAMS = 30_000_000

_TRANSFORMERS = ("vit_", "swin_", "maxvit_")


def _all() -> List[str]:
    import torchvision
    return list(torchvision.models.list_models(module=torchvision.models))


def cnn_names() -> List[str]:
    """Every torchvision classification CNN (transformers excluded)."""
    return [n for n in _all() if not n.startswith(_TRANSFORMERS)]


def transformer_names() -> List[str]:
    """torchvision's classification transformers (ViT, Swin, MaxViT)."""
    return [n for n in _all() if n.startswith(_TRANSFORMERS)]


def input_size(name: str) -> int:
    """The smallest convenient square input the model accepts."""
    if name == "inception_v3":
        return 75
    if name == "alexnet":
        return 64  # three stride-2 max-pools after a stride-4 conv
    if name == "vit_h_14":
        return 28  # built with image_size=28: 2x2 patches of 14
    if name.startswith("vit_"):
        return 32  # built with image_size=32: 2x2 (or 1x1) patches
    if name.startswith("maxvit_"):
        return 224  # its window and grid partitions need 224
    if name.startswith("swin_"):
        return 64
    return 32


def build(name: str, seed: int = 0, batch: int = 2) -> Tuple[nn.Module, torch.Tensor]:
    """The model (``weights=None``, eval mode, non-trivial BatchNorm statistics) and an input."""
    import torchvision

    kwargs = {}
    if name in ("googlenet", "inception_v3"):
        kwargs = dict(aux_logits=False, init_weights=False)
    if name.startswith("vit_"):
        kwargs = dict(image_size=input_size(name))
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and not p.any():  # zero-initialised heads: outputs would all be 0
                p.normal_(0, 0.02, generator=g)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    s = input_size(name)
    return model.eval(), torch.randn(batch, 3, s, s, generator=g)


def deepen_locations(model: nn.Module, analysis, limit: int = 8):
    """``"all"`` for small models; else ``limit`` eligible node names spread over the depth."""
    if sum(p.numel() for p in model.parameters()) <= DEEPEN_ALL_MAX_PARAMS:
        return "all"
    from ..deepen.plan import plan_deepening
    nodes = [i.node for i in plan_deepening(analysis, "all", method="auto").insertions]
    if len(nodes) <= limit:
        return nodes
    step = (len(nodes) - 1) / (limit - 1)
    return list(dict.fromkeys(nodes[round(k * step)] for k in range(limit)))


def widen_specs(analysis) -> dict:
    """The zoo's widening steps: ``{step: spec}`` (a step without groups to grow is left out).

    ``x2``: every growable group x2, except the query/key head dims; ``x1.5``: x1.5, or x2
    for groups under a uniform-replication constraint, again except the head dims;
    ``head dim``: only the query/key head dims (both sides of each product), x1.5 or x2
    if uniform.  The head dims get their own step because a ViT's model dim is
    ``Prod(heads, head_dim)``: doubling both would quadruple it, and the largest models
    would no longer fit a 24 GB machine.
    """
    paired = {g for p in analysis.pairings for g in (p.primary, p.rescaled)} | set(analysis.halved)
    rest = [g for g in analysis.growable if g.id not in paired]
    heads = [g for g in analysis.growable if g.id in paired]
    steps = {"x2": {g.id: 2.0 for g in rest},
             "x1.5": {g.id: (2.0 if g.uniform else 1.5) for g in rest},
             "head dim": {g.id: (2.0 if g.uniform else 1.5) for g in heads}}
    return {k: v for k, v in steps.items() if v}


def make_trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Make random weights look trained, in place (and return the model).

    * running statistics (any module with ``running_mean``/``running_var``):
      mean ``N(0, 0.1)``, variance ``U(0.5, 1.5)``;
    * norm layers (``nn.*Norm*`` or a class named ``*Norm*``): 1-D gains
      ``1 + N(0, 0.1)`` (``N(0, 0.1)`` for an all-zero gain read as ``1 + w``,
      as Gemma's), biases ``N(0, 0.1)``;
    * every other parameter whose entries are all equal (zero heads and biases,
      1e-5 layer scales, zero position embeddings, zero-initialised gates):
      ``+ N(0, 0.02)`` (``N(0, 0.1)`` if 1-D), or whole branches would be
      invisible to the comparison.

    >>> m = make_trained(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3)))
    >>> bool((m[1].weight != 1).all() and (m[0].bias != 0).all())
    True
    """
    g = torch.Generator().manual_seed(seed)

    def randn(t):
        return torch.randn(t.shape, generator=g, dtype=torch.float64).to(t)

    touched = set()
    with torch.no_grad():
        for m in model.modules():
            rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
            if isinstance(rm, torch.Tensor) and isinstance(rv, torch.Tensor) \
                    and rm.is_floating_point() and rm.shape == rv.shape:
                rm.copy_(randn(rm) * 0.1)
                rv.copy_(torch.rand(rv.shape, generator=g, dtype=torch.float64).to(rv) + 0.5)
            if "norm" not in type(m).__name__.lower():
                continue
            for pname, p in m.named_parameters(recurse=False):
                if p.dim() != 1 or not p.is_floating_point() or not p.numel():
                    continue
                if "bias" in pname:
                    p.copy_(0.1 * randn(p))
                else:
                    p.copy_((0.0 if not p.any() else 1.0) + 0.1 * randn(p))
                touched.add(id(p))
        for p in model.parameters():
            if id(p) in touched or p.numel() < 2 or not p.is_floating_point():
                continue
            if bool((p == p.reshape(-1)[0]).all()):
                p.add_(randn(p) * (0.02 if p.dim() >= 2 else 0.1))
    return model


def _tensors(out: Any) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):  # transformers' ModelOutput
        out = out.to_tuple()
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    return []


def output_error(ref: Any, got: Any) -> Tuple[float, str]:
    """The worst ``max |a - b| / max |a|`` over the output tensors, and a note.

    Outputs are flattened (tensors, tuples, dicts, ``ModelOutput``); ``inf``
    with a note on a structural mismatch (count, shape, integer outputs that
    differ, non-finite entries in different places).

    >>> output_error(torch.ones(3), torch.ones(3) * 1.5)
    (0.5, 'output 0 (3,): max abs 0.5, max |orig| 1')
    """
    a, b = _tensors(ref), _tensors(got)
    if len(a) != len(b):
        return float("inf"), f"{len(a)} output tensors vs {len(b)}"
    worst, note = 0.0, ""
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            return float("inf"), f"output {i}: shape {tuple(x.shape)} vs {tuple(y.shape)}"
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return float("inf"), f"output {i}: integer outputs differ"
            continue
        x, y = x.detach().double(), y.detach().double()
        finite = torch.isfinite(x)
        if not torch.equal(finite, torch.isfinite(y)):
            return float("inf"), f"output {i}: non-finite entries differ"
        x, y = x[finite], y[finite]
        if not x.numel():
            continue
        scale, err = x.abs().max().item(), (x - y).abs().max().item()
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        if rel > worst:
            worst, note = rel, f"output {i} {tuple(x.shape)}: max abs {err:.3g}, max |orig| {scale:.3g}"
    return worst, note


def fingerprint(model: nn.Module) -> Dict[str, str]:
    """A hash of every state_dict tensor's bytes (with dtype and shape), every
    parameter's ``requires_grad`` and every module's training flag.

    Compare two fingerprints to see what a call changed in the user's model.

    >>> m = nn.Linear(2, 2); before = fingerprint(m)
    >>> with torch.no_grad(): _ = m.bias.add_(1)
    >>> [k for k in before if fingerprint(m)[k] != before[k]]
    ['state:bias']
    """
    fp = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous().reshape(-1)
            data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
            fp[f"state:{k}"] = hashlib.sha1(
                data + f"{tuple(v.shape)}{v.dtype}".encode()).hexdigest()
    for k, p in model.named_parameters(remove_duplicate=False):
        fp[f"requires_grad:{k}"] = str(p.requires_grad)
    for k, m in model.named_modules(remove_duplicate=False):
        fp[f"training:{k or '<root>'}"] = str(m.training)
    return fp


def coverage(analysis) -> float:
    """The share of non-fixed neurons that are in growable groups (1.0 if none is non-fixed).

    Fixed groups (model inputs and outputs, size-1 dims) are left out: they are
    not meant to grow.  Blocked groups count against it.
    """
    nonfixed = [g for g in analysis.groups if g.status != "fixed"]
    den = sum(g.size for g in nonfixed)
    return sum(g.size for g in nonfixed if g.growable) / den if den else 1.0


def check_exact(model: nn.Module, example: Any, fresh: List[Any], *, tol: float,
                call=None, steps=("x2", "x1.5", "head dim")) -> Dict[str, Any]:
    """Analyse ``model``, widen it by each zoo step with ``verify=False``, and check the
    grown model against the original on ``example`` and ``fresh`` inputs, and that
    the user's model is unchanged.

    ``call(model, x, i)`` runs a model on the ``i``-th input (default ``model(x)``).
    Returns ``{"coverage": ..., "errors": {step: worst error}}``; raises
    AssertionError naming the step, the input and the worst output.
    """
    import fxgrow
    call = call or (lambda m, x, i: m(x))
    inputs = [example] + list(fresh)
    with torch.no_grad():
        refs = [call(model, x, i) for i, x in enumerate(inputs)]
    before = fingerprint(model)
    analysis = fxgrow.analyze(model, example)
    errors = {}
    for step, spec in widen_specs(analysis).items():
        if step not in steps:
            continue
        grown = fxgrow.widen(analysis, example, spec, verify=False)
        worst = 0.0
        for i, x in enumerate(inputs):
            with torch.no_grad():
                err, note = output_error(refs[i], call(grown, x, i))
            assert err <= tol, f"step {step}, input {i}: the grown model differs: {note}"
            worst = max(worst, err)
        errors[step] = worst
        del grown
    changed = sorted(k for k, v in fingerprint(model).items() if before.get(k) != v)
    assert not changed, f"the user's model was mutated: {changed[:5]}"
    return {"coverage": coverage(analysis), "errors": errors}
