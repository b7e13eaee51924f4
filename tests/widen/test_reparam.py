"""Re-deriving weight-normed parameters from a grown weight (fxgrow.widen.reparam)."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.widen.reparam import rederive, weight_norms


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_rederive_is_exact_and_keeps_zero_slices_zero(dim):
    w = torch.randn(5, 4, 3, dtype=torch.float64)
    w[:, 1] = 0  # a new input neuron's zeroed columns (zero_out)
    w[2] = 0
    v, g = rederive(w, dim)
    back = torch._weight_norm(v, g, dim)
    assert torch.isfinite(back).all()
    assert torch.allclose(back, w, rtol=0, atol=1e-12)
    assert g.shape == torch.norm_except_dim(w, 2, dim).shape


def test_the_analysis_records_each_weight_norm():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.utils.parametrizations.weight_norm(
        nn.Linear(4, 2), dim=0))
    a = fxgrow.analyze(m, torch.randn(1, 3), capture="export")
    sites = weight_norms(a.graph_module)
    (site,) = set(sites.values())
    assert site.dim == 0 and set(sites) == {site.weight, site.gain}
    assert site.weight.endswith("original1") and site.gain.endswith("original0")
