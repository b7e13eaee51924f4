"""Tensors read in conflicting roles (fxgrow.analysis.ties)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import exact_or_refused, grow_exactly


def test_tied_weights_are_blocked_not_broken():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    a = fxgrow.analyze(Tied(), torch.randint(0, 10, (2, 3)))
    (g,) = [g for g in a.groups if g.size == 4]
    assert g.status == "blocked" and "tied" in g.reason


def test_a_consumer_weight_read_as_a_tensor_too_is_blocked():
    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.b(torch.tanh(self.a(x)))
            return self.c(h * self.b.weight[0])  # a weight row used as a scale

    m = Reused().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    reasons = [g.reason for g in fxgrow.analyze(m, x).groups if g.size in (1, 7, 8)]
    assert any("both as a consumer" in r for r in reasons)
    assert exact_or_refused(m, x, 2.0) is not None


def test_tied_output_layer_scaling_moves_only_onto_a_gain_read_once():
    class Tied(nn.Module):
        def __init__(self, shared_gain):
            super().__init__()
            self.emb, self.ln1, self.lnf = nn.Embedding(10, 8), nn.LayerNorm(8), nn.LayerNorm(8)
            if shared_gain:
                self.lnf.weight = self.ln1.weight  # one tensor, two norms

        def forward(self, ids):
            h = self.emb(ids)
            h = h + torch.tanh(self.ln1(h))
            return F.linear(self.lnf(h), self.emb.weight)

    ids = torch.randint(0, 10, (2, 5))
    grow_exactly(Tied(False).double().eval(), ids, 2.0)  # the scaling moves onto lnf
    shared = Tied(True).double().eval()
    width = [g for g in fxgrow.analyze(shared, ids).groups
             if any((m.tensor, m.dim) == ("emb.weight", 1) for m in g.members)]
    assert width and all(not g.growable and "both as a consumer" in g.reason for g in width)
    assert exact_or_refused(shared, ids, 2.0) is not None


class _WrittenRMS(nn.Module):
    """LLaMA's RMSNorm (``w * h.to(dtype)``), or Gemma's (``h * (1 + w)``, cast back)."""

    def __init__(self, d, gemma=False, compute=torch.float64):
        super().__init__()
        self.gemma, self.compute = gemma, compute
        self.weight = nn.Parameter(0.1 * torch.randn(d) + (0.0 if gemma else 1.0))

    def forward(self, x):
        h = x.to(self.compute)  # HF: float32
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        if self.gemma:
            return (h * (1.0 + self.weight.to(self.compute))).type_as(x)
        return self.weight * h.to(x.dtype)


class TiedLM(nn.Module):
    """Embedding (optionally times sqrt(d), as Gemma), a residual block, the final norm,
    a head tied to the embedding, read through a slice (HF's ``logits_to_keep``)."""

    def __init__(self, norm, d=8, vocab=20, scale=False):
        super().__init__()
        self.emb, self.fc = nn.Embedding(vocab, d), nn.Linear(d, d)
        self.scale = d ** 0.5 if scale else None
        self.norm = {"layer": lambda: nn.LayerNorm(d), "rms": lambda: nn.RMSNorm(d),
                     "written": lambda: _WrittenRMS(d),
                     "gemma": lambda: _WrittenRMS(d, gemma=True)}[norm]()
        if norm in ("layer", "rms"):
            nn.init.uniform_(self.norm.weight, 0.5, 1.5)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids)
        if self.scale is not None:
            h = h * torch.tensor(self.scale, dtype=h.dtype)
        h = h + self.fc(torch.tanh(h))
        return self.head(self.norm(h)[:, 0:])


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("norm, scale", [("layer", False), ("rms", False), ("written", False),
                                         ("gemma", True)])
def test_tied_head_scaling_moves_onto_the_final_gain(norm, scale, capture):
    # a functional norm's gain (export), a written-out RMSNorm's weight, Gemma's (1 + w)
    # (w' = (1 + w)/c - 1), behind a slice and casts; an embedding scaled by sqrt(d)
    m, ids = TiedLM(norm, scale=scale).double().eval(), torch.randint(0, 20, (2, 5))
    a = fxgrow.analyze(m, ids, capture=capture)
    (width,) = [g for g in a.groups if any(x.tensor == "emb.weight" and x.dim == 1
                                           for x in g.members)]
    assert width.growable, width.reason
    assert any(x.role == "consumer" and x.tensor.startswith("norm.") for x in width.members)
    for spec in (2.0, 3.0, {width.id: 11}):  # 11: mean- or zero-padding
        g = fxgrow.widen(a, ids, spec, verify=False)
        assert fxgrow.verify(m, g, ids).max_rel < 1e-12
        assert g.get_parameter("head.weight") is g.get_parameter("emb.weight")
    if norm == "gemma":
        g = fxgrow.widen(a, ids, 2.0, verify=False)
        assert a.offsets == {"norm.weight": 1.0}
        assert torch.allclose(1 + g.get_parameter("norm.weight")[:8], (1 + m.norm.weight) / 2)


def test_a_tied_gain_read_elsewhere_keeps_the_block():
    class Shared(TiedLM):
        def __init__(self):
            super().__init__("layer")
            self.aux = nn.Linear(8, 20)

        def forward(self, ids):  # the final norm's output has a second reader
            h = self.emb(ids)
            n = self.norm(h + self.fc(torch.tanh(h)))
            return self.head(n) + self.aux(n)

    m, ids = Shared().eval(), torch.randint(0, 20, (2, 5))
    for capture in ("fx", "export"):
        a = fxgrow.analyze(m, ids, capture=capture)
        (width,) = [g for g in a.groups if any(x.tensor == "emb.weight" and x.dim == 1
                                               for x in g.members)]
        assert not width.growable and "tied weights" in width.reason
