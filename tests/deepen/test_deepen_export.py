"""Deepening graphs captured by torch.export: module names, after="all", ATen activations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from models import hardtanh_mlp
from helpers import assert_same_function
from fxgrow.errors import CalibrationError, NotIdempotentError
from fxgrow.testing.models import tiny_resnet
from models import vgg_bn


def relu_gelu_mlp():
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.GELU(),
                         nn.Linear(10, 3)), torch.randn(7, 6)


def _recs(g, *keys):
    return [tuple(r[k] for k in keys) for r in g.meta["fxgrow.deepen"]]


def test_mlp_all_through_export_matches_fx():
    model, x = relu_gelu_mlp()
    g = fxgrow.deepen(model, x, after="all", method="auto", capture="export")
    assert_same_function(model, g, x)
    ref = fxgrow.deepen(model, x, after="all", method="auto", capture="fx")
    keys = ("module", "method", "activation", "layer")
    # the ATen ReLU is idempotent (identity + ReLU), the ATen GELU is not (residual)
    assert _recs(g, *keys) == _recs(ref, *keys) == [("1_deepen0", "identity", "ReLU", "linear"),
                                                    ("3_deepen0", "residual", "GELU", "linear")]
    assert list(g.meta["fxgrow.deepen_skipped"]) == ["linear_2"]  # the output layer: fixed
    assert_same_function(model, fxgrow.widen(g, x, 2.0), x)


def test_mlp_module_names_through_export():
    model, x = relu_gelu_mlp()
    g = fxgrow.deepen(model, x, after=["0", "3"], method="auto", capture="export")
    assert_same_function(model, g, x)
    assert _recs(g, "after", "module", "method") == [("linear", "0_deepen0", "identity"),
                                                      ("gelu", "3_deepen0", "residual")]
    with pytest.raises(NotIdempotentError, match="GELU"):
        fxgrow.deepen(model, x, after="3", method="identity", capture="export")


def test_cnn_with_bn_all_through_export_calibrated():
    model, x = vgg_bn()
    calib = torch.randn(30, 3, 16, 16)  # cut into chunks of the exported batch size (4)
    g = fxgrow.deepen(model, x, after="all", calibration=calib, capture="export")
    assert_same_function(model, g, x)
    ref = fxgrow.deepen(model, x, after="all", calibration=calib[:28], capture="fx")
    keys = ("module", "method", "layer", "kernel_size", "batchnorm", "activation")
    assert _recs(g, *keys) == _recs(ref, *keys)
    assert [r[4] for r in _recs(g, *keys)] == [True] * 4 + [False]
    # the mirrored BN holds the data statistics after the first ReLU (on the chunks used)
    h = F.relu(model[1](model[0](calib[:28])))
    bn = g.get_submodule("2_deepen0.bn")
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var((0, 2, 3), unbiased=False), atol=1e-5)
    assert_same_function(model, fxgrow.widen(g, x, 2.0), x)


def test_calibration_smaller_than_the_exported_batch():
    model, x = vgg_bn()
    with pytest.raises(CalibrationError, match="fixed batch size of 4"):
        fxgrow.deepen(model, x, after="all", calibration=torch.randn(3, 3, 16, 16),
                      capture="export")


def test_resnet_module_names_through_export():
    model, x = tiny_resnet(width=4).eval(), torch.randn(2, 3, 8, 8)
    g = fxgrow.deepen(model, x, after=["layer1.0.relu", "layer2.0"],
                      calibration=torch.randn(8, 3, 8, 8), capture="export")
    assert_same_function(model, g, x)
    # relu is called twice in a block; "layer2.0" (a container) ends at its last ReLU
    assert _recs(g, "module", "batchnorm") == [("layer1.0.relu_deepen0", True),
                                               ("layer1.0.relu_deepen1", False),
                                               ("layer2.0_deepen0", False)]
    g = fxgrow.deepen(model, x, after="all", method="residual", capture="export")
    assert_same_function(model, g, x)
    ref = fxgrow.deepen(model, x, after="all", method="residual", capture="fx")
    # the same locations, named after the same modules, as through symbolic_trace
    assert _recs(g, "module", "layer") == _recs(ref, "module", "layer")
    assert len(g.meta["fxgrow.deepen"]) == 14


def test_aten_hardtanh_keeps_its_bounds():
    model, x = hardtanh_mlp()
    g = fxgrow.deepen(model, x, after="all", capture="export")
    assert_same_function(model, g, x)
    (rec,) = g.meta["fxgrow.deepen"]
    act = g.get_submodule(rec["module"] + ".act")
    assert isinstance(act, nn.Hardtanh) and (act.min_val, act.max_val) == (-0.5, 2.0)
