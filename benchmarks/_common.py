"""Small helpers shared by the benchmark scripts (machine description, progress bar)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict:
    """What the numbers were measured on."""
    import torch

    info = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def progress(iterable, total=None, desc=""):
    """tqdm when installed, else a minimal progress bar on stderr."""
    try:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, file=sys.stderr)
    except ImportError:
        return _SimpleBar(iterable, total, desc)


class _SimpleBar:
    def __init__(self, iterable, total, desc):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc

    def __iter__(self):
        start = time.perf_counter()
        n = 0
        for item in self.iterable:
            yield item
            n += 1
            self._draw(n, time.perf_counter() - start)
        sys.stderr.write("\n")

    def _draw(self, n, elapsed):
        if self.total:
            frac = n / self.total
            bar = "#" * int(30 * frac)
            eta = elapsed / n * (self.total - n)
            sys.stderr.write(f"\r{self.desc} [{bar:<30}] {n}/{self.total} {elapsed:.0f}s<{eta:.0f}s")
        else:
            sys.stderr.write(f"\r{self.desc} {n} {elapsed:.0f}s")
        sys.stderr.flush()


def md_table(rows, columns) -> str:
    """Markdown table from a list of dicts; columns = [(key, header, format)]."""
    out = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            if v is None:
                cells.append("–")
            elif callable(fmt):
                cells.append(fmt(v))
            elif fmt and isinstance(v, (int, float)):
                cells.append(format(v, fmt))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _init_worker():
    import torch
    import warnings

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")


def _run(job):
    fn, a = job
    return fn(*a)


def run_jobs(jobs, workers, desc):
    """Run ``(fn, args)`` jobs, in ``workers`` forked processes (one thread each); progress on stderr."""
    from multiprocessing import get_context

    if workers <= 1:
        _init_worker()
        return [_run(j) for j in progress(jobs, total=len(jobs), desc=desc)]
    with get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        return list(progress(pool.imap(_run, jobs, chunksize=1), total=len(jobs), desc=desc))


def sweep_children(script: str, names, key: str, timeout: float, json_path=None, show=None):
    """Run ``python script --child NAME`` for each name (a crash or a hang stays in the
    child), read the JSON row it prints last, print a line per row (``show(row)``) and
    append the rows to ``json_path``; return the rows.  A child that prints no row is a
    ``crash`` with its last stderr line; one past ``timeout`` seconds a ``crash`` too."""
    import json
    import subprocess
    rows = []
    for name in names:
        try:
            out = subprocess.run([sys.executable, script, "--child", name], capture_output=True,
                                 text=True, timeout=timeout)
            line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
            row = json.loads(line) if line.startswith("{") else {
                key: name, "outcome": "crash",
                "why": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
        except subprocess.TimeoutExpired:
            row = {key: name, "outcome": "crash", "why": f"timeout ({timeout:.0f} s)"}
        rows.append(row)
        print(show(row) if show else f"{name}: {row['outcome']}", flush=True)
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(row) + "\n")
    return rows
