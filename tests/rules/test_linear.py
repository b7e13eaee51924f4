"""Rules for Linear, convolutions and embeddings (fxgrow.rules.linear)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import assert_unchanged, grow_exactly, snapshot


def test_functional_linear_and_conv_with_parameters():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(6, 3, 3, 3))
            self.b1 = nn.Parameter(torch.randn(6))
            self.w2 = nn.Parameter(torch.randn(4, 6))

        def forward(self, x):
            h = F.relu(F.conv2d(x, self.w1, self.b1, padding=1)).mean((2, 3))
            return F.linear(h, self.w2)

    m, x = Fn(), torch.randn(2, 3, 5, 5)
    a = fxgrow.analyze(m, x)
    (g,) = a.growable
    roles = {(mm.tensor, mm.dim): mm.role for mm in g.members}
    assert roles == {("w1", 0): "producer", ("b1", 0): "producer", ("w2", 1): "consumer"}
    grow_exactly(m, x)


def test_depthwise_and_multiplier_update_groups():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, groups=4, padding=1),
                      nn.Conv2d(4, 8, 3, groups=4), nn.Flatten(), nn.Linear(8 * 9, 2))
    x = torch.randn(2, 3, 5, 5)
    g = grow_exactly(m, x, {"0": 6})
    assert g.get_submodule("1").groups == 6 and g.get_submodule("2").groups == 6
    assert g.get_submodule("2").out_channels == 12


def test_grouped_conv_grows_each_group_alike():
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, groups=2),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 2))
    x = torch.randn(2, 3, 5, 5)
    a = fxgrow.analyze(m, x)
    g = grow_exactly(m, x, 1.5)
    assert g.get_submodule("2").groups == 2
    assert g.get_submodule("2").in_channels == 12


def test_conv_transpose():
    m = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.ConvTranspose2d(6, 5, 3), nn.ReLU(),
                      nn.Conv2d(5, 2, 1))
    grow_exactly(m, torch.randn(2, 2, 6, 6))


class _Transposed(nn.Module):
    """A conv, a (grouped, depthwise) transposed conv, a conv: both channel groups grow."""

    def __init__(self, groups: int, cout: int):
        super().__init__()
        self.a = nn.Conv1d(4, 8, 1)
        self.t = nn.ConvTranspose1d(8, cout, 4, stride=2, padding=1, groups=groups)
        self.b = nn.Conv1d(cout, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.t(torch.relu(self.a(x)))))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("groups, cout", [(1, 6), (2, 6), (8, 8), (8, 16)])
def test_conv_transpose_grouped_and_under_export(capture, groups, cout):
    # export records aten.conv_transpose1d; grouped ones read the weight
    # [C_in, C_out / groups, k] with each group's outputs sharing its columns
    m, x = _Transposed(groups, cout).eval(), torch.randn(2, 4, 10)
    snap = snapshot(m)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.growable and not [g for g in a.groups if g.status == "blocked"]
    grown = grow_exactly(m, x, capture=capture)
    assert_unchanged(m, snap)
    t = [n for n in grown.graph.nodes if "conv_transpose" in str(n.target) or n.target == "t"]
    assert t, "the transposed conv is still in the grown graph"


def test_embedding_produces_and_vocab_is_fixed():
    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 6)
            self.fc = nn.Linear(6, 3)

        def forward(self, ids):
            return self.fc(torch.tanh(self.emb(ids))).mean(1)

    m, ids = Emb(), torch.randint(0, 20, (2, 7))
    a = fxgrow.analyze(m, ids)
    assert a.group("emb").growable
    g = grow_exactly(m, ids, 2.0)
    assert g.get_submodule("emb").embedding_dim == 12


def test_functional_depthwise_conv_follows_its_input():
    class DW(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 6, 1)
            self.w = nn.Parameter(torch.randn(6, 1, 3, 3))
            self.b = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.b(F.relu(F.conv2d(self.a(x), self.w, None, 1, 1, 1, 6)))

    m, x = DW(), torch.randn(2, 3, 5, 5)
    g = grow_exactly(m, x, {"a": 9})
    conv = next(n for n in g.graph.nodes if n.target is F.conv2d)
    assert conv.args[6] == 9


def test_a_pointwise_conv_along_a_neuron_dim_passes_it_a_wider_kernel_blocks_it():
    class Over(nn.Module):  # a Conv1d whose length dim holds a Linear's neurons
        def __init__(self, k):
            super().__init__()
            self.a, self.conv, self.b = nn.Linear(4, 16), nn.Conv1d(1, 2, k), nn.Linear(2 * (17 - k), 3)

        def forward(self, x):
            return self.b(self.conv(self.a(x).unsqueeze(1)).flatten(1))

    x = torch.randn(3, 4, dtype=torch.float64)
    grow_exactly(Over(1).double(), x, 2.0)
    a = fxgrow.analyze(Over(3).double(), x)
    assert not a.group("a").growable and "mixes positions" in a.group("a").reason


# -- weights moved from a parameter, computed biases ----------------------------
import pytest  # noqa: E402

from helpers import blocked, exact_or_refused  # noqa: E402

CAPTURES = ("fx", "export")


class _CausalDepthwise(nn.Module):
    """Mamba's depthwise causal conv, its weight kept 2-D: ``conv1d(x, W.view(C, 1, k))``."""

    def __init__(self, how, c=6, k=4):
        super().__init__()
        self.how, self.k = how, k
        self.inp, self.out = nn.Linear(5, c), nn.Linear(c, 3)
        self.w, self.b = nn.Parameter(torch.randn(c, k)), nn.Parameter(torch.randn(c))

    def forward(self, x):
        h = self.inp(x).transpose(1, 2)
        c = self.w.shape[0]
        w = self.w.view(c, 1, self.k) if self.how == "view" else self.w.unsqueeze(1)
        h = F.conv1d(h, w, self.b, padding=self.k - 1, groups=c)[..., :x.shape[1]]
        return self.out(F.silu(h).transpose(1, 2))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("how", ["view", "unsqueeze"])
