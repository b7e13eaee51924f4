"""Rules for cat, split, chunk and slicing (fxgrow.rules.slicing)."""

import torch
from torch import nn

import fxgrow
from helpers import grow_exactly


def test_uneven_split_getitem_and_chunk_are_rewritten():
    class S(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.a = nn.Linear(2, 3)
            self.b = nn.Linear(4, 3)

        def forward(self, x):
            h = self.fc(x)
            p, q = h.chunk(2, dim=-1)
            return self.a(p[:, 1:3]) + self.b(q) + h[:, -1:] * 0.5

    m, x = S(), torch.randn(3, 4)
    a = fxgrow.analyze(m, x)
    sizes = sorted(g.size for g in a.growable)
    # h = [p0 | p[1:3] | p3 | q[0:3] | q[3]]; q[3] is broadcast against 3 neurons: fixed
    assert sizes == [1, 1, 2, 3]
    grow_exactly(m, x, {g.id: g.size + 2 for g in a.growable})


def test_cat_of_branches_and_stack():
    class C(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(3, 5)
            self.c = nn.Linear(9, 2)

        def forward(self, x):
            y = torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)
            z = torch.stack([y, y * 2], dim=0).mean(0)
            return self.c(z)

    grow_exactly(C(), torch.randn(2, 3), 1.5)


def test_literal_bounds_covering_the_dim_follow_its_growth():
    class Crop(nn.Module):  # GhostNet: cat two branches, crop to the output width
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(16, 3)

        def forward(self, x):
            h = self.a(x)
            y = torch.cat([h, self.b(h)], 1)[:, :16]
            return self.c(y[:, -16:])

    m = Crop().double().eval()
    grow_exactly(m, torch.randn(3, 4, dtype=torch.float64), 2.0)


def test_an_empty_slice_stays_empty():
    class Empty(nn.Module):  # partial rotary code with the rotary part the whole head dim
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            h = self.a(x)
            rot, rest = h[:, :6], h[:, 6:]
            return self.b(torch.cat([torch.tanh(rot), rest], -1)) + h[:, 3:2].sum()

    m = Empty().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    assert fxgrow.analyze(m, x).group("a").growable
    grow_exactly(m, x, 1.5)


def test_a_dict_passed_as_a_positional_input():
    class Batch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, batch):
            return self.b(torch.relu(self.a(batch["x"]))) * batch["scale"]

    example = ({"x": torch.randn(3, 4, dtype=torch.float64), "scale": 2.0},)
    grow_exactly(Batch().double(), example, 2.0)
