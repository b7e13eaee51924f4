"""Rules for BatchNorm, InstanceNorm, LayerNorm, RMSNorm, GroupNorm, F.normalize (fxgrow.rules.norms)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import blocked, exact_or_refused, grow_exactly


def test_layer_norm_integer_factors_replicate_others_mean_pad():
    m = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3))
    x = torch.randn(5, 4)
    a = fxgrow.analyze(m, x)
    assert a.group("0").uniform
    g = grow_exactly(m, x, 3)
    assert g.get_submodule("1").normalized_shape == (18,)
    grow_exactly(m, x, 1.5)  # LayerNorm right after the producer: mean-padding applies
    after_gelu = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 3))
    with pytest.raises(fxgrow.ConstraintError, match="integer factor"):
        fxgrow.widen(after_gelu, x, 1.5)


def test_group_norm_widens_within_groups():
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 2, 1))
    x = torch.randn(2, 3, 4, 4)
    g = grow_exactly(m, x, 2.0)
    assert g.get_submodule("1").num_channels == 16 and g.get_submodule("1").num_groups == 2


def test_instance_norm_and_prelu_any_width():
    m = nn.Sequential(nn.Conv2d(3, 5, 1), nn.InstanceNorm2d(5, affine=True), nn.PReLU(5),
                      nn.Conv2d(5, 2, 1))
    grow_exactly(m, torch.randn(2, 3, 4, 4), 1.4)


def test_rms_norm_module_and_functional_zero_pad():
    class FnRMS(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 8)
            self.w = nn.Parameter(torch.rand(8) + 0.5)
            self.b = nn.Linear(8, 2)

        def forward(self, x):
            return self.b(F.rms_norm(self.a(x), (8,), self.w))

    x = torch.randn(4, 3)
    for m in (nn.Sequential(nn.Linear(3, 8), nn.RMSNorm(8), nn.SiLU(), nn.Linear(8, 2)), FnRMS()):
        a = fxgrow.analyze(m, x)
        g = a.group(1)
        assert g.growable and any("RMSNorm" in u for u in g.uniform)
        grow_exactly(m, x, 2.0)
        # zero-padded to any width: nn.RMSNorm's eps, or F.rms_norm's literal (default) eps
        # argument rewritten in the graph, the gain scaled by sqrt(n/n')
        grow_exactly(m, x, 1.5)


class _StatsOver(nn.Module):
    """Linear whose neurons become a dim a norm takes statistics over."""

    def __init__(self, norm, view):
        super().__init__()
        self.a, self.norm, self.view, self.b = nn.Linear(4, 16), norm, view, nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(self.norm(self.view(h)).reshape(h.shape))


@pytest.mark.parametrize("norm, view", [
    (nn.InstanceNorm1d(4), lambda h: h.view(-1, 4, 4)),
    (nn.InstanceNorm1d(16), lambda h: h),                 # (N, C) reads as unbatched (C, L)
    (nn.BatchNorm1d(4).train(), lambda h: h.view(-1, 4, 4)),
    (nn.GroupNorm(2, 4), lambda h: h.view(-1, 4, 4)),
    (lambda t: F.batch_norm(t, None, None, training=True), lambda h: h.view(-1, 4, 4)),
])
def test_statistics_over_neurons_need_uniform_replication(norm, view):
    m = _StatsOver(norm, view).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    # the neurons of the dims the statistics run over (not those of the channel dim)
    held = [g for g in a.groups_of("a")
            if g.growable and any("statistics over this dimension" in u for u in g.uniform)]
    assert held
    with pytest.raises(fxgrow.ConstraintError):
        fxgrow.widen(m, x, {g.id: 1.5 for g in held}, verify=False)
    grow_exactly(m, x, 2.0)  # integer factors keep every mean and variance


@pytest.mark.parametrize("norm", [nn.LayerNorm(16, elementwise_affine=False),
                                  nn.RMSNorm(16, elementwise_affine=False)])
def test_a_norm_without_weight_is_not_padded(norm):
    m = nn.Sequential(nn.Linear(4, 16), norm, nn.Linear(16, 3)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(fxgrow.ConstraintError, match="no affine weight"):
        fxgrow.widen(m, x, {"0": 21}, verify=False)
    grow_exactly(m, x, {"0": 32})


def test_functional_norm_shape_read_from_its_input_follows_it():
    class LN(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
            self.w = nn.Parameter(torch.rand(8) + 0.5)

        def forward(self, x):
            h = self.a(x)
            return self.b(F.layer_norm(h, h.shape[-1:], self.w))

    m, x = LN().double(), torch.randn(3, 4, dtype=torch.float64)
    grow_exactly(m, x, 2.0)
    grow_exactly(m, x, 1.5)  # mean-padded: the literal eps argument rewritten in the graph


# -- per-neuron tensors computed in the graph --------------------------------------
class _ComputedGain(nn.Module):
    """Norms whose per-neuron tensors are computed: cast (deepseek's ``RmsNormFp32``),
    offset (``1 + w``), or statistics standardised elsewhere."""

    def __init__(self, how):
        super().__init__()
        self.how, self.a, self.b = how, nn.Linear(4, 8), nn.Linear(8, 2)
        self.w, self.beta = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))
        self.register_buffer("mean", torch.randn(8))
        self.register_buffer("var", torch.rand(8) + 0.5)

    def forward(self, x):
        h = self.a(x)
        if self.how == "rms_cast":
            y = F.rms_norm(h.float(), (8,), self.w.float(), 1e-6).to(h.dtype)
        elif self.how == "layer_offset":
            y = F.layer_norm(h, (8,), 1 + self.w, self.beta * 2)
        else:
            y = F.batch_norm(h, self.mean * 1, self.var.abs(), self.w.to(h.dtype), None)
        return self.b(y)


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("how", ["rms_cast", "layer_offset", "batch_stats"])
def test_per_neuron_tensors_computed_in_the_graph_pass(how, capture):
    dtype = torch.float32 if how == "rms_cast" else torch.float64
    m, x = _ComputedGain(how).to(dtype), torch.randn(3, 4, dtype=dtype)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable, a
    grow_exactly(m, x, 2.0, capture=capture)
    if how == "batch_stats":
        grow_exactly(m, x, 1.5, capture=capture)


# -- F.normalize / torch.linalg.vector_norm -----------------------------------------
class _Normalised(nn.Module):
    """Linear -> a norm over tokens (dim 1) or over the Linear's neurons (dim -1) -> Linear."""

    def __init__(self, f):
        super().__init__()
        self.f, self.a, self.b = f, nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):  # (B, T, 4)
        return self.b(self.f(self.a(x)))


