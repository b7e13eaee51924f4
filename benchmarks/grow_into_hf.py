"""``fxgrow.grow_into`` across HuggingFace's causal language models: wider, more heads, deeper.

For every model type with a ``...ForCausalLM`` class, the sweep's generic small config
(``fxgrow.testing.zoo_hf_config``: hidden 64, 4 heads / 2 kv heads, MLP 128, 2 layers) builds
the source (random weights, perturbed, eval mode); the target is the same class with hidden,
MLP, heads and kv heads doubled (head dim kept) and one layer more.  ``grow_into`` runs with
``verify=False``; the filled target's logits are then compared with the source's on fresh
token ids of another shape (tolerance 1e-4 of max |logit|).  Outcomes: ``exact``, ``refused``
(fxgrow said why), ``WRONG`` (it said nothing and the logits differ: a bug), ``crash`` (a
non-fxgrow exception: a bug), ``skip`` (the small or big config does not build or run).

    python benchmarks/grow_into_hf.py                 # every causal-LM type, a markdown table
    python benchmarks/grow_into_hf.py llama gpt2      # some types
    python benchmarks/grow_into_hf.py --md out.md

Each type runs in a child process (a crash or a hang stays there; ``--timeout``, 300 s).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import sweep_children  # noqa: E402

WIDTH_KEYS = ("hidden_size", "n_embd", "d_model", "intermediate_size", "ffn_dim", "n_inner",
              "d_ff", "num_attention_heads", "n_head", "n_heads", "num_heads",
              "num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num",
              "kv_n_heads", "word_embed_proj_dim", "encoder_attention_heads",
              "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "ffn_hidden_size")
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")


def bigger(cfg):
    """The config doubled in width (head dim kept) and one layer deeper."""
    from fxgrow.testing import zoo_hf_config as zc
    big = copy.deepcopy(cfg)
    small = dict(zc.SCALARS)
    for key in WIDTH_KEYS:
        v = getattr(big, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v == small.get(key, v) and v > 0:
            setattr(big, key, 2 * v)
    for key in DEPTH_KEYS:
        v = getattr(big, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v == small.get(key, -1):
            setattr(big, key, v + 1)
    lt = getattr(big, "layer_types", None)
    layers = getattr(big, "num_hidden_layers", None)
    if isinstance(lt, list) and lt and isinstance(layers, int):
        big.layer_types = (lt * (layers // len(lt) + 1))[:layers]
    return big


def one(model_type: str) -> dict:
    import torch
    import fxgrow
    from fxgrow.testing import zoo_hf
    torch.set_num_threads(1)
    try:
        case = zoo_hf.build_hf(model_type, head="causal_lm")
        src = case.model.eval()
        tgt = type(src)(bigger(case.config))
    except Exception as e:  # noqa: BLE001 - not fxgrow's business
        return {"type": model_type, "outcome": "skip", "why": f"{type(e).__name__}: {e}"[:200]}
    example = dict(case.example)
    if "use_cache" in zoo_hf._forward_params(src):
        example["use_cache"] = False
    t0 = time.perf_counter()
    try:
        fxgrow.grow_into(src, tgt, example, verify=False)
    except fxgrow.FxGrowError as e:
        return {"type": model_type, "class": type(src).__name__, "outcome": "refused",
                "why": f"{type(e).__name__}: {e}"[:300], "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - a bug: reported
        return {"type": model_type, "class": type(src).__name__, "outcome": "crash",
                "why": f"{type(e).__name__}: {e}"[:300]}
    seconds = time.perf_counter() - t0
    tgt.eval()
    fresh = case.inputs(1)
    if "use_cache" in example:
        fresh["use_cache"] = False
    with torch.no_grad():
        a = zoo_hf.call(src, fresh).logits
        b = zoo_hf.call(tgt, fresh).logits
    err = float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
    return {"type": model_type, "class": type(src).__name__,
            "outcome": "exact" if err <= 1e-4 else "WRONG", "err": err, "seconds": seconds,
            "params": [sum(p.numel() for p in m.parameters()) for m in (src, tgt)]}


def causal_lm_types():
    from transformers.models.auto import modeling_auto
    return sorted(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("types", nargs="*")
    p.add_argument("--md", help="write the markdown table here")
    p.add_argument("--json", help="write the rows here (JSON lines)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per type (default 300)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one(args.child)))
        return
    rows = sweep_children(__file__, args.types or causal_lm_types(), "type", args.timeout,
                          args.json, lambda row: f"{row['type']}: {row['outcome']} "
                          f"{row.get('err', '')} {row.get('why', '')[:160]}")
    counts = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    lines = [f"{len(rows)} types: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), "",
             "| type | class | outcome | max rel err / reason |", "|---|---|---|---|"]
    for r in rows:
        detail = f"{r['err']:.1e}" if "err" in r else r.get("why", "").replace("|", "\\|")
        lines.append(f"| {r['type']} | {r.get('class', '')} | {r['outcome']} | {detail} |")
    text = "\n".join(lines)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
