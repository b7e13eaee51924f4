"""timm's models, built to be grown: random weights made to look trained, a small input.

A timm *family* is the ``timm.models`` module a model's entrypoint lives in
(``timm.models.resnet`` -> ``resnet``).  ``benchmarks/zoo_timm.py`` grows the
smallest model of every family (by parameter count, :func:`count_params` on
the meta device); the zoo tests grow a few of them.  timm is imported only
when a function here is called.

>>> model, x = build_timm("test_resnet")  # doctest: +SKIP
>>> x.dtype, tuple(x.shape)  # doctest: +SKIP
(torch.float64, (2, 3, 64, 64))
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .zoo import make_trained

__all__ = ["families", "count_params", "build_timm", "FLOAT64_MAX_PARAMS", "SMALL_SIDES"]

#: larger models are built in float32: a x2 model has about four times the weights
FLOAT64_MAX_PARAMS = 100_000_000

#: square input sides tried before the model's configured size, smallest first
SMALL_SIDES = (64, 96, 128)


def families() -> Dict[str, List[str]]:
    """``{family: [model names]}`` for every model in timm's registry, families sorted."""
    import timm
    from timm.models import _registry
    out: Dict[str, List[str]] = defaultdict(list)
    for name in timm.list_models():
        out[_registry._model_to_module[name]].append(name)
    return dict(sorted(out.items()))


def family_of(name: str) -> Optional[str]:
    """The family (registering module) of a model name, or None."""
    from timm.models import _registry
    return _registry._model_to_module.get(name)


def count_params(name: str, **kwargs: Any) -> int:
    """Parameters of ``timm.create_model(name)``, built on the meta device (no memory)."""
    import timm
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _runs(model: nn.Module, x: torch.Tensor) -> Optional[str]:
    try:
        with torch.no_grad():
            model(x)
        return None
    except Exception as e:  # the model's own limits (sizes, dtypes): try the next input
        return f"{type(e).__name__}: {str(e)[:300]}"


def _pick_input(model: nn.Module, cfg: Dict[str, Any], batch: int, seed: int,
                sides: Sequence[int]) -> Tuple[Optional[torch.Tensor], str]:
    """A batch the model runs on: the smallest of ``sides`` it accepts, else its cfg's size."""
    c, h, w = cfg.get("input_size", (3, 224, 224))
    small = [] if cfg.get("fixed_input_size", False) else [s for s in sides if s < min(h, w)]
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    g = torch.Generator().manual_seed(seed + 100)
    why = ""
    for hh, ww in [(s, s) for s in small] + [(h, w)]:
        x = torch.randn(batch, c, hh, ww, generator=g, dtype=torch.float64).to(dtype)
        why = _runs(model, x)
        if why is None:
            return x, ""
    return None, why


def build_timm(name: str, *, seed: int = 0, batch: int = 2, dtype: Optional[torch.dtype] = None,
               sides: Sequence[int] = SMALL_SIDES, **kwargs: Any) -> Tuple[nn.Module, torch.Tensor]:
    """``timm.create_model(name, **kwargs)`` with random weights, made to look trained, and an input.

    Parameters
    ----------
    name : str
        A timm model name.
    seed : int
        Seeds the weights, :func:`~fxgrow.testing.zoo.make_trained` and the input.
    batch : int
        Batch size of the input.
    dtype : torch.dtype, optional
        Default: float64 up to :data:`FLOAT64_MAX_PARAMS` parameters (so a tight
        tolerance separates exact from wrong), float32 above, and float32 when
        the model does not run in float64.
    sides : sequence of int
        Square input sides tried before the configured input size (unless the
        model's cfg fixes its input size), smallest first.
    **kwargs
        Passed to ``timm.create_model`` (``img_size``, ``depths``, ... to build smaller).

    Returns
    -------
    (nn.Module, Tensor)
        The model in eval mode, and a ``(batch, C, H, W)`` input it runs on.

    Raises
    ------
    RuntimeError
        If the model runs on none of the inputs tried (the error names the last failure).
    """
    import timm
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs)
    make_trained(model, seed)
    model.eval()
    cfg = dict(getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {})
    auto = dtype is None
    if auto:
        params = sum(p.numel() for p in model.parameters())
        dtype = torch.float64 if params <= FLOAT64_MAX_PARAMS else torch.float32
    model.to(dtype)
    x, why = _pick_input(model, cfg, batch, seed, sides)
    if x is None and auto and dtype == torch.float64:  # an op without a float64 kernel
        model.float()
        x, why = _pick_input(model, cfg, batch, seed, sides)
    if x is None:
        raise RuntimeError(f"timm model {name} runs on none of the inputs tried: {why}")
    return model, x
