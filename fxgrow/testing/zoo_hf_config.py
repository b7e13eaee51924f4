"""Small configs for every model type of transformers' auto registry, built generically.

:func:`small_config` shrinks a model type's default config: hidden size 64,
2 layers, 4 heads (2 key/value heads), head dim 16, intermediate size 128, a
vocabulary of 128, 32x32 images, short audio, 4 experts of width 32 (top 2).
Keys are only set where the default config has them (an int there; stage
lists such as Swin's ``depths`` keep their length), nested ``sub_configs``
are shrunk recursively, special token ids are moved inside the vocabulary,
caches and layer drop are turned off, and a few model types get the
overrides in :data:`OVERRIDES`.  :func:`choose_class` picks the class to
build: ``...ForCausalLM`` for decoder-only models, the base model otherwise
(the first task head that exists when there is no base class).

transformers is imported only when a function here is called.  About 400 of
the ~650 model types build and run from these configs (the rest need inputs
or sub-models a generic config cannot give); ``benchmarks/zoo_hf.py`` lists
which and why.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["model_types", "kind", "KINDS", "choose_class", "small_config_kwargs", "small_config",
           "HIDDEN", "HEADS", "KV_HEADS", "HEAD_DIM", "INTER", "LAYERS", "VOCAB", "IMAGE"]

HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTER = 128
LAYERS = 2
VOCAB = 128
IMAGE = 32
PATCH = 4

#: task heads tried, in order, when a type has neither a causal LM nor a base class
TASK_MAPPINGS = (
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_CTC_MAPPING_NAMES",
    "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
    "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
    "MODEL_FOR_BACKBONE_MAPPING_NAMES",
    "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES",
    "MODEL_FOR_PRETRAINING_MAPPING_NAMES",
)

#: ``--head seq_cls`` etc.: sweep one task head instead of the default choice
HEADS_BY_NAME = {
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "seq_cls": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token_cls": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "masked_lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "image_cls": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "seq2seq": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
}


def _mapping(name: str) -> Dict[str, Any]:
    from transformers.models.auto import modeling_auto
    return getattr(modeling_auto, name, {}) or {}


def model_types() -> List[str]:
    """Every model type with a config and at least one model class, sorted."""
    from transformers.models.auto import configuration_auto
    have = set(_mapping("MODEL_MAPPING_NAMES"))
    for m in TASK_MAPPINGS:
        have |= set(_mapping(m))
    return sorted(t for t in configuration_auto.CONFIG_MAPPING_NAMES if t in have)


#: the families of :func:`kind`, in sweep order
KINDS = ("causal-lm", "encoder", "encoder-decoder", "vision", "audio", "multimodal", "other")

_KIND_MAPPINGS = (
    ("multimodal", ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
                    "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES")),
    ("audio", ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_CTC_MAPPING_NAMES",
               "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES",
               "MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES", "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES")),
    ("encoder-decoder", ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",)),
    ("causal-lm", ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",)),
    ("encoder", ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                 "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES")),
    ("vision", ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_BACKBONE_MAPPING_NAMES",
                "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES", "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
                "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES", "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES")),
)


def kind(model_type: str) -> str:
    """The family of a model type, one of :data:`KINDS`, from the task mappings it is in.

    Checked in a fixed order, so a type in several mappings gets one family:
    multimodal, audio, encoder-decoder (a seq2seq LM head), causal-lm (a causal
    head but no masked-LM head), encoder (masked LM or text classification),
    vision; ``"other"`` otherwise.  Config-free, so cheap for a whole sweep.

    >>> kind("llama"), kind("bert"), kind("t5")  # doctest: +SKIP
    ('causal-lm', 'encoder', 'encoder-decoder')
    """
    masked = _mapping("MODEL_FOR_MASKED_LM_MAPPING_NAMES")
    for family, mappings in _KIND_MAPPINGS:
        if any(model_type in _mapping(m) for m in mappings):
            if family == "causal-lm" and model_type in masked:
                continue  # BERT-likes merely offer a causal head
            return family
    return "other"


def _class_name(entry: Any) -> str:
    return entry[0] if isinstance(entry, (tuple, list)) else entry


def choose_class(model_type: str, config: Any, head: Optional[str] = None) -> Tuple[str, str]:
    """``(mapping, class name)`` to build for ``model_type``.

    A decoder (a causal-LM head, not an encoder-decoder, and not an encoder that
    merely offers a causal head: BERT, RoBERTa, ... are in the masked-LM
    mapping) gets its ``...ForCausalLM``; other types their base model, else
    the first task head of :data:`TASK_MAPPINGS` they have.  ``head`` (a key of
    :data:`HEADS_BY_NAME`) asks for one task head instead.
    """
    if head:
        m = HEADS_BY_NAME[head]
        if model_type not in _mapping(m):
            raise LookupError(f"{model_type} has no {head} head")
        return m, _class_name(_mapping(m)[model_type])
    causal = _mapping("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    masked = _mapping("MODEL_FOR_MASKED_LM_MAPPING_NAMES")
    if model_type in causal and model_type not in masked \
            and not getattr(config, "is_encoder_decoder", False):
        return "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", _class_name(causal[model_type])
    base = _mapping("MODEL_MAPPING_NAMES")
    if model_type in base:
        return "MODEL_MAPPING_NAMES", _class_name(base[model_type])
    for m in TASK_MAPPINGS:
        if model_type in _mapping(m):
            return m, _class_name(_mapping(m)[model_type])
    raise LookupError(f"no model class for {model_type}")


#: set where the default config has the key (an int there): width-like
SCALARS = {
    # model dim
    "hidden_size": HIDDEN, "d_model": HIDDEN, "n_embd": HIDDEN, "dim": HIDDEN,
    "word_embed_proj_dim": HIDDEN, "embedding_size": HIDDEN, "embed_dim": HIDDEN,
    "projection_dim": 32, "projection_size": 32, "text_embed_dim": HIDDEN,
    "vision_embed_dim": HIDDEN, "hidden_dim": INTER, "d_inner": INTER,
    "pooler_hidden_size": HIDDEN, "pooler_output_size": HIDDEN,
    "classifier_proj_size": 32, "xvector_output_dim": 32, "codevector_dim": 32,
    "proj_codevector_dim": 32, "output_hidden_size": HIDDEN, "adapter_hidden_size": HIDDEN,
    # depth
    "num_hidden_layers": LAYERS, "n_layer": LAYERS, "n_layers": LAYERS, "num_layers": LAYERS,
    "encoder_layers": LAYERS, "decoder_layers": LAYERS, "num_decoder_layers": LAYERS,
    "num_encoder_layers": LAYERS, "text_layers": LAYERS, "vision_layers": LAYERS,
    "num_hidden_groups": 1,
    # heads
    "num_attention_heads": HEADS, "n_head": HEADS, "n_heads": HEADS, "num_heads": HEADS,
    "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS, "num_kv_heads": KV_HEADS, "n_kv_heads": KV_HEADS,
    "multi_query_group_num": KV_HEADS, "kv_n_heads": KV_HEADS,
    "head_dim": HEAD_DIM, "d_kv": HEAD_DIM, "kv_channels": HEAD_DIM, "attention_head_dim": HEAD_DIM,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": HEAD_DIM,
    "kv_lora_rank": 32, "q_lora_rank": 32,
    # mlp
    "intermediate_size": INTER, "ffn_dim": INTER, "d_ff": INTER, "n_inner": INTER,
    "encoder_ffn_dim": INTER, "decoder_ffn_dim": INTER, "ffn_hidden_size": INTER,
    "encoder_ffn_size": INTER, "decoder_ffn_size": INTER,
    # vocab and positions
    "vocab_size": VOCAB, "max_position_embeddings": 64, "n_positions": 64, "n_ctx": 64,
    "max_target_positions": 64, "max_seq_len": 64, "max_sequence_length": 64,
    "seq_length": 64, "num_buckets": 32,
    # MoE: few small experts
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "top_k": 2, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "n_shared_experts": 1, "num_shared_experts": 1,
    "expert_intermediate_size": 32, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    # vision
    "image_size": IMAGE, "patch_size": PATCH, "window_size": 4, "num_frames": 2,
    "tubelet_size": 2,
    # audio
    "num_mel_bins": 16, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
    "feature_size": 16,
    # multimodal glue: the projector's output must match the text model
    "out_hidden_size": HIDDEN, "text_hidden_size": HIDDEN,
}

#: lists, shrunk keeping their length: key -> f(index, old value)
LISTS = {
    "depths": lambda i, v: 1,
    "hidden_sizes": lambda i, v: 16 * 2 ** i,
    "embed_dims": lambda i, v: 16 * 2 ** i,
    "conv_dim": lambda i, v: 32,
    "tdnn_dim": lambda i, v: 32,
    "num_heads": lambda i, v: 2 ** i,
    "num_attention_heads": lambda i, v: 2 ** i,
    "encoder_layers": lambda i, v: 1,
    "decoder_layers": lambda i, v: 1,
    "image_size": lambda i, v: IMAGE,
    "patch_size": lambda i, v: PATCH,
}

TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 0,
             "sep_token_id": 3, "cls_token_id": 4, "mask_token_id": 5, "unk_token_id": 6,
             "forced_eos_token_id": 2, "forced_bos_token_id": 1}

#: per-type tweaks where the generic config does not build
OVERRIDES: Dict[str, Dict[str, Any]] = {
    "swin": dict(embed_dim=16, image_size=64, window_size=2),
    "swinv2": dict(embed_dim=16, image_size=64, window_size=2),
    "donut-swin": dict(embed_dim=16, image_size=64, window_size=2),
    "maskformer-swin": dict(embed_dim=16, image_size=64, window_size=2), "clap": {}, "falcon": dict(num_kv_heads=2),
    "whisper": dict(max_source_positions=16), "mpt": dict(expansion_ratio=2),
    "bloom": dict(n_head=4), "albert": dict(embedding_size=32),
    "speech_to_text": dict(input_feat_per_channel=16, input_channels=1,
                           max_source_positions=64, conv_channels=32),
    "reformer": dict(attn_layers=["local", "lsh"], axial_pos_shape=[4, 16],
                     axial_pos_embds_dim=[32, 32], local_attn_chunk_length=4,
                     lsh_attn_chunk_length=4, num_hashes=1, num_buckets=4, is_decoder=True),
    "funnel": dict(block_sizes=[1, 1], block_repeats=[1, 1], d_head=16),
    "led": dict(attention_window=[4, 4], max_encoder_position_embeddings=64,
                max_decoder_position_embeddings=64),
    "longformer": dict(attention_window=[4, 4]),
    "bigbird_pegasus": dict(attention_type="original_full"),
    "big_bird": dict(attention_type="original_full"),
    "xlnet": dict(d_head=16),
    "transfo-xl": dict(d_head=16, cutoffs=[32, 64], d_embed=HIDDEN),
    "ctrl": dict(dff=INTER),
    "deberta": dict(pooler_hidden_size=HIDDEN), "deberta-v2": dict(pooler_hidden_size=HIDDEN),
    "gptj": dict(rotary_dim=8),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]], window_size=8),
    "mamba2": dict(num_heads=8, head_dim=16, n_groups=1),
    "bit": dict(num_groups=4), "efficientnet": dict(hidden_dim=2560), "codegen": dict(rotary_dim=8),
    "gpt_neox": dict(rotary_pct=0.5), "gpt_neox_japanese": dict(rotary_pct=0.5),
    "persimmon": dict(partial_rotary_factor=0.5),
    "fsmt": dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB),
    "prophetnet": dict(ngram=1, num_encoder_attention_heads=HEADS,
                       num_decoder_attention_heads=HEADS, encoder_ffn_dim=INTER,
                       decoder_ffn_dim=INTER, num_encoder_layers=2, num_decoder_layers=2),
}


def _shrink_value(key: str, old: Any) -> Any:
    """The small value for ``key`` given the default ``old``; ``old`` when none applies."""
    if isinstance(old, bool):
        return old
    if isinstance(old, int) and key in SCALARS:
        return SCALARS[key]
    if isinstance(old, (list, tuple)) and key in LISTS and old and all(
            isinstance(v, int) and not isinstance(v, bool) for v in old):
        return [LISTS[key](i, v) for i, v in enumerate(old)]
    if key == "image_size" and isinstance(old, (list, tuple)):
        return [IMAGE] * len(old)
    return old


def small_config_kwargs(config_cls: Any, model_type: str, mrope: bool = False) -> Dict[str, Any]:
    """Keyword arguments building a small ``config_cls`` (sub-configs as dicts).

    ``mrope``: give multimodal rotary sections to a config that has none (Qwen2-VL-like
    models whose modeling code defaults them for the full-size head dim).
    """
    default = config_cls()
    d = default.to_dict()
    kw: Dict[str, Any] = {}
    has_stage_lists = isinstance(d.get("depths"), (list, tuple))
    for key, old in d.items():
        if isinstance(old, dict) or key in ("id2label", "label2id"):
            continue
        if has_stage_lists and key in ("num_layers", "hidden_size", "num_hidden_layers"):
            continue  # derived from the stage lists (Swin, ConvNeXt, ...)
        new = _shrink_value(key, old)
        if new is not old:
            kw[key] = new
    if has_stage_lists and isinstance(d.get("num_heads"), (list, tuple)) and "embed_dim" in d:
        kw["embed_dim"] = 16  # stage i: 16 * 2**i channels, 2**i heads
    # special token ids must be inside the small vocabulary
    vocab = kw.get("vocab_size", d.get("vocab_size"))
    if isinstance(vocab, int):
        for key, small in TOKEN_IDS.items():
            old = d.get(key)
            if isinstance(old, int) and old >= vocab:
                kw[key] = small
            elif isinstance(old, list) and any(isinstance(v, int) and v >= vocab for v in old):
                kw[key] = [small]
        for key, old in d.items():  # image_token_id, boi_token_index, ...
            if (key.endswith("_token_id") or key.endswith("_token_index")) and key not in TOKEN_IDS \
                    and isinstance(old, int) and not isinstance(old, bool) and old >= vocab:
                kw[key] = vocab - 1 - zlib.crc32(key.encode()) % 8  # distinct, stable
    if "layer_types" in d and isinstance(d["layer_types"], list):
        lt = d["layer_types"]
        kw["layer_types"] = (lt * 2)[:LAYERS] if lt else lt
    if "use_cache" in d:
        kw["use_cache"] = False
    for key in ("mlp_only_layers",):
        if key in d:
            kw[key] = []
    for key in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop", "drop_path_rate"):
        old = d.get(key)
        if isinstance(old, float):
            kw[key] = 0.0
        elif isinstance(old, (list, tuple)) and all(isinstance(v, float) for v in old):
            kw[key] = [0.0] * len(old)
    # MLA (DeepSeek-V3 & co.): the rotary tables are built for head_dim = qk_rope_head_dim
    if "qk_rope_head_dim" in d and "head_dim" in d:
        kw["head_dim"] = kw.get("qk_rope_head_dim", d["qk_rope_head_dim"])
    # multimodal rotary sections (Qwen2-VL, GLM-4V, ...) must sum to half the rotary dim
    for key in ("rope_parameters", "rope_scaling"):
        rp = d.get(key)
        if isinstance(rp, dict) and mrope and "mrope_section" not in rp:
            rp = dict(rp, mrope_section=[16, 24, 24])  # the modeling code's default
        if isinstance(rp, dict) and isinstance(rp.get("mrope_section"), (list, tuple)):
            hd = kw.get("qk_rope_head_dim") or kw.get("head_dim") or HEAD_DIM
            sec = list(rp["mrope_section"])
            half = hd // 2
            new = [max(1, v * half // sum(sec)) for v in sec]
            new[0] += half - sum(new)
            kw[key] = dict(rp, mrope_section=new)
    # sub-configs (text_config, vision_config, encoder, decoder, ...)
    subs = getattr(config_cls, "sub_configs", {}) or {}
    for key, sub_cls in subs.items():
        cur = getattr(default, key, None)
        if cur is None:
            continue
        cls = type(cur) if hasattr(cur, "to_dict") else sub_cls
        try:
            kw[key] = small_config_kwargs(cls, getattr(cur, "model_type", model_type), mrope)
            kw[key]["model_type"] = getattr(cur, "model_type", None) or kw[key].get("model_type")
            kw[key] = {k: v for k, v in kw[key].items() if v is not None}
        except Exception:  # a sub-config that cannot be built bare: leave it
            pass
    kw.update(OVERRIDES.get(model_type, {}))
    return kw


def small_config(model_type: str, mrope: bool = False) -> Any:
    """The small config of ``model_type`` (see the module documentation), caches off."""
    from transformers.models.auto import configuration_auto
    config_cls = configuration_auto.CONFIG_MAPPING[model_type]
    kw = small_config_kwargs(config_cls, model_type, mrope)
    try:
        try:
            cfg = config_cls(**kw)
        except Exception as e:  # some refuse grouped-query attention: kv heads = heads
            if "key_value" not in str(e) and "kv" not in str(e).lower():
                raise
            def drop_kv(d):
                for k in ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"):
                    d.pop(k, None)
                for v in d.values():
                    if isinstance(v, dict):
                        drop_kv(v)
            drop_kv(kw)
            cfg = config_cls(**kw)
    except Exception:
        # sub-configs as dicts not accepted: build them first
        subs = getattr(config_cls, "sub_configs", {}) or {}
        kw2 = dict(kw)
        for key, sub_cls in subs.items():
            if isinstance(kw2.get(key), dict):
                d = dict(kw2[key]); d.pop("model_type", None)
                kw2[key] = sub_cls(**d) if sub_cls.__name__ != "AutoConfig" else kw2[key]
        cfg = config_cls(**kw2)
    for attr in ("use_cache",):
        if hasattr(cfg, attr):
            setattr(cfg, attr, False)
    sub = getattr(cfg, "get_text_config", None)
    if callable(sub):
        try:
            t = cfg.get_text_config()
            if hasattr(t, "use_cache"):
                t.use_cache = False
        except Exception:
            pass
    return cfg