def test_a_depthwise_conv_weight_viewed_from_a_parameter_grows(how, capture):
    m, x = _CausalDepthwise(how).double(), torch.randn(2, 7, 5, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    g = a.group("inp")
    assert g.growable, a
    roles = {(mm.tensor, mm.dim): mm.role for mm in g.members}
    assert roles[("w", 0)] == "pass-through" and roles[("b", 0)] == "pass-through"
    grown = grow_exactly(m, x, {"inp": 9}, capture=capture)
    assert grown.get_parameter("w").shape == (9, 4)
    grow_exactly(m, x, 1.5, capture=capture)


class _Moved(nn.Module):
    """A Linear whose weight is moved before use: transposed, cast, made contiguous."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.a, self.c = nn.Linear(5, 8), nn.Linear(4, 3)
        self.w = nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        h, w = torch.relu(self.a(x)), self.w
        y = {"T": lambda: h @ w.T, "t": lambda: h @ w.t(), "mT": lambda: h @ w.mT,
             "transpose": lambda: torch.matmul(h, w.transpose(0, 1)),
             # computed in float64 inside a float32 model (a router in full precision)
             "double": lambda: F.linear(h.double(), w.double()).to(h.dtype),
             "to": lambda: F.linear(h, w.to(h.dtype)),
             "contiguous": lambda: F.linear(h, w.contiguous())}[self.how]()
        return self.c(torch.relu(y))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("how", ["T", "t", "mT", "transpose", "double", "to", "contiguous"])
def test_a_weight_moved_from_a_parameter_is_the_parameter(how, capture):
    dtype = torch.float32 if how == "double" else torch.float64
    m, x = _Moved(how).to(dtype), torch.randn(3, 5, dtype=dtype)
    a = fxgrow.analyze(m, x, capture=capture)
    rows = next(g for g in a.groups if any(mm.tensor == "w" and mm.dim == 0 for mm in g.members))
    assert a.group("a").growable and rows.growable, a
    roles = {(mm.tensor, mm.dim): mm.role for mm in a.members.values() if mm.tensor == "w"}
    assert roles == {("w", 0): "producer", ("w", 1): "consumer"}
    grow_exactly(m, x, 2.0, capture=capture)
    grow_exactly(m, x, 1.5, capture=capture)


class _Spread(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.w = nn.Linear(5, 12), nn.Parameter(torch.randn(8, 6))

    def forward(self, x):  # (8, 6) -> (4, 12): W's rows cut in two, half of them columns
        return F.linear(torch.relu(self.a(x)), self.w.view(4, 12))


def test_a_view_spreading_a_parameter_dim_over_weight_dims_blocks():
    m, x = _Spread().double(), torch.randn(3, 5, dtype=torch.float64)
    assert "spreads dim 0 of `w`" in blocked(m, x, "a")
    exact_or_refused(m, x)


class _Computed(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.a, self.w = nn.Linear(5, 8), nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        h, w = torch.relu(self.a(x)), self.w
        if self.how == "arithmetic":
            return F.linear(h, w * 2)
        wt = w.t()  # read twice: once as a weight, once as a plain tensor
        return h @ wt + wt.sum()


@pytest.mark.parametrize("capture", CAPTURES)
def test_arithmetic_on_a_weight_blocks_naming_the_node(capture):
    m, x = _Computed("arithmetic").double(), torch.randn(3, 5, dtype=torch.float64)
    why = blocked(m, x, "a", capture=capture)
    assert "`weight` is computed in the graph" in why and "(node `linear" in why


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_moved_weight_read_elsewhere_too_is_not_claimed(capture):
    m, x = _Computed("twice").double(), torch.randn(3, 5, dtype=torch.float64)
    assert not fxgrow.analyze(m, x, capture=capture).group("a").growable
    exact_or_refused(m, x, capture=capture)


def test_reading_a_weights_shape_is_no_use_of_its_values():
    class Sized(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.w = nn.Linear(5, 8), nn.Parameter(torch.randn(4, 8))

        def forward(self, x):
            h = torch.relu(self.a(x))
            return F.linear(h, self.w).view(-1, self.w.shape[0])

    m, x = Sized().double(), torch.randn(3, 5, dtype=torch.float64)
    assert fxgrow.analyze(m, x).group("a").growable
    grow_exactly(m, x, 2.0)


class _QKVBias(nn.Module):
    """BEiT / EVA / Swin V2: ``F.linear(x, W, cat((q_bias, zeros_like(v_bias), v_bias)))``."""

    def __init__(self, d=8, heads=2):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d, bias=False), \
            nn.Linear(d, d)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(d)), nn.Parameter(torch.randn(d))
        self.fc1, self.fc2 = nn.Linear(d, 16), nn.Linear(16, d)

    def forward(self, x):
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(self.norm(x), self.qkv.weight, bias)
        q, k, v = qkv.reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
        x = x + self.proj(o)
        return x + self.fc2(F.gelu(self.fc1(x)))


class _Embedded(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.block, self.head = nn.Linear(4, 8), _QKVBias(), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.block(self.embed(x)))


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_bias_computed_in_the_graph_is_an_added_term(capture):
    m, x = _Embedded().double(), torch.randn(2, 5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("embed").growable and a.group("block.fc1").growable, a
    # the q/k/v rows are Prod(3, heads, head_dim): the heads grow (by replication, the
    # bias being computed); the head dim is contracted by q @ k, and with a computed
    # bias the proof that one side can be divided fails, with the reason
    heads, head_dim = (next(g for g in a.groups if g.size == n and "block.q_bias" in
                            {mm.tensor for mm in g.members}) for n in (2, 4))
    assert heads.growable and heads.uniform and "bias computed" in heads.uniform[0]
    assert not head_dim.growable and "reads them divided by count**0" in head_dim.reason
    grow_exactly(m, x, 2.0, capture=capture)
    # (the fx graph keeps nn.LayerNorm, so the stream may be mean-padded to 12)
    grow_exactly(m, x, {"embed": 12 if capture == "fx" else 16, heads.id: 4}, capture=capture)


def test_a_computed_bias_keeps_its_layer_from_being_mean_padded():
    class Exp(nn.Module):  # exp(mean(b)) is not the mean of exp(b): no padding
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(4, 6), nn.Linear(8, 3)
            self.w, self.b = nn.Parameter(torch.randn(8, 6)), nn.Parameter(torch.randn(8))
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            return self.c(self.norm(F.linear(self.a(x), self.w, torch.exp(self.b))))

    m, x = Exp().double(), torch.randn(2, 5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    with pytest.raises(fxgrow.ConstraintError, match="bias computed in the graph"):
        fxgrow.widen(a, x, {"norm": 12})
    grow_exactly(m, x, {"norm": 16})


class _StdConv(nn.Conv2d):
    """A weight-standardised conv (BiT, NF-Nets): each output channel's weights are
    normalised over its input channels and kernel in forward."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_standardised_weight_blocks_saying_why(capture):
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), _StdConv(8, 8, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    a = fxgrow.analyze(m, x, capture=capture)
    why = a.group("0").reason
    assert "the weight of `2` is standardised over its input channels (node `batch_norm" in why
    assert "copies divided by their count change that standardisation" in why


def test_another_computed_weight_names_the_node_computing_it():
    class Squared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.w = nn.Parameter(torch.randn(2, 4))

        def forward(self, x):
            return F.linear(torch.relu(self.a(x)), self.w * self.w)

    a = fxgrow.analyze(Squared(), torch.randn(2, 3))
    assert "`weight` is computed in the graph (node `mul`)" in a.group("a").reason
