"""Does growth save training?  The experiments behind docs/experiments.md.

Suites (``python benchmarks/experiments.py SUITE``):

* ``lm`` -- a byte-level GPT on the Python standard library's source (:mod:`task_lm`);
* ``mnist1d`` -- an MLP and a 1-D CNN with BatchNorm on mnist1d (:mod:`task_mnist1d`);
* ``digits`` -- the earlier teacher/student study on scikit-learn's digits (:mod:`exp_digits`,
  its own options after ``digits``);
* ``all`` -- the three in turn.

``lm`` and ``mnist1d`` follow :mod:`growth_exp`: train a small model, grow it (width x2 with every
initialiser, and depth), train on at the small model's rate and at a tenth of it, with a fresh and
with a grown optimizer, against the grown architecture trained from scratch for the same number
of steps.  Sizes come from a preset: ``--quick`` (tiny models, 3 seeds; every suite together in
under 10 minutes on 2 CPU cores), ``--preset cpu`` (larger models and longer runs for a CPU host;
3 seeds), ``--preset gpu`` (the full experiment: larger models, longer runs, 5 seeds, sized for one
GPU: pass ``--device cuda``).

Usage::

    python benchmarks/experiments.py all --quick
    python benchmarks/experiments.py lm --preset cpu --workers 2 --out results --plots docs/images
    python benchmarks/experiments.py mnist1d --preset gpu --device cuda --workers 1 --out results
    python benchmarks/experiments.py lm --from-json results/lm.json --out results  # re-render
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import growth_exp  # noqa: E402
import growth_report  # noqa: E402
from _common import machine, run_jobs  # noqa: E402

PRESETS = {
    "lm": {
        "quick": dict(gpt=dict(d=16, heads=2, head_dim=8, hidden=64, layers=2, ctx=32), batch=16,
                      train_bytes=1_000_000, val_bytes=200_000, val_windows=64, small_steps=120,
                      big_steps=120, eval_every=20, lr=3e-3, seeds=3, scratch_lr_factors=[1.0]),
        "cpu": dict(gpt=dict(d=32, heads=2, head_dim=16, hidden=128, layers=2, ctx=64), batch=16,
                    train_bytes=8_000_000, val_bytes=1_000_000, val_windows=256, small_steps=400,
                    big_steps=400, eval_every=25, lr=3e-3, seeds=3,
                    scratch_lr_factors=[1.0, 0.3]),
        "gpu": dict(gpt=dict(d=128, heads=4, head_dim=32, hidden=512, layers=4, ctx=256),
                    batch=64, train_bytes=0, val_bytes=0, val_windows=1024, small_steps=3000,
                    big_steps=6000, eval_every=100, lr=2e-3, seeds=5,
                    scratch_lr_factors=[3.0, 1.0, 0.3]),
    },
    "mnist1d": {
        "quick": dict(samples=4000, width={"mlp": 16, "cnn": 4}, batch=64, small_steps=300,
                      big_steps=300, eval_every=30, lr={"mlp": 0.05, "cnn": 0.05}, seeds=3,
                      scratch_lr_factors=[1.0]),
        "cpu": dict(samples=10_000, width={"mlp": 32, "cnn": 8}, batch=64, small_steps=2000,
                    big_steps=2000, eval_every=100, lr={"mlp": 0.05, "cnn": 0.05}, seeds=3,
                    scratch_lr_factors=[3.0, 1.0, 0.3]),
        "gpu": dict(samples=20_000, width={"mlp": 128, "cnn": 32}, batch=128, small_steps=5000,
                    big_steps=10_000, eval_every=200, lr={"mlp": 0.05, "cnn": 0.05}, seeds=5,
                    scratch_lr_factors=[3.0, 1.0, 0.3]),
    },
}
TASKS = {"lm": "task_lm", "mnist1d": "task_mnist1d"}
TITLES = {"lm": "Byte-level language model on the standard library's source",
          "mnist1d": "mnist1d"}


def config(suite, args):
    import importlib

    preset = "quick" if args.quick else args.preset
    cfg = copy.deepcopy(PRESETS[suite][preset])
    task = importlib.import_module(TASKS[suite])
    cfg.update(suite=suite, preset=preset, factor=2.0, lrs=["lr", "lr/10"],
               states=["fresh", "grown"], families=args.families or task.FAMILIES,
               device=args.device)
    for key in ("seeds", "small_steps", "big_steps"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["eval_every"] = max(1, min(cfg["eval_every"], cfg["big_steps"] // 5 or 1))
    cfg["probes"] = {f: task.probe(f) for f in cfg["families"]}
    return task, cfg


def run_suite(suite, args):
    task, cfg = config(suite, args)
    t0 = time.perf_counter()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        cfg, results, info = saved["config"], saved["results"], saved["info"]
    else:
        task.setup(cfg)  # before forking: the workers share the data
        info = {"machine": machine(cfg["device"]), "data": task.describe(cfg)}
        jobs = [(growth_exp.job_small, (TASKS[suite], f, cfg, s)) for f in cfg["families"]
                for s in range(cfg["seeds"])]
        smalls = run_jobs(jobs, args.workers, f"{suite}: small models")
        states = {(r["family"], r["seed"]): r.pop("state") for r in smalls}
        results = smalls + run_jobs(growth_exp.student_jobs(TASKS[suite], cfg, states), args.workers,
                                    f"{suite}: grown and scratch")
        info["seconds"] = time.perf_counter() - t0
        info["workers"] = args.workers
    summary = growth_exp.summarise(cfg, results)
    text = growth_report.render(cfg, summary, TITLES[suite])
    m = info["machine"]
    text += (f"\n_{m['date']}, preset `{cfg['preset']}`, torch {m['torch']}, {m['cpu']}"
             f"{', ' + m['gpu'] if m.get('gpu') else ''}, {info['workers']} workers, "
             f"{info['seconds']:.0f} s. Data: {info['data']}._\n")
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"{suite}.md"), "w") as f:
            f.write(text)
        if not args.from_json:
            with open(os.path.join(args.out, f"{suite}.json"), "w") as f:
                json.dump({"config": cfg, "info": info, "results": results}, f)
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        for path in growth_report.plot(cfg, summary, args.plots, f"growth_{suite}"):
            print("wrote", path)
    return summary


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    suite = argv.pop(0) if argv and not argv[0].startswith("-") else "all"
    if suite == "digits":
        import exp_digits

        return exp_digits.main(argv)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models, 3 seeds (all suites "
                    "together in under 10 minutes on 2 CPU cores)")
    ap.add_argument("--preset", choices=["quick", "cpu", "gpu"], default="cpu")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--small-steps", dest="small_steps", type=int)
    ap.add_argument("--big-steps", dest="big_steps", type=int)
    ap.add_argument("--families", nargs="*")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", help="folder for <suite>.md and <suite>.json")
    ap.add_argument("--plots", help="folder for growth_<suite>_<family>.png")
    ap.add_argument("--from-json", help="re-render a saved <suite>.json (one suite)")
    args = ap.parse_args(argv)
    if suite not in ("all", *TASKS):
        ap.error(f"unknown suite {suite!r}: all, lm, mnist1d or digits")
    import warnings

    warnings.filterwarnings("ignore")
    out = {}
    for s in (TASKS if suite == "all" else [suite]):
        out[s] = run_suite(s, args)
    if suite == "all":
        import exp_digits

        digits = ["--quick"] if args.quick else []
        if args.out:
            digits += ["--md", os.path.join(args.out, "digits.md")]
        digits += ["--workers", str(args.workers)] + (["--plots", args.plots] if args.plots else [])
        exp_digits.main(digits)
    return out


if __name__ == "__main__":
    main()
