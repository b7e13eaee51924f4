"""fxgrow.widen.gather: growing one tensor.

The fast form (:func:`gather_scaled`: the old tensor scaled once, gathered one
dim at a time, the outermost dim's new positions read back from their old
neuron) must give exactly, bit for bit, what the plain gather followed by the
scaling passes gives; whole models grown either way must be equal tensor for
tensor.
"""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.ir.layout import Axis, Cat, Prod, expand, leaves
from fxgrow.widen import gather
from fxgrow.widen.gather import Scratch, _gather_reference, gather_scaled, homes
from helpers import assert_same_function


def _map(old, new, gen):
    """An index map as the plan draws them: the old neurons, then copies."""
    extra = torch.randint(0, old, (new - old,), generator=gen)
    return torch.cat([torch.arange(old), extra])


def _counts_scale(index, old):
    """``1 / count`` of each position's old neuron: a function of the old position."""
    counts = torch.bincount(index, minlength=old).to(torch.float64)
    return 1.0 / counts[index]


LAYOUTS = {
    "axis": Axis(0, 5),
    "cat": Cat((Axis(0, 3), Axis(1, 4))),
    "cat of one space thrice": Cat((Axis(0, 4), Axis(0, 4), Axis(0, 4))),
    "heads x head dim": Prod((Axis(0, 3), Axis(1, 4))),
    "flatten (channels x pixels)": Prod((Axis(0, 4), Axis(9, 6))),
}


def _dim_map(layout, gen):
    """The index map and ``1/count`` scale of a dim whose every space grows."""
    maps = {}
    for leaf in leaves(layout):
        if leaf.space not in maps:
            old = leaf.size
            new = old + 1 + int(torch.randint(0, old + 2, (1,), generator=gen))
            idx = _map(old, new, gen)
            maps[leaf.space] = (idx, _counts_scale(idx, old))
    return expand(layout, maps)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_homes_hold_every_old_position_once(name):
    gen = torch.Generator().manual_seed(1)
    layout = LAYOUTS[name]
    index, _ = _dim_map(layout, gen)
    h = homes(index, layout.size)
    assert h is not None
    kept = torch.cat([torch.arange(v, v + n) for _, v, n in h.runs])
    assert sorted(kept.tolist()) == list(range(layout.size))
    for a, v, n in h.runs:  # a run keeps old positions verbatim
        assert index[a:a + n].tolist() == list(range(v, v + n))
    # runs and fills tile the grown dim, and each fill reads a kept copy of its neuron
    covered = sorted([p for a, _, n in h.runs for p in range(a, a + n)]
                     + [p for a, n, _ in h.fills for p in range(a, a + n)])
    assert covered == list(range(index.numel()))
    for a, n, positions in h.fills:
        assert torch.equal(index[positions], index[a:a + n])


def test_homes_refuses_maps_that_drop_old_positions():
    assert homes(torch.tensor([0, 0, 1]), 3) is None  # old position 2 is not kept
    assert homes(torch.tensor([], dtype=torch.long), 0) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape,dims", [((5, 7), (0, 1)), ((7, 5, 3, 3), (0, 1)),
                                        ((4, 12, 6), (1,)), ((12, 12), (0, 1)),
                                        ((2, 12, 7), (1, 2))])
@pytest.mark.parametrize("offset", [None, 1.0])
def test_in_place_gather_equals_gather_then_scale(shape, dims, dtype, offset):
    gen = torch.Generator().manual_seed(sum(shape) + len(dims))
    t = torch.randn(shape, generator=gen).to(dtype)
    by_size = {5: "axis", 7: "cat", 12: "cat of one space thrice", 3: "axis", 6: "axis"}
    index, scales, layouts = {}, [], {}
    for k, d in enumerate(dims):
        layout = LAYOUTS[by_size[shape[d]]] if shape[d] != 12 or k == 0 \
            else LAYOUTS["heads x head dim"]
        assert layout.size == shape[d]
        index[d], scale = _dim_map(layout, gen)
        layouts[d] = homes(index[d], shape[d])
        scales.append((d, scale))
    fast = gather_scaled(t, index, layouts, scales, offset, Scratch())
    ref = _gather_reference(t, index)
    total = None
    for d, scale in scales:
        f = gather._bcast(scale.to(ref.dtype), d, ref.dim())
        ref.mul_(f)
        total = f if total is None else total * f
    if offset:
        ref.add_(offset * (total - 1))
    assert fast is not None and fast.shape == ref.shape and fast.is_contiguous()
    assert torch.equal(fast, ref)


def test_a_share_per_copy_is_left_to_the_plain_path():
    t = torch.randn(3, 4)
    index = {0: torch.tensor([0, 1, 2, 0])}
    split = torch.tensor([0.25, 1.0, 1.0, 0.75], dtype=torch.float64)  # unequal shares
    assert gather_scaled(t, index, {0: homes(index[0], 3)}, [(0, split)], None) is None
    assert gather_scaled(t.t(), {1: index[0]}, {1: homes(index[0], 3)}, [], None) is None


def test_meta_tensors_get_the_grown_shape():
    t = torch.empty(6, 4, device="meta")
    index = {0: torch.cat([torch.arange(6), torch.tensor([1, 2])]),
             1: torch.tensor([0, 1, 2, 3, 3])}
    layouts = {d: homes(i, t.shape[d]) for d, i in index.items()}
    scale = (1, _counts_scale(index[1], 4))
    out = gather_scaled(t, {d: i.to("meta") for d, i in index.items()}, layouts, [scale], None)
    assert out.is_meta and tuple(out.shape) == (8, 5)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 40), nn.GELU(), nn.Linear(40, 16))
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.mlp(self.norm(h))
        return self.out(h.mean(1))


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 24, 3, padding=1)
        self.bn = nn.BatchNorm2d(24)
        self.b = nn.Conv2d(24, 48, 3, padding=1)
        self.c = nn.Conv2d(72, 16, 1)
        self.fc = nn.Linear(16 * 36, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.a(x)))
        h = torch.cat([h, torch.relu(self.b(h))], 1)
        return self.fc(self.c(h).flatten(1))


@pytest.mark.parametrize("build", [lambda: (_Attention().eval(), torch.randn(2, 5, 6)),
                                   lambda: (_Conv().eval(), torch.randn(2, 3, 6, 6))])
@pytest.mark.parametrize("init", ["net2net", "split", "zero_out"])
def test_whole_models_grow_alike_by_either_form(build, init, monkeypatch):
    torch.manual_seed(0)
    m, x = build()
    a = fxgrow.analyze(m, x)
    monkeypatch.setattr(gather, "_SMALL", 0)  # every tensor the in-place form takes
    taken = []
    real = gather.gather_scaled
    monkeypatch.setattr(gather, "gather_scaled",
                        lambda *args: taken.append(real(*args)) or taken[-1])
    fast = fxgrow.widen(a, x, 2.0, init=init, verify=False)
    assert any(t is not None for t in taken)
    monkeypatch.setattr(gather, "_SMALL", 1 << 62)  # every tensor the plain form
    plain = fxgrow.widen(a, x, 2.0, init=init, verify=False)
    sd_fast, sd_plain = fast.state_dict(), plain.state_dict()
    assert sd_fast.keys() == sd_plain.keys()
    for k in sd_fast:
        assert torch.equal(sd_fast[k], sd_plain[k]), k
    assert_same_function(m, fast, x)
