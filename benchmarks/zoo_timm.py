"""Grow the smallest model of every timm family; write the timm section of docs/zoo.md.

A family is the ``timm.models`` module that registers a model (``resnet``,
``vision_transformer``, ...).  Its smallest model by parameter count (counted
on the meta device; counts cached in benchmarks/results/timm_params.json) is
built by ``fxgrow.testing.zoo.build_timm``: random weights with non-trivial
norm statistics and affines, no constant-initialised parameter, eval mode,
float64 up to 100M parameters (tolerance 1e-9; float32 and 1e-4 above), the
smallest input side of 64/96/128 it accepts (else its configured size).  Each
model is analysed and widened by zoo_common.measure in its own child process.

    python benchmarks/zoo_timm.py                    # every family (resumes), writes the page
    python benchmarks/zoo_timm.py --quick            # 8 small families, prints only
    python benchmarks/zoo_timm.py --only resnet vit_small_patch16_224   # re-run rows in place
    python benchmarks/zoo_timm.py --update           # re-run rows an older fxgrow measured
    python benchmarks/zoo_timm.py --redo timeout,crash
    python benchmarks/zoo_timm.py --report           # re-render the page from the results
    python benchmarks/zoo_timm.py --one test_vit     # one model in-process (a repro), JSON row
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from functools import lru_cache
from typing import Any, Dict, List, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_common as zc  # noqa: E402
import zoo_page as zp  # noqa: E402
from fxgrow.testing import zoo_timm  # noqa: E402

RESULTS = os.path.join(zc.RESULTS_DIR, "zoo_timm.jsonl")
PARAMS = os.path.join(zc.RESULTS_DIR, "timm_params.json")
QUICK = ("resnet", "efficientnet", "convnext", "vision_transformer",
         "vision_transformer_relpos", "maxxvit", "byobnet", "mambaout")
#: a x2 float64 model of more parameters than this would not fit 12 GB: no float64 recheck
RECHECK_MAX_PARAMS = 200_000_000


def _param_counts() -> Dict[str, Any]:
    """``{model: parameters or None}`` for every registered model, cached per timm version."""
    import timm
    cache: Dict[str, Any] = {}
    if os.path.exists(PARAMS):
        with open(PARAMS) as f:
            data = json.load(f)
        if data.get("timm") == timm.__version__:
            cache = data["params"]
    names = [n for ns in zoo_timm.families().values() for n in ns]
    missing = [n for n in names if n not in cache]
    for i, n in enumerate(missing):
        print(f"\rcounting parameters on the meta device: {i + 1}/{len(missing)} {n:<40}",
              end="", file=sys.stderr, flush=True)
        try:
            cache[n] = zoo_timm.count_params(n)
        except Exception:  # a model that does not build is not chosen
            cache[n] = None
    if missing:
        print(file=sys.stderr)
        os.makedirs(zc.RESULTS_DIR, exist_ok=True)
        with open(PARAMS, "w") as f:
            json.dump({"timm": timm.__version__, "params": dict(sorted(cache.items()))}, f,
                      indent=0)
    return cache


@lru_cache(maxsize=None)
def selection() -> Dict[str, Tuple[str, int]]:
    """``{family: (its smallest model, parameters)}``."""
    counts = _param_counts()
    out = {}
    for fam, names in zoo_timm.families().items():
        ok = sorted((counts[n], n) for n in names if counts.get(n) is not None)
        if ok:
            out[fam] = (ok[0][1], ok[0][0])
    return out


def names() -> List[str]:
    return [m for m, _ in selection().values()]


def resolve(arg: str) -> List[str]:
    """A family's chosen model, or a model name."""
    sel = selection()
    return [sel[arg][0]] if arg in sel else [arg]


def case(name: str, dtype=None) -> zc.Case:
    model, x = zoo_timm.build_timm(name, dtype=dtype)
    fresh = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        fresh.append(torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype))
    params = sum(p.numel() for p in model.parameters())
    f64 = (lambda: case(name, torch.float64)) if params <= RECHECK_MAX_PARAMS else None
    return zc.Case(model, x, fresh, lambda m, x, i: m(x), str(x.dtype).replace("torch.", ""),
                   float64=f64 if x.dtype == torch.float32 else None,
                   info={"family": zoo_timm.family_of(name), "input": "x".join(map(str, x.shape[2:]))})


