"""What the zoo sweeps share on the page side: table cells, summaries, docs/zoo.md, the CLI.

Each sweep (``zoo_timm.py``, ``zoo_hf.py``) renders its own table from the
cells here and hands a :class:`Sweep` to :func:`cli`, which measures the rows
to run with ``zoo_common.run_all`` and splices the rendered section between
``<!-- zoo:KEY -->`` markers of docs/zoo.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from zoo_common import BAD, DOC, Results, elide, run_all, to_run


# ------------------------------------------------------------------ the page

def splice(path: str, key: str, body: str) -> None:
    """Replace the section between ``<!-- zoo:key -->`` and ``<!-- /zoo:key -->``
    of the page (appended when absent)."""
    begin, end = f"<!-- zoo:{key} -->", f"<!-- /zoo:{key} -->"
    text = open(path).read() if os.path.exists(path) else "# The model zoo\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        i, j = text.index(begin), text.index(end) + len(end)
        text = text[:i] + block + text[j:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def section(path: str, key: str) -> str:
    """The current body of a section ('' if absent)."""
    text = open(path).read() if os.path.exists(path) else ""
    begin, end = f"<!-- zoo:{key} -->", f"<!-- /zoo:{key} -->"
    if begin not in text or end not in text:
        return ""
    return text[text.index(begin) + len(begin): text.index(end)].strip("\n")


def fmt_step(row: Dict[str, Any], step: str) -> str:
    s = (row.get("steps") or {}).get(step)
    if s is None:
        return "—"
    o = s["outcome"]
    return f"**{o}**" if o in BAD else o


def fmt_err(x: Any) -> str:
    return f"{x:.1e}" if isinstance(x, float) else ("inf" if x == "inf" else "—")


def md(s: Any) -> str:
    """Text made safe for a table cell."""
    return str(s).replace("|", "\\|").replace("\n", " ")


def blocker_cell(row: Dict[str, Any]) -> str:
    tb = row.get("top_blocker")
    if not tb:
        return "—"
    return f"`{md(tb['op'])}` ({tb['neurons']}): {md(tb['reason'])[:90]}"


def outcome_cell(row: Dict[str, Any]) -> str:
    o = row["outcome"]
    cell = f"**{o}**" if o in BAD else o
    if row.get("mutated"):
        cell += " **MUTATED**"
    return cell


def summary(rows: Sequence[Dict[str, Any]], label: str, name_key: str) -> List[str]:
    """The headline figures of a table: counts, mean coverage, models below 0.8."""
    outcomes = Counter(r["outcome"] for r in rows)
    step_bad: Counter = Counter(s["outcome"] for r in rows for s in (r.get("steps") or {}).values()
                                if s["outcome"] in BAD)
    analysed = [r for r in rows if isinstance(r.get("coverage"), float)]
    mean = sum(r["coverage"] for r in analysed) / len(analysed) if analysed else float("nan")
    mutated = [r[name_key] for r in rows if r.get("mutated")]
    low = sorted((r for r in analysed if r["coverage"] < 0.8), key=lambda r: r["coverage"])
    lines = [
        f"**{len(rows)} {label}; {len(analysed)} analysed. "
        f"WRONG {outcomes['WRONG']}, BROKEN {outcomes['BROKEN']}, RAW {outcomes['RAW']} "
        f"(widening steps: WRONG {step_bad['WRONG']}, BROKEN {step_bad['BROKEN']}, "
        f"RAW {step_bad['RAW']}); mutated models {len(mutated)}; "
        f"mean coverage {mean:.3f}; {len(low)} below 0.8.**",
        "",
        "Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(
            outcomes.items(), key=lambda kv: (-kv[1], kv[0]))) + ".",
    ]
    if mutated:
        lines += ["", "Mutated: " + ", ".join(mutated) + "."]
    if low:
        lines += ["", "Below 0.8 coverage (top blocker):", ""]
        lines += [f"- {r[name_key]} {r['coverage']:.3f}: {blocker_cell(r)}" for r in low]
    return lines


def bad_details(rows: Sequence[Dict[str, Any]], name_key: str) -> List[str]:
    """One line per WRONG/BROKEN/RAW/refused step or row: the error and the node."""
    out = []
    for r in rows:
        items = [("analyze", r)] if r["outcome"] in ("RAW", "refused") and not r.get("steps") \
            else list((r.get("steps") or {}).items())
        for step, s in items:
            if s.get("outcome") in BAD + ("refused",):
                what = s.get("divergence") or s.get("error") or s.get("note") or ""
                out.append(f"- {r[name_key]} ({step}): {s['outcome']}: {md(what)[:300]}")
    return out


def grouped(rows: Sequence[Dict[str, Any]], name_key: str) -> Dict[str, List[str]]:
    """``{elided error: [names]}`` of rows that did not get to the analysis."""
    out: Dict[str, List[str]] = defaultdict(list)
    for r in rows:
        out[elide(str(r.get("error", "?")), 120)].append(r[name_key])
    return dict(sorted(out.items(), key=lambda kv: -len(kv[1])))


# -------------------------------------------------------------------- the CLI

@dataclass
class Sweep:
    """What a sweep script gives :func:`cli`.

    ``names()``: every row of the full sweep, in page order; ``resolve(arg)``:
    the rows an ``--only`` argument names; ``measure_one(name)``: the row
    (runs in the child); ``timeout(name)``: seconds; ``extra(name)``: fields
    the parent adds to a row; ``render(rows)``: the page section.
    """

    key: str
    section: str
    results: str
    names: Callable[[], List[str]]
    resolve: Callable[[str], List[str]]
    measure_one: Callable[[str], Dict[str, Any]]
    timeout: Callable[[str], float]
    render: Callable[[List[Dict[str, Any]]], str]
    quick: Sequence[str]
    extra: Callable[[str], Dict[str, Any]] = lambda n: {}
    mem_gb: float = 12.0
    #: ``kind(name)``: the family of a row, for ``--kind`` (None: the sweep has no families)
    kind: Optional[Callable[[str], str]] = None


def cli(sweep: Sweep, doc: str, argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=doc.split("\n")[0], epilog=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=[], metavar="NAME",
                   help="measure only these rows (always re-run, replaced in place)")
    p.add_argument("--update", action="store_true",
                   help="re-run the rows an older fxgrow (another source hash) measured")
    p.add_argument("--redo", default="", metavar="OUTCOMES",
                   help="re-run rows with these outcomes, comma-separated (timeout,crash)")
    p.add_argument("--quick", action="store_true",
                   help="a small subset into a scratch results file; the page is not written")
    p.add_argument("--report", action="store_true", help="only write the page from the results")
    p.add_argument("--no-write", action="store_true", help="do not write the page")
    p.add_argument("--results", default=sweep.results, help="the JSON-lines results file")
    p.add_argument("--out", default=DOC, help="the page (its section is replaced)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per model (default: by size)")
    p.add_argument("--mem-gb", type=float, default=sweep.mem_gb,
                   help="address-space limit of each model's child")
    p.add_argument("--kind", nargs="+", default=[], metavar="KIND",
                   help="measure only the missing rows of these families, in this order")
    p.add_argument("--one", metavar="NAME", help="measure one model in this process, print its row")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.one:
        print(json.dumps(sweep.measure_one(sweep.resolve(args.one)[0]), default=str, indent=1))
        return 0
    if args.quick:
        args.results = os.path.join(tempfile.gettempdir(), f"fxgrow_{sweep.section}_quick.jsonl")
        if os.path.exists(args.results):
            os.remove(args.results)
        args.only, args.no_write = list(sweep.quick), True
    results = Results(args.results, sweep.key)
    every = sweep.names()
    only = [n for arg in args.only for n in sweep.resolve(arg)]
    if not args.report:
        pool = only or every
        if args.kind:
            if sweep.kind is None:
                p.error("this sweep has no --kind")
            fam = {n: sweep.kind(n) for n in pool}
            pool = [n for k in args.kind for n in pool if fam[n] == k]
        names = to_run(pool, results, only=only, update=args.update,
                       redo=[o for o in args.redo.split(",") if o])
        print(f"{len(names)} to measure ({len(results.rows)} rows already in {args.results})",
              flush=True)
        timeout = (lambda n: args.timeout) if args.timeout else sweep.timeout
        run_all(names, sweep.measure_one, results, timeout, args.mem_gb, sweep.extra)
        if not args.quick:
            results.compact(every)
    shown = [results.rows[n] for n in (only if args.quick else every) if n in results.rows]
    print("\n".join(summary(shown, "rows", sweep.key)))
    if not args.no_write:
        splice(args.out, sweep.section, sweep.render(shown))
        print(f"wrote the {sweep.section} section of {args.out}")
    return 0
