"""Net2DeeperNet: ``fxgrow.deepen`` inserts layers without changing the function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from models import hardtanh_mlp
from helpers import assert_same_function, assert_unchanged, snapshot
from fxgrow.deepen.blocks import identity_layer
from fxgrow.errors import (CalibrationError, DeepenError, MissingCalibrationError,
                           NotDeepenableError, NotIdempotentError, SpecError,
                           UnknownLocationError, UnknownTargetError, VerificationError)
from fxgrow.testing.models import tiny_resnet
from models import conv1d_net, conv3d_net, lenet, mlp, vgg_bn


def relu_mlp():
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(),
                         nn.Linear(10, 3)), torch.randn(7, 6)


def gelu_mlp():
    return nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 10), nn.GELU(),
                         nn.Linear(10, 3)), torch.randn(7, 6)


def small_resnet():
    return tiny_resnet(width=4), torch.randn(2, 3, 8, 8)


def records(gm):
    return [(r["after"], r["module"], r["method"]) for r in gm.meta["fxgrow.deepen"]]


# -- identity layers ------------------------------------------------------------

@pytest.mark.parametrize("kind,k,shape", [("linear", 1, (3, 5)), ("conv1d", 3, (2, 5, 7)),
                                          ("conv2d", 5, (2, 5, 6, 6)),
                                          ("conv3d", 3, (2, 5, 4, 4, 4))])
def test_identity_layer_is_exactly_the_identity(kind, k, shape):
    x = torch.randn(shape)
    assert torch.equal(identity_layer(kind, 5, k)(x), x)


# -- MLPs -------------------------------------------------------------------------

def test_relu_mlp_identity_exact_and_named():
    model, x = relu_mlp()
    snap = snapshot(model)
    g = fxgrow.deepen(model, x, after="1")  # module name of the first ReLU
    assert_unchanged(model, snap)
    assert_same_function(model, g, x)
    assert g.meta["fxgrow.report"].ok
    (rec,) = g.meta["fxgrow.deepen"]
    assert (rec["module"], rec["method"], rec["layer"], rec["activation"]) == \
        ("1_deepen0", "identity", "linear", "ReLU")
    assert {"1_deepen0.linear.weight", "1_deepen0.linear.bias"} <= set(g.state_dict())
    assert torch.equal(g.get_submodule("1_deepen0.linear").weight, torch.eye(12))


def test_gelu_mlp_needs_residual():
    model, x = gelu_mlp()
    snap = snapshot(model)
    with pytest.raises(NotIdempotentError, match="GELU"):
        fxgrow.deepen(model, x, after="1", method="identity")
    assert_unchanged(model, snap)
    g = fxgrow.deepen(model, x, after="1", method="residual")
    assert_same_function(model, g, x)
    assert records(g) == [("_1", "1_deepen0", "residual")]
    assert torch.count_nonzero(g.get_submodule("1_deepen0.linear2").weight) == 0
    # the first residual layer is random, not zero: the block can learn
    assert torch.count_nonzero(g.get_submodule("1_deepen0.linear1").weight) > 0


@pytest.mark.parametrize("build", [relu_mlp, gelu_mlp, mlp])
def test_mlps_all_auto(build):
    model, x = build()
    g = fxgrow.deepen(model, x, after="all", method="auto")
    assert_same_function(model, g, x)
    # every hidden activation gets a block; the output layer (fixed) is skipped
    assert len(g.meta["fxgrow.deepen"]) == 2
    assert list(g.meta["fxgrow.deepen_skipped"]) == ["_4"]
    for rec in g.meta["fxgrow.deepen"]:
        want = "identity" if rec["activation"] == "ReLU" else "residual"
        assert rec["method"] == want, rec


def test_linear_on_last_dim_of_sequences():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 5, 4)
    g = fxgrow.deepen(model, x, after="1")
    assert g.meta["fxgrow.deepen"][0]["layer"] == "linear"
    assert_same_function(model, g, x)


def test_functional_activations_become_modules():
    model, x = hardtanh_mlp()
    g = fxgrow.deepen(model, x, after="hardtanh")
    act = g.get_submodule("hardtanh_deepen0.act")
    assert isinstance(act, nn.Hardtanh) and (act.min_val, act.max_val) == (-0.5, 2.0)
    assert_same_function(model, g, x)


# -- CNNs -----------------------------------------------------------------------------

def test_cnn_without_bn_all_identity():
    model, x = lenet()
    g = fxgrow.deepen(model, x, after="all")
    assert_same_function(model, g, x)
    kinds = [(r["layer"], r["kernel_size"]) for r in g.meta["fxgrow.deepen"]]
    # conv layers get a Dirac kernel as wide as the producing conv's (5), fcs an I
    assert kinds == [("conv2d", 5), ("conv2d", 5), ("linear", None), ("linear", None)]
    assert not any(r["batchnorm"] for r in g.meta["fxgrow.deepen"])


def test_cnn_with_bn_eval_exact_and_calibrated():
    model, x = vgg_bn()
    calib = torch.randn(32, 3, 16, 16)
    g = fxgrow.deepen(model, x, after="all", calibration=calib)
    assert_same_function(model, g, x)
    assert [r["batchnorm"] for r in g.meta["fxgrow.deepen"]] == [True] * 4 + [False]
    # the mirrored BN holds the data statistics at the insertion point (after the 1st ReLU)
    h = F.relu(model[1](model[0](calib)))
    bn = g.get_submodule("2_deepen0.bn")
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var((0, 2, 3), unbiased=False), atol=1e-5)
    assert torch.allclose(bn.weight, torch.sqrt(bn.running_var + bn.eps))
    assert torch.equal(bn.bias, bn.running_mean)
    assert not g.get_submodule("2_deepen0.bn").training  # mirrors the model's eval BN


def test_cnn_with_bn_train_mode_error_small():
    model, x = vgg_bn()
    model.train()
    snap = snapshot(model)
    calib = torch.randn(64, 3, 16, 16)
    g = fxgrow.deepen(model, x, after="all", calibration=calib)  # not exact: reported only
    assert_unchanged(model, snap)
    assert g.get_submodule("2_deepen0.bn").training
    assert g.meta["fxgrow.report"].max_rel < 0.2  # batch of 4: noisy batch statistics
    # on the calibration batch itself, batch stats = stored stats: exact
    assert_same_function(model, g, calib, trials=0)
    # on a fresh batch of the same size the error is small (measured ~2e-2)
    fresh = fxgrow.verify(model, g, torch.randn(64, 3, 16, 16), trials=0)
    assert fresh.max_rel < 0.1, str(fresh)
    with pytest.raises(VerificationError):
        fxgrow.deepen(model, x, after="all", calibration=calib, verify=True)


def test_bn_without_calibration_is_an_error_unless_disabled():
    model, x = vgg_bn()
    snap = snapshot(model)
    with pytest.raises(MissingCalibrationError, match="calibration="):
        fxgrow.deepen(model, x, after="all")
    assert_unchanged(model, snap)
    g = fxgrow.deepen(model, x, after="all", batchnorm=False)
    assert_same_function(model, g, x)
    assert not any(r["batchnorm"] for r in g.meta["fxgrow.deepen"])


def test_forced_batchnorm_on_an_mlp():
    model, x = relu_mlp()
    with pytest.raises(MissingCalibrationError):
        fxgrow.deepen(model, x, after="1", batchnorm=True)
    model.eval()
    g = fxgrow.deepen(model, x, after="1", batchnorm=True, calibration=torch.randn(32, 6))
    assert isinstance(g.get_submodule("1_deepen0.bn"), nn.BatchNorm1d)
    assert_same_function(model, g, x)


def test_calibration_formats_agree():
    model, x = vgg_bn()
    data = torch.randn(16, 3, 16, 16)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data, torch.zeros(16)), batch_size=8)
    means = []
    for calib in (data, (data,), [data[:8], data[8:]], loader):
        g = fxgrow.deepen(model, x, after="2", calibration=calib)
        means.append(g.get_submodule("2_deepen0.bn").running_mean)
    for m in means[1:]:
        assert torch.allclose(m, means[0], atol=1e-6)


@pytest.mark.parametrize("bad", [torch.randn(4, 3, 8, 8), torch.randn(4, 5, 16, 16),
                                 torch.randn(4, 3, 16, 16).double(), [], 3.0])
def test_calibration_of_the_wrong_shape(bad):
    model, x = vgg_bn()
    snap = snapshot(model)
    with pytest.raises(CalibrationError):
        fxgrow.deepen(model, x, after="2", calibration=bad)
    assert_unchanged(model, snap)


def test_conv1d_all_auto():
    model, x = conv1d_net()
    g = fxgrow.deepen(model, x, after="all", method="auto", calibration=torch.randn(8, 4, 16))
    assert_same_function(model, g, x)
    # LeakyReLU and SiLU are not idempotent: residual blocks (conv1d, BN mirrored where used)
    assert [(r["layer"], r["method"], r["batchnorm"]) for r in g.meta["fxgrow.deepen"]] == \
        [("conv1d", "residual", True), ("conv1d", "residual", False)]
    assert g.get_submodule("2_deepen0.bn1").running_var.ne(1).all()  # calibrated


def test_conv3d_all_auto():
    model, x = conv3d_net()
    g = fxgrow.deepen(model, x, after="all", method="auto",
                      calibration=torch.randn(4, 2, 6, 6, 6))
    assert_same_function(model, g, x)
    assert [(r["layer"], r["method"], r["kernel_size"]) for r in g.meta["fxgrow.deepen"]] == \
        [("conv3d", "identity", 3), ("conv3d", "residual", 1)]
    assert isinstance(g.get_submodule("2_deepen0.bn"), nn.BatchNorm3d)


# -- ResNets -------------------------------------------------------------------------

def test_resnet_all_residual_zero_blocks():
    model, x = small_resnet()
    snap = snapshot(model)
    g = fxgrow.deepen(model, x, after="all", method="residual")
    assert_unchanged(model, snap)
    assert_same_function(model, g, x)
    mods = [r["module"] for r in g.meta["fxgrow.deepen"]]
    assert "layer1.0.relu_deepen1" in mods  # after the block output (second call of relu)
    assert list(g.meta["fxgrow.deepen_skipped"]) == ["fc"]
    for name in mods:
        assert torch.count_nonzero(g.get_submodule(name + ".conv2").weight) == 0


def test_resnet_module_called_twice_gets_two_blocks():
    model, x = small_resnet()
    g = fxgrow.deepen(model, x, after=["layer1.0.relu", "layer2.1.conv1"],
                      calibration=torch.randn(8, 3, 8, 8))
    assert_same_function(model, g, x)
    assert records(g) == [("layer1_0_relu", "layer1.0.relu_deepen0", "identity"),
                          ("layer1_0_relu_1", "layer1.0.relu_deepen1", "identity"),
                          ("layer2_1_conv1", "layer2.1.conv1_deepen0", "identity")]
    keys = set(g.state_dict())
    assert {"layer1.0.relu_deepen0.conv.weight", "layer1.0.relu_deepen0.bn.running_mean",
            "layer2.1.conv1_deepen0.conv.weight"} <= keys


def test_predicate_and_node_names():
    model, x = small_resnet()
    g = fxgrow.deepen(model, x, after=lambda n: n.name.endswith("relu_1"))
    assert [r["after"] for r in g.meta["fxgrow.deepen"]] == \
        ["layer1_0_relu_1", "layer1_1_relu_1", "layer2_0_relu_1", "layer2_1_relu_1"]
    assert_same_function(model, g, x)
    g2 = fxgrow.deepen(model, x, after="layer2_0_relu_1")
    assert records(g2) == [("layer2_0_relu_1", "layer2.0.relu_deepen0", "identity")]


# -- chains ----------------------------------------------------------------------------

def test_inserted_layer_output_is_a_fresh_growable_space():
    model, x = relu_mlp()
    g = fxgrow.deepen(model, x, after="1")
    a = fxgrow.analyze(g, x)
    group = a.group("1_deepen0.linear")
    assert group.growable and group.producers == ("1_deepen0.linear",)
    assert a.group("0").growable  # the space it reads is still growable


@pytest.mark.parametrize("build,calib", [(relu_mlp, None), (gelu_mlp, None),
                                         (small_resnet, torch.randn(8, 3, 8, 8))])
def test_widen_after_deepen_and_deepen_after_widen(build, calib):
    model, x = build()
    deep = fxgrow.deepen(model, x, after="all", method="auto", calibration=calib)
    wide_deep = fxgrow.widen(deep, x, 2.0)
    assert_same_function(model, wide_deep, x)
    wide = fxgrow.widen(model, x, 1.5)
    deep_wide = fxgrow.deepen(wide, x, after="all", method="auto", calibration=calib)
    assert_same_function(model, deep_wide, x)
    # and once more: widen the deepened widened model
    assert_same_function(model, fxgrow.widen(deep_wide, x, 2.0), x)


def test_deepen_twice_numbers_blocks():
    model, x = relu_mlp()
    g = fxgrow.deepen(fxgrow.deepen(model, x, after="1"), x, after="1")
    assert [r["module"] for r in g.meta["fxgrow.deepen"]] == ["1_deepen1"]
    assert "1_deepen0.linear.weight" in g.state_dict()
    assert_same_function(model, g, x)


def test_optimizer_step_on_deepened_model():
    model, x = small_resnet()
    g = fxgrow.deepen(model, x, after="all", method="auto", calibration=torch.randn(8, 3, 8, 8))
    g.train()
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    before = g.get_submodule("layer1.0.relu_deepen0.conv").weight.detach().clone()
    loss = F.cross_entropy(g(x), torch.tensor([1, 2]))
    loss.backward()
    opt.step()
    after = g.get_submodule("layer1.0.relu_deepen0.conv").weight
    assert not torch.equal(before, after)
    assert torch.isfinite(g.eval()(x)).all()


# -- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("after,error,match", [
    ("layer9.relu", UnknownLocationError, "no node or module"),
    (["layer1.0.rleu"], UnknownLocationError, "did you mean"),
    (lambda n: False, UnknownLocationError, "matches no node"),
    ("fc", NotDeepenableError, "fixed"),
    ("x", NotDeepenableError, "model input"),
    ([1], SpecError, "names"),
])
def test_bad_locations(after, error, match):
    model, x = small_resnet()
    snap = snapshot(model)
    with pytest.raises(error, match=match):
        fxgrow.deepen(model, x, after=after, batchnorm=False)
    assert_unchanged(model, snap)


def test_flattened_map_is_not_a_neuron_tensor():
    model, x = vgg_bn()  # module 15 flattens (24, 2, 2): channels mixed with space
    with pytest.raises(NotDeepenableError, match="not a neuron tensor"):
        fxgrow.deepen(model, x, after="15", batchnorm=False)
    # a flatten of (C, 1, 1) maps is just C: a Linear fits there
    model, x = small_resnet()
    g = fxgrow.deepen(model, x, after="flatten")
    assert g.meta["fxgrow.deepen"][0]["layer"] == "linear"
    assert_same_function(model, g, x)


def test_error_hierarchy():
    assert issubclass(UnknownLocationError, UnknownTargetError)
    for e in (UnknownLocationError, NotDeepenableError, NotIdempotentError, CalibrationError,
              MissingCalibrationError):
        assert issubclass(e, DeepenError) and issubclass(e, fxgrow.FxGrowError)


@pytest.mark.parametrize("kwargs", [
    {"method": "deeper"}, {"method": 3}, {"kernel_size": 2}, {"kernel_size": "3"},
    {"kernel_size": 3.0}, {"kernel_size": True}, {"seed": "a"}, {"seed": 1.5}, {"seed": None},
    {"trials": 1.5}, {"trials": -1}, {"rtol": "a"}, {"rtol": -1.0}, {"verify": "yes"},
    {"after": None}, {"after": 123}, {"after": {"layer1": 1}},
], ids=repr)
def test_bad_options(kwargs):
    model, x = small_resnet()
    (name,) = kwargs  # the message names the argument
    with pytest.raises(SpecError, match=name):
        fxgrow.deepen(model, x, batchnorm=False, **{"after": "layer1.0.conv1", **kwargs})


def test_auto_takes_the_residual_block_where_a_batchnorm_uses_batch_statistics():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1)).train()
    x = torch.randn(4, 3, 8, 8)
    deep = fxgrow.deepen(m, x, after="2", method="auto", calibration=x, verify=False)
    (record,) = deep.meta["fxgrow.deepen"]
    assert record["method"] == "residual" and "batch statistics" in record["why"]
    fresh = torch.randn(4, 3, 8, 8)
    torch.manual_seed(1)
    expected = torch.func.functional_call(m, {k: v.clone() for k, v in m.state_dict().items()},
                                          (fresh,))
    got = torch.func.functional_call(deep, {k: v.clone() for k, v in deep.state_dict().items()},
                                     (fresh,))
    assert torch.allclose(got, expected, atol=1e-5)


def test_kernel_size_is_checked_without_a_conv_site():
    model, x = relu_mlp()
    with pytest.raises(SpecError, match="odd"):
        fxgrow.deepen(model, x, after="1", kernel_size=2)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_calibration_data_must_be_finite(value):
    model, x = vgg_bn()
    bad = x.clone()
    bad[0, 0, 0, 0] = value
    with pytest.raises(CalibrationError, match="not finite: 1 of"):
        fxgrow.deepen(model, x, after="all", calibration=bad, verify=False)
