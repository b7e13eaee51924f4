"""Export's shape guards fail with fxgrow's reason (fxgrow/capture/guards.py)."""

from __future__ import annotations

import copy
import io
import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, snapshot
from fxgrow.errors import ShapeGuardError
from models import LoopOverBatch


def _model():
    torch.manual_seed(0)
    return LoopOverBatch().double().eval()


def test_grown_graph_names_the_broken_guard():
    model, x = _model(), torch.randn(2, 4, dtype=torch.float64)
    snap = snapshot(model)
    grown = fxgrow.widen(model, x, 2.0, verify=False, capture="export")
    assert_unchanged(model, snap)
    assert grown.get_submodule("i").weight.shape[0] == 16
    # inputs that keep the condition (5 % 3 == 2 % 3) run the same path: exact
    fresh = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(grown(fresh), model(fresh), rtol=1e-12, atol=1e-12)
    # inputs that break it are stopped with the condition and the ways around it
    with pytest.raises(ShapeGuardError, match=r"x\.size\(\)\[0\] % 3.*break it") as info:
        grown(torch.randn(3, 4, dtype=torch.float64))
    assert "an example like these inputs" in str(info.value)
    assert isinstance(info.value, AssertionError)  # code that caught torch's assert still does
    assert isinstance(info.value, fxgrow.FxGrowError)


def test_the_analysis_graph_and_copies_keep_the_reason():
    model, x = _model(), torch.randn(2, 4, dtype=torch.float64)
    a = fxgrow.analyze(model, x, capture="export")
    grown = fxgrow.widen(a, None, 2.0, verify=False)
    bad = torch.randn(4, 4, dtype=torch.float64)
    for gm in (a.graph_module, grown, copy.deepcopy(grown)):
        with pytest.raises(ShapeGuardError):
            gm(bad)


def test_a_given_exported_program_gets_the_reason_too():
    model, x = _model(), torch.randn(2, 4, dtype=torch.float64)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    grown = fxgrow.widen(ep, x, 2.0, verify=False)
    with pytest.raises(ShapeGuardError):
        grown(torch.randn(3, 4, dtype=torch.float64))


def test_output_module_checks_the_guards_its_forward_depends_on():
    # the growth of layers i -> 0 -> 1 -> 2 -> o was planned for three loop steps; at
    # batch 1 the model's own forward feeds layer 1's neurons to `o`, whose columns
    # were divided for layer 2's copies: without the check that is silently wrong
    model, x = _model(), torch.randn(2, 4, dtype=torch.float64)
    snap = snapshot(model)
    grown = fxgrow.widen(model, x, 2.0, verify=False, capture="export", output="module")
    assert_unchanged(model, snap)
    assert type(grown) is LoopOverBatch and grown.i.out_features == 16
    for batch in (2, 5, 8):  # the captured path: exact
        fresh = torch.randn(batch, 4, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(grown(fresh), model(fresh), rtol=1e-12, atol=1e-12)
    for batch in (1, 3, 4):
        with pytest.raises(ShapeGuardError):
            grown(x=torch.randn(batch, 4, dtype=torch.float64))
    buf = io.BytesIO()
    torch.save(grown, buf)  # the check pickles with the model
    buf.seek(0)
    for again in (copy.deepcopy(grown), torch.load(buf, weights_only=False)):
        with pytest.raises(ShapeGuardError, match=r"x\.size\(\)\[0\] % 3"):
            again(torch.randn(3, 4, dtype=torch.float64))
        torch.testing.assert_close(again(x), model(x), rtol=1e-12, atol=1e-12)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x, scale=None):
        h = torch.tanh(self.a(x))
        return self.b(h if scale is None else h * scale)


def test_guards_that_pin_fixed_sizes_let_every_batch_through():
    torch.manual_seed(0)
    model = Scaled().double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    grown = fxgrow.widen(model, x, 2.0, verify=False, capture="export", output="module")
    assert grown._forward_pre_hooks  # export pinned the feature dim: `x.size()[1] == 4`
    for batch in (1, 3, 7):
        assert_same_function(model, grown, torch.randn(batch, 4, dtype=torch.float64))
    # a call with other arguments than the example's is not the captured call: not checked
    y = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(grown(y, scale=2.0), model(y, scale=2.0), rtol=1e-12, atol=1e-12)
