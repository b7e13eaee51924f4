"""Does growth save training? The protocol the language-model and mnist1d experiments share.

Per task family and seed:

1. a *small* model is trained ``small_steps`` steps at the family's rate;
2. it is grown -- in width (every growable group x2, one run per initialiser: ``net2net``,
   ``net2net+noise``, ``split``, ``zero_out``, ``random_pad``, ``random_init``) and in depth (the
   task's deepening, zero-initialised residual or transformer blocks) -- and trained
   ``big_steps`` more steps, at the small model's rate and at a tenth of it (the paper's advice),
   with a fresh optimizer and with the small model's state grown by ``fxgrow.grow_optimizer``;
3. the *scratch* baseline: the same grown architecture from random initialisation, trained
   ``big_steps`` steps at each rate of a small sweep (the best, by final validation loss, is the
   target); the small model trained on is the control.

Reported (mean ± std over seeds): validation loss (and accuracy) curves, the steps and FLOPs each
student needs to reach the scratch model's final validation loss (FLOPs with and without the small
model's training, counted once per architecture with ``torch.utils.flop_counter``), and, on one
grown layer, the mechanism: the cosine similarity between the gradients of each new neuron's
incoming weights and those of the neuron it copies, and the layer's effective rank
(``exp`` of the entropy of its normalised singular values).

A task module provides ``FAMILIES`` and functions of ``(family, cfg)``: ``setup``, ``small``,
``example``, ``batch``, ``loss``, ``evaluate``, ``optimizer``, ``lr``, ``deepen`` (the depth
hook), ``reinit`` (the scratch initialisation), ``probe`` (the layer the mechanism is measured
on) and ``clip``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any, Dict, List, Optional

import torch

WIDTH_INITS = ["net2net", "net2net+noise", "split", "zero_out", "random_pad", "random_init"]
NOISE = 0.05


def _task(task):
    """Jobs name their task module (modules do not pickle into worker processes)."""
    import importlib

    return importlib.import_module(task) if isinstance(task, str) else task


def _fxgrow():
    import fxgrow

    return fxgrow


# ------------------------------------------------------------------------------ growth
def grow_width(task, family, cfg, small, init: str, seed: int):
    """The wide student.  Where the task has its own initialisation law (``task.fresh_init``),
    fresh values (``zero_out``'s new rows, ``random_pad``'s new slices) follow it instead of
    PyTorch's module defaults (``nn.Embedding``'s N(0, 1) would dwarf a GPT's N(0, 0.02))."""
    fx = _fxgrow()
    base = {"net2net+noise": "net2net"}.get(init, init)
    noise = NOISE if init == "net2net+noise" else 0.0
    x = task.example(family, cfg).to(cfg["device"])
    small = copy.deepcopy(small).eval()
    analysis = fx.analyze(small, x)
    plan = fx.plan_widening(analysis, cfg["factor"], seed=seed)
    grown = fx.apply_plan(plan, init=base, noise=noise)
    law = getattr(task, "fresh_init", None)
    if law is not None and init in ("zero_out", "random_pad"):
        fresh = dict(law(family, fx.apply_plan(plan), seed).named_parameters())
        with torch.no_grad():
            if init == "zero_out":  # the initialiser as a function of (plan, tensors)
                from fxgrow.widen import initialise

                new = initialise(plan, dict(small.named_parameters()), "zero_out",
                                 fresh=lambda name, shape, like: fresh[name])
            else:  # random_pad's fresh slices are where the gradient record's ratio is 0
                rec = grown.meta["fxgrow.growth"].tensors
                new = {n: torch.where(rec[n].grow(torch.ones_like(p)) == 0, fresh[n], g)
                       for n, p in small.named_parameters() if n in rec
                       for g in [grown.get_parameter(n)]}
            for name, t in new.items():
                grown.get_parameter(name).copy_(t)
    from fxgrow.widen.apply import EXACT

    if init in EXACT and not noise:
        report = fx.verify(small, grown, x)
        assert report.ok, f"{init} is not exact here:\n{report}"
    return grown


