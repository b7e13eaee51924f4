"""``fxgrow.grow_into`` across timm: each family's smallest model into a larger sibling.

For every timm family (the module that registers a model), the source is its smallest model
(by parameter count on the meta device, ``benchmarks/results/timm_params.json``), built with
random weights made to look trained (``fxgrow.testing.zoo_timm.build_timm``), and the target
is the family's next larger model *of the same class* (up to 16× the parameters), built with
its own random init.  ``grow_into`` runs with ``verify=False``; the filled target's output is
then compared with the source's on a fresh input of another batch size (tolerance 1e-7 of
max |output| in float64, 1e-4 in float32).  Outcomes: ``exact``, ``refused`` (fxgrow said
why), ``WRONG`` (it said nothing and the outputs differ: a bug), ``crash`` (a non-fxgrow
exception: a bug), ``skip`` (no pair, or the models do not build or run).

    python benchmarks/grow_into_timm.py                    # every family
    python benchmarks/grow_into_timm.py resnet vision_transformer
    python benchmarks/grow_into_timm.py --json rows.jsonl --timeout 600

Each family runs in a child process (a crash or a hang stays there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import sweep_children  # noqa: E402

#: a larger sibling of up to this many times the source's parameters
MAX_RATIO = 16


def pair(family: str):
    """``(source name, target name)`` for a family, or None."""
    import timm
    import zoo_timm as zt
    from fxgrow.testing import zoo_timm
    counts = zt._param_counts()
    # timm's test_* models are deliberately odd configurations: real siblings pair better
    names = sorted((counts[n], n) for n in zoo_timm.families().get(family, [])
                   if counts.get(n) and not n.startswith("test_"))
    if len(names) < 2:
        return None
    (p0, src), rest = names[0], names[1:]
    with_cls = {}

    def cls(name):
        if name not in with_cls:
            import torch
            with torch.device("meta"):
                with_cls[name] = type(timm.create_model(name, pretrained=False))
        return with_cls[name]
    for p, name in rest:
        if p > p0 and p <= MAX_RATIO * p0 and cls(name) is cls(src):
            return src, name
    return None


def one(family: str) -> dict:
    import torch
    import timm
    import fxgrow
    from fxgrow.testing import zoo_timm
    from fxgrow.testing.zoo import make_trained
    torch.set_num_threads(1)
    try:
        names = pair(family)
        if names is None:
            return {"family": family, "outcome": "skip", "why": "no larger sibling of its class"}
        src_name, tgt_name = names
        src, x = zoo_timm.build_timm(src_name)
        dtype = next(src.parameters()).dtype
        torch.manual_seed(1)
        tgt = timm.create_model(tgt_name, pretrained=False)
        make_trained(tgt, 1)  # so a tensor grow_into forgets to write shows
        tgt = tgt.to(dtype).eval()
    except Exception as e:  # noqa: BLE001 - not fxgrow's business
        return {"family": family, "outcome": "skip", "why": f"{type(e).__name__}: {e}"[:200]}
    row = {"family": family, "source": src_name, "target": tgt_name, "dtype": str(dtype)}
    t0 = time.perf_counter()
    try:
        fxgrow.grow_into(src, tgt, x, verify=False)
    except fxgrow.FxGrowError as e:
        return dict(row, outcome="refused", why=f"{type(e).__name__}: {e}"[:300],
                    seconds=time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a bug: reported
        return dict(row, outcome="crash", why=f"{type(e).__name__}: {e}"[:300])
    seconds = time.perf_counter() - t0
    g = torch.Generator().manual_seed(7)
    fresh = torch.randn((x.shape[0] + 1,) + tuple(x.shape[1:]), generator=g,
                        dtype=torch.float64).to(dtype)
    with torch.no_grad():
        a, b = src(fresh), tgt.eval()(fresh)
    err = float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
    tol = 1e-7 if dtype == torch.float64 else 1e-4
    return dict(row, outcome="exact" if err <= tol else "WRONG", err=err, seconds=seconds,
                params=[sum(p.numel() for p in m.parameters()) for m in (src, tgt)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("families", nargs="*")
    p.add_argument("--json", help="append the rows here (JSON lines)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per family")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one(args.child)))
        return
    from fxgrow.testing import zoo_timm
    rows = sweep_children(__file__, args.families or list(zoo_timm.families()), "family",
                          args.timeout, args.json, lambda row: (
                              f"{row['family']}: {row['outcome']} {row.get('source', '')}->"
                              f"{row.get('target', '')} {row.get('err', '')} "
                              f"{row.get('why', '')[:160]}"))
    counts = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(f"{len(rows)} families: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
