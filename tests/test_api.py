"""fxgrow.analyze / fxgrow.widen end to end: exactness, options and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, snapshot
from models import ALL, LeNet, mlp, resnet, vgg_bn

SPECS = [2.0, 1.5, 3]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"x{s}")
@pytest.mark.parametrize("name", sorted(ALL))
def test_widen_every_group_is_exact(name, spec):
    model, x = ALL[name]()
    snap = snapshot(model)
    a = fxgrow.analyze(model, x)
    assert a.growable, "every test architecture has something to grow"
    grown = fxgrow.widen(model, x, spec, verify=False)
    assert_same_function(model, grown, x)
    assert_unchanged(model, snap)
    sizes = grown.meta["fxgrow.plan"]
    assert sizes and all(new > old for old, new in sizes.values())


@pytest.mark.parametrize("name", sorted(ALL))
def test_widen_float64(name):
    model, x = ALL[name]()
    model = model.double()
    x = x.double()
    grown = fxgrow.widen(model, x, 1.7, verify=False)
    assert all(p.dtype == torch.float64 for p in grown.parameters())
    report = assert_same_function(model, grown, x)
    assert report.max_rel < 1e-12


@pytest.mark.parametrize("name", sorted(ALL))
def test_arbitrary_width_per_group(name):
    model, x = ALL[name]()
    a = fxgrow.analyze(model, x)
    spec = {g.id: g.size + 1 + (g.id % 3) for g in a.growable if not g.uniform}
    if not spec:
        pytest.skip("only uniform groups")
    grown = fxgrow.widen(a, x, spec)
    assert grown.meta["fxgrow.report"].ok
    assert {g: new for g, (_, new) in grown.meta["fxgrow.plan"].items()} == spec


def test_train_mode_batchnorm_is_exact():
    model, x = vgg_bn()
    model = model.train()
    for m in model.modules():  # dropout would draw different masks for different widths
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    grown = fxgrow.widen(model, x, 2.0, verify=False)
    assert grown.training
    assert_same_function(model, grown, x)


def test_result_is_a_consistent_saveable_module(tmp_path):
    model, x = resnet()
    grown = fxgrow.widen(model, x, {"layer1.0.conv1": 13, "conv1": 11})
    assert isinstance(grown, fx.GraphModule)
    assert list(grown.state_dict()) == list(model.state_dict())
    assert dict(grown.named_modules()).keys() == dict(model.named_modules()).keys()
    conv = grown.get_submodule("layer1.0.conv1")
    assert (conv.out_channels, conv.in_channels) == (13, 11)
    assert conv.weight.shape == (13, 11, 3, 3)
    bn = grown.get_submodule("layer1.0.bn1")
    assert bn.num_features == 13 and bn.running_mean.shape == (13,)
    # a consistent module can be rebuilt from its attributes and its state_dict
    clone = copy.deepcopy(grown)
    clone.load_state_dict(grown.state_dict())
    torch.save(grown.state_dict(), tmp_path / "sd.pt")
    assert torch.equal(clone(x), grown(x))


def test_grown_model_trains_one_step():
    model, x = mlp()
    grown = fxgrow.widen(model, x, 2.0)
    opt = torch.optim.SGD(grown.parameters(), lr=0.1)
    before = {k: v.detach().clone() for k, v in grown.named_parameters()}
    loss = grown(x).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in grown.parameters())
    opt.step()
    assert all(not torch.equal(before[k], v) for k, v in grown.named_parameters())


def test_graph_module_input_is_used_as_is():
    model, x = lenet_like = (LeNet(), torch.randn(2, 1, 28, 28))
    gm = fx.symbolic_trace(model)
    snap = snapshot(gm)
    grown = fxgrow.widen(gm, x, 2.0)
    assert grown.meta["fxgrow.report"].ok
    assert_unchanged(gm, snap)
    assert "fxgrow.value" not in next(iter(gm.graph.nodes)).meta


def test_dict_and_tuple_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 8)
            self.b = nn.Linear(5, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, x, y, scale: float = 1.0):
            return self.out(F.relu(self.a(x) + self.b(y))) * scale

    m = Two()
    x, y = torch.randn(4, 3), torch.randn(4, 5)
    g1 = fxgrow.widen(m, (x, y), 2.0)
    g2 = fxgrow.widen(m, {"x": x, "y": y}, 2.0)
    assert_same_function(m, g1, (x, y))
    assert_same_function(m, g2, {"x": x, "y": y})


def test_inits_and_determinism():
    model, x = mlp()
    a = fxgrow.analyze(model, x)
    g1 = fxgrow.widen(a, x, 1.5, seed=3)
    g2 = fxgrow.widen(a, x, 1.5, seed=3)
    for (k, v), (_, w) in zip(g1.state_dict().items(), g2.state_dict().items()):
        assert torch.equal(v, w), k
    noisy = fxgrow.widen(a, x, 2.0, noise=0.05)
    assert "fxgrow.report" not in noisy.meta  # noise is not exact, so not verified by default
    r = fxgrow.verify(model, noisy, x)
    assert 0 < r.max_rel < 0.5
    for init in ("random_pad", "random_init"):
        g = fxgrow.widen(a, x, 2.0, init=init, seed=1)
        assert not fxgrow.verify(model, g, x).ok
        again = fxgrow.widen(a, x, 2.0, init=init, seed=1)
        assert all(torch.equal(p, q) for p, q in zip(g.parameters(), again.parameters()))
    pad = fxgrow.widen(a, x, 2.0, init="random_pad")
    # random_pad keeps the old neurons' weights unscaled in their old positions
    assert torch.equal(pad.get_submodule("0").weight[:32], model[0].weight)
    assert torch.equal(pad.get_submodule("2").weight[:24, :32], model[2].weight)


def test_noise_with_verify_true_reports_mismatch():
    model, x = mlp()
    with pytest.raises(fxgrow.VerificationError) as e:
        fxgrow.widen(model, x, 2.0, noise=0.5, verify=True)
    assert not e.value.report.ok


# -- bad input ------------------------------------------------------------------
class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: untraceable
            return self.fc(x)
        return x


def test_untraceable_model_names_the_construct():
    m = Branchy()
    snap = snapshot(m)
    with pytest.raises(fxgrow.TraceError) as e:
        fxgrow.widen(m, torch.randn(2, 4), 2.0)
    msg = str(e.value)
    assert "if x.sum() > 0" in msg and "leaf_modules" in msg and "concrete_args" in msg
    assert_unchanged(m, snap)


def test_example_input_that_does_not_run():
    model, _ = mlp()
    with pytest.raises(fxgrow.ExampleInputError, match="fails on the example input"):
        fxgrow.analyze(model, torch.randn(3, 7))
    with pytest.raises(fxgrow.ExampleInputError):
        fxgrow.analyze(model, "not a tensor")
    with pytest.raises(fxgrow.ExampleInputError, match="unknown keyword"):
        fxgrow.analyze(model, {"nope": torch.randn(3, 10)})


def test_narrowing_unknown_names_and_blocked_groups():
    model, x = resnet()
    snap = snapshot(model)
    a = fxgrow.analyze(model, x)
    with pytest.raises(fxgrow.NarrowingError):
        fxgrow.widen(a, x, 0.5)
    with pytest.raises(fxgrow.NarrowingError):
        fxgrow.widen(a, x, {"layer1.0.conv1": 4})
    with pytest.raises(fxgrow.UnknownTargetError, match="did you mean"):
        fxgrow.widen(a, x, {"layer1.0.conv9": 20})
    with pytest.raises(fxgrow.UnknownTargetError):
        fxgrow.widen(a, x, {999: 20})
    with pytest.raises(fxgrow.GroupNotGrowableError) as e:
        fxgrow.widen(a, x, {"fc": 20})
    assert "model output" in e.value.reason
    with pytest.raises(fxgrow.UnknownInitError):
        fxgrow.widen(a, x, 2.0, init="xavier")
    with pytest.raises(fxgrow.SpecError):
        fxgrow.widen(a, x, "twice")
    assert_unchanged(model, snap)


def test_blocked_group_error_names_the_node():
    class Sorted(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 6)
            self.fc2 = nn.Linear(6, 3)

        def forward(self, x):
            h = torch.sort(self.fc1(x), dim=-1).values
            return self.fc2(h)

    m, x = Sorted(), torch.randn(2, 4)
    a = fxgrow.analyze(m, x)
    g = a.group("fc1")
    # sort picks positions by value: the neurons cannot be copied, and the reason names it
    assert g.status in ("blocked", "fixed") and "(node `sort`)" in g.reason
    with pytest.raises(fxgrow.GroupNotGrowableError, match="sort"):
        fxgrow.widen(a, x, {"fc1": 12})
    # a global factor grows only what can grow
    grown = fxgrow.widen(a, x, 2.0) if a.growable else None
    assert grown is None or grown.meta["fxgrow.report"].ok


def test_every_error_is_an_fxgrow_error():
    for cls in (fxgrow.TraceError, fxgrow.ExampleInputError, fxgrow.NarrowingError,
                fxgrow.UnknownTargetError, fxgrow.GroupNotGrowableError,
                fxgrow.ConstraintError, fxgrow.UnknownInitError, fxgrow.VerificationError):
        assert issubclass(cls, fxgrow.FxGrowError)


# -- argument checks (fxgrow/checks.py) -------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"noise": "a"}, "noise"), ({"noise": float("nan")}, "noise"), ({"noise": float("inf")}, "noise"),
    ({"noise": 1j}, "noise"), ({"noise": -1.0}, "noise"), ({"noise": True}, "noise"),
    ({"trials": 1.5}, "trials"), ({"trials": -1}, "trials"),
    ({"rtol": "a"}, "rtol"), ({"rtol": -1}, "rtol"),
    ({"seed": None}, "seed"), ({"seed": "a"}, "seed"), ({"seed": 2 ** 70}, "seed"),
    ({"seed": 1.5}, "seed"), ({"seed": False}, "seed"), ({"verify": "yes"}, "verify"),
    ({"init": None}, "init"),
    ({"leaf_modules": nn.Linear}, r"did you mean \[Linear\]"),
    ({"leaf_modules": "nope"}, r"not a str \(did you mean \['nope'\]"),
    ({"leaf_modules": ["nope"]}, "names no module of the model: .'nope'."),
    ({"leaf_modules": [3]}, "neither"),
    ({"concrete_args": {"nope": 1}}, "not parameters of Sequential.forward"),
    ({"concrete_args": [1]}, "concrete_args must be a dict"),
    ({"capture": "export", "leaf_modules": ["0"]}, "apply to torch.fx tracing"),
], ids=repr)
def test_bad_arguments_are_spec_errors(kwargs, match):
    model, x = mlp()
    snap = snapshot(model)
    with pytest.raises(fxgrow.SpecError, match=match):
        fxgrow.widen(model, x, 2.0, **kwargs)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("spec", [float("nan"), float("inf"), {"0": float("nan")},
                                  {"0": float("inf")}], ids=repr)
def test_non_finite_specs_are_spec_errors(spec):
    model, x = mlp()
    with pytest.raises(fxgrow.SpecError, match="finite"):
        fxgrow.widen(model, x, spec)


def test_capture_options_do_not_apply_to_an_analysis():
    model, x = mlp()
    a = fxgrow.analyze(model, x)
    with pytest.raises(fxgrow.SpecError, match="capture and leaf_modules do not apply"):
        fxgrow.widen(a, x, 2.0, capture="bogus", leaf_modules=["nope"])
    with pytest.raises(fxgrow.SpecError, match="concrete_args does not apply"):
        fxgrow.widen(a, x, 2.0, concrete_args={"x": 1})
    assert fxgrow.widen(a, x, 2.0, capture="auto").meta["fxgrow.report"].ok


def test_leaf_modules_by_name_still_work():
    model, x = mlp()
    a = fxgrow.analyze(model, x, leaf_modules=["1"])
    assert [n.op for n in a.graph_module.graph.nodes].count("call_module") == 5


def test_a_meta_model_grows_without_verification():
    model, x = mlp()
    model, x = model.to("meta"), x.to("meta")
    with pytest.raises(fxgrow.SpecError, match="needs real tensors.*pass verify=False"):
        fxgrow.widen(model, x, 2.0)
    grown = fxgrow.widen(model, x, 2.0, verify=False)
    assert grown.get_submodule("0").weight.shape == (64, 10)
    assert grown.get_submodule("0").weight.device.type == "meta"


def test_lower_level_steps_check_their_arguments():
    model, x = mlp()
    with pytest.raises(fxgrow.SpecError, match="needs an Analysis"):
        fxgrow.plan_widening(model, 2.0)
    with pytest.raises(fxgrow.SpecError, match="needs a GrowthPlan"):
        fxgrow.apply_plan({1: (32, 64)})
    plan = fxgrow.plan_widening(fxgrow.analyze(model, x), 2.0)
    with pytest.raises(fxgrow.SpecError, match="noise"):
        fxgrow.apply_plan(plan, noise=-0.5)
