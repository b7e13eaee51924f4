"""fxgrow.verify: the equivalence report."""

import copy

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
