"""New blocks start as the identity (fxgrow.grow.identity), proved on the graph."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.errors import NotIdentityError
from fxgrow.grow.identity import prove_identity, region


class Residual(nn.Module):
    def __init__(self, branch, after=None):
        super().__init__()
        self.branch, self.after = branch, after

    def forward(self, x):
        y = x + self.branch(x)
        return self.after(y) if self.after is not None else y


def _prove(block, x=None):
    net = nn.Sequential(nn.Linear(3, 4), block, nn.Linear(4, 2))
    x = torch.randn(2, 3) if x is None else x
    gm = fxgrow.analyze(net, x).graph_module
    proof = prove_identity(gm, "1", lambda t: t.startswith("1."))
    # the proof is a claim about values: zero what it names, and the block is the identity
    with torch.no_grad():
        for name in proof.zeroed:
            net.get_parameter(name).zero_()
        h = torch.randn(5, 4)
        assert torch.equal(block(h), h)
    return proof


def test_the_branch_last_layer_is_zeroed():
    proof = _prove(Residual(nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4))))
    assert proof.zeroed == {"1.branch.2.weight", "1.branch.2.bias"}


def test_a_layer_scale_or_a_dropout_after_the_layer_is_fine():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.drop = nn.Linear(4, 4), nn.Dropout(0.1)
            self.gamma = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return self.drop(self.fc(x)) * self.gamma
    proof = _prove(Residual(Scaled()))
    assert proof.zeroed and proof.zeroed <= {"1.branch.fc.weight", "1.branch.fc.bias",
                                             "1.branch.gamma"}


@pytest.mark.parametrize("after, op", [(nn.LayerNorm(4), "LayerNorm"), (nn.ReLU(), "ReLU")])
def test_something_after_the_sum_is_refused_naming_it(after, op):
    with pytest.raises(NotIdentityError, match=op):
        _prove(Residual(nn.Linear(4, 4), after))


def test_a_branch_of_fixed_values_cannot_be_zeroed():
    class Shift(nn.Module):
        def forward(self, x):
            return torch.ones_like(x)
    with pytest.raises(NotIdentityError, match="sum"):
        _prove(Residual(Shift()))


def test_region_holds_the_block_nodes_and_its_tensors():
    net = nn.Sequential(nn.Linear(3, 4), Residual(nn.Linear(4, 4)), nn.Linear(4, 2))
    gm = fxgrow.analyze(net, torch.randn(2, 3)).graph_module
    inside = {str(n.target) for n in region(gm, "1") if n.op == "call_module"}
    assert inside == {"1.branch"}


def test_relu_after_the_sum_passes_a_relu_output_through():
    # ResNet's relu(x + bn(conv(x))): zero the BatchNorm's gain and bias; relu(x) = x because
    # x is itself a relu output (idempotent activation, as Net2DeeperNet asks)
    class Basic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()

        def forward(self, x):
            return self.act(x + self.bn(self.conv(x)))
    block = Basic().eval()
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), block, nn.Conv2d(4, 2, 1)).eval()
    gm = fxgrow.analyze(net, torch.randn(2, 3, 5, 5)).graph_module
    proof = prove_identity(gm, "2", lambda t: t.startswith("2."))
    assert proof.zeroed == {"2.bn.weight", "2.bn.bias"}
    with torch.no_grad():
        for name in proof.zeroed:
            net.get_parameter(name).zero_()
        h = torch.relu(torch.randn(2, 4, 5, 5))
        assert torch.equal(block(h), h)
    # without the relu before it, relu(x) != x: refused
    bare = nn.Sequential(nn.Conv2d(3, 4, 1), Basic(), nn.Conv2d(4, 2, 1)).eval()
    gm = fxgrow.analyze(bare, torch.randn(2, 3, 5, 5)).graph_module
    with pytest.raises(NotIdentityError, match="idempotent"):
        prove_identity(gm, "1", lambda t: t.startswith("1."))


def test_a_block_summed_by_its_parent_is_zeroed_and_the_sum_passes_through():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = nn.Linear(3, 4), nn.Linear(4, 2)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4))
                                        for _ in range(2))

        def forward(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = h + b(h)
            return self.out(h)
    net = Stack().eval()
    gm = fxgrow.analyze(net, torch.randn(2, 3)).graph_module
    proof = prove_identity(gm, "blocks.1", lambda t: t.startswith("blocks.1."))
    assert proof.zeroed == {"blocks.1.2.weight", "blocks.1.2.bias"}
    assert len(proof.sums) == 1 and set(proof.passes) == proof.sums
    with torch.no_grad():
        for name in proof.zeroed:
            net.get_parameter(name).zero_()
        h = torch.randn(5, 4)
        assert torch.count_nonzero(net.blocks[1](h)) == 0
    # the same block read by a product (not a sum) is refused
    class Gated(Stack):
        def forward(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = h * b(h)
            return self.out(h)
    gm = fxgrow.analyze(Gated().eval(), torch.randn(2, 3)).graph_module
    with pytest.raises(NotIdentityError, match="blocks.1"):
        prove_identity(gm, "blocks.1", lambda t: t.startswith("blocks.1."))


def test_reshapes_around_the_sum_keep_the_identity():
    # OPT flattens the tokens around its residual sums: view(reshape(x) + 0) = x
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            shape = x.shape
            h = x.reshape(-1, shape[-1])
            return (h + self.fc(h)).view(shape)
    net = nn.Sequential(nn.Linear(3, 4), Flat(), nn.Linear(4, 2)).eval()
    gm = fxgrow.analyze(net, torch.randn(2, 5, 3)).graph_module
    proof = prove_identity(gm, "1", lambda t: t.startswith("1."))
    assert proof.zeroed == {"1.fc.weight", "1.fc.bias"}

    # a zero broadcast wider than the input would copy it: refused
    class Wider(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return (x + self.fc(x).unsqueeze(0).expand(3, *x.shape)).sum(0)
    net = nn.Sequential(nn.Linear(3, 4), Wider(), nn.Linear(4, 2)).eval()
    gm = fxgrow.analyze(net, torch.randn(2, 3)).graph_module
    with pytest.raises(NotIdentityError):
        prove_identity(gm, "1", lambda t: t.startswith("1."))


class _Routed(nn.Module):
    """Tokens written into a buffer by index: zero only when what is written is."""

    def __init__(self, base="empty", extra=False):
        super().__init__()
        self.fc, self.other, self.base, self.extra = nn.Linear(4, 4), nn.Linear(4, 4), base, extra

    def forward(self, x):
        flat = x.reshape(-1, 4)
        order = torch.argsort(flat[:, 0])
        out = torch.empty_like(flat) if self.base == "empty" else torch.zeros_like(flat)
        out[order] = self.fc(flat[order])
        if self.extra:  # a write the zeroing does not reach
            out[order[:1]] = self.other(flat[order[:1]])
        return x + out.view(x.shape)


def _residual_net(block):
    return nn.Sequential(nn.Linear(3, 4), block, nn.Linear(4, 2)).eval()


@pytest.mark.parametrize("base", ["empty", "zeros"])
def test_a_buffer_filled_by_index_is_zero_when_its_values_are(base):
    net = _residual_net(_Routed(base))
    gm = fxgrow.analyze(net, torch.randn(2, 5, 3)).graph_module
    proof = prove_identity(gm, "1", lambda t: t.startswith("1."))
    assert proof.zeroed == {"1.fc.weight", "1.fc.bias"}
    with torch.no_grad():
        for name in proof.zeroed:
            net.get_parameter(name).zero_()
        h = torch.randn(2, 5, 4)
        assert torch.equal(net[1](h), h)


def test_every_write_into_the_buffer_must_be_zero():
    # `other` writes into the buffer too: zeroing fc alone would leave its rows
    net = _residual_net(_Routed("zeros", extra=True))
    gm = fxgrow.analyze(net, torch.randn(2, 5, 3)).graph_module
    proof = prove_identity(gm, "1", lambda t: t.startswith("1."))
    assert {"1.other.weight", "1.other.bias"} <= proof.zeroed


def test_a_block_writing_into_its_input_is_refused():
    class Inplace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            x[:, 0] = 1.0  # the block's input itself changes
            return x + self.fc(x)
    net = _residual_net(Inplace())
    gm = fxgrow.analyze(net, torch.randn(2, 3)).graph_module
    with pytest.raises(NotIdentityError, match="in place"):
        prove_identity(gm, "1", lambda t: t.startswith("1."))


class ZeroCentredNorm(nn.Module):
    """RMSNorm whose gain is ``1 + w`` (Gemma, Qwen3-Next): w = 0 is the unit gain."""

    def __init__(self, n, shift=1.0, sign=1):
        super().__init__()
        self.weight, self.shift, self.sign = nn.Parameter(torch.randn(n)), shift, sign

    def forward(self, x):
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        gain = self.shift + self.weight if self.sign > 0 else self.shift - self.weight
        return normed * gain


@pytest.mark.parametrize("sign", [1, -1])
def test_a_zero_centred_gain_is_not_zeroed_by_zeroing_its_weight(sign):
    # x + norm(x) * (1 ± w): with w = 0 the branch is norm(x), not 0
    with pytest.raises(NotIdentityError, match="sum"):
        _prove(Residual(ZeroCentredNorm(4, sign=sign)))


def test_a_layer_after_a_zero_centred_norm_is_what_gets_zeroed():
    proof = _prove(Residual(nn.Sequential(ZeroCentredNorm(4), nn.Linear(4, 4))))
    assert proof.zeroed == {"1.branch.1.weight", "1.branch.1.bias"}


def test_a_gain_shifted_by_zero_is_still_zeroed_with_its_weight():
    proof = _prove(Residual(ZeroCentredNorm(4, shift=0.0)))
    assert proof.zeroed == {"1.branch.weight"}


def test_functional_batch_norm_is_zeroed_through_its_affine_not_its_statistics():
    import torch.nn.functional as F

    class FunctionalBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.randn(4))
            self.register_buffer("var", torch.rand(4) + 0.5)
            self.weight, self.bias = nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(4))

        def forward(self, x):
            return F.batch_norm(x, self.mean, self.var, self.weight, self.bias)
    proof = _prove(Residual(FunctionalBN()))
    assert proof.zeroed == {"1.branch.weight", "1.branch.bias"}


def test_functional_batch_norm_without_affine_is_refused():
    import torch.nn.functional as F

    class Stats(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.randn(4))
            self.register_buffer("var", torch.rand(4) + 0.5)

        def forward(self, x):
            return F.batch_norm(x, self.mean, self.var)
    with pytest.raises(NotIdentityError):
        _prove(Residual(Stats()))


class GatedResidual(nn.Module):
    """``s * x + f(x)`` (Doge) and ``h *= scalar`` (Gemma-4): gains the block owns."""

    def __init__(self, inplace=False, shape=(4,)):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gain = nn.Parameter(torch.randn(shape))
        self.inplace = inplace

    def forward(self, x):
        if self.inplace:
            h = x + self.fc(x)
            h *= self.gain
            return h
        return self.gain * x + self.fc(x)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_gain_on_the_passed_through_path_is_set_to_one(inplace, capture):
    block = GatedResidual(inplace)
    net = nn.Sequential(nn.Linear(3, 4), block, nn.Linear(4, 2))
    gm = fxgrow.analyze(net, torch.randn(2, 3), capture=capture).graph_module
    proof = prove_identity(gm, "1", lambda t: t.startswith("1."))
    assert proof.ones == {"1.gain"} and proof.zeroed == {"1.fc.weight", "1.fc.bias"}
    with torch.no_grad():  # the claim, checked on values
        net[1].gain.fill_(1.0)
        net[1].fc.weight.zero_()
        net[1].fc.bias.zero_()
        h = torch.randn(5, 4)
        assert torch.equal(block(h), h)


def test_a_gain_that_widens_the_value_is_refused():
    # x of shape (.., 4) times a (3, 4) gain is a (3, .., 4) tensor, not x
    with pytest.raises(NotIdentityError):
        _prove(GatedResidual(shape=(5, 1, 4)), torch.randn(2, 3))


def test_a_tensor_needed_both_zero_and_one_is_refused():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.randn(4))

        def forward(self, x):
            return self.s * x + self.s * torch.tanh(x)
    with pytest.raises(NotIdentityError, match="0 .* and 1"):
        _prove(Both())
