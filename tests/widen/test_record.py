"""fxgrow.widen.record: the gradient map a grown model carries."""

import torch
from torch import nn

import fxgrow
from fxgrow import meta
from fxgrow.widen.record import GrowthRecord, TensorGrowth
from models import mlp


def _record(spec, init="net2net", **kw):
    m, x = mlp()
    g = fxgrow.widen(m, x, spec, init=init, verify=False, **kw)
    return g.meta[meta.GROWTH]


def test_producers_take_the_share_consumers_ratio_one():
    rec = _record({"0": 40})
    assert isinstance(rec, GrowthRecord) and rec.init == "net2net" and not rec.reinitialised
    (dim, index, ratio), = rec.tensors["0.weight"].dims
    counts = torch.bincount(index, minlength=32).double()
    assert dim == 0 and torch.allclose(ratio, 1 / counts[index])
    (dim, index2, ratio2), = rec.tensors["2.weight"].dims
    assert dim == 1 and torch.equal(index, index2) and torch.equal(ratio2, torch.ones(40).double())
    assert "4.weight" not in rec.tensors  # did not grow


def test_a_tensor_growing_along_two_dims_records_both():
    rec = _record(2.0)
    dims = rec.tensors["2.weight"].dims
    assert [d for d, _, _ in dims] == [0, 1]
    state = torch.randn(24, 32)
    grown = rec.tensors["2.weight"].grow(state)
    assert grown.shape == (48, 64)


def test_fresh_and_zero_columns_have_ratio_zero():
    for init in ("zero_out", "random_pad"):
        rec = _record({"0": 40}, init)
        (_, _, rows), = rec.tensors["0.weight"].dims
        (_, _, cols), = rec.tensors["2.weight"].dims
        assert torch.equal(rows, (torch.arange(40) < 32).double())
        assert torch.equal(cols, (torch.arange(40) < 32).double())
    assert _record(2.0, "random_init").reinitialised


def test_padded_groups_keep_old_state_and_zero_the_new():
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    g = fxgrow.widen(m, torch.randn(5, 3), {"0": 6})  # mean-padded: LayerNorm at 1.5x
    tg = g.meta[meta.GROWTH].tensors["1.weight"]
    (_, index, ratio), = tg.dims
    assert index.tolist() == [0, 1, 2, 3, 0, 0] and ratio.tolist() == [1, 1, 1, 1, 0, 0]


def test_grow_squares_the_ratio_for_second_moments():
    tg = TensorGrowth(((1, torch.tensor([0, 0, 1]), torch.tensor([0.25, 0.75, 1.0])),))
    v = torch.tensor([[4.0, 8.0]])
    assert tg.grow(v, 2).tolist() == [[0.25, 2.25, 8.0]]