def scratch_model(task, family, cfg, small, arch: str, seed: int):
    """The grown architecture (wide or deep) from the task's random initialisation."""
    big = grow_width(task, family, cfg, small, "net2net", seed) if arch == "wide" else \
        task.deepen(family, cfg, copy.deepcopy(small).eval(), seed)
    return task.reinit(family, big, 50_000 + seed)


# ----------------------------------------------------------------------------- measure
def _replica_pairs(grown, name):
    """(new rows, the rows they copy) of the probed weight, from the growth record."""
    rec = grown.meta.get("fxgrow.growth")
    tg = rec.tensors.get(name) if rec is not None else None
    if tg is None:
        return None
    for d, index, _ in tg.dims:
        if d == 0:
            new = torch.arange(index.numel())[index != torch.arange(index.numel())]
            return new, index[new]
    return None


def effective_rank(w: torch.Tensor) -> float:
    s = torch.linalg.svdvals(w.detach().double().flatten(1))
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mechanism(model, name, pairs, grad: Optional[torch.Tensor]) -> Dict[str, float]:
    w = model.get_parameter(name)
    out = {"rank": effective_rank(w)}
    if pairs is not None and grad is not None:
        new, src = pairs
        g = grad.flatten(1).double()
        cos = torch.nn.functional.cosine_similarity(g[new], g[src], dim=1, eps=1e-30)
        out["cos"] = float(cos.mean())
    return out


# ----------------------------------------------------------------------------- training
def train(task, family, cfg, model, opt, steps: int, seed: int, probe=None, pairs=None):
    """``steps`` steps; an evaluation every ``eval_every`` steps (and at step 0)."""
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    probe_batch = _to(task.batch(family, cfg, torch.Generator().manual_seed(99)), dev)
    curve = []

    def record(step):
        point = {"step": step, **task.evaluate(family, cfg, model)}
        if probe is not None:
            grad = None
            if pairs is not None:
                model.train()
                model.zero_grad(set_to_none=True)
                task.loss(family, model, *probe_batch).backward()
                grad = model.get_parameter(probe).grad
            point.update(mechanism(model, probe, pairs, grad))
            model.zero_grad(set_to_none=True)
        curve.append(point)

    record(0)
    model.train()
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = task.loss(family, model, *_to(task.batch(family, cfg, gen), dev))
        loss.backward()
        clip = task.clip(family)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if step % cfg["eval_every"] == 0 or step == steps:
            record(step)
            model.train()
    model.eval()
    return curve


def flops_per_step(task, family, cfg, model) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).train()
    batch = _to(task.batch(family, cfg, torch.Generator().manual_seed(0)), cfg["device"])
    with FlopCounterMode(display=False) as fc:
        task.loss(family, m, *batch).backward()
    return int(fc.get_total_flops())


# --------------------------------------------------------------------------------- jobs
def _to(batch, device):
    return tuple(t.to(device) for t in batch)


def _load(task, family, cfg, seed, state):
    small = task.small(family, cfg, seed).to(cfg["device"])
    small.load_state_dict(state["model"])
    opt = task.optimizer(family, small.parameters(), task.lr(family, cfg))
    opt.load_state_dict(state["opt"])
    return small.eval(), opt


def job_small(task, family, cfg, seed):
    task = _task(task)
    task.setup(cfg)
    torch.manual_seed(seed)
    small = task.small(family, cfg, seed).to(cfg["device"])
    opt = task.optimizer(family, small.parameters(), task.lr(family, cfg))
    t0 = time.perf_counter()
    curve = train(task, family, cfg, small, opt, cfg["small_steps"], seed)
    return {"kind": "small", "family": family, "seed": seed, "curve": curve,
            "seconds": time.perf_counter() - t0, "flops": flops_per_step(task, family, cfg, small),
            "params": sum(p.numel() for p in small.parameters()),
            "state": {"model": {k: v.cpu() for k, v in small.state_dict().items()},
                      "opt": _cpu(opt.state_dict())}}


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def _set_lr(opt, lr):
    for group in opt.param_groups:
        group["lr"] = lr
    return opt


