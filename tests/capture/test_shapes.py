"""fxgrow.capture.shapes: what is recorded per node, and models on the meta device."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.capture.shapes import Opaque, TensorSpec, describe


def test_describe_values():
    assert describe(torch.zeros(2, 3)) == TensorSpec((2, 3), torch.float32)
    assert describe(torch.Size([4, 5])) == (4, 5)
    assert describe((torch.zeros(1), 3)) == (TensorSpec((1,), torch.float32), 3)
    assert describe(slice(1, 2)) == slice(1, 2)
    assert describe(object()) == Opaque("object")


# ---------------------------------------------------------------- models on the meta device
# Shapes are propagated on fake tensors, so a model built under ``torch.device("meta")``
# (no weight memory at all) is analysed exactly like the real one: the groups depend on
# shapes and ops, never on values.

class _SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 4)

    def forward(self, x):
        h = torch.relu(self.bn(self.a(x)))
        h = h + torch.relu(self.b(h))
        return self.fc(torch.flatten(nn.functional.max_pool2d(h, 2), 1))


class _Block(nn.Module):
    """A transformer-ish block: attention, LayerNorm, MLP, residuals."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.embed = nn.Linear(6, d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.mlp(self.norm(h))
        return self.head(h.mean(1))


def _resnet18():
    tv = pytest.importorskip("torchvision")
    return tv.models.resnet18(num_classes=10)


META_MODELS = {
    "conv": (_SmallConv, (2, 3, 8, 8)),
    "transformer block": (_Block, (2, 5, 6)),
    "resnet18": (_resnet18, (1, 3, 64, 64)),
}


def _groups(a):
    return [(g.size, g.status, g.producers, len(g.members)) for g in a.groups]


@pytest.mark.parametrize("name", sorted(META_MODELS))
def test_a_model_built_on_meta_has_the_real_models_groups(name):
    build, shape = META_MODELS[name]
    torch.manual_seed(0)
    real = build().eval()
    with torch.device("meta"):
        ghost = build().eval()
    assert all(t.is_meta for t in ghost.state_dict().values())
    a_real = fxgrow.analyze(real, torch.randn(shape))
    a_meta = fxgrow.analyze(ghost, torch.empty(shape, device="meta"))
    assert _groups(a_meta) == _groups(a_real)
    assert any(g.growable for g in a_meta.groups)
    # nothing was materialised along the way
    assert all(t.is_meta for t in a_meta.graph_module.state_dict().values())
    assert all(t.is_meta for t in ghost.state_dict().values())


@pytest.mark.parametrize("name", sorted(META_MODELS))
def test_a_meta_model_widens_to_the_real_grown_shapes(name):
    build, shape = META_MODELS[name]
    real = build().eval()
    with torch.device("meta"):
        ghost = build().eval()
    grown_real = fxgrow.widen(real, torch.randn(shape), 2.0, verify=False)
    x_meta = torch.empty(shape, device="meta")
    grown_meta = fxgrow.widen(ghost, x_meta, 2.0, verify=False)
    sd_real, sd_meta = grown_real.state_dict(), grown_meta.state_dict()
    assert sd_meta.keys() == sd_real.keys()
    for k, v in sd_meta.items():
        assert v.is_meta and v.shape == sd_real[k].shape and v.dtype == sd_real[k].dtype, k
    out = grown_meta(x_meta)
    assert out.is_meta and out.shape == grown_real(torch.randn(shape)).shape


def test_a_model_too_large_to_allocate_is_analysed_and_grown_on_meta():
    n = 1 << 16  # 16 GiB of float32 weights if they were real, 32 GiB grown
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(n, n), nn.ReLU(), nn.Linear(n, 10))
    x = torch.empty(2, n, device="meta")
    a = fxgrow.analyze(m, x)
    assert [(g.size, g.status) for g in a.groups] == [(n, "fixed"), (n, "growable"),
                                                     (10, "fixed")]
    grown = fxgrow.widen(a, x, 2.0, verify=False)
    assert grown.get_submodule("0").weight.shape == (2 * n, n)
    assert grown.get_submodule("2").weight.shape == (10, 2 * n)
    assert grown.get_submodule("2").weight.is_meta