_INF = float("inf")


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("f", [
    lambda h: F.normalize(h, dim=1),  # XCA: over the tokens
    lambda h: h / torch.linalg.vector_norm(h, dim=1, keepdim=True),
    lambda h: F.normalize(h, p=_INF, dim=-1),  # a max over copies is the max
    lambda h: h * torch.linalg.vector_norm(h, ord=-_INF, dim=(-1,), keepdim=True),
    lambda h: h * torch.linalg.vector_norm(h, ord=_INF),
], ids=["normalize-tokens", "vector_norm-tokens", "normalize-inf", "vector_norm-minus-inf",
        "vector_norm-all-inf"])
def test_norms_over_free_dims_or_of_infinite_order_grow(f, capture):
    m, x = _Normalised(f).double(), torch.randn(2, 5, 4, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 2.0, capture=capture)
    grow_exactly(m, x, 1.5, capture=capture)


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("f, node", [
    (lambda h: F.normalize(h, dim=-1), "normalize"),
    (lambda h: F.normalize(h, p=1.0, dim=(1, 2)), "normalize"),
    (lambda h: h * torch.linalg.vector_norm(h, dim=-1, keepdim=True), "linalg_vector_norm"),
    (lambda h: h * torch.linalg.vector_norm(h, ord=0), "linalg_vector_norm"),
], ids=["normalize", "normalize-dims", "vector_norm", "vector_norm-count"])
def test_finite_norms_over_neurons_count_copies_and_block(f, node, capture):
    m, x = _Normalised(f).double(), torch.randn(2, 5, 4, dtype=torch.float64)
    reason = blocked(m, x, "a", capture=capture)
    assert "norm over this dim" in reason and "counts every copy" in reason
    assert f"(node `{node if capture == 'fx' else 'linalg_vector_norm'}" in reason
    assert exact_or_refused(m, x, 2.0, capture=capture) is not None


# -- weight standardisation (timm's StdConv2d / ScaledStdConv2d) ----------------------
class _StdConv(nn.Conv2d):
    """A weight-standardised conv, written as timm's ``StdConv2d``: each output row of the
    weight normalised over its fan-in by ``F.batch_norm`` in training mode."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def _std_convs():
    convs = [_StdConv]
    try:
        from timm.layers import ScaledStdConv2d, StdConv2d
        convs += [StdConv2d, ScaledStdConv2d]
    except ImportError:  # pragma: no cover - timm is optional
        pass
    return convs


@pytest.mark.parametrize("conv", _std_convs(), ids=lambda c: c.__name__)
def test_standardised_conv_weights_block_both_sides(conv):
    """The standardisation renormalises the fan-in: Net2Net's division of the input
    columns by the copy counts would be undone (and the copies then counted twice), so
    the standardised weight blocks the channels on both sides of the conv, saying so."""
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), conv(8, 8, 3, padding=1),
                      nn.ReLU(), nn.Conv2d(8, 4, 1)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert not any(g.growable for g in a.groups), a
    gained = conv.__name__ == "ScaledStdConv2d"  # its gain follows the standardisation
    for g in [a.group("0")] + [g for g in a.groups_of("2") if g.size == 8]:
        assert "the weight of `2` is standardised over its input channels" in g.reason
        assert "(node `" in g.reason
        assert ("re-deriving the gain from the grown weight would be exact" in g.reason) \
            == gained
    assert exact_or_refused(m, x, 2.0) is not None


@pytest.mark.parametrize("ord_", [None, 2, float("inf")])
def test_linalg_norm_over_positions_passes_neurons_and_over_neurons_mixes(ord_):
    class N(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dim = dim
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))  # (B, T, 4)
            return self.b(h / (1 + torch.linalg.norm(h, ord_, dim=self.dim, keepdim=True)))

    x = torch.randn(2, 5, 3, dtype=torch.float64)
    over_positions = N(1).double()
    a = fxgrow.analyze(over_positions, x, capture="export")
    assert any(n.target is torch.ops.aten.linalg_norm.default for n in a.graph_module.graph.nodes)
    assert a.group("a").growable
    grow_exactly(over_positions, x, 2.0, capture="export")
    over_neurons = N(-1).double()
    if ord_ == float("inf"):  # a maximum over copies is unchanged
        grow_exactly(over_neurons, x, 2.0, capture="export")
    else:
        assert "counts every copy" in blocked(over_neurons, x, "a", capture="export")
