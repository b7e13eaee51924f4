"""HuggingFace transformers' models, built small from generic configs, with inputs.

:func:`build_hf` builds one model type of the auto registry from the small
config of :mod:`.zoo_hf_config` (random weights made to look trained by
:func:`~fxgrow.testing.zoo.make_trained`, eval mode, float32) and finds an
example input it runs on, from its ``main_input_name`` and its forward
signature:

* ``input_ids`` ``(2, 12)`` in ``[0, vocab)``; ``pixel_values``
  ``(2, C, 32, 32)`` (video models ``(2, frames, C, 32, 32)``);
  ``input_values`` ``(2, 4000)``; ``input_features`` (mel bins x frames);
* ``decoder_input_ids`` for encoder-decoders;
* when the model does not run on its main input alone, the variants of
  :data:`VARIANTS` in turn (CLIP-like models want ``pixel_values`` next to
  ``input_ids``).

Some models draw random numbers in their forward (ViT-MAE's masking, VITS's
durations, Reformer's hashing): :func:`call` seeds every call, so the
original and the grown model draw the same numbers.  transformers is imported
only when a function here is called.

>>> case = build_hf("llama")  # doctest: +SKIP
>>> case.class_name, {k: tuple(v.shape) for k, v in case.example.items()}  # doctest: +SKIP
('LlamaForCausalLM', {'input_ids': (2, 12)})
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .zoo import make_trained, output_error
from .zoo_hf_config import IMAGE, VOCAB, choose_class, small_config

__all__ = ["HFModel", "build_hf", "make_inputs", "call", "check_deterministic", "VARIANTS", "SEQ",
           "BATCH"]

SEQ = 12
BATCH = 2
AUDIO_SAMPLES = 4000

#: extra inputs tried, in order, when the model does not run on its main input alone
VARIANTS = ("", "pixel_values", "attention_mask", "pixel_values+attention_mask")


@dataclass
class HFModel:
    """A built model type: the model, its config, and inputs it runs on.

    ``inputs(seed)`` makes a fresh input of the example's shapes (``seed=0``
    is the example).
    """

    model_type: str
    model: nn.Module
    config: Any
    class_name: str
    variant: str
    example: Dict[str, torch.Tensor]
    mrope: bool = False

    def inputs(self, seed: int) -> Dict[str, torch.Tensor]:
        x = make_inputs(self.model, self.config, seed, self.variant)
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in x.items()}


def call(model: Any, x: Dict[str, torch.Tensor], i: int = 0) -> Any:
    """``model(**x)`` with the RNG seeded by ``i``: a model that draws random numbers
    draws the same ones in the original and the grown model."""
    torch.manual_seed(4321 + i)
    return model(**x)


def _forward_params(model: nn.Module) -> List[str]:
    try:
        return list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return []


def _vocab(cfg: Any) -> int:
    for c in (cfg, getattr(cfg, "get_text_config", lambda: cfg)()):
        v = getattr(c, "vocab_size", None)
        if isinstance(v, int) and v > 0:
            return v
    return VOCAB


def _pixels(cfg: Any, g: torch.Generator, video: bool = False) -> torch.Tensor:
    vis = getattr(cfg, "vision_config", None) or cfg
    c = getattr(vis, "num_channels", 3) or 3
    size = getattr(vis, "image_size", IMAGE)
    size = size if isinstance(size, int) else (size[0] if size else IMAGE)
    if video and getattr(vis, "num_frames", None):
        return torch.randn(BATCH, vis.num_frames, c, size, size, generator=g)
    return torch.randn(BATCH, c, size, size, generator=g)


def _main_inputs(model: nn.Module, cfg: Any, seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    params = _forward_params(model)
    main = getattr(model, "main_input_name", "input_ids")
    out: Dict[str, torch.Tensor] = {}
    if main == "pixel_values":
        out["pixel_values"] = _pixels(cfg, g, video="video" in type(model).__name__.lower())
    elif main == "input_values":
        out["input_values"] = torch.randn(BATCH, AUDIO_SAMPLES, generator=g)
    elif main == "input_features":
        mel = (getattr(cfg, "num_mel_bins", None) or getattr(cfg, "feature_size", None)
               or getattr(cfg, "input_feat_per_channel", None) or 16)
        if hasattr(cfg, "max_source_positions") and "whisper" in cfg.model_type:
            out["input_features"] = torch.randn(BATCH, mel, 2 * cfg.max_source_positions, generator=g)
        elif hasattr(cfg, "input_feat_per_channel"):  # speech_to_text: (B, T, F)
            out["input_features"] = torch.randn(BATCH, 32, mel, generator=g)
        else:
            out["input_features"] = torch.randn(BATCH, mel, 32, generator=g)
    else:
        out[main if main in params or not params else "input_ids"] = torch.randint(
            0, _vocab(cfg), (BATCH, SEQ), generator=g)
    if getattr(cfg, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        out["decoder_input_ids"] = torch.randint(0, _vocab(cfg), (BATCH, SEQ), generator=g)
    return out


def make_inputs(model: nn.Module, cfg: Any, seed: int, variant: str = "") -> Dict[str, torch.Tensor]:
    """An input from the model's ``main_input_name`` and forward signature (float32).

    ``variant`` (one of :data:`VARIANTS`) adds inputs a multi-input model needs.
    """
    x = _main_inputs(model, cfg, seed)
    g = torch.Generator().manual_seed(2000 + seed)
    params = _forward_params(model)
    for extra in filter(None, variant.split("+")):
        if extra == "pixel_values" and "pixel_values" in params and "pixel_values" not in x:
            x["pixel_values"] = _pixels(cfg, g)
        if extra == "attention_mask" and "attention_mask" in params:
            first = next(iter(x.values()))
            x["attention_mask"] = torch.ones(first.shape[:2], dtype=torch.long)
    return x


def _build(model_type: str, head: Optional[str], seed: int, mrope: bool):
    import transformers
    cfg = small_config(model_type, mrope)
    _, name = choose_class(model_type, cfg, head)
    torch.manual_seed(seed)
    model = getattr(transformers, name)(cfg)
    make_trained(model, seed)
    return model.eval(), cfg, name


def build_hf(model_type: str, *, head: Optional[str] = None, seed: int = 0,
             dtype: torch.dtype = torch.float32) -> HFModel:
    """Build ``model_type`` small, and find an example input it runs on.

    Parameters
    ----------
    model_type : str
        A key of transformers' ``CONFIG_MAPPING`` (``"llama"``, ``"bert"``, ...).
    head : str, optional
        A task head of :data:`~fxgrow.testing.zoo_hf_config.HEADS_BY_NAME`
        instead of the default class (see :func:`~fxgrow.testing.zoo_hf_config.choose_class`).
    seed : int
        Seeds the weights and :func:`~fxgrow.testing.zoo.make_trained`.
    dtype : torch.dtype
        The model's and the inputs' floating dtype.

    Raises
    ------
    Exception
        Whatever the config, the model or its eager forward raises: the model
        type does not build from a generic small config.
    """
    first_error: Optional[BaseException] = None
    for mrope in (False, True):
        model, cfg, name = _build(model_type, head, seed, mrope)
        model.to(dtype)
        plain = set(make_inputs(model, cfg, 0))
        for variant in VARIANTS:
            case = HFModel(model_type, model, cfg, name, variant, {}, mrope)
            example = case.inputs(0)
            if variant and set(example) == plain:
                continue  # the variant adds nothing this model takes
            try:
                with torch.no_grad():
                    call(model, example)
            except Exception as e:  # the next variant may give what is missing
                first_error = first_error or e
                continue
            case.example = example
            return case
        # multimodal rotary sections sized for the default head dim: retry with sections
        if mrope or "split_with_sizes" not in str(first_error):
            break
    assert first_error is not None
    raise first_error


def check_deterministic(case: HFModel, tol: float) -> None:
    """Raise unless two seeded calls on the example agree (within ``tol``)."""
    with torch.no_grad():
        a, b = call(case.model, case.example, 0), call(case.model, case.example, 0)
    err, note = output_error(a, b)
    if err > tol:
        raise RuntimeError(f"the model is not deterministic even with a fixed seed: {note}")
