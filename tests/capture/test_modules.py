"""Modules that compute more than their forward (fxgrow.capture.modules)."""

import pytest
import torch
import torch.nn.utils.parametrize as P
import torch.nn.utils.prune  # noqa: F401  (a submodule: torch.nn.utils.prune)
from torch import nn

import fxgrow
from helpers import assert_unchanged, exact_or_refused, snapshot


def _mlp():
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3)).double().eval()


X = torch.randn(5, 4, dtype=torch.float64)


def _flip(mod, inp, out):
    return out.flip(-1)


@pytest.mark.parametrize("dress", [
    lambda m: m[2].register_forward_hook(_flip),
    lambda m: m[2].register_forward_pre_hook(lambda mod, inp: (inp[0].flip(-1),)),
    lambda m: torch.nn.utils.prune.l1_unstructured(m[2], "weight", amount=0.3),
    lambda m: torch.nn.utils.spectral_norm(m[2]),
    lambda m: torch.nn.utils.weight_norm(m[2]),
    lambda m: P.register_parametrization(m[2], "weight", _Scale()),
])
def test_hooked_and_parametrized_layers_are_blocked(dress):
    m = _mlp()
    dress(m)
    snap = snapshot(m)
    a = fxgrow.analyze(m, X)
    assert not a.group("0").growable and "computes more than its forward" in a.group("0").reason
    assert exact_or_refused(m, X, 2.0) is not None
    assert_unchanged(m, snap)


class _Scale(nn.Module):
    def forward(self, w):
        return 2 * w


def test_hooks_on_the_root_are_refused_not_lost():
    m = _mlp()
    m.register_forward_hook(_flip)
    with pytest.raises(fxgrow.TraceError, match="forward hooks"):
        fxgrow.widen(m, X, 2.0)


def test_fxgrows_own_input_checks_are_no_hidden_computation():
    # the guard hook a grown module or a grow_into target carries only raises or passes
    from fxgrow.capture.guards import InputGuard
    from fxgrow.capture.modules import hidden_computation

    m = _mlp()
    m.register_forward_pre_hook(InputGuard((), ()), with_kwargs=True)
    assert hidden_computation(m) is None
    m.register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    assert "forward pre-hooks" in hidden_computation(m)


def test_lazy_modules_must_run_once_first():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LazyLinear(3)).double()
    snap_type = type(m[2])
    with pytest.raises(fxgrow.TraceError, match="run the model once"):
        fxgrow.analyze(m, X)
    assert type(m[2]) is snap_type and m[2].has_uninitialized_params()


def test_a_module_overriding_call_is_captured_by_export():
    class Scaled(nn.Linear):
        def __call__(self, x):
            return super().__call__(x) * self.in_features

    m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), Scaled(16, 16), nn.ReLU(),
                      nn.Linear(16, 3)).double().eval()
    a = fxgrow.analyze(m, X)
    assert a.graph_module.meta["fxgrow.capture"]["method"] == "export"
    assert "overrides __call__" in a.graph_module.meta["fxgrow.capture"]["fallback_reason"]
    assert not isinstance(exact_or_refused(m, X, 2.0), fxgrow.AnalysisError)