def job_student(task, family, cfg, seed, arch, method, lr_name, state_name, small_state):
    """One grown model trained on (``arch`` "wide"/"deep", or "control": the small one)."""
    task = _task(task)
    task.setup(cfg)
    torch.manual_seed(1000 + seed)
    small, small_opt = _load(task, family, cfg, seed, small_state)
    lr = task.lr(family, cfg) * (0.1 if lr_name == "lr/10" else 1.0)
    rec = {"kind": "student", "family": family, "seed": seed, "arch": arch, "method": method,
           "lr_name": lr_name, "state": state_name, "lr": lr}
    try:
        if arch == "control":
            model = small
        elif arch == "wide":
            model = grow_width(task, family, cfg, small, method, seed)
        else:
            model = task.deepen(family, cfg, small, seed)
        if state_name == "grown":
            opt = _set_lr(_fxgrow().grow_optimizer(small_opt, small, model), lr)
        elif arch == "control":
            opt = _set_lr(small_opt, lr)
        else:
            opt = task.optimizer(family, model.parameters(), lr)
    except Exception as e:  # noqa: BLE001 -- report, do not crash the sweep
        return {**rec, "error": f"{type(e).__name__}: {e}"}
    probe = task.probe(family) if arch == "wide" else None
    pairs = _replica_pairs(model, probe) if probe else None
    t0 = time.perf_counter()
    rec["curve"] = train(task, family, cfg, model, opt, cfg["big_steps"], 2000 + seed, probe, pairs)
    rec.update(seconds=time.perf_counter() - t0, flops=flops_per_step(task, family, cfg, model),
               params=sum(p.numel() for p in model.parameters()))
    return rec


def job_scratch(task, family, cfg, seed, arch, lr, small_state):
    task = _task(task)
    task.setup(cfg)
    small, _ = _load(task, family, cfg, seed, small_state)
    model = scratch_model(task, family, cfg, small, arch, seed)
    opt = task.optimizer(family, model.parameters(), lr)
    t0 = time.perf_counter()
    curve = train(task, family, cfg, model, opt, cfg["big_steps"], 2000 + seed)
    return {"kind": "scratch", "family": family, "seed": seed, "arch": arch, "lr": lr,
            "curve": curve, "seconds": time.perf_counter() - t0,
            "flops": flops_per_step(task, family, cfg, model)}


def student_jobs(task, cfg, smalls):
    """Every (family, seed) x variant; the stage after the small models are trained."""
    jobs, name = [], task if isinstance(task, str) else task.__name__
    task = _task(task)
    for (family, seed), state in smalls.items():
        for lr_name in cfg["lrs"]:
            for init in WIDTH_INITS:
                for st in (("fresh",) if init == "random_init" else cfg["states"]):
                    jobs.append((job_student, (name, family, cfg, seed, "wide", init, lr_name, st,
                                               state)))
            for st in cfg["states"]:
                jobs.append((job_student, (name, family, cfg, seed, "deep", "deepen", lr_name, st,
                                           state)))
            jobs.append((job_student, (name, family, cfg, seed, "control", "small continued",
                                       lr_name, "grown", state)))
        base = task.lr(family, cfg)
        for arch in ("wide", "deep"):
            for factor in cfg["scratch_lr_factors"]:
                jobs.append((job_scratch, (name, family, cfg, seed, arch, base * factor, state)))
    return jobs


# ------------------------------------------------------------------------------ summary
def steps_to(curve, target, key="loss"):
    for point in curve:
        if point[key] <= target + 1e-12:
            return point["step"]
    return None


def ms(vals, fmt=".3f"):
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "–"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{statistics.fmean(vals):{fmt}} ± {statistics.stdev(vals):{fmt}}"


