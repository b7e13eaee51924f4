"""Rules for Linear, convolutions and embeddings (fxgrow.rules.linear)."""

import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import grow_exactly


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
