"""What the zoo sweeps share: measure one model, run many in child processes, write docs/zoo.md.

``zoo_timm.py`` and ``zoo_hf.py`` each turn a name into a :class:`Case` (the
model, its example input, fresh inputs of the same shapes, how to call it, the
tolerance); :func:`measure` does the rest for one model:

1. the original's outputs on the example and the fresh inputs;
2. ``a = fxgrow.analyze(model, example)``: nodes, capture method, groups,
   growable groups, *coverage* (the share of non-fixed neurons that are in
   growable groups), the *top blocker* (the op named by the first reason of the
   biggest blocked group) and the blocked neurons by op;
3. each step of :func:`fxgrow.testing.zoo.widen_specs` (``x2``, ``x1.5``,
   ``head dim``): ``fxgrow.widen(a, example, spec, verify=False)``, then the
   grown model against the original on every input with
   :func:`fxgrow.testing.zoo.output_error` -- fxgrow's own verification is off,
   so the comparison is independent of it.  A step is

   ``ok``       within the tolerance on every input,
   ``WRONG``    the grown model runs and differs,
   ``BROKEN``   the grown model raises,
   ``RAW``      fxgrow raised something that is not an ``FxGrowError``, or an
                ``AnalysisError`` (a rule crashed),
   ``refused``  fxgrow raised an ``FxGrowError`` on purpose;

   a ``WRONG`` or ``BROKEN`` step records where the grown graph first departs
   from the analysis (``fxgrow.widen.diagnose.first_divergence``), and a
   float32 ``WRONG`` step is recomputed in float64 when the case can be rebuilt
   so (rounding through a long network is not an error);
4. the mutation check: every state_dict tensor's bytes, ``requires_grad`` and
   training flags before and after (:func:`fxgrow.testing.zoo.fingerprint`).

A row's ``outcome`` is its worst step's (``nogrow`` when no group can grow),
or, before any step: ``RAW``/``refused`` from ``analyze``, ``skip`` (the model
itself cannot be built or run: not fxgrow's business), ``timeout``, ``crash``
(the child died: out of memory, a segfault).

:func:`run_all` runs each model in a forked child (address-space limit,
wall-clock timeout, its output in a log file) and appends one JSON line per
model to the results file as it finishes, so a sweep resumes where it
stopped; each row records the hash of the fxgrow source that measured it, so
``--update`` re-runs only rows an older fxgrow measured.  The page sections and
the command line are in ``zoo_page.py``.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's fxgrow, before any installed one

import fxgrow  # noqa: E402
from fxgrow.testing import zoo  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
DOC = os.path.join(ROOT, "docs", "zoo.md")
STEPS = ("x2", "x1.5", "head dim")
BAD = ("WRONG", "BROKEN", "RAW")
#: how bad a step's outcome is; a row takes its worst step's
SEVERITY = {"ok": 0, "refused": 1, "RAW": 2, "BROKEN": 3, "WRONG": 4}
TOL = {"float64": 1e-9, "float32": 1e-4}
#: rows measured with another version of this file's logic are re-run by --update
MEASURE_VERSION = 1


@dataclass
class Case:
    """One model ready to measure.

    ``call(model, x, i)`` runs a model (the original, the captured graph or a
    grown one) on input ``x``, the ``i``-th of ``[example] + fresh``;
    ``float64`` rebuilds the case in float64 to recheck a float32 ``WRONG``.
    """

    model: torch.nn.Module
    example: Any
    fresh: List[Any]
    call: Callable[[Any, Any, int], Any]
    dtype: str
    float64: Optional[Callable[[], "Case"]] = None
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def tol(self) -> float:
        return TOL[self.dtype]


# ------------------------------------------------------------------ provenance

def source_hash() -> str:
    """A hash of fxgrow's source (every .py file under fxgrow/) and MEASURE_VERSION."""
    h = hashlib.sha1(str(MEASURE_VERSION).encode())
    pkg = os.path.dirname(fxgrow.__file__)
    for folder, dirs, files in sorted(os.walk(pkg)):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                h.update(os.path.relpath(path, pkg).encode())
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()[:12]


