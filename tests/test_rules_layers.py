"""Rules for Linear, conv, norms and embeddings (fxgrow.rules.layers)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from conftest import assert_same_function


def _grow(m, x, spec=2.0):
    g = fxgrow.widen(m, x, spec, verify=False)
    assert_same_function(m, g, x)
    return g


def test_functional_linear_and_conv_with_parameters():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(6, 3, 3, 3))
            self.b1 = nn.Parameter(torch.randn(6))
            self.w2 = nn.Parameter(torch.randn(4, 6))

        def forward(self, x):
            h = F.relu(F.conv2d(x, self.w1, self.b1, padding=1)).mean((2, 3))
            return F.linear(h, self.w2)

    m, x = Fn(), torch.randn(2, 3, 5, 5)
    a = fxgrow.analyze(m, x)
    (g,) = a.growable
    roles = {(mm.tensor, mm.dim): mm.role for mm in g.members}
    assert roles == {("w1", 0): "producer", ("b1", 0): "producer", ("w2", 1): "consumer"}
    _grow(m, x)


def test_depthwise_and_multiplier_update_groups():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, groups=4, padding=1),
                      nn.Conv2d(4, 8, 3, groups=4), nn.Flatten(), nn.Linear(8 * 9, 2))
    x = torch.randn(2, 3, 5, 5)
    g = _grow(m, x, {"0": 6})
    assert g.get_submodule("1").groups == 6 and g.get_submodule("2").groups == 6
    assert g.get_submodule("2").out_channels == 12


def test_grouped_conv_grows_each_group_alike():
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, groups=2),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 2))
    x = torch.randn(2, 3, 5, 5)
    a = fxgrow.analyze(m, x)
    g = _grow(m, x, 1.5)
    assert g.get_submodule("2").groups == 2
    assert g.get_submodule("2").in_channels == 12


def test_conv_transpose():
    m = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.ConvTranspose2d(6, 5, 3), nn.ReLU(),
                      nn.Conv2d(5, 2, 1))
    _grow(m, torch.randn(2, 2, 6, 6))


def test_layer_norm_integer_factors_replicate_others_mean_pad():
    m = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3))
    x = torch.randn(5, 4)
    a = fxgrow.analyze(m, x)
    assert a.group("0").uniform
    g = _grow(m, x, 3)
    assert g.get_submodule("1").normalized_shape == (18,)
    _grow(m, x, 1.5)  # LayerNorm right after the producer: mean-padding applies
    after_gelu = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 3))
    with pytest.raises(fxgrow.ConstraintError, match="integer factor"):
        fxgrow.widen(after_gelu, x, 1.5)


def test_group_norm_widens_within_groups():
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 2, 1))
    x = torch.randn(2, 3, 4, 4)
    g = _grow(m, x, 2.0)
    assert g.get_submodule("1").num_channels == 16 and g.get_submodule("1").num_groups == 2


def test_instance_norm_and_prelu_any_width():
    m = nn.Sequential(nn.Conv2d(3, 5, 1), nn.InstanceNorm2d(5, affine=True), nn.PReLU(5),
                      nn.Conv2d(5, 2, 1))
    _grow(m, torch.randn(2, 3, 4, 4), 1.4)


def test_embedding_produces_and_vocab_is_fixed():
    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 6)
            self.fc = nn.Linear(6, 3)

        def forward(self, ids):
            return self.fc(torch.tanh(self.emb(ids))).mean(1)

    m, ids = Emb(), torch.randint(0, 20, (2, 7))
    a = fxgrow.analyze(m, ids)
    assert a.group("emb").growable
    g = _grow(m, ids, 2.0)
    assert g.get_submodule("emb").embedding_dim == 12


def test_tied_weights_are_blocked_not_broken():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    a = fxgrow.analyze(Tied(), torch.randint(0, 10, (2, 3)))
    (g,) = [g for g in a.groups if g.size == 4]
    assert g.status == "blocked" and "tied" in g.reason


def test_functional_depthwise_conv_follows_its_input():
    class DW(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 6, 1)
            self.w = nn.Parameter(torch.randn(6, 1, 3, 3))
            self.b = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.b(F.relu(F.conv2d(self.a(x), self.w, None, 1, 1, 1, 6)))

    m, x = DW(), torch.randn(2, 3, 5, 5)
    g = _grow(m, x, {"a": 9})
    conv = next(n for n in g.graph.nodes if n.target is F.conv2d)
    assert conv.args[6] == 9


def test_rms_norm_module_zero_pads_and_functional_needs_integer_factors():
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
        _grow(m, x, 2.0)
        if isinstance(m, nn.Sequential):  # nn.RMSNorm: zero-padded to any width
            _grow(m, x, 1.5)
        else:  # F.rms_norm has no module whose eps and weight fxgrow could rescale
            with pytest.raises(fxgrow.ConstraintError, match="integer factor"):
                fxgrow.widen(a, x, 1.5)