def summarise(cfg, results) -> Dict[str, Any]:
    out = {}
    for family in cfg["families"]:
        fam: Dict[str, Any] = {"rows": [], "sweep": [], "errors": [], "curves": {}}
        smalls = {r["seed"]: r for r in results if r["kind"] == "small" and r["family"] == family}
        if not smalls:
            continue
        small_flops = next(iter(smalls.values()))["flops"]
        fam["small"] = {"final": [r["curve"][-1]["loss"] for r in smalls.values()],
                        "flops": small_flops, "params": next(iter(smalls.values()))["params"],
                        "curves": [r["curve"] for r in smalls.values()]}
        targets, best = {}, {}
        for arch in ("wide", "deep"):
            by_lr: Dict[float, List[dict]] = {}
            for r in results:
                if r["kind"] == "scratch" and r["family"] == family and r["arch"] == arch:
                    by_lr.setdefault(r["lr"], []).append(r)
            for lr, rs in sorted(by_lr.items()):
                fam["sweep"].append({"arch": arch, "lr": lr, "final": ms([r["curve"][-1]["loss"]
                                                                          for r in rs])})
            if by_lr:
                lr = min(by_lr, key=lambda k: statistics.fmean(r["curve"][-1]["loss"]
                                                               for r in by_lr[k]))
                best[arch] = (lr, by_lr[lr])
                targets[arch] = statistics.fmean(r["curve"][-1]["loss"] for r in by_lr[lr])
        fam["targets"] = targets
        steps = cfg["big_steps"]

        def row(label, arch, runs, lr_name, state, scratch=False):
            tgt = targets.get("deep" if arch == "deep" else "wide")
            reached = [steps_to(r["curve"], tgt) if tgt is not None else None for r in runs]
            flops = runs[0]["flops"]
            s_flops = best[arch][1][0]["flops"] if arch in best else None
            hit = [s for s in reached if s is not None]
            mean_steps = statistics.fmean(hit) if hit else None
            scratch_steps = steps if arch in best else None
            done = bool(hit) and len(hit) == len(runs) and not scratch
            r = {"arch": arch, "method": label, "lr": lr_name, "state": state, "n": len(runs),
                 "start": ms([x["curve"][0]["loss"] for x in runs]),
                 "final": ms([x["curve"][-1]["loss"] for x in runs]),
                 "reached": f"{len(hit)}/{len(runs)}",
                 "steps": ms(hit, ".0f"),
                 "speedup": "1 (by def.)" if scratch else "–",
                 "flop_ratio": "–", "flop_ratio_all": "–"}
            if done and scratch_steps and s_flops:
                grown_f = mean_steps * flops
                at_growth = mean_steps == 0  # already there: the ratio is unbounded
                r["speedup"] = "∞ (at growth)" if at_growth else f"{scratch_steps / mean_steps:.2f}"
                r["flop_ratio"] = "∞" if at_growth else f"{s_flops * steps / grown_f:.2f}"
                r["flop_ratio_all"] = \
                    f"{s_flops * steps / (grown_f + cfg['small_steps'] * small_flops):.2f}"
            fam["rows"].append(r)
            fam["curves"][(arch, label, lr_name, state)] = [x["curve"] for x in runs]

        students = [r for r in results if r["kind"] == "student" and r["family"] == family]
        fam["errors"] = sorted({f"{r['arch']} {r['method']} {r['lr_name']} {r['state']}: "
                                f"{r['error']}" for r in students if "error" in r})
        keys = sorted({(r["arch"], r["method"], r["lr_name"], r["state"]) for r in students
                       if "error" not in r},
                      key=lambda k: (["wide", "deep", "control"].index(k[0]),
                                     cfg["lrs"].index(k[2]), k[3] != "grown",
                                     WIDTH_INITS.index(k[1]) if k[1] in WIDTH_INITS else 0))
        for arch, method, lr_name, state in keys:
            runs = [r for r in students if (r["arch"], r["method"], r["lr_name"], r["state"]) ==
                    (arch, method, lr_name, state) and "error" not in r]
            row(method, "wide" if arch == "control" else arch, runs, lr_name, state)
            if arch == "control":
                fam["rows"][-1]["arch"] = "control"
        for arch, (lr, rs) in best.items():
            row(f"scratch (best lr {lr:g})", arch, rs, f"{lr:g}", "fresh", scratch=True)
        out[family] = fam
    return out
