"""The weight norm's rule (fxgrow.rules.reparam): the effective weight grows, v and g follow."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, grow_exactly, snapshot

weight_norm = nn.utils.parametrizations.weight_norm


class _Conv(nn.Module):
    """The positional conv of wav2vec2 and its kin: a grouped conv, weight-normed over
    ``dim`` (2: the kernel, so the norm is over both channel dims)."""

    def __init__(self, dim, groups=1):
        super().__init__()
        self.a = nn.Conv1d(4, 8, 1)
        self.conv = weight_norm(nn.Conv1d(8, 8, 3, padding=1, groups=groups), dim=dim)
        self.b = nn.Conv1d(8, 4, 1)
        with torch.no_grad():  # gains away from ||v||, as after training
            g = self.conv.parametrizations.weight.original0
            g.mul_(torch.rand_like(g) + 0.5)

    def forward(self, x):
        return self.b(torch.relu(self.conv(torch.relu(self.a(x)))))


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dim", [0, 1, 2, None])
@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_weight_normed_conv_grows_exactly(dim, groups, factor):
    m, x = _Conv(dim, groups).eval(), torch.randn(2, 4, 10)
    snap = snapshot(m)
    a = fxgrow.analyze(m, x, capture="export")
    assert not [g for g in a.groups if g.status == "blocked"]
    grown = grow_exactly(m, x, factor, capture="export")
    assert_unchanged(m, snap)
    v = grown.get_submodule("conv.parametrizations.weight").original1
    assert v.shape[0] == int(8 * factor)


@pytest.mark.parametrize("init", ["net2net", "split"])
def test_grown_module_keeps_its_parametrization(init):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = weight_norm(nn.Linear(8, 6))
            self.c = nn.Linear(6, 3)

        def forward(self, x):
            return self.c(torch.tanh(self.b(torch.relu(self.a(x)))))

    m, x = M().eval(), torch.randn(2, 4)
    snap = snapshot(m)
    grown = fxgrow.widen(m, x, 2.0, capture="export", output="module", init=init, verify=False)
    assert type(grown) is M and nn.utils.parametrize.is_parametrized(grown.b, "weight")
    assert grown.b.weight.shape == (12, 16)
    assert_same_function(m, grown, x)
    assert_unchanged(m, snap)


def test_a_weight_norm_read_as_an_activation_blocks():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = weight_norm(nn.Linear(6, 6))

        def forward(self, x):
            w = self.b.weight  # the weight norm's result, read as a plain tensor
            return self.a(x) @ w

    m, x = M().eval(), torch.randn(2, 4)
    a = fxgrow.analyze(m, x, capture="export")
    why = " ".join(r for g in a.groups for r in g.reasons)
    assert "is read other than as one layer's weight" in why and "_weight_norm" in why


def test_weight_normed_transposed_conv_grows_exactly():
    # HiFi-GAN / VITS upsamplers: a weight-normed ConvTranspose1d
    m = nn.Sequential(nn.Conv1d(3, 8, 1), nn.LeakyReLU(0.1),
                      weight_norm(nn.ConvTranspose1d(8, 6, 4, stride=2, padding=1)),
                      nn.LeakyReLU(0.1), nn.Conv1d(6, 2, 1)).eval()
    x = torch.randn(2, 3, 9)
    assert not [g for g in fxgrow.analyze(m, x, capture="export").groups
                if g.status == "blocked"]
    grow_exactly(m, x, capture="export")
