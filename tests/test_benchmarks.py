"""Smoke test: the benchmark scripts run end to end on their smallest settings (no timing asserted)."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_experiments_digits_smallest_config(tmp_path):
    pytest.importorskip("sklearn")
    exp = _load("experiments")
    exp.main(["digits", "--quick", "--seeds", "1", "--families", "mlp", "--teacher-steps", "30",
              "--student-steps", "10", "--workers", "1", "--md", str(tmp_path / "e.md")])
    text = (tmp_path / "e.md").read_text()
    assert "net2net" in text and "scratch" in text


def test_experiments_growth_protocol_smallest_config(tmp_path):
    pytest.importorskip("mnist1d")
    exp = _load("experiments")
    out = exp.main(["mnist1d", "--quick", "--seeds", "1", "--families", "mlp", "--small-steps",
                    "20", "--big-steps", "10", "--workers", "1", "--out", str(tmp_path)])
    text = (tmp_path / "mnist1d.md").read_text()
    for name in ("net2net", "split", "zero_out", "random_pad", "random_init", "deepen", "scratch"):
        assert name in text
    fam = out["mnist1d"]["mlp"]
    assert not fam["errors"], fam["errors"]
    # exact inits start where the small model ended; random_init does not
    start = {(r["method"], r["lr"], r["state"]): r["start"] for r in fam["rows"]}
    assert start[("net2net", "lr", "fresh")] == start[("split", "lr", "fresh")] \
        == start[("zero_out", "lr", "fresh")]
    assert start[("random_init", "lr", "fresh")] != start[("net2net", "lr", "fresh")]


def test_speed_scaling_helpers():
    speed = _load("speed")
    k, slope = speed.fit([10, 100, 1000], [0.01, 0.1, 1.0])
    assert abs(k - 1) < 1e-9 and abs(slope - 0.001) < 1e-9
    m, x = speed.build("mlp:3:8")
    assert m(x).shape == (2, 10)
