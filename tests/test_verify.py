"""fxgrow.verify: the equivalence report."""

import copy

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.verify import default_rtol, random_like_input


def test_identical_models_are_ok_and_perturbed_ones_are_not():
    m = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    assert fxgrow.verify(m, copy.deepcopy(m), x).ok
    bad = copy.deepcopy(m)
    with torch.no_grad():
        bad.bias += 1e-3
    r = fxgrow.verify(m, bad, x)
    assert not r.ok and r.max_abs > 5e-4
    assert "MISMATCH" in str(r)


def test_tolerance_follows_dtype():
    assert default_rtol(torch.float64) < default_rtol(torch.float32) < default_rtol(torch.float16)
    m = nn.Linear(4, 3).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    worse = copy.deepcopy(m)
    with torch.no_grad():
        worse.weight *= 1 + 1e-7  # fine for float32, not for float64
    assert not fxgrow.verify(m, worse, x).ok
    assert fxgrow.verify(m.float(), worse.float(), x.float()).ok


def test_structure_and_failures_are_problems():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x * 2

    class Single(nn.Module):
        def forward(self, x):
            return x

    r = fxgrow.verify(Pair(), Single(), torch.randn(2))
    assert not r.ok and r.problems


def test_random_inputs_keep_dtype_and_range():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[3, 7, 9]])
    out = random_like_input({"ids": ids, "x": torch.randn(2, 2), "flag": True}, g)
    assert out["ids"].dtype == torch.long and 3 <= int(out["ids"].min()) <= int(out["ids"].max()) <= 9
    assert out["x"].shape == (2, 2) and out["flag"] is True


def test_integer_outputs_compare_exactly():
    class Arg(nn.Module):
        def forward(self, x):
            return x.argmax(-1)

    assert fxgrow.verify(Arg(), Arg(), torch.randn(3, 4)).ok


class Masked(nn.Module):
    """Logits with masked (-inf) positions, and a NaN where a row is all masked."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.register_buffer("mask", torch.tensor([True, False, True, True, False, True]))

    def forward(self, x):
        return self.fc(x).masked_fill(~self.mask, float("-inf"))


def test_non_finite_outputs_compare_by_position_and_value():
    m, x = Masked(), torch.randn(5, 4)
    r = fxgrow.verify(m, copy.deepcopy(m), x)
    assert r.ok and r.max_abs == 0.0, str(r)
    other = copy.deepcopy(m)
    other.mask[1] = True  # a masked entry becomes finite
    r = fxgrow.verify(m, other, x)
    assert not r.ok and any("non-finite entries differ" in p for p in r.problems)
    flipped = copy.deepcopy(m)
    flipped.forward = lambda x: -m(x)  # -inf becomes +inf: same positions, other values
    assert not fxgrow.verify(m, flipped, x).ok


def test_nan_outputs_match_nan_but_not_numbers():
    class Nan(nn.Module):
        def forward(self, x):
            return torch.where(x > 0, x, torch.full_like(x, float("nan")))

    x = torch.randn(3, 4)
    assert fxgrow.verify(Nan(), Nan(), x).ok
    assert not fxgrow.verify(Nan(), nn.Identity(), x).ok


def test_complex_models_are_compared_by_modulus():
    m = nn.Linear(3, 2, dtype=torch.complex128)
    z = torch.randn(4, 3, dtype=torch.complex128)
    assert fxgrow.verify(m, copy.deepcopy(m), z).ok
    off = copy.deepcopy(m)
    with torch.no_grad():
        off.bias += 1e-6j  # only the imaginary part differs
    r = fxgrow.verify(m, off, z)
    assert not r.ok and 5e-7 < r.max_abs < 2e-6
    g = torch.Generator().manual_seed(0)
    w = random_like_input(z, g)
    assert w.dtype == torch.complex128 and w.imag.abs().sum() > 0 and not torch.equal(w, z)


def test_bad_arguments_are_spec_errors():
    m, x = nn.Linear(4, 3), torch.randn(2, 4)
    for kwargs, match in [({"trials": -1}, "trials"), ({"trials": 1.5}, "trials"),
                          ({"rtol": -1}, "rtol"), ({"rtol": "a"}, "rtol"),
                          ({"rtol": float("nan")}, "rtol"), ({"seed": None}, "seed"),
                          ({"seed": 2 ** 70}, "seed")]:
        with pytest.raises(fxgrow.SpecError, match=match):
            fxgrow.verify(m, m, x, **kwargs)
    with pytest.raises(fxgrow.SpecError, match="grown must be an nn.Module"):
        fxgrow.verify(m, "not a model", x)


def test_meta_tensors_need_verify_false():
    m = nn.Linear(4, 3).to("meta")
    with pytest.raises(fxgrow.SpecError, match="meta device; pass verify=False"):
        fxgrow.verify(m, m, torch.randn(2, 4, device="meta"))


def test_dropout_in_training_mode_gets_a_hint():
    m = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    x = torch.randn(16, 4)
    grown = fxgrow.widen(m.eval(), x, 2.0)
    assert grown.meta["fxgrow.report"].ok
    r = fxgrow.verify(m.train(), grown.train(), x)  # both draw dropout masks now
    assert not r.ok and any("call model.eval() first" in p and "`1`" not in p and "1" in p
                            for p in r.problems)
    # the analysis itself refuses to grow what dropout masks in training mode
    assert "call model.eval()" in fxgrow.analyze(m, x).group("0").reason


def test_verify_run_with_a_memo_runs_the_original_first_and_keeps_its_reference():
    from fxgrow.capture.memo import LeafMemo
    from fxgrow.verify import verify_run
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    x = torch.randn(2, 3)
    order = []

    def graph(seed):
        order.append("graph")
        out = m(x)
        out.mul_(0)  # an in-place op on the other side cannot reach the reference
        return m(x)
    memo = LeafMemo(m)
    assert verify_run(m, graph, x, memo=memo).ok
    assert order == ["graph"] and memo._calls == {}  # kept outputs dropped after the run

    def broken(seed):
        raise RuntimeError("graph node failed")
    report = verify_run(m, broken, x, memo=LeafMemo(m))
    assert not report.ok and "graph node failed" in str(report)
    with pytest.raises(fxgrow.ExampleInputError, match="original model fails"):
        verify_run(m, lambda seed: m(x), torch.randn(2, 5), memo=LeafMemo(m))
    with pytest.raises(RuntimeError, match="graph node failed"):  # both fail: the graph's error
        verify_run(m, broken, torch.randn(2, 5), memo=LeafMemo(m))
