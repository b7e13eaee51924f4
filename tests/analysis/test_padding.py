"""fxgrow.analysis.padding: LayerNorm'd streams grow to any width where the path is affine
(mean-padding), RMSNorm'd ones where it is linear (zero-padding)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import assert_same_function
from fxgrow.analysis.padding import mean_pad_problem, pad_mode
from fxgrow.ops.access import node_arg
from transformer_models import GPT, Bert


def test_pre_ln_gpt_residual_grows_to_any_width():
    m = GPT(norm="layer").eval()
    idx = torch.randint(0, 50, (2, 12))
    a = fxgrow.analyze(m, idx)
    residual = a.group(a.members[("wte.weight", 1)].layout.space)
    assert residual.uniform and mean_pad_problem(a, residual.id) is None
    g = fxgrow.widen(a, idx, {residual.id: 23})  # 16 -> 23: not a multiple
    assert g.wte.weight.shape == (50, 23) and g.lm_head.weight is g.wte.weight
    ln = g.get_submodule("blocks.0.ln1")
    assert ln.normalized_shape == (23,) and ln.eps == pytest.approx(1e-5 * 16 / 23)
    assert_same_function(m, g, idx)
    # and together with heads and MLP widths
    spec = {gr.id: 1.5 for gr in a.growable}
    assert fxgrow.widen(a, idx, spec).meta["fxgrow.report"].ok


def test_mean_pad_float64_is_tight():
    m = GPT(norm="layer").double().eval()
    idx = torch.randint(0, 50, (2, 12))
    g = fxgrow.widen(m, idx, 1.3, verify=False)
    assert fxgrow.verify(m, g, idx).max_rel < 1e-12


def test_post_ln_and_nonlinear_paths_are_refused_with_reason():
    b = Bert().eval()
    inputs = {"input_ids": torch.randint(0, 40, (2, 5)),
              "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    a = fxgrow.analyze(b, inputs)
    (residual,) = a.groups_of("tok")
    problem = mean_pad_problem(a, residual.id)
    assert "not affine" in problem and "LayerNorm" in problem
    with pytest.raises(fxgrow.ConstraintError, match="mean- or zero-padding does not apply"):
        fxgrow.widen(a, inputs, {residual.id: 20})
    relu_first = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4), nn.Linear(4, 2))
    a = fxgrow.analyze(relu_first, torch.randn(2, 3))
    assert "ReLU" in mean_pad_problem(a, a.group("0").id)


def test_integer_factors_still_replicate():
    m = GPT(norm="layer").eval()
    idx = torch.randint(0, 50, (1, 12))
    a = fxgrow.analyze(m, idx)
    residual = a.members[("wte.weight", 1)].layout.space
    plan = fxgrow.plan_widening(a, {residual: 32})
    assert plan.growth[residual].mode == "replicate"
    plan = fxgrow.plan_widening(a, {residual: 20})
    assert plan.growth[residual].mode == "mean" and "mean-padded" in str(plan)


needs_rmsnorm = pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="nn.RMSNorm needs torch 2.4")


@needs_rmsnorm
def test_rmsnorm_gpt_residual_is_zero_padded():
    # pre-norm, nn.RMSNorm, tied embeddings, SDPA: every group x1.5 at once
    m = GPT(norm="nn.rms").eval()
    idx = torch.randint(0, 50, (2, 12))
    a = fxgrow.analyze(m, idx)
    residual = a.group(a.members[("wte.weight", 1)].layout.space)
    assert pad_mode(a, residual.id) == ("zero", None)
    g = fxgrow.widen(a, idx, {residual.id: 21})
    assert_same_function(m, g, idx)
    assert g.wte.weight.shape == (50, 21) and g.lm_head.weight is g.wte.weight
    assert torch.count_nonzero(g.wte.weight[:, 16:]) == 0  # new neurons start at 0
    norm = g.get_submodule("blocks.1.ln2")
    assert norm.normalized_shape == (21,) and norm.eps == pytest.approx(1e-6 * 16 / 21)
    assert torch.allclose(norm.weight[:16], m.get_submodule("blocks.1.ln2").weight * (16 / 21) ** 0.5)
    plan = fxgrow.plan_widening(a, {residual.id: 21})
    assert plan.growth[residual.id].mode == "zero" and "zero-padded" in str(plan)
    assert_same_function(m, fxgrow.widen(a, idx, 1.5), idx)


@needs_rmsnorm
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rmsnorm_default_eps_is_made_explicit(dtype):
    m = nn.Sequential(nn.Linear(3, 6), nn.RMSNorm(6), nn.Linear(6, 2)).to(dtype).eval()
    x = torch.randn(4, 3, dtype=dtype)
    g = fxgrow.widen(m, x, {"0": 10})
    assert_same_function(m, g, x)
    assert g.get_submodule("1").eps == pytest.approx(torch.finfo(dtype).eps * 6 / 10)


@needs_rmsnorm
@pytest.mark.parametrize("forward, problem", [
    (lambda self, x: self.n(self.f(x) + 1.0), "adds a constant"),
    (lambda self, x: self.n(torch.relu(self.f(x))), "not linear"),
    (lambda self, x: self.n(self.f(x)) + self.m(self.f(x)), "both LayerNorm and RMSNorm"),
    (lambda self, x: self.n(self.f(x)) + self.f(x).amax(-1, keepdim=True), "max or min"),
    (lambda self, x: self.n(self.f(x)) + self.f(x).max(-1, keepdim=True)[0], "max or min"),
    (lambda self, x: self.n(self.f(x)) + torch.min(self.f(x)), "max or min"),
])
def test_zero_padding_refused_with_reason(forward, problem):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.n, self.m = nn.Linear(3, 6), nn.RMSNorm(6), nn.LayerNorm(6)
            self.o = nn.Linear(6, 2)

        def forward(self, x):
            return self.o(forward(self, x))

    net, x = Net().eval(), torch.randn(4, 3)
    a = fxgrow.analyze(net, x)
    (group,) = a.groups_of("f")
    assert problem in pad_mode(a, group.id)[1]
    with pytest.raises(fxgrow.ConstraintError, match=problem):
        fxgrow.widen(a, x, {"f": 9})
    assert_same_function(net, fxgrow.widen(a, x, {"f": 12}), x)  # integer factors replicate


class WrittenRMS(nn.Module):
    """HF LLaMA's RMSNorm: float32 statistics, weight first, cast back."""

    def __init__(self, d, weight=True):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(d) + 0.5) if weight else None
        self.eps = 1e-5

    def forward(self, x):
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype) if self.weight is not None else h.to(dtype)


