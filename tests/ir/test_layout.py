"""fxgrow.ir.layout: expansion of index maps through Cat and Prod."""

import torch

from fxgrow.ir.layout import Axis, Cat, Prod, expand, leaves, map_layout, new_size


def _map(index, counts):
    index = torch.tensor(index)
    counts = torch.tensor(counts, dtype=torch.float64)
    return index, 1.0 / counts[index]


def test_axis_identity_and_map():
    idx, scale = expand(Axis(0, 3), {})
    assert idx.tolist() == [0, 1, 2] and scale.tolist() == [1, 1, 1]
    idx, scale = expand(Axis(0, 3), {0: _map([0, 1, 2, 1], [1, 2, 1])})
    assert idx.tolist() == [0, 1, 2, 1]
    assert scale.tolist() == [1, 0.5, 1, 0.5]


def test_cat_offsets_parts():
    lay = Cat((Axis(0, 2), Axis(1, 3)))
    idx, scale = expand(lay, {0: _map([0, 1, 0], [2, 1])})
    assert idx.tolist() == [0, 1, 0, 2, 3, 4]
    assert scale.tolist() == [0.5, 1, 0.5, 1, 1, 1]


def test_prod_is_row_major_and_multiplies_scales():
    # flatten of (C=2, H*W=3): widening C keeps each channel's 3 positions together
    lay = Prod((Axis(0, 2), Axis(1, 3)))
    idx, _ = expand(lay, {0: _map([0, 1, 1], [1, 2])})
    assert idx.tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 5]
    # both factors widened: a copy along both is divided by both counts
    idx, scale = expand(lay, {0: _map([0, 1, 0], [2, 1]), 1: _map([0, 1, 2, 2], [1, 1, 2])})
    assert len(idx) == 12
    assert scale[3].item() == 0.25  # (channel 0 copied twice) x (position 2 copied twice)
    x = torch.arange(6.0)
    assert torch.equal(x[idx].view(3, 4)[2], x[idx].view(3, 4)[0])


def test_gather_matches_reference_loop():
    lay = Cat((Prod((Axis(0, 2), Axis(1, 2))), Axis(2, 3)))
    maps = {0: _map([0, 1, 1], [1, 2]), 2: _map([0, 1, 2, 0, 0], [3, 1, 1])}
    idx, _ = expand(lay, maps)
    ref = []
    for c in [0, 1, 1]:
        for p in range(2):
            ref.append(c * 2 + p)
    ref += [4 + i for i in [0, 1, 2, 0, 0]]
    assert idx.tolist() == ref


def test_sizes_and_leaves():
    lay = Cat((Prod((Axis(0, 2), Axis(1, 3))), Axis(2, 4)))
    assert lay.size == 10
    assert [a.space for a in leaves(lay)] == [0, 1, 2]
    assert new_size(lay, {0: 5, 2: 6}) == 21
    assert map_layout(lay, lambda a: Axis(a.space + 10, a.size)).parts[1] == Axis(12, 4)
    assert str(lay) == "((s0:2 ⊗ s1:3) ⊕ s2:4)"
