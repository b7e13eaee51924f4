"""Rules for BatchNorm, InstanceNorm, LayerNorm, RMSNorm, GroupNorm (fxgrow.rules.norms)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import grow_exactly


def test_layer_norm_integer_factors_replicate_others_mean_pad():
    m = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3))
    x = torch.randn(5, 4)
    a = fxgrow.analyze(m, x)
    assert a.group("0").uniform
    g = grow_exactly(m, x, 3)
    assert g.get_submodule("1").normalized_shape == (18,)
    grow_exactly(m, x, 1.5)  # LayerNorm right after the producer: mean-padding applies
    after_gelu = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 3))
    with pytest.raises(fxgrow.ConstraintError, match="integer factor"):
        fxgrow.widen(after_gelu, x, 1.5)


def test_group_norm_widens_within_groups():
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 2, 1))
    x = torch.randn(2, 3, 4, 4)
    g = grow_exactly(m, x, 2.0)
    assert g.get_submodule("1").num_channels == 16 and g.get_submodule("1").num_groups == 2


def test_instance_norm_and_prelu_any_width():
    m = nn.Sequential(nn.Conv2d(3, 5, 1), nn.InstanceNorm2d(5, affine=True), nn.PReLU(5),
                      nn.Conv2d(5, 2, 1))
    grow_exactly(m, torch.randn(2, 3, 4, 4), 1.4)


def test_rms_norm_module_and_functional_zero_pad():
    class FnRMS(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 8)
            self.w = nn.Parameter(torch.rand(8) + 0.5)
            self.b = nn.Linear(8, 2)

        def forward(self, x):
            return self.b(F.rms_norm(self.a(x), (8,), self.w))

    x = torch.randn(4, 3)
    for m in (nn.Sequential(nn.Linear(3, 8), nn.RMSNorm(8), nn.SiLU(), nn.Linear(8, 2)), FnRMS()):
        a = fxgrow.analyze(m, x)
        g = a.group(1)
        assert g.growable and any("RMSNorm" in u for u in g.uniform)
        grow_exactly(m, x, 2.0)
        # zero-padded to any width: nn.RMSNorm's eps, or F.rms_norm's literal (default) eps
        # argument rewritten in the graph, the gain scaled by sqrt(n/n')
        grow_exactly(m, x, 1.5)


class _StatsOver(nn.Module):
    """Linear whose neurons become a dim a norm takes statistics over."""

    def __init__(self, norm, view):
        super().__init__()
        self.a, self.norm, self.view, self.b = nn.Linear(4, 16), norm, view, nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(self.norm(self.view(h)).reshape(h.shape))


@pytest.mark.parametrize("norm, view", [
    (nn.InstanceNorm1d(4), lambda h: h.view(-1, 4, 4)),
    (nn.InstanceNorm1d(16), lambda h: h),                 # (N, C) reads as unbatched (C, L)
    (nn.BatchNorm1d(4).train(), lambda h: h.view(-1, 4, 4)),
    (nn.GroupNorm(2, 4), lambda h: h.view(-1, 4, 4)),
    (lambda t: F.batch_norm(t, None, None, training=True), lambda h: h.view(-1, 4, 4)),
])
def test_statistics_over_neurons_need_uniform_replication(norm, view):
    m = _StatsOver(norm, view).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    # the neurons of the dims the statistics run over (not those of the channel dim)
    held = [g for g in a.groups_of("a")
            if g.growable and any("statistics over this dimension" in u for u in g.uniform)]
    assert held
    with pytest.raises(fxgrow.ConstraintError):
        fxgrow.widen(m, x, {g.id: 1.5 for g in held}, verify=False)
    grow_exactly(m, x, 2.0)  # integer factors keep every mean and variance


@pytest.mark.parametrize("norm", [nn.LayerNorm(16, elementwise_affine=False),
                                  nn.RMSNorm(16, elementwise_affine=False)])
def test_a_norm_without_weight_is_not_padded(norm):
    m = nn.Sequential(nn.Linear(4, 16), norm, nn.Linear(16, 3)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(fxgrow.ConstraintError, match="no affine weight"):
        fxgrow.widen(m, x, {"0": 21}, verify=False)
    grow_exactly(m, x, {"0": 32})


def test_functional_norm_shape_read_from_its_input_follows_it():
    class LN(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
            self.w = nn.Parameter(torch.rand(8) + 0.5)

        def forward(self, x):
            h = self.a(x)
            return self.b(F.layer_norm(h, h.shape[-1:], self.w))

    m, x = LN().double(), torch.randn(3, 4, dtype=torch.float64)
    grow_exactly(m, x, 2.0)
    grow_exactly(m, x, 1.5)  # mean-padded: the literal eps argument rewritten in the graph