class Residual(nn.Module):
    def __init__(self, weight=True):
        super().__init__()
        self.emb, self.n1, self.f = nn.Linear(3, 6), WrittenRMS(6, weight), nn.Linear(6, 6)
        self.n2, self.o = WrittenRMS(6, weight), nn.Linear(6, 2)

    def forward(self, x):
        h = self.emb(x)
        h = h + self.f(self.n1(h))
        return self.o(self.n2(h))


def test_written_out_rmsnorm_is_zero_padded():
    m, x = Residual().eval(), torch.randn(4, 3)
    a = fxgrow.analyze(m, x)
    (group,) = a.groups_of("emb")
    assert pad_mode(a, group.id) == ("zero", None)
    g = fxgrow.widen(a, x, {"emb": 10})
    assert_same_function(m, g, x)
    adds = [n for n in g.graph.nodes if n.op == "call_function" and n.args
            and getattr(n.args[0], "name", "").startswith("mean")]
    assert adds and all(n.args[1] == pytest.approx(1e-5 * 6 / 10) for n in adds)
    assert torch.allclose(g.n1.weight[:6], m.n1.weight * (6 / 10) ** 0.5)
    # in float64 (GPT's RMSNorm computes in the input dtype) the match is to rounding
    md, idx = GPT(norm="rms").double().eval(), torch.randint(0, 50, (2, 12))
    gd = fxgrow.widen(md, idx, 1.3, verify=False)
    assert fxgrow.verify(md, gd, idx).max_rel < 1e-12


def test_written_out_rmsnorm_without_weight_keeps_integer_factors():
    # nothing to take the sqrt(n/n') back: uniform replication only
    m, x = Residual(weight=False).eval(), torch.randn(4, 3)
    a = fxgrow.analyze(m, x)
    (group,) = a.groups_of("emb")
    assert "written-out RMSNorm" in pad_mode(a, group.id)[1]
    assert_same_function(m, fxgrow.widen(a, x, {"emb": 12}), x)
    with pytest.raises(fxgrow.ConstraintError, match="integer factor"):
        fxgrow.widen(a, x, {"emb": 10})


