"""A small sample of timm's families, grown exactly (fxgrow/testing/zoo_timm.py).

The whole zoo (the smallest model of every timm family) is swept by
``benchmarks/zoo_timm.py`` into docs/zoo.md; here a few of timm's own tiny
``test_*`` models, one per kind of block (residual CNN, ConvNeXt, MBConv,
BYOB, ViT, CoAtNet, MambaOut), each a few seconds on 2 cores, are analysed,
widened by every zoo step with ``verify=False`` and compared in float64 with
the original on the example and a fresh input.
"""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
from fxgrow.testing import zoo  # noqa: E402
from fxgrow.testing.zoo_timm import build_timm, count_params, families, family_of  # noqa: E402

SAMPLE = ["test_resnet", "test_convnext", "test_efficientnet", "test_byobnet", "test_vit",
          "test_coatnet", "test_mambaout"]


@pytest.mark.parametrize("name", SAMPLE)
def test_sampled_family_grows_exactly(name):
    torch.manual_seed(0)
    model, x = build_timm(name)
    assert x.dtype == torch.float64
    fresh = [torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)]
    r = zoo.check_exact(model, x, fresh, tol=1e-9)
    assert r["errors"], "every sampled model has a group to grow"
    assert r["coverage"] > 0.5


def test_a_family_is_the_registering_module():
    assert family_of("test_resnet") == "resnet"
    assert "test_vit" in families()["vision_transformer"]


def test_params_are_counted_on_the_meta_device():
    model, _ = build_timm("test_resnet")
    assert count_params("test_resnet") == sum(p.numel() for p in model.parameters())


def test_the_model_looks_trained():
    model, _ = build_timm("test_resnet")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (bn.running_var != 1).all() and (bn.weight != 1).all()
