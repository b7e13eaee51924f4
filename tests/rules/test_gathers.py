"""Rules for gathers and scatters (fxgrow.rules.gathers)."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import blocked, grow_exactly

CAPTURES = ["fx", "export"]


class Gathers(nn.Module):
    """``index_select``, ``gather`` (ViT-MAE's masking: an index broadcast over the
    features) and ``take_along_dim`` along tokens: the features pass."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x, keep):                    # x: (B, T, 4), keep: (B, L) token ids
        h = torch.relu(self.a(x))
        s = torch.index_select(h, 1, keep[0])      # (B, L, 6)
        b, n = keep.shape
        idx = keep.unsqueeze(-1) + h.new_zeros(b, n, h.shape[-1], dtype=torch.long)
        g = torch.gather(h, 1, idx)                # (B, L, 6)
        t = torch.take_along_dim(h, keep.unsqueeze(-1), dim=1)
        return self.b(s + g * t).mean(1)


def _tokens():
    return (torch.randn(2, 5, 4, dtype=torch.float64), torch.tensor([[4, 0, 2], [1, 3, 0]]))


@pytest.mark.parametrize("capture", CAPTURES)
def test_gathers_along_tokens_pass_the_features(capture):
    m, x = Gathers().double(), _tokens()
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_gather_along_features_fixes_them_only(capture):
    class Pick(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x, cols):
            h = self.b(torch.relu(self.a(x)))
            return self.c(h) + torch.gather(h, 1, cols).mean(-1, keepdim=True)

    m, x = Pick().double(), (torch.randn(3, 4, dtype=torch.float64),
                             torch.tensor([[5, 0], [1, 2], [0, 0]]))
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("b").status == "fixed" and "positions" in a.group("b").reason
    assert a.group("a").growable
    grow_exactly(m, x, 2.0, capture=capture)


class Combine(nn.Module):
    """An MoE combine: expert outputs for routed token rows summed back with
    ``index_add``, and the inverse permutation built with ``index_put``."""

    def __init__(self):
        super().__init__()
        self.a, self.e, self.b = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x, rows):                    # x: (N, 4), rows: (S,) token of each route
        h = self.a(x)
        routed = torch.relu(self.e(h[rows]))       # (S, 6)
        out = torch.zeros_like(h).index_add(0, rows, routed)
        inv = torch.zeros_like(rows).index_put((rows[:3],), torch.arange(3))
        return self.b(out + h) + inv[:1].to(h.dtype).unsqueeze(-1)


@pytest.mark.parametrize("capture", CAPTURES)
def test_index_add_along_tokens_passes_the_features(capture):
    m = Combine().double()
    x = (torch.randn(4, 4, dtype=torch.float64), torch.tensor([3, 0, 1, 0, 2, 3]))
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable and a.group("e").growable
    grow_exactly(m, x, 1.5, capture=capture)


def test_index_add_over_neurons_blocks_them():
    class Fold(nn.Module):  # sums feature columns into 2 slots: copies would add twice
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(2, 2)

        def forward(self, x):
            h = self.a(x)
            slots = torch.tensor([0, 1, 0, 1, 0, 1])
            return self.b(torch.zeros(x.shape[0], 2).index_add(1, slots, h))

    reason = blocked(Fold(), torch.randn(3, 4), "a", capture="export")
    assert "summed into the positions an index names" in reason


@pytest.mark.parametrize("capture", CAPTURES)
def test_scatter_along_tokens_passes_the_features(capture):
    class Scatter(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x, idx):                 # x: (B, T, 4), idx: (B, T) target tokens
            h = self.a(x)
            i = idx.unsqueeze(-1) + torch.zeros_like(h, dtype=torch.long)
            y = torch.zeros_like(h).scatter(1, i, h) + torch.zeros_like(h).scatter_add(1, i, h)
            return self.b(y)

    m = Scatter().double()
    x = (torch.randn(2, 5, 4, dtype=torch.float64), torch.tensor([[4, 3, 2, 1, 0]] * 2))
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 2.0, capture=capture)


class MaskedWrites(nn.Module):
    """Writes at the positions a boolean mask over batch and tokens selects: a parameter
    broadcast into the rows (T5Gemma2's ``h[input_ids == eoi] = eoi_embedding``),
    rows computed from the rows read, added, and ``masked_scatter`` of the rows a
    per-token expert computed (Higgs Audio's audio MLP)."""

    def __init__(self, setitem=False):
        super().__init__()
        self.a, self.c, self.b = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)
        self.e = nn.Parameter(torch.randn(6))
        self.setitem = setitem

    def forward(self, x, ids):                     # x: (B, T, 4), ids: (B, T) token ids
        h = torch.relu(self.a(x))
        m = ids == 3
        if self.setitem:                           # aten.index_put_ (torch.export only)
            h[m] = self.e
        else:
            h = h.index_put((m,), self.e)
        h = h.index_put((m,), torch.relu(self.c(h[m])), accumulate=True)
        audio = ids == 1
        h = h.masked_scatter(audio.unsqueeze(-1), self.c(h[audio]))
        return self.b(h)


def _ids_input():
    return (torch.randn(2, 6, 4, dtype=torch.float64), torch.tensor([[3, 0, 4, 3, 1, 2],
                                                                      [1, 3, 2, 0, 4, 1]]))


@pytest.mark.parametrize("capture,setitem", [("fx", False), ("export", False), ("export", True)])
@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_writes_at_a_boolean_mask_over_tokens_pass_the_features(capture, setitem, factor):
    m, x = MaskedWrites(setitem).double(), _ids_input()
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable and a.group("a").id == a.group("c").id, str(a)
    g = grow_exactly(m, x, factor, capture=capture)
    assert g.get_parameter("e").shape == (int(6 * factor),)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("how,why", [
    ("put", "selected by a boolean mask"),         # the mask holds the neurons
    ("scatter", "selected by a boolean mask"),
    ("flat", "masked_scatter from a source whose rows are not the blocks"),
])
def test_masked_writes_that_read_neurons_or_mix_them_block(capture, how, why):
    class Write(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c, self.b = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x, ids):
            h = torch.relu(self.a(x))
            if how == "put":
                h = h.index_put((h > 0.1,), h.new_zeros(()))
            elif how == "scatter":
                h = h.masked_scatter(h > 0.1, self.c(h))
            else:  # a flat source: a row of it need not be one block of h
                audio = (ids == 1).unsqueeze(-1)
                h = h.masked_scatter(audio, self.c(h).flatten())
            return self.b(h)

    reason = blocked(Write().double(), _ids_input(), "a", capture=capture)
    assert why in reason and "(node `" in reason, reason


@pytest.mark.parametrize("capture", CAPTURES)
def test_masks_made_of_positions_keep_the_features(capture):
    class Causal(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):                      # x: (B, T, 4)
            t = x.shape[1]
            mask = x.new_ones(t, t).tril()
            h = self.a(x)
            mixed = mask @ h + h.flip(1) + torch.diff(h, dim=1).mean(1, keepdim=True)
            return self.b(mixed)

    m, x = Causal().double(), torch.randn(2, 5, 4, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


def test_flipping_features_fixes_them():
    class Flip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.b(self.a(x).flip(-1))

    a = fxgrow.analyze(Flip(), torch.randn(3, 4))
    assert a.group("a").status == "fixed"
    assert "reads the positions along this dimension" in a.group("a").reason
