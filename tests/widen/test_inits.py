"""fxgrow.widen.inits: ``split`` and ``zero_out`` are exact and break the copies' symmetry.

Exactness is shown by output comparison on fresh inputs (``verify=False``: the claim is
about the initialiser, not the default check); symmetry breaking by one gradient step.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
import models
import transformer_models as tm
from helpers import assert_same_function, every_group, grow_exactly
from fxgrow.widen.apply import apply_plan
from fxgrow.widen.inits import SPLIT_RANGE, initialise, prepare, split_shares
from fxgrow.widen.plan import plan_widening

CNNS = ["lenet", "vgg_bn", "resnet", "densenet", "se_block", "mobilenet_block", "grouped",
        "conv1d_net", "split_net", "hardtanh_mlp"]


def _transformers():
    idx = torch.randint(0, 50, (2, 12))
    ids = torch.randint(0, 40, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    return {
        "gpt_layernorm": (tm.GPT(norm="ln"), idx),
        "gpt_rmsnorm": (tm.GPT(norm="rms"), idx),
        "gpt_nn_rmsnorm": (tm.GPT(norm="nn.rms"), idx),
        "bert_post_ln": (tm.Bert(), (ids, mask)),
        "encoder_norm_first": (tm.EncoderClassifier(True, True), torch.randn(2, 5, 6)),
        "mha_sqrt_scale": (tm.MHANet(), torch.randn(2, 5, 5)),
        "nanogpt_attention": (tm.NanoGPTAttention(), torch.randn(2, 8, 16)),
    }


@pytest.mark.parametrize("init", ["split", "zero_out"])
@pytest.mark.parametrize("name", ["mlp"] + CNNS)
def test_exact_on_convolutional_and_dense_nets(name, init):
    m, x = getattr(models, name)()
    for spec in (2.0, 1.5):
        grow_exactly(m.eval(), x, spec, init=init)


@pytest.mark.parametrize("init", ["split", "zero_out"])
@pytest.mark.parametrize("name", list(_transformers()))
def test_exact_on_transformers(name, init):
    # LayerNorm / RMSNorm streams (uniform replication, tied embeddings), paired q/k
    # head dims (the key rows take the shares), sqrt-scaled fused attention
    m, x = _transformers()[name]
    m.eval()
    grow_exactly(m, x, 2.0, init=init)  # heads, not head dims
    grow_exactly(m, x, every_group(fxgrow.analyze(m, x)), init=init)  # head dims too


@pytest.mark.parametrize("init", ["split", "zero_out"])
@pytest.mark.parametrize("norm", ["ln", "rms", "nn.rms"])
def test_normalised_streams_at_any_width(norm, init):
    # 1.5x pads the stream (mean or zero), every other group is replicated with shares
    grow_exactly(tm.GPT(norm=norm).eval(), torch.randint(0, 50, (2, 12)), 1.5, init=init)


class Gram(nn.Module):
    """``o(h @ hᵀ) + r(h)``: one space on both sides of a product (``analysis.halved``)."""

    def __init__(self):
        super().__init__()
        self.f, self.o, self.r = nn.Linear(8, 6), nn.Linear(5, 2), nn.Linear(6, 2)

    def forward(self, x):
        h = self.f(x)
        return self.o(h @ h.transpose(-2, -1)) + self.r(h)


class Scores(nn.Module):
    def __init__(self, sdpa=False):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(8, 6)
        self.o = nn.Linear(6, 3)
        self.sdpa = sdpa

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.sdpa:
            return self.o(F.scaled_dot_product_attention(q, k, v))
        return self.o(torch.softmax(q @ k.transpose(-2, -1) / 6 ** 0.5, -1) @ v)


@pytest.mark.parametrize("sdpa", [False, True])
def test_split_takes_the_shares_on_the_divided_side_of_a_contraction(sdpa):
    m, x = Scores(sdpa).eval(), torch.randn(2, 5, 8)
    a = fxgrow.analyze(m, x)
    (pair,) = a.pairings
    plan = prepare(plan_widening(a, {"q": 11}), "split")
    g = apply_plan(plan, "split")
    assert_same_function(m, g, x)
    gg = plan.growth[pair.rescaled]
    rows = g.get_submodule("k").weight.detach()
    assert torch.allclose(rows, m.k.weight[gg.index] * gg.shares[:, None].float())


def test_split_on_both_sides_of_a_product_takes_root_shares():
    m, x = Gram().eval(), torch.randn(2, 5, 8)
    for spec in (every_group(fxgrow.analyze(m, x)), {"f": 9}):
        grow_exactly(m, x, spec, init="split")


def test_split_shares_sum_to_one_lie_in_the_documented_range_and_are_seeded():
    m, x = models.mlp()
    a = fxgrow.analyze(m, x)
    plan = prepare(plan_widening(a, 3.0, seed=4), "split")
    low, high = SPLIT_RANGE
    for gg in plan.growth.values():
        total = torch.zeros(gg.old, dtype=torch.float64).index_add_(0, gg.index, gg.shares)
        assert torch.allclose(total, torch.ones_like(total))
        c = gg.counts[gg.index].double()  # no share more than high/low times another
        assert (gg.shares > low / (low + (c - 1) * high)).all()
        assert (gg.shares < high / (high + (c - 1) * low)).all()
        assert gg.shares.unique().numel() == gg.new  # unequal
        assert torch.equal(gg.shares, split_shares(gg, 4))
        assert not torch.equal(gg.shares, split_shares(gg, 5))


def _copies(index):
    """Pairs of new positions that copy the same old neuron."""
    return [(int(j), int(k)) for i in index.unique()
            for n, j in enumerate((index == i).nonzero().flatten())
            for k in (index == i).nonzero().flatten()[n + 1:]]


def _one_step(g, x, loss):
    g = g.double().train()
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    loss(g(x)).backward()
    opt.step()
    return g


def _replica_rows_differ(m, x, loss, init, tensors):
    a = fxgrow.analyze(m, x)
    plan = plan_widening(a, 2.0, seed=1)
    g = _one_step(apply_plan(plan, init), x, loss)
    out = {}
    for name, dim in tensors:
        member = a.members[(name, dim)]
        index = plan.growth[member.layout.space].index
        w = g.get_parameter(name).detach().movedim(dim, 0)
        out[name] = min(float((w[j] - w[k]).abs().max()) for j, k in _copies(index))
    return out


def test_one_step_makes_every_replicas_incoming_weights_differ():
    m, x = models.mlp()
    m, x = m.double(), x.double()
    rows = [("0.weight", 0), ("0.bias", 0), ("2.weight", 0), ("2.bias", 0)]
    loss = lambda y: y.square().mean()  # noqa: E731
    split = _replica_rows_differ(m, x, loss, "split", rows)
    assert all(d > 1e-9 for d in split.values()), split
    same = _replica_rows_differ(m, x, loss, "net2net", rows)
    assert all(d < 1e-13 for d in same.values()), same  # Net2WiderNet: identical forever


def test_split_breaks_the_symmetry_of_a_layernormed_stream():
    torch.manual_seed(0)
    m, idx = tm.GPT(norm="ln").double().eval(), torch.randint(0, 50, (4, 12))
    loss = lambda y: F.cross_entropy(y.flatten(0, 1), idx.flatten())  # noqa: E731
    rows = [("wte.weight", 1), ("blocks.0.mlp.w1.weight", 0), ("blocks.1.mlp.w3.weight", 0)]
    split = _replica_rows_differ(m, idx, loss, "split", rows)
    assert all(d > 1e-9 for d in split.values()), split
    same = _replica_rows_differ(m, idx, loss, "net2net", rows)
    assert all(d < 1e-13 for d in same.values()), same


def test_zero_out_keeps_old_weights_and_gives_new_neurons_fresh_rows_and_zero_columns():
    m, x = models.mlp()
    a = fxgrow.analyze(m, x)
    g = apply_plan(plan_widening(a, {"0": 40}), "zero_out")
    assert_same_function(m, g, x)
    w0, w2 = g.get_submodule("0").weight.detach(), g.get_submodule("2").weight.detach()
    assert torch.equal(w0[:32], m[0].weight) and torch.equal(w2[:, :32], m[2].weight)
    assert torch.count_nonzero(w2[:, 32:]) == 0  # zero outgoing weights
    # fresh incoming weights: no new row copies an old one
    assert torch.cdist(w0[32:], w0[:32]).min() > 1e-3
    # and they train: the zero columns get a gradient at once
    g.train()
    g(x).square().mean().backward()
    assert g.get_submodule("2").weight.grad[:, 32:].abs().sum() > 0


def test_zero_out_between_two_growing_layers_keeps_new_to_new_weights_zero():
    m, x = models.mlp()
    g = grow_exactly(m, x, 2.0, init="zero_out")
    w2 = g.get_submodule("2").weight.detach()
    assert torch.count_nonzero(w2[:, 32:]) == 0  # also rows of new neurons of the next group
    assert torch.count_nonzero(w2[24:, :32]) > 0  # fresh incoming rows of the next group


def test_zero_out_on_a_normalised_stream_copies_with_zero_outgoing_weights():
    m, idx = tm.GPT(norm="ln").eval(), torch.randint(0, 50, (2, 12))
    a = fxgrow.analyze(m, idx)
    stream = a.members[("wte.weight", 1)].layout.space
    plan = prepare(plan_widening(a, 2.0), "zero_out")
    gg = plan.growth[stream]
    assert torch.equal(gg.shares, (torch.arange(gg.new) < gg.old).double())
    g = apply_plan(plan, "zero_out")
    assert_same_function(m, g, idx)
    wte = g.get_submodule("wte").weight.detach()
    assert torch.equal(wte[:, 16:], wte[:, :16])  # copies: the LayerNorm statistics are exact
    assert torch.count_nonzero(g.get_submodule("blocks.0.mlp.w1").weight[:, 16:]) == 0


def test_zero_out_refuses_a_group_on_both_sides_of_a_product():
    m, x = Gram().eval(), torch.randn(2, 5, 8)
    with pytest.raises(fxgrow.ConstraintError, match="both sides of the product `matmul`.*saddle"):
        fxgrow.widen(m, x, {"f": 2.0}, init="zero_out")


class MaxOver(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.fc(x)
        return self.out(h - h.amax(-1, keepdim=True))


def test_zero_out_refuses_a_group_a_max_reads_and_names_the_node():
    m, x = MaxOver().eval(), torch.randn(3, 4)
    assert_same_function(m, fxgrow.widen(m, x, 2.0, init="split"), x)  # copies keep a max
    with pytest.raises(fxgrow.ConstraintError, match=r"group 1 \(fc.*node `amax`.*max or min"):
        fxgrow.widen(m, x, 2.0, init="zero_out")


def test_initialise_is_what_apply_plan_does_for_a_caller_with_tensors():
    m, x = models.vgg_bn()
    plan = plan_widening(fxgrow.analyze(m, x), 2.0, seed=3)
    tensors = dict(m.state_dict())
    for init in ("net2net", "split"):
        g = apply_plan(plan, init)
        for name, t in initialise(plan, tensors, init).items():
            assert torch.equal(t, g.state_dict()[name]), (init, name)
    g = apply_plan(plan, "zero_out")
    fresh = lambda name, shape, like: torch.full(shape, 7.0)  # noqa: E731
    new = initialise(plan, tensors, "zero_out", fresh=fresh)
    for name, t in new.items():
        ref = g.state_dict()[name]
        assert t.shape == ref.shape
        sevens = t == 7.0
        assert torch.equal(t[~sevens], ref[~sevens]), name  # only fresh positions differ
    assert (new["0.weight"] == 7.0).any()
    with pytest.raises(fxgrow.SpecError, match="pass fresh="):
        initialise(plan, tensors, "zero_out")


def test_split_and_zero_out_through_export_capture():
    m, x = Scores(sdpa=True).eval(), torch.randn(2, 5, 8)
    for init in ("split", "zero_out"):
        assert_same_function(m, fxgrow.widen(m, x, {"q": 10}, init=init, capture="export"), x)


def test_widen_verifies_the_exact_inits_by_default():
    m, x = models.mlp()
    for init in ("split", "zero_out"):
        assert fxgrow.widen(m, x, 2.0, init=init).meta["fxgrow.report"].ok
