"""The grown model as the user's own class (fxgrow.widen.module)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, snapshot
from models import resnet


def _module(model, x, spec=2.0):
    snap = snapshot(model)
    grown = fxgrow.widen(model, x, spec, output="module", verify=False)
    assert type(grown) is type(model) and grown is not model
    assert_unchanged(model, snap)
    return grown


def test_the_users_class_grows_and_runs_any_input_shape_and_mode():
    model, x = resnet()
    grown = _module(model, x, 1.5)
    assert grown.conv1.out_channels == grown.conv1.weight.shape[0] > model.conv1.out_channels
    assert grown.bn1.num_features == grown.conv1.out_channels
    other = torch.randn(5, 3, 40, 24)  # another batch and image size: the user's forward runs
    assert_same_function(model, grown, other)
    grown.train()
    out = grown(other)  # train mode: BatchNorm uses batch statistics, as the original's would
    assert torch.allclose(out, model.train()(other), atol=1e-4)
    model.eval()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_torchvision_models(name):
    tv = pytest.importorskip("torchvision")
    from fxgrow.testing import zoo
    model, x = zoo.build(name)
    grown = _module(model, x, 2.0)
    assert isinstance(grown, type(model))
    assert_same_function(model, grown, torch.randn(3, 3, 48, 40))
    grown.train()  # stochastic depth and dropout are the user's modules, active again
    assert grown.training and all(m.training for m in grown.modules())


def test_a_size_literal_in_forward_is_refused_and_named():
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.o = nn.Linear(8, 24), nn.Linear(8, 8)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v)
            return self.o(y.transpose(1, 2).reshape(b, t, 8))

    m, x = Heads(), torch.randn(2, 5, 8)
    with pytest.raises(fxgrow.SpecError, match=r"node `view`.*-> .*grow_into"):
        fxgrow.widen(m, x, 2.0, output="module")
    assert_same_function(m, fxgrow.widen(m, x, 2.0), x)  # the graph still grows


def test_output_module_needs_the_model():
    model, x = resnet()
    a = fxgrow.analyze(fxgrow.widen(model, x, 2.0), x)  # an analysis of a GraphModule
    with pytest.raises(fxgrow.SpecError, match="needs the user's own module"):
        fxgrow.widen(a, x, 2.0, output="module")
