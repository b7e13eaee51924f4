"""torchvision's classification models, built small enough to grow quickly.

Used by the zoo tests and by ``benchmarks/zoo.py`` (which writes
``docs/zoo.md``); handy for reproducing them.  torchvision is imported only
when a function here is called.

>>> "resnet18" in cnn_names()  # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

__all__ = ["cnn_names", "transformer_names", "build", "input_size", "deepen_locations",
           "widen_specs", "DEEPEN_ALL_MAX_PARAMS"]

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
