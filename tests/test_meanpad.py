"""fxgrow.meanpad: LayerNorm'd streams grow to any width where the path is affine."""

import pytest
import torch
from torch import nn

import fxgrow
from conftest import assert_same_function
from fxgrow.meanpad import mean_pad_problem
from transformer_models import GPT, Bert


def test_pre_ln_gpt_residual_grows_to_any_width():
    m = GPT(norm="layer").eval()
    idx = torch.randint(0, 50, (2, 12))
    a = fxgrow.analyze(m, idx)
    residual = a.group(a.members[("wte.weight", 1)].layout.space)
    assert residual.uniform and mean_pad_problem(a, residual.id) is None
    g = fxgrow.widen(a, idx, {residual.id: 23})  # 16 -> 23: not a multiple
    assert g.wte.weight.shape == (50, 23) and g.lm_head.weight is g.wte.weight
    ln = g.get_submodule("blocks.0.ln1")
    assert ln.normalized_shape == (23,) and ln.eps == pytest.approx(1e-5 * 16 / 23)
    assert_same_function(m, g, idx)
    # and together with heads and MLP widths
    spec = {gr.id: 1.5 for gr in a.growable}
    assert fxgrow.widen(a, idx, spec).meta["fxgrow.report"].ok


def test_mean_pad_float64_is_tight():
    m = GPT(norm="layer").double().eval()
    idx = torch.randint(0, 50, (2, 12))
    g = fxgrow.widen(m, idx, 1.3, verify=False)
    assert fxgrow.verify(m, g, idx).max_rel < 1e-12


def test_post_ln_and_nonlinear_paths_are_refused_with_reason():
    b = Bert().eval()
    inputs = {"input_ids": torch.randint(0, 40, (2, 5)),
              "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    a = fxgrow.analyze(b, inputs)
    (residual,) = a.groups_of("tok")
    problem = mean_pad_problem(a, residual.id)
    assert "not affine" in problem and "LayerNorm" in problem
    with pytest.raises(fxgrow.ConstraintError, match="mean-padding does not apply"):
        fxgrow.widen(a, inputs, {residual.id: 20})
    relu_first = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4), nn.Linear(4, 2))
    a = fxgrow.analyze(relu_first, torch.randn(2, 3))
    assert "ReLU" in mean_pad_problem(a, a.group("0").id)


def test_integer_factors_still_replicate():
    m = GPT(norm="layer").eval()
    idx = torch.randint(0, 50, (1, 12))
    a = fxgrow.analyze(m, idx)
    residual = a.members[("wte.weight", 1)].layout.space
    plan = fxgrow.plan_widening(a, {residual: 32})
    assert plan.growth[residual].mode == "replicate"
    plan = fxgrow.plan_widening(a, {residual: 20})
    assert plan.growth[residual].mode == "mean" and "mean-padded" in str(plan)
