"""Transformer architectures written in plain PyTorch for the tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.rand(d) + 0.5)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.w1 = nn.Linear(d, hidden, bias=False)
        self.w3 = nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _norm(kind, d):
    if kind == "rms":
        return RMSNorm(d)
    if kind == "nn.rms":  # torch's own module (zero-padded to any width)
        norm = nn.RMSNorm(d, eps=1e-6)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
        return norm
    ln = nn.LayerNorm(d)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_(0, 0.1)
    return ln


class GPTBlock(nn.Module):
    def __init__(self, d, heads, hidden, norm="rms"):
        super().__init__()
        self.ln1 = _norm(norm, d)
        self.attn = CausalSelfAttention(d, heads)
        self.ln2 = _norm(norm, d)
        self.mlp = SwiGLU(d, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Pre-norm causal decoder: RMSNorm (or LayerNorm), SDPA, SwiGLU, learned positions,
    tied embeddings."""

    def __init__(self, vocab=50, d=16, heads=4, hidden=24, layers=2, ctx=12, norm="rms"):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Parameter(torch.randn(ctx, d) * 0.1)
        self.blocks = nn.ModuleList(GPTBlock(d, heads, hidden, norm) for _ in range(layers))
        self.ln_f = _norm(norm, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, idx):
        t = idx.size(1)
        x = self.wte(idx) + self.wpe[:t]
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class BertLayer(nn.Module):
    """Post-LN encoder layer with explicit softmax attention and a padding mask."""

    def __init__(self, d, heads, hidden, scale_from_size=False):
        super().__init__()
        self.heads = heads
        self.head_size = d // heads
        self.scale_from_size = scale_from_size
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, hidden)
        self.ff2 = nn.Linear(hidden, d)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.heads

        def split(y):
            return y.view(b, t, h, d // h).permute(0, 2, 1, 3)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        # HF-style constant scale; reading it from the input's size ties it to the width
        size = d // h if self.scale_from_size else self.head_size
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(size))
        scores = scores.masked_fill(mask[:, None, None, :] == 0, -1e9)
        ctx = torch.softmax(scores, dim=-1) @ v
        ctx = ctx.permute(0, 2, 1, 3).reshape(b, t, d)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class Bert(nn.Module):
    def __init__(self, vocab=40, d=16, heads=4, hidden=32, layers=2, max_len=16, classes=3,
                 scale_from_size=False):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(BertLayer(d, heads, hidden, scale_from_size)
                                    for _ in range(layers))
        self.pool = nn.Linear(d, d)
        self.cls = nn.Linear(d, classes)

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.ln(self.tok(input_ids) + self.pos(pos)[None])
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.cls(torch.tanh(self.pool(x[:, 0])))


class EncoderClassifier(nn.Module):
    """``nn.TransformerEncoder`` between an input projection and a head."""

    def __init__(self, norm_first, batch_first, d=16, heads=4):
        super().__init__()
        self.batch_first = batch_first
        self.inp = nn.Linear(6, d)
        layer = nn.TransformerEncoderLayer(d, heads, 32, dropout=0.0, norm_first=norm_first,
                                           batch_first=batch_first, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.enc(self.inp(x)))


class MHANet(nn.Module):
    """``nn.MultiheadAttention`` used directly, returning averaged weights too."""

    def __init__(self, d=12, heads=3):
        super().__init__()
        self.inp = nn.Linear(5, d)
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 2)

    def forward(self, x):
        h = self.inp(x)
        y, w = self.mha(h, h, h)
        return self.out(self.norm(h + y)), w


class NanoGPTAttention(nn.Module):
    """nanoGPT's explicit attention: a causal-mask buffer, softmax, dropout."""

    def __init__(self, d=16, heads=4, ctx=8):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.register_buffer("bias", torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(16, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(4))
        att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.head(x + self.c_proj(y))