def test_written_out_rmsnorm_weight_read_elsewhere_keeps_integer_factors():
    class Shared(Residual):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(6, 2)

        def forward(self, x):  # the norm's weight also scales another branch
            return super().forward(x) + self.extra(self.emb(x) * self.n2.weight)

    m, x = Shared().eval(), torch.randn(4, 3)
    a = fxgrow.analyze(m, x)
    (group,) = a.groups_of("emb")
    assert pad_mode(a, group.id)[0] is None
    with pytest.raises(fxgrow.ConstraintError):
        fxgrow.widen(a, x, {"emb": 10})


class _MaxBeside(nn.Module):
    """A LayerNorm'd stream, and a max over the same neurons elsewhere."""

    def __init__(self, where):
        super().__init__()
        self.a, self.ln, self.b = nn.Linear(4, 16), nn.LayerNorm(16), nn.Linear(16, 3)
        self.where = where

    def forward(self, x):
        h = self.a(x)
        y = self.ln(h)
        side = (y if self.where == "after the norm" else torch.cos(h)).amax(-1, keepdim=True)
        return self.b(y) + side


@pytest.mark.parametrize("where", ["after the norm", "after a nonlinear op"])
def test_mean_padding_refuses_a_max_over_new_neurons_it_does_not_control(where):
    m = _MaxBeside(where).double().eval()
    with torch.no_grad():
        m.ln.bias.fill_(-5.0)  # new LayerNorm outputs are 0, far above every old one
    x = torch.randn(6, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert "max or min" in mean_pad_problem(a, a.group("a").id)
    with pytest.raises(fxgrow.ConstraintError, match="max or min"):
        fxgrow.widen(m, x, {"a": 21}, verify=False)


def test_an_integer_cast_is_not_an_affine_step():
    class Cast(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.ln, self.b = nn.Linear(4, 16), nn.LayerNorm(16), nn.Linear(16, 3)

        def forward(self, x):
            return self.b(self.ln((self.a(x) * 4).to(torch.int64).to(torch.float64)))

    m = Cast().double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert "is not affine" in mean_pad_problem(a, a.group("a").id)


def test_written_out_rmsnorm_is_zero_padded_through_export():
    # export checks every `.to(dtype)` with an `_assert_tensor_metadata`: no second use
    m, x = Residual().eval(), torch.randn(4, 3)
    a = fxgrow.analyze(m, x, capture="export")
    assert any("_assert_tensor_metadata" in str(n.target) for n in a.graph_module.graph.nodes)
    (group,) = a.groups_of("emb")
    assert pad_mode(a, group.id) == ("zero", None)
    g = fxgrow.widen(a, x, {"emb": 10}, verify=False)
    assert_same_function(m, g, x)


class FunctionalNorms(nn.Module):
    """A pre-norm stream normalised by ``F.layer_norm`` / ``F.rms_norm`` on its own tensors
    (what torch.export makes of ``nn.LayerNorm`` and ``nn.RMSNorm``)."""

    def __init__(self, kind="layer", eps=1e-4, module=False, weight=True):
        super().__init__()
        self.kind, self.eps, self.module = kind, eps, module
        self.emb, self.f, self.o = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 2)
        cls = nn.LayerNorm if kind == "layer" else nn.RMSNorm
        self.n1, self.n2 = cls(6, eps=eps), cls(6, eps=eps)
        for n in (self.n1, self.n2):
            nn.init.uniform_(n.weight, 0.5, 1.5)
            if getattr(n, "bias", None) is not None:
                nn.init.normal_(n.bias, std=0.1)
            if not weight:
                n.weight = None

    def norm(self, n, h):
        if self.module:
            return n(h)
        if self.kind == "layer":
            return F.layer_norm(h, (6,), n.weight, n.bias, self.eps)
        return F.rms_norm(h, (6,), n.weight, self.eps)

    def forward(self, x):
        h = self.emb(x)
        h = h + self.f(self.norm(self.n1, h))
        return self.o(self.norm(self.n2, h))


@needs_rmsnorm
@pytest.mark.parametrize("kind, eps, module, capture", [
    ("layer", 1e-4, False, "fx"), ("rms", 1e-4, False, "fx"), ("rms", None, False, "fx"),
    ("layer", 1e-5, True, "export"), ("rms", 1e-6, True, "export"), ("rms", None, True, "export"),
])
def test_functional_norms_are_padded(kind, eps, module, capture):
    # the literal eps is rewritten x n/n' in the graph, the weight x sqrt(n/n') in place
    m, x = FunctionalNorms(kind, eps, module).double().eval(), torch.randn(4, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    (group,) = a.groups_of("emb")
    assert pad_mode(a, group.id) == ({"layer": "mean", "rms": "zero"}[kind], None)
    g = fxgrow.widen(a, x, {"emb": 10}, verify=False)
    assert fxgrow.verify(m, g, x).max_rel < 1e-12
    norms = [n for n in g.graph.nodes if "norm" in str(n.target)]
    default = 1e-5 if kind == "layer" else torch.finfo(torch.float64).eps
    assert len(norms) == 2
    for n in norms:
        given = node_arg(n, 4 if kind == "layer" else 3, "eps")
        assert given == pytest.approx((eps or default) * 6 / 10)
    assert torch.allclose(g.n1.weight[:6], m.n1.weight * (6 / 10) ** 0.5)


def test_functional_norm_refusals_name_the_node():
    m, x = FunctionalNorms("layer", weight=False).eval(), torch.randn(4, 3)
    a = fxgrow.analyze(m, x)
    (group,) = a.groups_of("emb")
    assert "`layer_norm` has no affine weight" in pad_mode(a, group.id)[1]

    class Shared(FunctionalNorms):
        def forward(self, x):  # the gain also scales another branch: it cannot be rescaled
            return super().forward(x) + self.o(self.emb(x) * self.n2.weight)

    m = Shared("layer").eval()
    a = fxgrow.analyze(m, x)
    (group,) = a.groups_of("emb")
    assert "layer_norm_1`'s weight or bias is not a 1-D tensor of the group that only it reads" \
        in pad_mode(a, group.id)[1]
    with pytest.raises(fxgrow.ConstraintError, match="only it reads"):
        fxgrow.widen(a, x, {"emb": 10})
    assert_same_function(m, fxgrow.widen(a, x, {"emb": 12}), x)


@needs_rmsnorm
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rmsnorm_default_eps_of_half_types_is_float32s(dtype):
    # rms_norm computes half types in float32, and its eps=None is float32's epsilon
    m = nn.Sequential(nn.Linear(3, 6), nn.RMSNorm(6), nn.Linear(6, 2)).to(dtype).eval()
    g = fxgrow.widen(m, torch.randn(4, 3, dtype=dtype), {"0": 10}, verify=False)
    assert g.get_submodule("1").eps == pytest.approx(torch.finfo(torch.float32).eps * 6 / 10)


class _OffsetGainRMS(nn.Module):
    """A written-out RMSNorm whose gain is ``c + w`` (Gemma's ``1 + w``), or ``w + c·alpha``."""

    def __init__(self, c=1.0, alpha=None, d=6):
        super().__init__()
        self.a, self.b = nn.Linear(3, d), nn.Linear(d, 2)
        self.w = nn.Parameter(0.3 * torch.randn(d))
        self.c, self.alpha = c, alpha

    def forward(self, x):
        h = self.a(x)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        g = self.c + self.w if self.alpha is None else torch.add(self.w, self.c, alpha=self.alpha)
        return self.b(h * g)


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("c", [1.0, 2.5])
def test_an_offset_gain_is_rescaled_with_its_offset(c, capture):
    # zero-padding scales the gain by sqrt(n/n'): (c + w)·s = c + w' for w' = (c + w)·s - c
    m, x = _OffsetGainRMS(c).double().eval(), torch.randn(5, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    for f in (2.0, 1.5):
        g = fxgrow.widen(a, x, f, verify=False)
        assert fxgrow.verify(m, g, x).max_rel < 1e-12
    s = (6 / 9) ** 0.5
    assert torch.allclose(c + g.get_parameter("w")[:6], (c + m.w) * s)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_scaled_offset_is_no_gain(capture):
    # torch.add(w, c, alpha=...) scales the literal: not `c + w`, so integer factors only
    m, x = _OffsetGainRMS(1.0, alpha=2.0).double().eval(), torch.randn(5, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert fxgrow.verify(m, fxgrow.widen(a, x, 2.0, verify=False), x).max_rel < 1e-12
    with pytest.raises(fxgrow.ConstraintError, match="integer factor.*node `mean`"):
        fxgrow.widen(a, x, 1.5)
