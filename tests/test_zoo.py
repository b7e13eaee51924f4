"""Every torchvision classification model: analysed, widened and deepened exactly.

Issues 4 (CNNs) and 5 (ViT, Swin, MaxViT).  Models are built with ``weights=None`` and small
inputs; the largest ones are marked slow but still run in CI.
"""

from __future__ import annotations

import pytest
import torch

import fxgrow

torchvision = pytest.importorskip("torchvision")
from fxgrow import zoo  # noqa: E402

HUGE = {"vit_h_14", "vit_l_16", "vit_l_32", "swin_b", "swin_v2_b", "maxvit_t", "regnet_y_128gf", "regnet_y_32gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_x_16gf",
        "vgg19_bn", "vgg19", "vgg16_bn", "vgg16", "efficientnet_b7", "efficientnet_v2_l",
        "efficientnet_b6", "convnext_large", "resnext101_64x4d", "wide_resnet101_2"}


def _params(name):
    return [pytest.param(n, marks=pytest.mark.slow) if n in HUGE else n for n in name]


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", _params(zoo.cnn_names() + zoo.transformer_names()))
def test_model_grows_exactly(name):
    model, x = zoo.build(name)
    a = fxgrow.analyze(model, x)
    assert a.growable, "every classifier has hidden channels to grow"
    # any group that is not growable must say why
    for g in a.groups:
        assert g.growable or g.reason
    wide = fxgrow.widen(a, x, 2.0, trials=1)
    assert wide.meta["fxgrow.report"].ok
    del wide
    # x1.5 where constraints allow: uniform (LayerNorm/GroupNorm) groups need integer factors
    spec = {g.id: (2.0 if g.uniform else 1.5) for g in a.growable}
    wide = fxgrow.widen(a, x, spec, trials=1)
    assert wide.meta["fxgrow.report"].ok
    del wide
    # identity convs are 1x1 (exact either way) to keep the zoo within CI memory
    deep = fxgrow.deepen(model, x, after=zoo.deepen_locations(model, a), method="auto",
                         calibration=x, kernel_size=1, trials=1)
    assert deep.meta["fxgrow.report"].ok and deep.meta["fxgrow.deepen"]
