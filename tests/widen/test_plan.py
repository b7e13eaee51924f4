"""fxgrow.widen.plan: index maps and validation."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.widen.plan import plan_widening
from models import mlp


def _analysis():
    m, x = mlp()
    return fxgrow.analyze(m, x)


def test_index_map_identity_prefix_and_balanced_sampling():
    a = _analysis()
    gid = a.group("0").id  # 32 neurons
    p = plan_widening(a, {gid: 70}, seed=1)
    gg = p.growth[gid]
    assert gg.index[:32].tolist() == list(range(32))
    # rounds of permutations: every neuron copied twice before any is copied three times
    assert int(gg.counts.min()) >= 2 and int(gg.counts.max()) <= 3
    assert int(gg.counts.sum()) == 70
    assert torch.allclose(gg.scale, 1.0 / gg.counts[gg.index].double())


def test_seeds_are_per_group():
    a = _analysis()
    g0, g1 = (g.id for g in a.growable)
    alone = plan_widening(a, {g0: 40}, seed=5).growth[g0].index
    both = plan_widening(a, {g0: 40, g1: 30}, seed=5).growth[g0].index
    assert torch.equal(alone, both)
    assert not torch.equal(alone, plan_widening(a, {g0: 40}, seed=6).growth[g0].index)


def test_same_size_is_a_no_op_and_factor_rounds():
    a = _analysis()
    assert plan_widening(a, {"0": 32}).growth == {}
    p = plan_widening(a, 1.5)
    assert sorted(gg.new for gg in p.growth.values()) == [36, 48]
    assert "GrowthPlan" in str(p)


def test_invalid_specs():
    a = _analysis()
    with pytest.raises(fxgrow.SpecError):
        plan_widening(a, {"0": "big"})
    with pytest.raises(fxgrow.SpecError):
        plan_widening(a, [1, 2])
    with pytest.raises(fxgrow.NarrowingError):
        plan_widening(a, {"0": 0.5})


def test_uniform_groups_tile():
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    a = fxgrow.analyze(m, torch.randn(2, 3))
    p = plan_widening(a, 3)
    (gg,) = p.growth.values()
    assert gg.index.tolist() == [0, 1, 2, 3] * 3
