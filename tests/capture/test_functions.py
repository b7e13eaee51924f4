"""Custom autograd Functions stay calls with their own backward (fxgrow/capture/functions.py)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, snapshot
from fxgrow.rules import RULES, register_rule

D = torch.float64


class RoundSTE(torch.autograd.Function):
    """Rounds; passes the gradient straight through (autograd of round would give 0)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class Reverse(torch.autograd.Function):
    """The identity, with the gradient's sign flipped (domain-adversarial training)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -g


class Net(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.h, self.b = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.fn = fn

    def forward(self, x):
        return self.b(torch.tanh(self.h(self.fn.apply(torch.tanh(self.a(x)) * 3))))


def _input_grad(model, x):
    x = x.clone().requires_grad_(True)
    (model(x) ** 2).sum().backward()
    return x.grad


@pytest.mark.parametrize("fn", [RoundSTE, Reverse])
def test_grown_graph_backpropagates_through_the_functions_own_backward(fn):
    torch.manual_seed(0)
    model, x = Net(fn).to(D), torch.randn(3, 4, dtype=D)
    snap = snapshot(model)
    a = fxgrow.analyze(model, x, capture="fx")
    calls = [n for n in a.graph_module.graph.nodes if n.op == "call_function"
             and getattr(n.target, "autograd_function", None) is fn]
    assert len(calls) == 1  # one call, not the forward's ops
    blocked = a.group("a")
    assert blocked.status == "blocked" and f"{fn.__qualname__}.apply" in blocked.reason
    grown = fxgrow.widen(a, x, 2.0, verify=False)
    assert grown.get_submodule("h").out_features == 16  # the other group still grows
    assert_unchanged(model, snap)
    fresh = torch.randn(5, 4, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(grown(fresh), model(fresh), rtol=1e-12, atol=1e-12)
    # function preserved in training too: the input gradient is the original's
    torch.testing.assert_close(_input_grad(grown, fresh), _input_grad(model, fresh),
                               rtol=1e-10, atol=1e-12)


def test_a_rule_registered_for_the_function_class_grows_through_it():
    torch.manual_seed(0)
    model, x = Net(Reverse).to(D), torch.randn(3, 4, dtype=D)
    try:
        register_rule(Reverse)(fxgrow.rules.elementwise)
        grown = fxgrow.widen(model, x, 2.0, verify=False, capture="fx")
    finally:
        RULES.pop(Reverse, None)
    assert grown.get_submodule("a").out_features == 16
    assert_same_function(model, grown, x)
    fresh = torch.randn(5, 4, dtype=D)
    torch.testing.assert_close(_input_grad(grown, fresh), _input_grad(model, fresh),
                               rtol=1e-10, atol=1e-12)


def test_functions_inside_torch_are_traced_through():
    class Checkpointed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.utils.checkpoint.checkpoint(lambda t: torch.tanh(self.a(t)), x,
                                                  use_reentrant=True)
            return self.b(h)

    torch.manual_seed(0)
    model, x = Checkpointed().to(D), torch.randn(3, 4, dtype=D)
    a = fxgrow.analyze(model, x, capture="fx")
    assert a.group("a").growable  # the recomputing backward is its forward's: nothing kept
    assert not any(hasattr(n.target, "autograd_function") for n in a.graph_module.graph.nodes)


def test_export_says_it_inlined_a_custom_function():
    torch.manual_seed(0)
    model, x = Net(RoundSTE).to(D), torch.randn(3, 4, dtype=D)
    with pytest.warns(fxgrow.GrowthWarning, match="RoundSTE.*own backward.*output='module'"):
        a = fxgrow.analyze(model, x, capture="export")
    assert a.graph_module.meta["fxgrow.capture"]["inlined_functions"] == [
        f"{RoundSTE.__module__}.RoundSTE"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", fxgrow.GrowthWarning)
        fxgrow.analyze(Net(RoundSTE).to(D), x, capture="fx")  # fx keeps the call: no warning


def test_register_rule_accepts_function_classes_only_as_classes():
    with pytest.raises(fxgrow.SpecError, match="autograd.Function class"):
        register_rule(object)(fxgrow.rules.elementwise)
