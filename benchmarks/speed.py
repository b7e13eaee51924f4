"""Speed and memory of fxgrow's analyze / widen / deepen, next to measured floors.

For each model, in the same process and run:

* floors: ``torch.fx.symbolic_trace`` + ``ShapeProp`` (under ``no_grad``), ``copy.deepcopy``;
* fxgrow: ``analyze``, ``widen(x2)`` (``verify=False``: the growth itself; the default
  verification is timed separately) and ``deepen(after="all", method="auto")``;
* Torch-Pruning's ``DependencyGraph().build_dependency`` (the nearest existing analysis).

Times are medians over ``--repeats`` runs after one warm-up.  Peak memory is measured in a fresh
child process per (model, operation): CPU: the rise of the peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``) over the RSS after the model was built, plus the Python-heap peak from
``tracemalloc`` in a second run; CUDA: ``torch.cuda.max_memory_allocated`` over the allocation
before the call.  Both are compared with the old + new parameter (and buffer) bytes.

The floor table (``--floor``, issue 17): per model, the **floor** = ``torch.fx.symbolic_trace``
+ ``ShapeProp`` (under ``no_grad``) + allocating and filling each parameter of the grown model once
(``torch.empty(shape).fill_``; the shapes come from one untimed ``widen``), next to
``analyze + widen(x2, verify=False)``, ``analyze`` and Torch-Pruning's ``build_dependency``.  The
operations are timed in interleaved rounds (one of each per round, ``--repeats`` rounds after a
warm-up round), so a machine shared with other work slows them alike; wall-clock medians, and
the process CPU time medians next to them.

Scaling: an MLP and a ResNet-style net at depth 10/100/1000 and width 64...4096; the fitted
exponent of time ~ depth^k (k = 1 is linear) and the slope in ms per layer.

Usage::

    python benchmarks/speed.py --quick                 # a couple of minutes on a laptop
    python benchmarks/speed.py --device cuda --json out.json --md out.md
    python benchmarks/speed.py --profile vit_b_16      # cProfile of analyze+widen and deepen
    python benchmarks/speed.py --floor --threads 1 --repeats 5   # the floor table, four models

Nothing here asserts timings: the script prints and records.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _common import machine, md_table, progress  # noqa: E402

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "densenet121", "vit_b_16", "convnext_tiny", "maxvit_t"]
QUICK_MODELS = ["resnet18", "mobilenet_v2"]
FLOOR_MODELS = ["resnet50", "vit_b_16", "convnext_tiny", "densenet121"]
OPS = ["trace+shapeprop", "deepcopy", "analyze", "analyze+widen", "deepen", "depgraph"]


# ----------------------------------------------------------------------------------- models
class MLP(nn.Sequential):
    def __init__(self, depth, width, classes=10):
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.ReLU()]
        super().__init__(*layers, nn.Linear(width, classes))


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        return x + self.relu(self.bn(self.conv(x)))


class ResNetStyle(nn.Module):
    """Stem conv, ``depth`` residual conv-BN-ReLU blocks, pooled linear head."""

    def __init__(self, depth, width, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(width) for _ in range(depth)])
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


def build(name: str):
    """A model (eval mode) and an example input, by name: torchvision name, ``mlp:D:W`` or ``res:D:W``."""
    torch.manual_seed(0)
    if name.startswith("mlp:"):
        _, d, w = name.split(":")
        return MLP(int(d), int(w)).eval(), torch.randn(2, int(w))
    if name.startswith("res:"):
        _, d, w = name.split(":")
        return ResNetStyle(int(d), int(w)).eval(), torch.randn(2, 3, 8, 8)
    import torchvision

    return getattr(torchvision.models, name)().eval(), torch.randn(1, 3, 224, 224)


def nbytes(module: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


# -------------------------------------------------------------------------------- operations
def op_fn(op: str):
    """The callable ``f(model, x) -> result`` for one operation."""
    import fxgrow

    if op == "trace+shapeprop":
        from torch.fx.passes.shape_prop import ShapeProp

        def f(m, x):
            gm = torch.fx.symbolic_trace(m)
            with torch.no_grad():
                ShapeProp(gm).propagate(x)
            return gm

    elif op == "deepcopy":

        def f(m, x):
            return copy.deepcopy(m)

    elif op == "analyze":

        def f(m, x):
            return fxgrow.analyze(m, x)

    elif op == "analyze+widen":

        def f(m, x):
            return fxgrow.widen(m, x, 2.0, verify=False)

    elif op == "deepen":
        if not hasattr(fxgrow, "deepen"):
            raise RuntimeError("fxgrow.deepen is not available in this version")

        def f(m, x):
            return fxgrow.deepen(m, x, after="all", method="auto", calibration=x, verify=False)

    elif op == "depgraph":
        import torch_pruning as tp

        def f(m, x):
            return tp.DependencyGraph().build_dependency(m, example_inputs=x)

    else:
        raise ValueError(op)
    return f


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_op(fn, m, x, repeats, device):
    """Median seconds over ``repeats`` calls after one warm-up; the last result."""
    res = fn(m, x)  # warm-up (lazy imports, caches); also surfaces errors once
    times = []
    for _ in range(repeats):
        del res
        gc.collect()
        _sync(device)
        t = time.perf_counter()
        res = fn(m, x)
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), res


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:160]}"


# ------------------------------------------------------------------------------------ memory
def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def mem_child(name, op, device):
    """Runs in a fresh process: peak memory of one operation; prints one JSON line."""
    import tracemalloc

    torch.set_num_threads(1)
    m, x = build(name)
    m, x = m.to(device), x.to(device)
    fn = op_fn(op)
    out = {"model": name, "op": op, "device": device, "old_bytes": nbytes(m)}
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        res = fn(m, x)
        torch.cuda.synchronize()
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - base
    else:
        rss = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        res = fn(m, x)
        out["peak_bytes"] = (_status_kb("VmHWM") - rss) * 1024
    out["new_bytes"] = nbytes(res) if isinstance(res, nn.Module) and op != "analyze" else 0
    if op in ("trace+shapeprop", "analyze", "depgraph"):
        out["new_bytes"] = 0  # these share the model's tensors
    del res
    gc.collect()
    if op in ("analyze", "analyze+widen", "deepen"):  # Python-heap peak (slow: only for fxgrow's ops)
        tracemalloc.start()
        res = fn(m, x)
        out["py_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print("MEMRESULT " + json.dumps(out), flush=True)


def measure_memory(jobs, device, workers, on_result=None):
    """Peak memory for each (model, op) in ``jobs``, each in a fresh child process."""

    def one(job):
        name, op = job
        cmd = [sys.executable, os.path.abspath(__file__), "--_mem-child", name, op, "--device", device]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            return {"model": name, "op": op, "error": "timeout"}
        for line in p.stdout.splitlines():
            if line.startswith("MEMRESULT "):
                return json.loads(line[len("MEMRESULT "):])
        err = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": name, "op": op, "error": err[:200]}

    results = []
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for r in progress(ex.map(one, jobs), total=len(jobs), desc=f"memory ({device})"):
            results.append(r)
            if on_result:
                on_result(results)
    return results


# ---------------------------------------------------------------------------------- benches
def bench_models(names, ops, repeats, device, bar_desc, on_row=None):
    rows = []
    for name in progress(names, desc=bar_desc):
        m, x = build(name)
        m, x = m.to(device), x.to(device)
        row = {"model": name, "params_M": sum(p.numel() for p in m.parameters()) / 1e6, "old_MB": nbytes(m) / 2**20}
        for op in ops:
            try:
                t, res = time_op(op_fn(op), m, x, repeats, device)
                row[op] = t
                if op == "analyze":
                    row["groups"] = len(res.groups)
                    row["growable"] = len(res.growable)
                elif op == "analyze+widen":
                    row["new_MB"] = nbytes(res) / 2**20
                    try:  # the default path verifies: time that separately, once
                        import fxgrow

                        _sync(device)
                        t0 = time.perf_counter()
                        rep = fxgrow.verify(m, res, x)
                        _sync(device)
                        row["verify"] = time.perf_counter() - t0
                        row["verify_ok"] = bool(rep.ok)
                        row["verify_max_rel"] = float(rep.max_rel)
                    except Exception as e:  # noqa: BLE001
                        row["verify_error"] = _short(e)
                elif op == "deepen":
                    row["blocks"] = len(res.meta.get("fxgrow.deepen", ()))
                del res
            except Exception as e:  # noqa: BLE001 -- report and go on
                row[op + "_error"] = _short(e)
                if os.environ.get("FXGROW_BENCH_TRACEBACK"):
                    traceback.print_exc()
            gc.collect()
        floor = sum(row.get(k, math.nan) for k in ("trace+shapeprop", "deepcopy"))
        row["floor"] = floor
        if "analyze+widen" in row:
            row["widen_over_floor"] = row["analyze+widen"] / floor
        if "analyze+widen" in row and "depgraph" in row:
            row["widen_over_depgraph"] = row["analyze+widen"] / row["depgraph"]
        if "analyze" in row and "depgraph" in row:
            row["analyze_over_depgraph"] = row["analyze"] / row["depgraph"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if on_row:
            on_row(rows)
        del m, x
        gc.collect()
    return rows


def floor_fn(m, x):
    """The floor of growing ``m`` twofold: trace + ShapeProp + writing each grown parameter once.

    The grown shapes are read from one (untimed) ``widen``; returns the callable and the
    grown parameter count.
    """
    import fxgrow
    from torch.fx.passes.shape_prop import ShapeProp

    grown = fxgrow.widen(m, x, 2.0, verify=False)
    shapes = [(tuple(p.shape), p.dtype) for p in grown.parameters()]
    count = sum(p.numel() for p in grown.parameters())
    del grown

    def f(m, x):
        gm = torch.fx.symbolic_trace(m)
        with torch.no_grad():
            ShapeProp(gm).propagate(x)
        return gm, [torch.empty(s, dtype=d, device=x.device).fill_(1.0) for s, d in shapes]

    return f, count


def bench_floor(names, repeats, device, on_row=None):
    """The floor table: floor, analyze+widen, analyze and DepGraph per model, interleaved."""
    rows = []
    for name in progress(names, desc=f"floor ({device})"):
        m, x = build(name)
        m, x = m.to(device), x.to(device)
        floor, grown = floor_fn(m, x)
        ops = {"floor": floor, "analyze+widen": op_fn("analyze+widen"), "analyze": op_fn("analyze")}
        row = {"model": name, "params_M": sum(p.numel() for p in m.parameters()) / 1e6,
               "grown_params_M": grown / 1e6}
        try:
            ops["depgraph"] = op_fn("depgraph")
        except ImportError as e:
            row["depgraph_error"] = _short(e)
        wall = {op: [] for op in ops}
        cpu = {op: [] for op in ops}
        for r in range(repeats + 1):  # round 0 warms up (imports, caches)
            for op, fn in ops.items():
                try:
                    gc.collect()
                    _sync(device)
                    t, c = time.perf_counter(), time.process_time()
                    res = fn(m, x)
                    _sync(device)
                    if r:
                        wall[op].append(time.perf_counter() - t)
                        cpu[op].append(time.process_time() - c)
                    del res
                except Exception as e:  # noqa: BLE001 -- report and go on
                    row[op + "_error"] = _short(e)
                    ops = {k: v for k, v in ops.items() if k != op}
        for op in wall:
            if wall[op]:
                row[op] = statistics.median(wall[op])
                row[op + "_cpu"] = statistics.median(cpu[op])
        if "floor" in row and "analyze+widen" in row:
            row["over_floor"] = row["analyze+widen"] / row["floor"]
            row["over_floor_cpu"] = row["analyze+widen_cpu"] / row["floor_cpu"]
        if "analyze" in row and "depgraph" in row:
            row["analyze_over_depgraph"] = row["analyze"] / row["depgraph"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if on_row:
            on_row(rows)
        del m, x
        gc.collect()
    return rows


def fit(xs, ys):
    """Exponent k of y ~ x^k (log-log least squares) and slope of y ~ a + b x."""
    pts = [(a, b) for a, b in zip(xs, ys) if b and b > 0 and not math.isnan(b)]
    if len(pts) < 2:
        return None, None
    lx = [math.log(a) for a, _ in pts]
    ly = [math.log(b) for _, b in pts]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    k = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
    xs_, ys_ = [a for a, _ in pts], [b for _, b in pts]
    mx, my = statistics.fmean(xs_), statistics.fmean(ys_)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs_, ys_)) / sum((a - mx) ** 2 for a in xs_)
    return k, slope


# ------------------------------------------------------------------------------------ report
def _ms(v):
    return f"{1000 * v:.0f}" if v >= 0.1 else f"{1000 * v:.1f}"


def _mb(v):
    return f"{v / 2**20:.1f}"


def render(res) -> str:
    dev = res["device"]
    out = []
    if res.get("floor"):
        s = lambda v: f"{v:.3f}"  # noqa: E731
        out += [f"### analyze + widen x2 against the floor ({dev})", ""]
        out.append(md_table(res["floor"], [
            ("model", "model", None),
            ("grown_params_M", "grown params (M)", ".1f"),
            ("floor", "floor s", s),
            ("analyze+widen", "analyze+widen s", s),
            ("over_floor", "ratio", ".2f"),
            ("over_floor_cpu", "ratio (CPU time)", ".2f"),
            ("analyze", "analyze s", s),
            ("depgraph", "DepGraph s", s),
            ("analyze_over_depgraph", "analyze ÷ DepGraph", ".2f"),
        ]))
        out.append("")
    if res.get("models"):
        out += [f"### Models ({dev})", ""]
        out.append(
        md_table(
            res["models"],
            [
                ("model", "model", None),
                ("params_M", "params (M)", ".1f"),
                ("trace+shapeprop", "trace+ShapeProp ms", _ms),
                ("deepcopy", "deepcopy ms", _ms),
                ("analyze", "analyze ms", _ms),
                ("analyze+widen", "analyze+widen×2 ms", _ms),
                ("widen_over_floor", "÷ (trace+SP+deepcopy)", ".2f"),
                ("verify", "(verify ms)", _ms),
                ("deepen", "deepen(all) ms", _ms),
                ("blocks", "blocks", None),
                ("depgraph", "DepGraph ms", _ms),
                ("widen_over_depgraph", "widen ÷ DepGraph", ".2f"),
                ("groups", "groups", None),
                ("growable", "growable", None),
            ],
        )
    )
    errs = [(r["model"], k[: -len("_error")], v) for r in res.get("models", ()) for k, v in r.items() if k.endswith("_error")]
    if errs:
        out += ["", "Errors:", ""] + [f"- `{m}` {op}: `{e}`" for m, op, e in errs]
    if res.get("memory"):
        out += ["", f"### Peak memory ({dev}; MB above the loaded model)", ""]
        by = {}
        for r in res["memory"]:
            by.setdefault(r["model"], {"model": r["model"]})
            row = by[r["model"]]
            if "error" in r:
                row[r["op"]] = "err"
                continue
            row["old"] = r["old_bytes"]
            row[r["op"]] = r["peak_bytes"]
            if "py_peak_bytes" in r:
                row[r["op"] + "_py"] = r["py_peak_bytes"]
            if r["op"] == "analyze+widen":
                row["new"] = r["new_bytes"]
                row["ratio"] = (r["old_bytes"] + r["peak_bytes"]) / (r["old_bytes"] + r["new_bytes"])
            if r["op"] == "deepen":
                row["deep_new"] = r["new_bytes"]
                row["deep_ratio"] = (r["old_bytes"] + r["peak_bytes"]) / (r["old_bytes"] + r["new_bytes"])
        mb = lambda v: v if isinstance(v, str) else _mb(v)  # noqa: E731
        cols = [("model", "model", None), ("old", "old weights", mb), ("new", "new weights (×2)", mb)]
        cols += [(op, op, mb) for op in OPS if any(op in r for r in by.values())]
        cols += [
            ("ratio", "(old+peak widen) ÷ (old+new)", ".2f"),
            ("deep_ratio", "(old+peak deepen) ÷ (old+new)", ".2f"),
            ("analyze+widen_py", "widen Python heap (tracemalloc)", mb),
        ]
        out.append(md_table(list(by.values()), cols))
    if res.get("scaling"):
        out += ["", f"### Scaling ({dev})", ""]
        out.append(
            md_table(
                res["scaling"],
                [
                    ("model", "net", None),
                    ("depth", "depth", None),
                    ("width", "width", None),
                    ("trace+shapeprop", "trace+SP ms", _ms),
                    ("deepcopy", "deepcopy ms", _ms),
                    ("analyze", "analyze ms", _ms),
                    ("analyze+widen", "analyze+widen ms", _ms),
                    ("widen_over_floor", "÷ floor", ".2f"),
                    ("deepen", "deepen ms", _ms),
                    ("widen_peak", "widen peak MB", lambda v: _mb(v)),
                    ("widen_ratio", "(old+peak)÷(old+new)", ".2f"),
                ],
            )
        )
        out += ["", "Fits over depth at fixed width (time ∝ depth^k; slope in ms per layer):", ""]
        out.append(
            md_table(
                res["fits"],
                [
                    ("series", "series", None),
                    ("op", "op", None),
                    ("k", "exponent k", ".2f"),
                    ("slope_ms", "ms / layer", ".2f"),
                ],
            )
        )
    return "\n".join(out)


# --------------------------------------------------------------------------------- scaling
def scaling_configs(quick):
    if quick:
        depths, mlp_w, res_w = [10, 100], [64, 256], [16, 64]
    else:
        depths, mlp_w, res_w = [10, 100, 1000], [64, 256, 1024, 4096], [16, 64, 256, 1024]
    cfgs = [("mlp", d, 64) for d in depths] + [("mlp", 10, w) for w in mlp_w if w != 64]
    cfgs += [("res", d, 16) for d in depths] + [("res", 10, w) for w in res_w if w != 16]
    return cfgs


def bench_scaling(quick, repeats, device, mem_workers):
    cfgs = scaling_configs(quick)
    names = [f"{k}:{d}:{w}" for k, d, w in cfgs]
    ops = ["trace+shapeprop", "deepcopy", "analyze", "analyze+widen", "deepen"]
    rows = bench_models(names, ops, repeats, device, f"scaling ({device})")
    for r, (k, d, w) in zip(rows, cfgs):
        r.update(model={"mlp": "MLP", "res": "ResNet-style"}[k], depth=d, width=w, name=f"{k}:{d}:{w}")
    mem = measure_memory([(n, "analyze+widen") for n in names], device, mem_workers)
    for r, mrow in zip(rows, mem):
        if "peak_bytes" in mrow:
            r["widen_peak"] = mrow["peak_bytes"]
            r["widen_ratio"] = (mrow["old_bytes"] + mrow["peak_bytes"]) / (mrow["old_bytes"] + mrow["new_bytes"])
    fits = []
    for series, kind, w in (("MLP width 64", "mlp", 64), ("ResNet-style width 16", "res", 16)):
        sub = [r for r, c in zip(rows, cfgs) if c[0] == kind and c[2] == w]
        sub.sort(key=lambda r: r["depth"])
        for op in ops + ["widen_peak"]:
            k, slope = fit([r["depth"] for r in sub], [r.get(op, math.nan) for r in sub])
            if k is not None:
                scale = 1000 if op != "widen_peak" else 1
                fits.append({"series": series, "op": op if op != "widen_peak" else "widen peak bytes (slope in bytes/layer)", "k": k, "slope_ms": slope * scale})
    return rows, fits


# ------------------------------------------------------------------------------------- main
def profile(name, device):
    import cProfile
    import pstats

    m, x = build(name)
    m, x = m.to(device), x.to(device)
    for op in ("analyze+widen", "deepen"):
        fn = op_fn(op)
        fn(m, x)
        pr = cProfile.Profile()
        pr.enable()
        fn(m, x)
        pr.disable()
        print(f"\n===== {name} {op}: top by cumulative time =====")
        pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
        print(f"\n===== {name} {op}: top by own time =====")
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two models, small scaling sweep, 1 repeat")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="*", help="torchvision model names (default: all seven)")
    ap.add_argument("--repeats", type=int, help="timed runs per op (median); default 3, quick 1")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads for the timed runs")
    ap.add_argument("--mem-workers", type=int, default=2, help="child processes measuring memory at once")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--mem-ops", nargs="*", default=OPS, help="operations whose peak memory is measured")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-models", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="models: peak memory only, no timing")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--md", help="write the markdown tables here")
    ap.add_argument("--floor", action="store_true",
                    help="only the floor table (default models: " + ", ".join(FLOOR_MODELS) + ")")
    ap.add_argument("--profile", metavar="MODEL", help="cProfile analyze+widen and deepen on MODEL and exit")
    ap.add_argument("--_mem-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    if args._mem_child:
        mem_child(*args._mem_child, args.device)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        profile(args.profile, args.device)
        return
    repeats = args.repeats or (1 if args.quick else 3)
    names = args.models or (QUICK_MODELS if args.quick else TORCHVISION)
    res = {"machine": machine(args.device), "device": args.device, "repeats": repeats, "quick": args.quick}

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        if args.md:
            with open(args.md, "w") as f:
                f.write(render(res) + "\n")

    if args.floor:
        res["floor"] = bench_floor(args.models or FLOOR_MODELS, repeats, args.device,
                                   lambda rows: (res.__setitem__("floor", rows), save()))
        save()
        print(json.dumps(res["machine"]))
        print(render(res))
        return
    if not args.no_models and not args.memory_only:

        def on_row(rows):
            res["models"] = rows
            save()

        res["models"] = bench_models(names, OPS, repeats, args.device, f"models ({args.device})", on_row)
        save()
    if not args.no_models:
        if not args.no_memory:
            jobs = [(n, op) for n in names for op in args.mem_ops]
            res["memory"] = measure_memory(jobs, args.device, args.mem_workers, lambda rs: (res.__setitem__("memory", rs), save()))
            save()
    if not args.no_scaling and not args.memory_only:
        res["scaling"], res["fits"] = bench_scaling(args.quick, repeats, args.device, args.mem_workers)
        save()
    print(json.dumps(res["machine"]))
    print(render(res))


if __name__ == "__main__":
    main()
