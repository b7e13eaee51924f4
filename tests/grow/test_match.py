"""Group sizes read off the target's analysis (fxgrow.grow.match)."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.errors import GroupNotGrowableError, NarrowingError, TargetMismatchError
from fxgrow.grow.match import target_sizes
from fxgrow.grow.names import LayerMap


class Heads(nn.Module):
    """q/v projections viewed as (heads, head dim): the analysis sees two groups per row."""

    def __init__(self, heads, dim=4, width=8):
        super().__init__()
        self.h, self.d = heads, dim
        self.v = nn.Linear(width, heads * dim)
        self.o = nn.Linear(heads * dim, width)

    def forward(self, x):
        b, s, _ = x.shape
        v = self.v(x).view(b, s, self.h, self.d)
        return self.o(torch.relu(v).reshape(b, s, self.h * self.d))


def _sizes(small, big, x, layers=None):
    a, b = fxgrow.analyze(small, x), fxgrow.analyze(big, x)
    return a, target_sizes(a, b, LayerMap(layers, dict(small.named_modules())))


def test_heads_and_head_dims_are_read_from_the_target_not_guessed():
    x = torch.randn(2, 3, 8)
    # 2 heads x 4 -> 4 heads x 4 and 2 heads x 8 give the same (16, 8) weight
    a, more_heads = _sizes(Heads(2), Heads(4), x)
    _, wider_heads = _sizes(Heads(2), Heads(2, dim=8), x)
    assert sorted(more_heads.values()) == [4] and sorted(wider_heads.values()) == [8]
    assert more_heads.keys() != wider_heads.keys()


def test_equal_models_grow_nothing():
    x = torch.randn(2, 3, 8)
    assert _sizes(Heads(2), Heads(2), x)[1] == {}


def test_narrower_and_blocked_targets():
    x = torch.randn(4, 3)
    small = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(NarrowingError, match="0.weight"):
        _sizes(small, nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)), x)
    with pytest.raises(GroupNotGrowableError, match="reaches the model output"):
        _sizes(small, nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 5)), x)


def test_another_layout_is_a_mismatch():
    x = torch.randn(2, 3, 8)

    class Flat(Heads):
        def forward(self, x):  # no head structure: one group along v's rows
            return self.o(torch.relu(self.v(x)))
    with pytest.raises(TargetMismatchError, match="lays out"):
        _sizes(Flat(2), Heads(4), x)
