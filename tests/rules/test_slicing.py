"""Rules for cat, split, chunk and slicing (fxgrow.rules.slicing)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import blocked, grow_exactly


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


@pytest.mark.parametrize("join", [torch.cat, torch.stack])
def test_a_sequence_passed_as_one_value_is_joined(join):
    # `h.chunk(2)[::-1]` is one node holding the reversed tuple, not a list of nodes
    class Swap(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = join(torch.tanh(self.a(x)).chunk(2, -1)[::-1], -1)
            return self.b(h.flatten(1))
    m = Swap().double()
    grown = grow_exactly(m, torch.randn(4, 3, dtype=torch.float64))
    assert grown.get_parameter("a.weight").shape[0] > 8


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


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_an_empty_split_piece_keeps_the_pieces_in_place(capture):
    class Split(nn.Module):  # a split size of 0 (an expert no token was routed to)
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(3, 2), nn.Linear(5, 2)

        def forward(self, x):
            p, empty, q = self.a(x).split([3, 0, 5], -1)
            return self.b(p) + self.c(q) + empty.sum()

    m, x = Split().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert sorted(g.size for g in a.growable) == [3, 5]
    for factor in (2.0, 1.5):
        grow_exactly(m, x, factor, capture=capture)


class RoutedExperts(nn.Module):
    """JetMoe's experts: the routed token copies, sorted by expert, split by the counts
    routed to each expert (``counts.tolist()``: sizes computed from the data, some 0),
    one linear per expert, joined back with ``cat`` and summed into the tokens."""

    def __init__(self, d=8, inner=6, experts=8, k=2):
        super().__init__()
        self.e, self.k = experts, k
        self.inp, self.router = nn.Linear(4, d), nn.Linear(d, experts, bias=False)
        self.up = nn.Parameter(torch.randn(experts, inner, d) * 0.3)
        self.down = nn.Parameter(torch.randn(experts, d, inner) * 0.3)
        self.out = nn.Linear(d, 3)

    def experts(self, h, weight, counts):
        pieces = h.split(counts, dim=0)
        return torch.cat([F.linear(pieces[i], weight[i]) for i in range(self.e)], 0)

    def forward(self, x):
        h = self.inp(x)
        _, top = self.router(h).topk(self.k, dim=1)
        counts = torch.zeros(h.size(0), self.e).scatter(1, top, 1).long().sum(0).tolist()
        _, order = top.flatten().sort(0)
        rows = order.div(self.k, rounding_mode="trunc")
        y = self.experts(F.silu(self.experts(h[rows], self.up, counts)), self.down, counts)
        return self.out(torch.zeros_like(h).index_add(0, rows, y) + h)


def test_rows_split_by_routed_counts_pass_the_expert_widths():
    # 3 tokens x 2 copies over 8 experts: some experts get no row (empty pieces); the
    # fresh inputs route differently, so the split sizes must stay the graph's
    torch.manual_seed(0)
    m, x = RoutedExperts().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture="export")
    assert {g.size for g in a.growable} == {6, 8}       # each expert's width, the model dim
    assert a.group("inp").growable
    for factor in (2.0, 1.5):
        grow_exactly(m, x, factor, capture="export")


def test_a_dim_split_by_sizes_computed_from_the_data_is_fixed():
    class DataCut(nn.Module):  # the cut moves with the input: no width can follow it
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.fc(x)
            k = (x[0] > 0).sum().item()
            torch._check(k <= 8)
            p, q = h.split([k, 8 - k], -1)
            return self.out(torch.cat([q, p], -1))

    reason = blocked(DataCut(), torch.randn(3, 4), "fc", capture="export")
    assert "computed from the data" in reason and "split_with_sizes" in reason


def test_a_dict_passed_as_a_positional_input():
    class Batch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, batch):
            return self.b(torch.relu(self.a(batch["x"]))) * batch["scale"]

    example = ({"x": torch.randn(3, 4, dtype=torch.float64), "scale": 2.0},)
    grow_exactly(Batch().double(), example, 2.0)


# -- advanced indexing: tensors of positions ---------------------------------------------
class Pool(nn.Module):
    """CLIP's pooling ``h[arange(B), eos]`` and a position-table lookup, both gathers
    along positions that leave the feature dim growable."""

    def __init__(self):
        super().__init__()
        self.emb, self.pos = nn.Embedding(20, 8), nn.Parameter(torch.randn(16, 8))
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, ids):
        t = torch.arange(ids.shape[1])
        h = self.emb(ids) + self.pos[t]
        h = torch.relu(self.fc(h))
        eos = ids.argmax(-1)
        return self.head(h[torch.arange(ids.shape[0]), eos])


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_gathers_along_positions_pass_the_features(capture):
    m, ids = Pool().double(), torch.randint(0, 20, (3, 6))
    a = fxgrow.analyze(m, ids, capture=capture)
    assert a.group("fc").growable and a.group("emb").growable
    grow_exactly(m, ids, 2.0, capture=capture)
    grow_exactly(m, ids, 1.5, capture=capture)


class Picks(nn.Module):
    """Index tensors beside slices and ints, along tokens: ``h[:, t]``, ``h[0, t]`` (torch
    drops an int's dim first), ``h[b, 1:3]`` (a partial slice beside), ``hᵀ[b, :, t]``
    (non-adjacent: the index dims go first); the features pass through all of them."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x, t, b):                    # x: (B, T, 4), t: (L,) tokens, b: (L,) rows
        h = torch.relu(self.a(x))                  # (B, T, 6)
        g = h[:, t]                                # (B, L, 6)
        s = h[0, t]                                # (L, 6)
        u = h[b, 1:3]                              # (L, 2, 6)
        v = h.transpose(1, 2)[b, :, t]             # (L, 6)
        return self.b(g).mean(1) + self.b(s + v).mean(0) + self.b(u).mean((0, 1))


def _picks_input():
    return (torch.randn(2, 5, 4, dtype=torch.float64), torch.tensor([4, 0, 2]),
            torch.tensor([1, 0, 1]))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_tensor_indices_along_tokens_pass_the_features(capture):
    m, x = Picks().double(), _picks_input()
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_tensor_index_fixes_the_dim_it_indexes(capture):
    class Cols(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x, cols):
            h = self.b(torch.relu(self.a(x)))
            return self.c(h) + h[:, cols].sum(-1, keepdim=True)   # picks features of b

    m, x = Cols().double(), (torch.randn(3, 4, dtype=torch.float64), torch.tensor([5, 0, 2]))
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("b").status == "fixed"
    assert "indexed by a tensor of positions" in a.group("b").reason
    assert a.group("a").growable  # only the indexed dim is pinned
    grow_exactly(m, x, 2.0, capture=capture)


class Masked(nn.Module):
    """``h[mask]`` with masks over the leading dims only: over batch and tokens from token
    ids (``input_ids == token_id``), over tokens alone, and from the model input.  The
    number selected depends on the input; the features pass."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.b = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x, ids):                        # x: (B, T, 4), ids: (B, T)
        h = torch.relu(self.a(x))
        sel = torch.relu(self.c(h[ids == 3]))         # (N, 6)
        tok = h[:, ids[0] > 1]                        # (B, N', 6)
        pos = h[x[..., 0] > 0]                        # (N'', 6)
        return self.b(sel).sum(0) + self.b(tok).sum((0, 1)) + self.b(pos).sum(0)


def _masked_input():
    return (torch.randn(2, 6, 4, dtype=torch.float64), torch.tensor([[3, 0, 4, 3, 1, 2],
                                                                      [1, 3, 2, 0, 4, 3]]))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_a_boolean_mask_over_leading_dims_passes_the_features(capture, factor):
    m, x = Masked().double(), _masked_input()
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable and a.group("c").growable, str(a)
    g = grow_exactly(m, x, factor, capture=capture)
    assert g.get_parameter("a.weight").shape[0] == int(6 * factor)


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("how,why", [
    ("values", "selected by a boolean mask"),            # the mask holds the neurons
    ("features", "selected by a boolean mask"),          # it covers the neuron dim
    ("summed", "a sum over this dimension counts every copy"),  # computed by summing them
])
def test_a_boolean_mask_that_reads_or_covers_neurons_blocks(capture, how, why):
    class Mask(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x, keep):
            h = torch.relu(self.a(x))
            if how == "values":
                return h[h > 0.1].sum() + self.b(h)
            if how == "features":
                return h[:, keep].sum(-1, keepdim=True) + self.b(h)
            return self.b(h[h.sum(-1) > 1.0])

    x = (torch.randn(5, 4, dtype=torch.float64), torch.tensor([1, 0, 1, 1, 0, 0]).bool())
    reason = blocked(Mask().double(), x, "a", capture=capture)
    assert why in reason and "(node `" in reason, reason


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_selecting_from_a_constant_pins_no_neuron(capture):
    class Flag(nn.Module):  # GIT's embeddings: zeros_like(h, dtype=int)[:, :, 0]
        def __init__(self):
            super().__init__()
            self.a, self.ln, self.b = nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3)

        def forward(self, x):
            h = self.a(x)
            flag = torch.zeros_like(h, dtype=torch.int64)[:, :, 0]
            return self.b(self.ln(h)) + flag.unsqueeze(-1)

    m, x = Flag().double(), torch.randn(2, 5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert [g.size for g in a.groups_of("a")] == [8] and a.group("a").growable
    grow_exactly(m, x, 2.0, capture=capture)


@pytest.mark.parametrize("fn", [torch.concatenate, torch.concat])
def test_concatenate_and_concat_are_cat(fn):
    class C(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(3, 5), nn.Linear(9, 2)

        def forward(self, x):
            return self.c(fn([self.a(x), torch.relu(self.b(x))], dim=1))

    m, x = C().double(), torch.randn(2, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture="export")
    assert a.group("a").growable and a.group("b").growable
    grow_exactly(m, x, 1.5, capture="export")
