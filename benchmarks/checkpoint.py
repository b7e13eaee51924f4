"""Streaming a LLaMA-style checkpoint through ``fxgrow.grow_checkpoint``: time and peak memory.

1. Writes a random LLaMA-style source checkpoint (HuggingFace layout, sharded safetensors,
   fp32) of the chosen size, one tensor at a time (the model is built on the ``meta``
   device, so making the checkpoint needs no RAM either).
2. Grows it x2 in width (hidden, heads, kv heads, MLP; same depth) in a *fresh child
   process* built on ``meta``, and reads that process's peak resident set (``VmHWM``).
3. With ``--check`` (default for the small size), loads source and grown checkpoints with
   ``from_pretrained`` and compares their logits on fresh token ids.

Usage::

    python benchmarks/checkpoint.py --size small          # ~0.2 GB source, checked, ~1 min
    python benchmarks/checkpoint.py --size large          # ~3.4 GB source -> ~13.6 GB grown
    python benchmarks/checkpoint.py --size large --json out.json

Nothing is asserted: the script prints the figures (and the targets beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

SIZES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "small": (512, 1408, 8, 8, 2, 32000),
    "large": (2048, 5632, 16, 16, 4, 32000),
}


def _config(hidden, inter, layers, heads, kv, vocab):
    import transformers
    return transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=256,
        tie_word_embeddings=False)


def _meta_model(cfg):
    import torch
    import transformers
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(cfg)


def make_source(directory: str, dims) -> int:
    """A random checkpoint of ``dims``, written tensor by tensor; returns its bytes."""
    import torch
    from fxgrow.grow.safetensors_io import ShardedWriter
    cfg = _config(*dims)
    model = _meta_model(cfg)
    sd = model.state_dict()
    writer = ShardedWriter(directory, {k: (tuple(v.shape), torch.float32) for k, v in sd.items()},
                           max_shard_bytes=2**30)
    gen = torch.Generator().manual_seed(0)
    for k, v in sd.items():
        if k.endswith("norm.weight"):
            t = 1 + 0.1 * torch.randn(v.shape, generator=gen)
        else:
            t = torch.randn(v.shape, generator=gen) * 0.02
        writer.write(k, t)
        del t
    writer.close()
    cfg.save_pretrained(directory)
    return writer.total


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def child(src: str, dst: str, dims) -> None:
    """Run in a fresh process: grow src into dst, print JSON with time and peak RSS."""
    import torch
    import fxgrow
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    hidden, inter, layers, heads, kv, vocab = dims
    start_rss = _peak_rss_kb()
    s = _meta_model(_config(*dims))
    t = _meta_model(_config(2 * hidden, 2 * inter, layers, 2 * heads, 2 * kv, vocab))
    ids = torch.zeros(2, 8, dtype=torch.long, device="meta")
    t0 = time.perf_counter()
    fxgrow.grow_checkpoint(s, t, {"input_ids": ids, "use_cache": False}, src=src, dst=dst,
                           progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_kb": _peak_rss_kb(),
                      "rss_before_kb": start_rss}))


def _bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
               if f.endswith(".safetensors"))


def check(src: str, dst: str) -> float:
    """Max |logit difference| / max |logit| between the two checkpoints."""
    import torch
    import transformers
    a = transformers.LlamaForCausalLM.from_pretrained(src).eval()
    b = transformers.LlamaForCausalLM.from_pretrained(dst).eval()
    ids = torch.randint(0, a.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
    return float((la - lb).abs().max() / la.abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                   help="compare logits after reloading (default: on for small)")
    p.add_argument("--workdir", default=None, help="where the checkpoints go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the checkpoints")
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = p.parse_args()
    dims = SIZES[args.size]
    if args.child:
        child(*args.child, dims)
        return
    work = args.workdir or tempfile.mkdtemp(prefix="fxgrow-ckpt-")
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    try:
        t0 = time.perf_counter()
        src_bytes = make_source(src, dims)
        print(f"source checkpoint: {src_bytes / 1e9:.2f} GB written in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        out = subprocess.run([sys.executable, __file__, "--size", args.size, "--child", src, dst],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stdout, out.stderr, file=sys.stderr)
            raise SystemExit(out.returncode)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        grown = _bytes(dst)
        peak = rec["peak_rss_kb"] * 1024
        result = {
            "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
            "date": time.strftime("%Y-%m-%d"), "size": args.size,
            "source_gb": src_bytes / 1e9, "grown_gb": grown / 1e9, "seconds": rec["seconds"],
            "peak_rss_gb": peak / 1e9, "peak_over_grown": peak / grown,
            "throughput_gb_s": (src_bytes + grown) / 1e9 / rec["seconds"],
        }
        print(f"grown checkpoint: {grown / 1e9:.2f} GB in {rec['seconds']:.1f} s "
              f"({result['throughput_gb_s']:.2f} GB/s read+written)")
        print(f"peak RSS of the growing process: {peak / 1e9:.2f} GB = "
              f"{peak / grown:.3f} x the grown checkpoint (targets: <= 0.5 x and <= 1.5 GB)")
        if args.check if args.check is not None else args.size == "small":
            result["logits_rel_err"] = check(src, dst)
            print(f"reloaded logits vs the source's: max rel error {result['logits_rel_err']:.2e}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
