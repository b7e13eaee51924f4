"""Rules for mixture-of-experts blocks (fxgrow.rules.moe) and their routing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import assert_same_function, grow_exactly

CAPTURES = ["fx", "export"]


class MoE(nn.Module):
    """HuggingFace's grouped-matmul experts, written out: route by ``topk``, sort the
    token copies by expert, one grouped matmul per projection (``gate_up`` stored
    ``(E, 2I, H)`` and transposed, ``down`` stored ``(E, I, H)`` as ``(E, K, N)``),
    weight by the router, sum back into the tokens with ``index_add``."""

    def __init__(self, mm=torch._grouped_mm, d=8, inner=8, experts=4, k=2):
        super().__init__()
        self.mm, self.e, self.k = mm, experts, k
        self.inp, self.router = nn.Linear(4, d), nn.Linear(d, experts, bias=False)
        self.gate_up = nn.Parameter(torch.randn(experts, 2 * inner, d) * 0.3)
        self.down = nn.Parameter(torch.randn(experts, inner, d) * 0.3)
        self.out = nn.Linear(d, 3)

    def forward(self, x):                          # x: (N, 4) tokens
        h = self.inp(x)
        weights, experts = torch.topk(torch.softmax(self.router(h), -1), self.k)
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)
        rows = order // self.k                     # the token of each routed copy
        counts = torch.histc(flat.float(), bins=self.e, min=0, max=self.e - 1)
        offs = torch.cumsum(counts, 0).to(torch.int32)
        up = self.mm(h[rows], self.gate_up.transpose(-2, -1), offs=offs)
        gate, lin = up.chunk(2, -1)
        y = self.mm(F.silu(gate) * lin, self.down, offs=offs)
        y = y * weights.reshape(-1)[order].unsqueeze(-1)
        return self.out(torch.zeros_like(h).index_add(0, rows, y) + h)


def produced_by(a, tensor):
    return next(g for g in a.groups
                if any(m.tensor == tensor and m.role == "producer" for m in g.members))


def _grouped_ops():
    """``torch._grouped_mm`` (traced by fx; torch.export's fake kernel wants bfloat16 on
    CPU) and HuggingFace's float32 fallback, a custom op (through export)."""
    yield "fx", torch._grouped_mm
    try:
        import transformers.integrations.moe  # noqa: F401 - registers the custom op
    except ImportError:
        return
    yield "export", torch.ops.transformers.grouped_mm_fallback


@pytest.mark.parametrize("capture,mm", list(_grouped_ops()))
def test_grouped_experts_grow_like_linears(capture, mm):
    m, x = MoE(mm).eval(), torch.randn(6, 4)
    a = fxgrow.analyze(m, x, capture=capture)
    inner = produced_by(a, "gate_up")
    assert inner.growable and inner.size == 8            # each expert's width
    assert a.group("inp").growable                        # the model dim passes the experts
    # the expert dim never grows
    assert not any(m.tensor in ("gate_up", "down") and m.dim == 0
                   for g in a.growable for m in g.members)
    grow_exactly(m, x, 2.0, capture=capture)
    # torch's CPU kernel wants rows of a multiple of 16 bytes (4 float32 entries)
    odd = 13 if mm is not torch._grouped_mm else 12
    grow_exactly(m, x, {inner.id: odd, "inp": odd - 2 if odd == 13 else 16}, capture=capture)


def test_experts_computed_in_the_graph_block():
    class Scaled(MoE):
        def forward(self, x):
            h = self.inp(x)
            offs = torch.tensor([2, 4, 4, 6], dtype=torch.int32)
            up = torch._grouped_mm(h, (self.gate_up * 2).transpose(-2, -1), offs=offs)
            return self.out(up[:, :8])

    a = fxgrow.analyze(Scaled().eval(), torch.randn(6, 4))
    assert "expert weights are computed in the graph" in a.group("inp").reason


def test_square_experts_transposed_take_their_roles_on_the_right_dims():
    """``W (E, H, H)`` transposed, in a residual: both of its dims are the model dim, so
    only following the transpose tells the consuming dim from the producing one."""
    class Square(MoE):
        def __init__(self):
            super().__init__()
            self.sq = nn.Parameter(torch.randn(4, 8, 8) * 0.3)

        def forward(self, x):
            h = self.inp(x)
            offs = torch.tensor([2, 3, 5, 6], dtype=torch.int32)
            h = h + torch._grouped_mm(h, self.sq.transpose(-2, -1), offs=offs)
            return self.out(h)

    m, x = Square().eval(), torch.randn(6, 4)
    assert fxgrow.analyze(m, x).group("inp").growable
    grow_exactly(m, x, 2.0)
    grow_exactly(m, x, {"inp": 12})


transformers = pytest.importorskip("transformers")

_COMMON = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=2, vocab_size=32, use_cache=False,
               max_position_embeddings=16)


def _mixtral():
    cfg = transformers.MixtralConfig(intermediate_size=32, num_local_experts=4,
                                     num_experts_per_tok=2, **_COMMON)
    return transformers.MixtralForCausalLM(cfg)


def _qwen2_moe():
    cfg = transformers.Qwen2MoeConfig(intermediate_size=32, moe_intermediate_size=24,
                                      shared_expert_intermediate_size=20, num_experts=4,
                                      num_experts_per_tok=2, **_COMMON)
    return transformers.Qwen2MoeForCausalLM(cfg)


def _olmoe():
    cfg = transformers.OlmoeConfig(intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                                   eos_token_id=None, pad_token_id=None, **_COMMON)
    return transformers.OlmoeForCausalLM(cfg)


@pytest.mark.parametrize("make", [_mixtral, pytest.param(_qwen2_moe, marks=pytest.mark.slow),
                                  pytest.param(_olmoe, marks=pytest.mark.slow)])
def test_huggingface_experts_grow_through_export(make):
    """transformers' MoE decoders: the experts are ``transformers::grouped_mm_fallback``
    on transposed ``(E, 2I, H)`` weights; they grow, and so does the model dim through
    them; the router's expert dim ends in a softmax (blocked)."""
    m = make().eval()
    x = {"input_ids": torch.randint(0, 32, (2, 5))}
    a = fxgrow.analyze(m, x)
    experts = "model.layers.0.mlp.experts."
    inner = produced_by(a, experts + "gate_up_proj")
    assert inner.growable and produced_by(a, experts + "down_proj").growable
    assert "softmax" in a.group("model.layers.0.mlp.gate").reason
    assert_same_function(m, fxgrow.widen(a, x, 2.0, verify=False), x)
    assert_same_function(m, fxgrow.widen(a, x, {inner.id: inner.size * 3 // 2}, verify=False), x)
