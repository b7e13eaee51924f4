"""The language-model experiment's model: a small pre-LN GPT in plain PyTorch.

Byte-level (vocabulary 256), learned positions, ``nn.LayerNorm``, causal SDPA with an explicit
scale (so a grown copy and a model trained from scratch use the same attention scale), GELU MLP,
tied input and output embeddings.  The attention width ``heads * head_dim`` is its own size: widen
``x2`` grows the stream, the heads, the head dim and the MLP, which this class can build directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, d, heads, head_dim, scale):
        super().__init__()
        self.heads, self.head_dim, self.scale = heads, head_dim, scale
        self.qkv = nn.Linear(d, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, d)

    def forward(self, x):
        b, t, _ = x.shape
        inner = self.heads * self.head_dim
        q, k, v = self.qkv(x).split(inner, dim=2)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, inner))


class MLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, d, heads, head_dim, hidden, scale):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), Attention(d, heads, head_dim, scale)
        self.ln2, self.mlp = nn.LayerNorm(d), MLP(d, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, d=32, heads=2, head_dim=16, hidden=128, layers=2, ctx=64, vocab=256,
                 scale=None):
        super().__init__()
        scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Parameter(torch.zeros(ctx, d))
        self.blocks = nn.ModuleList(Block(d, heads, head_dim, hidden, scale) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        init_gpt(self)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe[: idx.size(1)]
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


@torch.no_grad()
def init_gpt(model: nn.Module, seed=None, std: float = 0.02) -> nn.Module:
    """GPT-2's initialisation on any module tree (a grown ``GraphModule`` too): Linear and
    Embedding weights N(0, std), biases 0, LayerNorm (1, 0), other parameters N(0, std)."""
    if seed is not None:
        torch.manual_seed(seed)
    done = set()
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            mod.weight.normal_(0.0, std)
            if getattr(mod, "bias", None) is not None:
                mod.bias.zero_()
        elif isinstance(mod, nn.LayerNorm):
            mod.weight.fill_(1.0)
            mod.bias.zero_()
        else:
            continue
        done.update(id(p) for p in mod.parameters(recurse=False))
    for p in model.parameters():
        if id(p) not in done:
            p.normal_(0.0, std)
    return model