def git_commit() -> str:
    """The checkout's commit (``+dirty`` when fxgrow/ has uncommitted changes), or ``?``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fxgrow"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine() -> str:
    return (f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, one thread")


# --------------------------------------------------------------------- analysis

_NODE = re.compile(r"node `([^`]+)`")


def elide(reason: str, n: int = 110) -> str:
    """A reason with node names and numbers elided, so reasons aggregate."""
    r = re.sub(r"\s*\(node `[^`]*`\)", "", reason)
    r = re.sub(r"`[^`]*`", "`…`", r)
    r = re.sub(r"\b\d+\b", "N", r).strip()
    return r if len(r) <= n else r[: n - 1] + "…"


def reason_op(reason: str, ops: Dict[str, str]) -> str:
    """The op of the node a reason names (``aten.index.Tensor``), else its first words."""
    for name in _NODE.findall(reason):
        if name in ops:
            return ops[name]
    return elide(reason, 60)


def analysis_stats(a) -> Dict[str, Any]:
    """Groups, growable groups, coverage, the top blocker and blocked neurons by op."""
    ops = {}
    for n in a.graph_module.graph.nodes:
        op = n.meta.get("fxgrow.op")
        ops[n.name] = str(op) if op else f"{n.op}:{getattr(n.target, '__name__', n.target)}"
    groups = a.groups
    growable = [g for g in groups if g.status == "growable"]
    nonfixed = [g for g in groups if g.status != "fixed"]
    blocked = sorted((g for g in groups if g.status == "blocked"), key=lambda g: (-g.size, g.id))
    den = sum(g.size for g in nonfixed)
    by_op: Counter = Counter()
    for g in blocked:
        by_op[reason_op(g.reasons[0], ops) if g.reasons else "?"] += g.size
    cap = dict(a.graph_module.meta.get("fxgrow.capture") or {})
    out: Dict[str, Any] = {
        "capture": cap.get("method", "?"),
        "nodes": len(a.graph_module.graph.nodes),
        "groups": len(groups), "growable": len(growable), "blocked": len(blocked),
        "fixed": len(groups) - len(nonfixed),
        "growable_neurons": sum(g.size for g in growable), "nonfixed_neurons": den,
        "coverage": sum(g.size for g in growable) / den if den else None,
        "blocked_by_op": dict(by_op.most_common(8)),
    }
    if cap.get("fallback_reason"):
        out["fx_fallback"] = str(cap["fallback_reason"])[:200]
    if blocked and blocked[0].reasons:
        g = blocked[0]
        m = _NODE.search(g.reasons[0])
        out["top_blocker"] = {"op": reason_op(g.reasons[0], ops), "reason": elide(g.reasons[0]),
                              "node": m.group(1) if m else None, "group": g.id,
                              "neurons": g.size}
    return out


# ------------------------------------------------------------------ measuring

def classify(e: BaseException) -> str:
    """``refused`` for an FxGrowError raised on purpose; ``RAW`` for anything else
    and for AnalysisError (a rule crashed)."""
    if isinstance(e, fxgrow.FxGrowError) and not isinstance(e, fxgrow.AnalysisError):
        return "refused"
    return "RAW"


def _err(e: BaseException, n: int = 600) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) <= n else s[: n - 1] + "…"


def _finite(x: float) -> Any:
    return x if x == x and x != float("inf") else "inf"


def _divergence(a, spec) -> str:
    from fxgrow.capture.inputs import bind_inputs
    from fxgrow.widen.diagnose import first_divergence
    try:
        plan = fxgrow.plan_widening(a, spec, seed=0)
        grown = fxgrow.apply_plan(plan)
        where = first_divergence(plan, grown, bind_inputs(a.graph_module, a.args, a.kwargs))
        return (where or "none found on the example")[:600]
    except Exception as e:  # a diagnosis that fails must not hide the outcome
        return f"could not diagnose: {_err(e, 200)}"


def grow_step(a, case: Case, spec: Dict[int, float], refs: List[Any]) -> Dict[str, Any]:
    """Widen by ``spec`` with ``verify=False`` and compare with the original on every input."""
    s: Dict[str, Any] = {"groups": len(spec)}
    t = time.perf_counter()
    try:
        grown = fxgrow.widen(a, case.example, spec, verify=False)
    except Exception as e:
        s.update(outcome=classify(e), stage="widen", error=_err(e))
        if s["outcome"] == "RAW":
            s["traceback"] = traceback.format_exc()[-2000:]
        return s
    s["t_widen"] = round(time.perf_counter() - t, 2)
    s["params"] = sum(p.numel() for p in grown.parameters())
    worst, errs = 0.0, []
    xs = [case.example] + case.fresh
    try:
        for i, x in enumerate(xs):
            with torch.no_grad():
                err, note = zoo.output_error(refs[i], case.call(grown, x, i))
            errs.append(_finite(err))
            if err > worst:
                worst = err
                if err > case.tol:
                    s["note"] = f"input {i}: {note}"
    except Exception as e:
        s.update(outcome="BROKEN", error=_err(e), traceback=traceback.format_exc()[-2000:])
    else:
        s.update(errs=errs, err=_finite(worst), outcome="ok" if worst <= case.tol else "WRONG")
    del grown
    gc.collect()  # a GraphModule is a reference cycle: free its weights now
    if s["outcome"] != "ok":
        s["divergence"] = _divergence(a, spec)
    return s


def _recheck_float64(case: Case, steps: Dict[str, Dict[str, Any]]) -> None:
    """Recompute float32 WRONG steps in float64; exact there means fp32 rounding."""
    wrong = [k for k, v in steps.items() if v.get("outcome") == "WRONG" and v["err"] != "inf"]
    if not wrong or case.dtype != "float32" or case.float64 is None:
        return
    try:
        c64 = case.float64()
        xs = [c64.example] + c64.fresh
        with torch.no_grad():
            refs = [c64.call(c64.model, x, i) for i, x in enumerate(xs)]
        a = fxgrow.analyze(c64.model, c64.example)
        specs = zoo.widen_specs(a)
        for k in wrong:
            r = grow_step(a, c64, specs[k], refs) if k in specs else {"outcome": "absent"}
            steps[k]["float64"] = {key: r[key] for key in ("outcome", "err", "error") if key in r}
            if r["outcome"] == "ok":
                steps[k]["outcome"] = "ok"
                steps[k]["note"] = f"float64 error {r['err']:.1e}: the float32 error is rounding"
    except Exception as e:
        for k in wrong:
            steps[k]["float64"] = {"error": _err(e, 200)}


def measure(case: Case) -> Dict[str, Any]:
    """Everything for one model (see the module documentation); never raises."""
    model = case.model
    rec: Dict[str, Any] = dict(case.info, dtype=case.dtype,
                               params=sum(p.numel() for p in model.parameters()))
    xs = [case.example] + case.fresh
    with torch.no_grad():
        refs = [case.call(model, x, i) for i, x in enumerate(xs)]
        if zoo.output_error(refs[0], case.call(model, case.example, 0))[0] > case.tol:
            rec.update(outcome="skip", error="the model is not deterministic")
            return rec
    before = zoo.fingerprint(model)
    t = time.perf_counter()
    try:
        a = fxgrow.analyze(model, case.example)
    except Exception as e:
        rec.update(outcome=classify(e), stage="analyze", error=_err(e),
                   t_analyze=round(time.perf_counter() - t, 2))
        if rec["outcome"] == "RAW":
            rec["traceback"] = traceback.format_exc()[-2000:]
        rec["mutated"] = sorted(k for k, v in zoo.fingerprint(model).items() if before.get(k) != v)
        return rec
    rec["t_analyze"] = round(time.perf_counter() - t, 2)
    rec.update(analysis_stats(a))
    cap = []  # the captured, ungrown graph: a difference there is capture's, not growth's
    for i, x in enumerate(xs):
        try:
            with torch.no_grad():
                cap.append(_finite(zoo.output_error(refs[i], case.call(a.graph_module, x, i))[0]))
        except Exception as e:
            cap.append("inf")
            rec["capture_error"] = _err(e, 300)
    rec["capture_err"] = cap
    specs = zoo.widen_specs(a)
    rec["steps"] = {step: grow_step(a, case, spec, refs) for step, spec in specs.items()}
    _recheck_float64(case, rec["steps"])
    rec["mutated"] = sorted(k for k, v in zoo.fingerprint(model).items() if before.get(k) != v)
    outs = [s["outcome"] for s in rec["steps"].values()]
    rec["outcome"] = max(outs, key=SEVERITY.__getitem__) if outs else "nogrow"
    errs = [s["err"] for s in rec["steps"].values() if "err" in s]
    rec["max_err"] = "inf" if "inf" in errs else (max(errs) if errs else None)
    return rec


# ---------------------------------------------------------------- running many

class Results:
    """The results file: one JSON line per model, the last line of a key wins."""

    def __init__(self, path: str, key: str) -> None:
        self.path, self.key = path, key
        self.rows: Dict[str, Dict[str, Any]] = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a crash
                        continue
                    self.rows[r[key]] = r

    def add(self, row: Dict[str, Any]) -> None:
        self.rows[row[self.key]] = row
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str, sort_keys=True) + "\n")

    def compact(self, order: Sequence[str] = ()) -> None:
        """Rewrite the file with one line per key (``order`` first, then the rest)."""
        keys = [k for k in order if k in self.rows] + sorted(set(self.rows) - set(order))
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for k in keys:
                f.write(json.dumps(self.rows[k], default=str, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def _child(fn: Callable[[str], Dict[str, Any]], name: str, out: str, log: str,
           mem_gb: float) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        lim = int(mem_gb * 1024 ** 3)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        torch.set_num_threads(1)
        row = fn(name)
    except BaseException as e:  # noqa: BLE001 - reported, never lost
        kind = "crash" if isinstance(e, MemoryError) else "skip"
        row = {"outcome": kind, "error": _err(e), "traceback": traceback.format_exc()[-2000:]}
    with open(out, "w") as f:
        json.dump(row, f, default=str)
    sys.stdout.flush()
    os._exit(0)


def run_isolated(fn: Callable[[str], Dict[str, Any]], name: str, timeout: float,
                 mem_gb: float) -> Dict[str, Any]:
    """``fn(name)`` in a forked child with an address-space limit and a timeout."""
    tmp = tempfile.mkdtemp(prefix="fxgrow_zoo_")
    out, log = os.path.join(tmp, "row.json"), os.path.join(tmp, "log.txt")
    t = time.perf_counter()
    p = mp.get_context("fork").Process(target=_child, args=(fn, name, out, log, mem_gb))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        row = {"outcome": "timeout", "error": f"no result within {timeout:.0f} s"}
    elif os.path.exists(out):
        with open(out) as f:
            row = json.load(f)
    else:
        tail = open(log, errors="replace").read()[-600:] if os.path.exists(log) else ""
        row = {"outcome": "crash", "error": f"the child died (exit code {p.exitcode}): {tail}"}
    for f in (out, log):
        if os.path.exists(f):
            os.remove(f)
    os.rmdir(tmp)
    row["t_wall"] = round(time.perf_counter() - t, 1)
    return row


def line(row: Dict[str, Any]) -> str:
    """The progress line of one finished row."""
    cov = row.get("coverage")
    bits = [f"{row['outcome']:<8}",
            f"cov={cov:.3f}" if isinstance(cov, float) else "",
            f"err={row['max_err']:.1e}" if isinstance(row.get("max_err"), float) else "",
            f"{row.get('t_wall', '?')}s"]
    if row.get("mutated"):
        bits.append(f"MUTATED {row['mutated'][:2]}")
    if row.get("top_blocker") and isinstance(cov, float) and cov < 0.8:
        bits.append(f"blocker: {row['top_blocker']['op']}")
    if row.get("error"):
        bits.append(str(row["error"])[:100].replace("\n", " "))
    return " ".join(b for b in bits if b)


def run_all(names: Sequence[str], fn: Callable[[str], Dict[str, Any]], results: Results,
            timeout: Callable[[str], float], mem_gb: float,
            extra: Callable[[str], Dict[str, Any]] = lambda n: {}) -> None:
    """Measure ``names`` one by one in children, appending each row as it finishes."""
    bar, say = None, print
    if sys.stderr.isatty():  # a bar in a terminal; a log gets the lines alone
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(names), unit="model", dynamic_ncols=True, file=sys.stderr)
            say = bar.write
        except ImportError:
            pass
    stamp = {"fxgrow_hash": source_hash(), "commit": git_commit(),
             "date": datetime.date.today().isoformat()}
    for i, name in enumerate(names):
        if bar is not None:
            bar.set_description(name[:30])
        row = run_isolated(fn, name, timeout(name), mem_gb)
        row.update(extra(name), **stamp)
        row[results.key] = name
        results.add(row)
        say(f"[{time.strftime('%H:%M:%S')}] {i + 1}/{len(names)} {name:<32} {line(row)}")
        sys.stdout.flush()
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()


def to_run(names: Iterable[str], results: Results, *, only: Sequence[str], update: bool,
           redo: Sequence[str]) -> List[str]:
    """Which rows a sweep measures: missing ones, every name in ``only``, with
    ``update`` the rows another fxgrow measured, and rows whose outcome is in ``redo``."""
    current = source_hash()
    out = []
    for n in names:
        r = results.rows.get(n)
        if (r is None or n in only or (update and r.get("fxgrow_hash") != current)
                or r.get("outcome") in redo):
            out.append(n)
    return out
