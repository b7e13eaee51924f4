"""fxgrow.widen.apply: carrying out plans."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_same_function
from fxgrow.widen.apply import apply_plan
from fxgrow.widen.plan import plan_widening
from models import lenet, resnet


def test_consumer_columns_are_divided_by_counts():
    m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    x = torch.randn(3, 2)
    a = fxgrow.analyze(m, x)
    plan = plan_widening(a, {"0": 5}, seed=0)
    g = apply_plan(plan)
    gg = next(iter(plan.growth.values()))
    w_old = m[2].weight.detach()
    expected = w_old[:, gg.index] / gg.counts[gg.index].float()
    assert torch.allclose(g.get_submodule("2").weight, expected)
    assert torch.equal(g.get_submodule("0").weight, m[0].weight[gg.index])
    assert_same_function(m, g, x)


def test_view_literal_is_rewritten():
    m, x = lenet()
    g = fxgrow.widen(m, x, {"conv2": 20})
    view = [n for n in g.graph.nodes if n.target == "view"][0]
    assert 20 * 16 in view.args or -1 in view.args
    assert g.get_submodule("fc1").in_features == 320


def test_unknown_init_is_refused():
    m, x = resnet()
    plan = plan_widening(fxgrow.analyze(m, x), 2.0)
    with pytest.raises(fxgrow.UnknownInitError):
        apply_plan(plan, init="zeros")


def test_the_analysed_graph_is_left_alone():
    m, x = lenet()
    a = fxgrow.analyze(m, x)
    before = a.graph_module.code
    apply_plan(plan_widening(a, 2.0))
    assert a.graph_module.code == before
    assert a.graph_module.get_submodule("conv1").out_channels == 6


def test_no_python_loop_per_neuron():
    """A 4096-wide layer grows in well under a second: gathers are vectorised."""
    import time
    m = nn.Sequential(nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 8))
    x = torch.randn(2, 64)
    a = fxgrow.analyze(m, x)
    t = time.perf_counter()
    g = apply_plan(plan_widening(a, 2.0))
    assert g.get_submodule("0").out_features == 8192
    assert time.perf_counter() - t < 5.0  # generous: this is a smoke check, not a benchmark


def test_complex_consumers_are_divided_by_the_counts():
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(torch.complex128).eval()
    x = torch.randn(5, 4, dtype=torch.complex128)
    g = fxgrow.widen(m, x, 2.0, verify=False)
    with torch.no_grad():
        assert torch.allclose(g(x), m(x), rtol=1e-10, atol=1e-12)