def measure_one(name: str) -> Dict[str, Any]:
    try:
        c = case(name)
    except Exception as e:  # the model itself: not fxgrow's business
        return {"outcome": "skip", "family": zoo_timm.family_of(name),
                "error": zc._err(e, 400)}
    return zc.measure(c)


def timeout(name: str) -> float:
    params = dict(selection().values()).get(name, 0)
    return min(2400, 600 + 8 * params / 1e6)


def _row(r: Dict[str, Any]) -> str:
    cells = [r.get("family") or "?", r["model"]]
    if "groups" not in r:  # no analysis: the error says why
        cells += ["—"] * 7 + [zp.outcome_cell(r)] + ["—"] * 4 + [zp.md(r.get("error", ""))[:120]]
    else:
        cov = r.get("coverage")
        cells += [f"{r['params'] / 1e6:.2f}M", r.get("input", "?"), r["dtype"].replace("float", "f"),
                  r["capture"], str(r["groups"]), str(r["growable"]),
                  f"{cov:.3f}" if isinstance(cov, float) else "—", zp.outcome_cell(r)]
        cells += [zp.fmt_step(r, s) for s in zc.STEPS]
        cells += [zp.fmt_err(r.get("max_err")), zp.blocker_cell(r)]
    return "| " + " | ".join(cells) + " |"


def render(rows: List[Dict[str, Any]]) -> str:
    import timm
    dates = sorted({r.get("date", "?") for r in rows})
    commits = sorted({r.get("commit", "?") for r in rows})
    fams = len(selection())
    lines = [
        "## timm",
        "",
        f"Generated by `python benchmarks/zoo_timm.py` ({', '.join(dates) or datetime.date.today()}; "
        f"commit {', '.join(commits)}): timm {timm.__version__}, {zc.machine()}. One row per timm "
        f"family ({fams} families: the module that registers a model), its smallest model by "
        "parameter count, built by `fxgrow.testing.zoo.build_timm`: random weights, BatchNorm "
        "statistics and norm affines perturbed, constant-initialised parameters (zero heads, "
        "layer scales) perturbed, eval mode, float64 up to 100M parameters (tolerance 1e-9 of "
        "max |output|; f32 rows: 1e-4, a float32 WRONG is rechecked in float64), the smallest "
        "input side of 64/96/128 the model accepts, else its configured size. Steps (`x2`, `x1.5`, "
        "`head dim`) are those of `fxgrow.testing.zoo.widen_specs`, widened with `verify=False` "
        "and compared with the original on the example and two fresh inputs. `coverage` is the "
        "share of non-fixed neurons in growable groups; `top blocker` is the op named by the "
        "first reason of the biggest blocked group (its neurons in brackets). Mutation: every "
        "state_dict tensor's bytes, `requires_grad` and training flags are hashed before and "
        "after. Rows are re-measured in place with `--only NAME` or `--update` (see "
        "`benchmarks/README.md`).",
        "",
    ]
    lines += zp.summary(rows, "timm families", "model")
    lines += ["", "| family | model | params | input | dtype | capture | groups | growable | "
              "coverage | outcome | x2 | x1.5 | head dim | max err | top blocker (neurons) |",
              "|---|---|---:|---|---|---|---:|---:|---:|---|---|---|---|---:|---|"]
    lines += [_row(r) for r in sorted(rows, key=lambda r: str(r.get("family")))]
    bad = zp.bad_details(rows, "model")
    if bad:
        lines += ["", "### Steps that were not ok", ""] + bad
    return "\n".join(lines)


SWEEP = zp.Sweep(key="model", section="timm", results=RESULTS, names=names, resolve=resolve,
                 measure_one=measure_one, timeout=timeout, render=render, quick=QUICK)

if __name__ == "__main__":
    sys.exit(zp.cli(SWEEP, __doc__))
