"""fxgrow.widen.plan: index maps and validation."""

import time
import warnings

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
    with pytest.warns(fxgrow.GrowthWarning, match="current size"):
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


@pytest.mark.parametrize("spec", [float("nan"), float("inf"), -float("inf"),
                                  {"0": float("nan")}, {"0": float("inf")}])
def test_non_finite_factors_are_spec_errors(spec):
    with pytest.raises(fxgrow.SpecError, match="finite"):
        plan_widening(_analysis(), spec)


@pytest.mark.parametrize("seed", [None, "a", 2 ** 70, 1.5, True, -1])
def test_seeds_must_be_ints_in_range(seed):
    with pytest.raises(fxgrow.SpecError, match="seed must be an int"):
        plan_widening(_analysis(), 2.0, seed=seed)


def test_plan_needs_an_analysis():
    with pytest.raises(fxgrow.SpecError, match="needs an Analysis"):
        plan_widening(None, 2.0)


def test_numpy_sizes_are_sizes():
    np = pytest.importorskip("numpy")
    a = _analysis()
    assert plan_widening(a, {"0": np.int64(40)}).growth[a.group("0").id].new == 40
    assert plan_widening(a, {"0": np.float64(1.5)}).growth[a.group("0").id].new == 48


def test_sizes_that_cannot_fit_in_memory_are_refused_at_once():
    a = _analysis()
    start = time.perf_counter()
    with pytest.raises(fxgrow.SpecError, match=r"GiB .* available"):
        plan_widening(a, {"0": 10 ** 12})
    assert time.perf_counter() - start < 5


def test_memory_limit_is_the_device_memory(monkeypatch):
    from fxgrow.widen import budget
    a = _analysis()
    monkeypatch.setattr(budget, "available_bytes", lambda device: 2_000)
    with pytest.raises(fxgrow.SpecError, match="only 0.0 MiB is available"):
        plan_widening(a, {"0": 64})
    monkeypatch.setattr(budget, "available_bytes", lambda device: None)  # unknown: no limit
    assert plan_widening(a, {"0": 64}).growth


@pytest.mark.parametrize("old, new", [(1, 200_000), (3, 10), (1000, 1001), (7, 7 * 50 + 3)])
def test_index_maps_copy_every_neuron_once_before_any_twice(old, new):
    gen = torch.Generator().manual_seed(0)
    from fxgrow.widen.plan import _index_map
    start = time.perf_counter()
    index = _index_map(old, new, False, gen)
    assert time.perf_counter() - start < 2  # vectorised: no Python loop per round
    assert index.shape == (new,) and index[:old].tolist() == list(range(old))
    counts = torch.bincount(index, minlength=old)
    assert int(counts.max() - counts.min()) <= 1
    again = _index_map(old, new, False, torch.Generator().manual_seed(0))
    assert torch.equal(index, again)  # deterministic per seed


@pytest.mark.parametrize("spec, why", [({}, "names no group"), (1.01, "rounds every"),
                                       ({"0": 32}, "current size")])
def test_a_spec_that_grows_nothing_warns_and_says_so_in_meta(spec, why):
    m, x = mlp()
    with pytest.warns(fxgrow.GrowthWarning, match=why):
        grown = fxgrow.widen(m, x, spec)
    assert grown.meta["fxgrow.plan"] == {}
    assert why in grown.meta["fxgrow.warnings"][0]


def test_nothing_growable_warns():
    m = nn.Sequential(nn.Linear(3, 2))
    with pytest.warns(fxgrow.GrowthWarning, match="no group can grow"):
        grown = fxgrow.widen(m, torch.randn(2, 3), 2.0)
    assert grown.meta["fxgrow.plan"] == {} and grown.meta["fxgrow.warnings"]


def test_a_spec_that_grows_something_does_not_warn():
    m, x = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error", fxgrow.GrowthWarning)
        grown = fxgrow.widen(m, x, 2.0)
    assert "fxgrow.warnings" not in grown.meta


class _Scores(nn.Module):
    """Attention scores only: the query/key head dim is the one growable group."""

    def __init__(self):
        super().__init__()
        self.q, self.k = nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, x):
        return self.q(x) @ self.k(x).transpose(-2, -1)


def test_a_factor_leaves_head_dims_and_a_spec_naming_them_grows_them():
    m, x = _Scores().eval(), torch.randn(2, 5, 8)
    a = fxgrow.analyze(m, x)
    q, k = a.group("q"), a.group("k")
    assert q.growable and k.growable and {q.id, k.id} <= a.head_dims
    with pytest.warns(fxgrow.GrowthWarning, match="are head dims"):
        assert plan_widening(a, 2.0).growth == {}
    for spec in ({q.id: 2.0}, {"k": 8}):  # by group id or by module: both sides grow
        p = plan_widening(a, spec)
        assert {g: (gg.old, gg.new) for g, gg in p.growth.items()} == {q.id: (4, 8),
                                                                         k.id: (4, 8)}
