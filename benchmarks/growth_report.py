"""Tables and plots of the growth experiments (:mod:`growth_exp`'s summaries)."""

from __future__ import annotations

import os
import statistics
import sys

from _common import md_table
from growth_exp import WIDTH_INITS, ms

COLUMNS = [("arch", "grown", None), ("method", "student", None), ("lr", "lr", None),
           ("state", "optimizer state", None), ("start", "val loss at step 0", None),
           ("final", "final val loss", None), ("reached", "reached target", None),
           ("steps", "steps to target", None), ("speedup", "× fewer steps", None),
           ("flop_ratio", "× fewer FLOPs", None),
           ("flop_ratio_all", "× fewer FLOPs, small's training counted", None)]


def _at(curves, key, where):
    """Mean over seeds of ``key`` at the evaluation nearest to fraction ``where``."""
    vals = []
    for c in curves:
        pts = [p for p in c if key in p]
        if pts:
            vals.append(pts[min(len(pts) - 1, round(where * (len(pts) - 1)))][key])
    return ms(vals, ".3f" if key == "cos" else ".1f")


def mechanism_rows(fam, cfg):
    rows = []
    for (arch, method, lr, state), curves in fam["curves"].items():
        if arch != "wide" or method not in WIDTH_INITS:
            continue
        rows.append({"method": method, "lr": lr, "state": state,
                     "cos0": _at(curves, "cos", 0.0), "cos_mid": _at(curves, "cos", 0.5),
                     "cos_end": _at(curves, "cos", 1.0), "rank0": _at(curves, "rank", 0.0),
                     "rank_end": _at(curves, "rank", 1.0)})
    return rows


def render(cfg, summary, title) -> str:
    out = [f"## {title}", ""]
    for family, fam in summary.items():
        small = fam["small"]
        out += [f"### {family}", "",
                f"Small model: {small['params']:,} parameters, {cfg['small_steps']} steps, final "
                f"val loss {ms(small['final'])}. Scratch target (best rate, mean final val loss "
                "over seeds): " + ", ".join(f"{a}: {v:.3f}" for a, v in fam["targets"].items()),
                ""]
        out.append(md_table(fam["rows"], COLUMNS))
        out += ["", "Scratch rate sweep (final val loss):", "",
                md_table(fam["sweep"], [("arch", "arch", None), ("lr", "lr", "g"),
                                        ("final", "final val loss", None)]), ""]
        mech = mechanism_rows(fam, cfg)
        if mech:
            out += ["Mechanism on the probed layer (`" + cfg["probes"][family] + "`): mean cosine "
                    "similarity between the gradients of each new neuron's incoming weights and "
                    "those of the neuron it copies, and the layer's effective rank, at the start, "
                    "the middle and the end of training:", "",
                    md_table(mech, [("method", "init", None), ("lr", "lr", None),
                                    ("state", "optimizer state", None),
                                    ("cos0", "grad cos, step 0", None),
                                    ("cos_mid", "middle", None), ("cos_end", "end", None),
                                    ("rank0", "eff. rank, step 0", None),
                                    ("rank_end", "end", None)]), ""]
        if fam["errors"]:
            out += ["Errors:", ""] + [f"- {e}" for e in fam["errors"]] + [""]
    return "\n".join(out)


def _band(ax, curves, key, label, ls="-", offset=0, color=None, lw=1.3):
    n = min(len(c) for c in curves)
    xs = [curves[0][i]["step"] + offset for i in range(n)]
    vals = [[c[i][key] for c in curves if key in c[i]] for i in range(n)]
    if not all(vals):
        return None
    mean = [statistics.fmean(v) for v in vals]
    sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
    (line,) = ax.plot(xs, mean, ls, label=label, lw=lw, color=color)
    ax.fill_between(xs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                    color=line.get_color(), alpha=0.15)
    return line


def plot(cfg, summary, outdir, prefix):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots", file=sys.stderr)
        return []
    paths = []
    for family, fam in summary.items():
        lrs, states = cfg["lrs"], cfg["states"]
        panels = [("wide", s) for s in states] + [("deep", None)]
        fig, axes = plt.subplots(len(lrs), len(panels), figsize=(5.2 * len(panels), 4 * len(lrs)),
                                 squeeze=False)
        small = fam["small"]["curves"]
        for i, lr in enumerate(lrs):
            for j, (arch, state) in enumerate(panels):
                ax = axes[i][j]
                _band(ax, small, "loss", "small model", offset=-cfg["small_steps"], color="k",
                      lw=1.0)
                for (a, method, lr_name, st), curves in fam["curves"].items():
                    if method.startswith("scratch") and a == arch:
                        _band(ax, curves, "loss", method, ls="--", color="grey")
                    elif a == arch and lr_name == lr and (state is None or st == state):
                        label = method if state is not None else f"{method}, state {st}"
                        _band(ax, curves, "loss", label)
                    elif a == "control" and lr_name == lr and arch == "wide" and st == "grown":
                        _band(ax, curves, "loss", "small continued", ls=":", color="k", lw=1.0)
                tgt = fam["targets"].get(arch)
                if tgt is not None:
                    ax.axhline(tgt, color="grey", lw=0.7, ls="-.")
                what = f"width x{cfg['factor']:g}, optimizer state {state}" if state else "depth"
                ax.set_title(f"{family}: {what}, lr = {lr}", fontsize=9)
                ax.set_xlabel("steps after growth (small model's training at < 0)")
                ax.set_ylabel("validation loss")
                lo = min(tgt if tgt is not None else 1e9, min(c[-1]["loss"] for c in small))
                ax.set_ylim(lo * 0.95, max(c[0]["loss"] for c in small) * 0.75 + lo * 0.25)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6.5, loc="upper right")
        fig.tight_layout()
        path = os.path.join(outdir, f"{prefix}_{family}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        lr, state = lrs[0], states[-1]
        for (a, method, lr_name, st), curves in fam["curves"].items():
            if a == "wide" and lr_name == lr and st in (state, "fresh") and \
                    (st == state or method == "random_init"):
                _band(axes[0], curves, "cos", method)
                _band(axes[1], curves, "rank", method)
        axes[0].set_title(f"{family}: gradient cosine, new neuron vs the one it copies "
                          f"(lr = {lr})", fontsize=9)
        axes[1].set_title(f"{family}: effective rank of `{cfg['probes'][family]}`", fontsize=9)
        for ax in axes:
            ax.set_xlabel("steps after growth")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(outdir, f"{prefix}_{family}_mechanism.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
