"""Net2Net's claims at small scale, on scikit-learn's digits (ships with the package: no download).

The ``digits`` suite of ``benchmarks/experiments.py`` (not a script of its own).

Protocol (per family: a small MLP and a small CNN with BatchNorm; per seed):

1. A narrow *teacher* is trained at learning rate ``lr_teacher`` until its accuracy plateaus.
2. *Students* start from it and train ``--student-steps`` more steps at ``lr_teacher / 10``
   (the paper's advice):
   - widen ×4 every hidden layer: ``net2net``, ``net2net`` + noise, ``random_pad``,
     ``random_init`` (the wide architecture re-initialised);
   - deepen (``after="all"``): ``identity``, ``residual``, ``random_init`` of the deeper net;
   - the teacher itself, trained on at the same rate (control: how much of any gain is only the
     lower learning rate?).
3. The *scratch* baseline: the wide (and the deep) architecture from random init at its own best
   rate, picked on the validation split from a small sweep.
4. A second set of the same students at the teacher's own rate (``lr_teacher``), to see how the
   ranking depends on the rate.

Reported (test split, mean ± std over seeds): final accuracy, steps to reach the teacher's
accuracy, steps to reach the scratch baseline's final accuracy (minus 0.5 pp); plots of accuracy
vs steps with ±1 std bands.

Usage (through the experiments' entry point)::

    python benchmarks/experiments.py digits --quick             # < 2 min on 2 cores
    python benchmarks/experiments.py digits --seeds 5 --workers 12 --json r.json --md r.md --plots docs/images
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _common import machine, md_table, run_jobs  # noqa: E402

WIDEN = ["net2net", "net2net+noise", "random_pad", "random_init"]
DEEPEN = ["identity", "residual", "deep_random_init"]
CONTROL = ["teacher_continued"]
NOISE = 0.05
TARGET_MARGIN = 0.005  # the scratch target: its mean final accuracy minus 0.5 pp


# ------------------------------------------------------------------------------------- data
_DATA = None
DATA_FILE = None  # --data-file: the same arrays saved by this script (for machines without scikit-learn)


def _load_digits():
    if DATA_FILE and os.path.exists(DATA_FILE):
        d = torch.load(DATA_FILE)
        return d["X"], d["y"]
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    if DATA_FILE:
        torch.save({"X": X, "y": y}, DATA_FILE)
    return X, y


def data():
    """digits, split 60/20/20 (stratified, fixed permutation), pixels scaled to [0, 1]."""
    global _DATA
    if _DATA is None:
        X, y = _load_digits()
        X = X / 16.0
        g = torch.Generator().manual_seed(0)
        parts = {"train": [], "val": [], "test": []}
        for c in range(10):
            idx = (y == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            a, b = round(0.6 * len(idx)), round(0.8 * len(idx))
            parts["train"].append(idx[:a])
            parts["val"].append(idx[a:b])
            parts["test"].append(idx[b:])
        _DATA = {k: (X[torch.cat(v)], y[torch.cat(v)]) for k, v in parts.items()}
    return _DATA


def shaped(family, X):
    return X.view(-1, 1, 8, 8) if family == "cnn" else X


# ----------------------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self, h=8):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(64, h), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(h, h), nn.ReLU()
        self.out = nn.Linear(h, 10)

    def forward(self, x):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self, c=2):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Linear(c * 16, 10)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.bn2(self.conv2(x))))
        return self.out(x.flatten(1))


def teacher_model(family):
    return MLP() if family == "mlp" else CNN()


def reinit(model: nn.Module, seed: int) -> nn.Module:
    """The same architecture with fresh default initialisation."""
    torch.manual_seed(seed)
    for mod in model.modules():
        if hasattr(mod, "reset_parameters") and mod is not model:
            mod.reset_parameters()
        if hasattr(mod, "reset_running_stats"):
            mod.reset_running_stats()
    return model


def grow(family, teacher: nn.Module, method: str, seed: int) -> nn.Module:
    """The student for ``method``, built from the trained teacher with fxgrow."""
    import fxgrow

    X = shaped(family, data()["train"][0])
    teacher = copy.deepcopy(teacher).eval()
    ex = X[:64]
    if method == "teacher_continued":
        return teacher
    if method in WIDEN:
        init = {"net2net+noise": "net2net"}.get(method, method)
        noise = NOISE if method == "net2net+noise" else 0.0
        return fxgrow.widen(teacher, ex, 4.0, init=init, noise=noise, seed=seed)
    m = "identity" if method == "deep_random_init" else method
    deep = fxgrow.deepen(teacher, ex, after="all", method=m, calibration=X, seed=seed)
    if method == "deep_random_init":
        deep = reinit(deep, 10_000 + seed)
    return deep


def scratch(family, arch: str, seed: int) -> nn.Module:
    """The wide / deep target architecture from random init (built through fxgrow, re-initialised)."""
    torch.manual_seed(seed)
    t = teacher_model(family)
    return grow(family, t, "random_init" if arch == "wide" else "deep_random_init", seed)


# --------------------------------------------------------------------------------- training
@torch.no_grad()
def accuracy(model, family, split):
    X, y = data()[split]
    was = model.training
    model.eval()
    acc = (model(shaped(family, X)).argmax(1) == y).float().mean().item()
    model.train(was)
    return acc


def train(model, family, lr, steps, seed, eval_every, batch=64):
    """SGD with momentum 0.9 at a constant rate; test accuracy every ``eval_every`` steps."""
    X, y = data()["train"]
    X = shaped(family, X)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    curve = [accuracy(model, family, "test")]
    model.train()
    for step in range(1, steps + 1):
        i = torch.randint(0, len(y), (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(X[i]), y[i])
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            curve.append(accuracy(model, family, "test"))
    model.eval()
    return curve


# ------------------------------------------------------------------------------------- jobs

def job_teacher(cfg, family, seed):
    torch.manual_seed(seed)
    t = teacher_model(family)
    curve = train(t, family, cfg["lr_teacher"][family], cfg["teacher_steps"], seed, cfg["eval_every"])
    return {
        "kind": "teacher",
        "family": family,
        "seed": seed,
        "curve": curve,
        "test": accuracy(t, family, "test"),
        "val": accuracy(t, family, "val"),
        "state": {k: v.clone() for k, v in t.state_dict().items()},
    }


def job_student(cfg, family, seed, method, lr_name, teacher_state):
    torch.manual_seed(seed)
    t = teacher_model(family)
    t.load_state_dict(teacher_state)
    t0 = time.perf_counter()
    try:
        s = grow(family, t, method, seed)
    except Exception as e:  # noqa: BLE001 -- report, do not crash the sweep
        return {"kind": "student", "family": family, "seed": seed, "method": method, "lr_name": lr_name, "error": f"{type(e).__name__}: {e}"}
    grow_s = time.perf_counter() - t0
    lr = cfg["lr_teacher"][family] * (0.1 if lr_name == "teacher/10" else 1.0)
    curve = train(s, family, lr, cfg["student_steps"], 1000 + seed, cfg["eval_every"])
    return {
        "kind": "student",
        "family": family,
        "seed": seed,
        "method": method,
        "lr_name": lr_name,
        "lr": lr,
        "curve": curve,
        "val": accuracy(s, family, "val"),
        "params": sum(p.numel() for p in s.parameters()),
        "grow_s": grow_s,
    }


def job_scratch(cfg, family, seed, arch, lr):
    try:
        s = scratch(family, arch, 20_000 + seed)
    except Exception as e:  # noqa: BLE001 -- report, do not crash the sweep
        return {"kind": "scratch_error", "family": family, "seed": seed, "arch": arch, "lr": lr, "error": f"{type(e).__name__}: {e}"}
    curve = train(s, family, lr, cfg["student_steps"], 1000 + seed, cfg["eval_every"])
    return {"kind": "scratch", "family": family, "seed": seed, "arch": arch, "lr": lr, "curve": curve, "val": accuracy(s, family, "val")}


# ----------------------------------------------------------------------------------- report
def steps_to(curve, target, eval_every):
    for i, a in enumerate(curve):
        if a >= target - 1e-9:
            return i * eval_every
    return None


def ms(vals, fmt=".1f", scale=1.0):
    vals = [v * scale for v in vals if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{statistics.fmean(vals):{fmt}} ± {statistics.stdev(vals):{fmt}}"


def summarise(cfg, results):
    ev = cfg["eval_every"]
    out = {"families": {}}
    for family in cfg["families"]:
        teachers = {r["seed"]: r for r in results if r["kind"] == "teacher" and r["family"] == family}
        fam = {"teacher": {"test": [t["test"] for t in teachers.values()]}, "scratch_sweep": [], "rows": [], "errors": []}
        # scratch: best rate per architecture on validation accuracy
        best = {}
        for arch in ("wide", "deep"):
            runs = [r for r in results if r["kind"] == "scratch" and r["family"] == family and r["arch"] == arch]
            by_lr = {}
            for r in runs:
                by_lr.setdefault(r["lr"], []).append(r)
            for lr, rs in sorted(by_lr.items()):
                fam["scratch_sweep"].append({"arch": arch, "lr": lr, "val": statistics.fmean(r["val"] for r in rs), "test": statistics.fmean(r["curve"][-1] for r in rs)})
            if by_lr:
                lr_best = max(by_lr, key=lambda lr: statistics.fmean(r["val"] for r in by_lr[lr]))
                best[arch] = (lr_best, by_lr[lr_best])
        targets = {arch: statistics.fmean(r["curve"][-1] for r in rs) - TARGET_MARGIN for arch, (_, rs) in best.items()}
        fam["targets"] = targets
        curves = {}

        def add_row(label, group, arch, runs, lr_text):
            t_steps, s_steps, finals = [], [], []
            for r in runs:
                t_acc = teachers[r["seed"]]["test"]
                t_steps.append(steps_to(r["curve"], t_acc, ev))
                s_steps.append(steps_to(r["curve"], targets.get(arch, math.inf), ev))
                finals.append(r["curve"][-1])
            n = len(runs)
            fam["rows"].append(
                {
                    "group": group,
                    "method": label,
                    "lr": lr_text,
                    "n": n,
                    "final": ms(finals, ".2f", 100),
                    "start": ms([r["curve"][0] for r in runs], ".2f", 100),
                    "to_teacher": ms(t_steps, ".0f") + f" ({sum(s is not None for s in t_steps)}/{n})",
                    "to_target": ms(s_steps, ".0f") + f" ({sum(s is not None for s in s_steps)}/{n})",
                    "params": runs[0].get("params") if runs else None,
                }
            )
            curves[(group, label, lr_text)] = [r["curve"] for r in runs]

        for lr_name in cfg["student_lrs"]:
            for method in WIDEN + DEEPEN + CONTROL:
                runs = [r for r in results if r["kind"] == "student" and r["family"] == family and r["method"] == method and r["lr_name"] == lr_name]
                errs = [r for r in runs if "error" in r]
                fam["errors"] += [f"{method} seed {r['seed']}: {r['error']}" for r in errs]
                runs = [r for r in runs if "error" not in r]
                if not runs:
                    continue
                group = "widen" if method in WIDEN else "deepen" if method in DEEPEN else "control"
                arch = "deep" if method in DEEPEN else "wide"
                add_row(method, group, arch, runs, lr_name)
        for arch, (lr, rs) in best.items():
            add_row(f"scratch ({arch}, best rate)", "widen" if arch == "wide" else "deepen", arch, rs, f"{lr:g}")
        fam["curves"] = curves
        out["families"][family] = fam
    return out


def plot(cfg, summary, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots", file=sys.stderr)
        return []
    ev = cfg["eval_every"]
    paths = []
    for family, fam in summary["families"].items():
        lrs = cfg["student_lrs"]
        fig, axes = plt.subplots(len(lrs), 2, figsize=(12, 4.2 * len(lrs)), squeeze=False)
        t_acc = statistics.fmean(fam["teacher"]["test"])
        for row, lr_name in enumerate(lrs):
            for col, group in enumerate(("widen", "deepen")):
                ax = axes[row][col]
                for (g, label, lr_text), cs in fam["curves"].items():
                    is_scratch = label.startswith("scratch")
                    if g != group or (lr_text != lr_name and not is_scratch):
                        continue
                    n = min(len(c) for c in cs)
                    xs = [i * ev for i in range(n)]
                    mean = [statistics.fmean(c[i] for c in cs) for i in range(n)]
                    sd = [statistics.stdev(c[i] for c in cs) if len(cs) > 1 else 0.0 for i in range(n)]
                    name = label if not is_scratch else f"{label} lr={lr_text}"
                    ls = "--" if is_scratch else "-"
                    (line,) = ax.plot(xs, mean, ls, label=name, lw=1.4)
                    ax.fill_between(xs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], color=line.get_color(), alpha=0.15)
                ctrl = fam["curves"].get(("control", "teacher_continued", lr_name))
                if ctrl:
                    n = min(len(c) for c in ctrl)
                    ax.plot([i * ev for i in range(n)], [statistics.fmean(c[i] for c in ctrl) for i in range(n)], ":", color="k", lw=1, label="teacher continued")
                ax.axhline(t_acc, color="grey", lw=0.8, ls="-.", label=f"teacher {100 * t_acc:.1f}%")
                ax.set_title(f"{family.upper()} {group}, students at lr = {lr_name}")
                ax.set_xlabel("student training steps")
                ax.set_ylabel("test accuracy")
                ax.set_ylim(max(0.0, t_acc - 0.35), 1.0)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = os.path.join(outdir, f"experiments_{family}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def render(cfg, summary) -> str:
    out = []
    for family, fam in summary["families"].items():
        t = fam["teacher"]["test"]
        out += [f"### {family.upper()}", ""]
        out.append(f"Teacher test accuracy: {ms(t, '.2f', 100)} % (n={len(t)}). Scratch targets (best-rate final − 0.5 pp): " + ", ".join(f"{a}: {100 * v:.2f} %" for a, v in fam["targets"].items()))
        out += [""]
        out.append(
            md_table(
                fam["rows"],
                [
                    ("group", "group", None),
                    ("method", "student", None),
                    ("lr", "lr", None),
                    ("params", "params", None),
                    ("start", "acc at step 0 (%)", None),
                    ("final", "final acc (%)", None),
                    ("to_teacher", "steps to teacher acc (reached)", None),
                    ("to_target", "steps to scratch target (reached)", None),
                ],
            )
        )
        out += ["", "Scratch rate sweep (mean over seeds):", ""]
        out.append(md_table(fam["scratch_sweep"], [("arch", "arch", None), ("lr", "lr", "g"), ("val", "val acc", ".4f"), ("test", "test acc", ".4f")]))
        if fam["errors"]:
            out += ["", "Errors:", ""] + [f"- {e}" for e in sorted(set(fam["errors"]))]
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------- main
def config(args):
    quick = args.quick
    cfg = {
        "families": args.families or ["mlp", "cnn"],
        "seeds": args.seeds or (2 if quick else 5),
        "lr_teacher": {"mlp": 0.1, "cnn": 0.05},
        "teacher_steps": args.teacher_steps or (1000 if quick else 4000),
        "student_steps": args.student_steps or (300 if quick else 1000),
        "eval_every": 10 if quick else 25,
        "student_lrs": ["teacher/10"] if quick else ["teacher/10", "teacher"],
        "scratch_lr_factors": [1.0, 0.3] if quick else [3.0, 1.0, 0.3],
        "noise": NOISE,
        "widen_factor": 4.0,
        "quick": quick,
    }
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 seeds, short runs: under two minutes on 2 cores")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--families", nargs="*", choices=["mlp", "cnn"])
    ap.add_argument("--teacher-steps", type=int)
    ap.add_argument("--student-steps", type=int)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", help="raw results (curves) here")
    ap.add_argument("--data-file", help="cache of load_digits' arrays (written if missing, read if present)")
    ap.add_argument("--from-json", help="re-render tables and plots from a --json file; no training")
    ap.add_argument("--md", help="markdown tables here")
    ap.add_argument("--plots", default=None, help="folder for experiments_<family>.png (default: no plots in --quick, docs/images otherwise)")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    global DATA_FILE
    DATA_FILE = args.data_file
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        cfg, results, info = saved["config"], saved["results"], {k: saved[k] for k in ("machine", "config", "seconds")}
        summary = summarise(cfg, results)
        text = render(cfg, summary)
        print(text)
        _write(args, cfg, summary, text, info, args.workers if not saved.get("workers") else saved["workers"])
        return
    cfg = config(args)
    t0 = time.perf_counter()
    data()
    seeds = range(cfg["seeds"])
    teachers = run_jobs([(job_teacher, (cfg, f, s)) for f in cfg["families"] for s in seeds], args.workers, "teachers")
    tstate = {(r["family"], r["seed"]): r["state"] for r in teachers}
    jobs = []
    for f in cfg["families"]:
        for s in seeds:
            for lr_name in cfg["student_lrs"]:
                for m in WIDEN + DEEPEN + CONTROL:
                    jobs.append((job_student, (cfg, f, s, m, lr_name, tstate[(f, s)])))
            for arch in ("wide", "deep"):
                for fac in cfg["scratch_lr_factors"]:
                    jobs.append((job_scratch, (cfg, f, s, arch, cfg["lr_teacher"][f] * fac)))
    results = run_jobs(jobs, args.workers, "students")
    for r in teachers:
        r.pop("state")
    results = teachers + results
    summary = summarise(cfg, results)
    text = render(cfg, summary)
    print(text)
    info = {"machine": machine(), "config": cfg, "seconds": time.perf_counter() - t0}
    print(json.dumps(info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**info, "workers": args.workers, "results": results}, f)
    _write(args, cfg, summary, text, info, args.workers)


def _write(args, cfg, summary, text, info, workers):
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + f"\n\n_{info['machine']['date']}, torch {info['machine']['torch']}, {info['machine']['cpu']}, {workers} workers, {info['seconds']:.0f} s._\n")
    outdir = args.plots if args.plots is not None else (None if cfg["quick"] else os.path.join(os.path.dirname(HERE), "docs", "images"))
    if outdir:
        os.makedirs(outdir, exist_ok=True)
        for p in plot(cfg, summary, outdir):
            print("wrote", p)
