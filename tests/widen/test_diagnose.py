"""fxgrow.widen.diagnose: where a grown graph first departs from the original."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from fxgrow.capture.inputs import bind_inputs
from fxgrow.widen.diagnose import first_divergence
from models import mlp, resnet
from transformer_models import GPT


def _where(plan, grown):
    a = plan.analysis
    return first_divergence(plan, grown, bind_inputs(a.graph_module, a.args, a.kwargs))


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.softmax(F.relu(self.fc1(x)), dim=-1))


def test_a_corrupted_weight_is_named_at_the_first_node_it_changes():
    m, x = mlp()
    plan = fxgrow.plan_widening(fxgrow.analyze(m, x), 2.0)
    grown = fxgrow.apply_plan(plan)
    assert _where(plan, grown) is None
    with torch.no_grad():
        grown.get_submodule("2").weight[3, 0] += 0.5
    where = _where(plan, grown)
    assert where.startswith("node `_2` (Linear) differs from the original at the old neurons")
    assert "max abs error" in where


def test_a_blocked_group_grown_anyway_is_named_at_the_blocking_op():
    m, x = Softmaxed(), torch.randn(5, 4)
    a = fxgrow.analyze(m, x)
    assert a.group("fc1").status == "blocked"
    plan = fxgrow.plan_widening(a, {"fc1": 12}, _allow_blocked=True)
    where = _where(plan, fxgrow.apply_plan(plan))
    assert where.startswith("node `softmax` (torch.softmax) differs from the original"), where


def test_a_wrong_shape_is_named():
    m, x = mlp()
    plan = fxgrow.plan_widening(fxgrow.analyze(m, x), 2.0)
    grown = fxgrow.apply_plan(plan)
    grown.add_submodule("2", nn.Linear(64, 30))  # should be 64 -> 48
    assert "node `_2`" in _where(plan, grown) and "has shape (8, 30)" in _where(plan, grown)


@pytest.mark.parametrize("build, spec", [
    (resnet, 2.0),  # BatchNorm then an in-place ReLU: the reference is read before it runs
    (lambda: (GPT(norm="rms").eval(), torch.randint(0, 50, (2, 10))), 2.0),  # tied head
    (lambda: (GPT(norm="rms").eval(), torch.randint(0, 50, (2, 10))), 1.5),  # zero-padded
    (lambda: (GPT(norm="ln").eval(), torch.randint(0, 50, (2, 10))), 1.5),  # mean-padded
], ids=["resnet", "gpt-tied", "gpt-zero-pad", "gpt-mean-pad"])
def test_exact_plans_have_no_divergence(build, spec):
    m, x = build()
    a = fxgrow.analyze(m, x)
    plan = fxgrow.plan_widening(a, spec)
    grown = fxgrow.apply_plan(plan)
    assert fxgrow.verify(m, grown, x).ok
    assert plan.padded or spec == 2.0
    assert _where(plan, grown) is None


def test_the_divided_side_of_a_product_is_not_blamed():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(6, 6) for _ in range(4))

        def forward(self, x):
            s = torch.softmax(self.q(x) @ self.k(x).transpose(-2, -1), -1)
            return self.o(s @ self.v(x))

    m, x = Attn().eval(), torch.randn(2, 5, 6)
    a = fxgrow.analyze(m, x)
    assert a.partners
    plan = fxgrow.plan_widening(a, {"q": 9})
    grown = fxgrow.apply_plan(plan)
    assert _where(plan, grown) is None
    with torch.no_grad():
        grown.get_submodule("o").bias[0] += 1.0
    assert _where(plan, grown).startswith("node `o` (Linear) differs")


def test_dropout_in_training_mode_is_refused_with_the_hint():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2))
    x = torch.randn(16, 4)
    with pytest.warns(fxgrow.GrowthWarning):
        grown = fxgrow.widen(m, x, 2.0)  # nothing can grow exactly in training mode
    assert grown.meta["fxgrow.plan"] == {}
    assert "call model.eval()" in fxgrow.analyze(m, x).group("0").reason


def test_functional_dropout_in_training_mode_gets_the_hint_too():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(F.dropout(self.a(x), 0.5, self.training))

    assert "call model.eval()" in fxgrow.analyze(Net(), torch.randn(16, 4)).group("a").reason
