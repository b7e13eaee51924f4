"""fxgrow.testing.models: the built-in demo model."""

import torch

import fxgrow
from fxgrow.testing.models import tiny_resnet


def test_tiny_resnet_grows_exactly():
    m = tiny_resnet(width=4)
    x = torch.randn(2, 3, 8, 8)
    assert not m.training
    g = fxgrow.widen(m, x, 2.0)
    assert g.meta["fxgrow.report"].ok
