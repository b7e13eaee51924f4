"""The target's graph is the grown graph, op for op (fxgrow.grow.correspond)."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.errors import TargetMismatchError
from fxgrow.grow.correspond import correspond


class Heads(nn.Module):
    def __init__(self, heads=2, dim=4, act=torch.relu):
        super().__init__()
        self.h, self.d, self.act = heads, dim, act
        self.v, self.o = nn.Linear(8, heads * dim), nn.Linear(heads * dim, 8)

    def forward(self, x):
        b, s, _ = x.shape
        return self.o(self.act(self.v(x).view(b, s, self.h, self.d)).reshape(b, s, -1))


def _grown(model, x, spec):
    return fxgrow.widen(model, x, spec, verify=False)


def test_a_target_built_at_the_new_sizes_pairs_every_tensor():
    x = torch.randn(2, 3, 8)
    a = fxgrow.analyze(Heads(2), x)
    heads = next(g.id for g in a.groups if g.size == 2)
    grown = _grown(a, x, {heads: 4})
    target = fxgrow.analyze(Heads(4), x).graph_module
    pairs = correspond(target, grown, set(), {})
    assert pairs == {k: k for k in ("v.weight", "v.bias", "o.weight", "o.bias")}


def test_a_literal_the_target_does_not_grow_is_named():
    # the grown graph views as (b, s, 4, 4); a target that keeps 2 heads of 8 does not
    x = torch.randn(2, 3, 8)
    a = fxgrow.analyze(Heads(2), x)
    heads = next(g.id for g in a.groups if g.size == 2)
    target = fxgrow.analyze(Heads(2, dim=8), x).graph_module
    with pytest.raises(TargetMismatchError, match=r"view.*args"):
        correspond(target, _grown(a, x, {heads: 4}), set(), {})


def test_another_op_is_named():
    x = torch.randn(2, 3, 8)
    a = fxgrow.analyze(Heads(2), x)
    grown = _grown(a, x, {next(g.id for g in a.groups if g.size == 2): 4})
    target = fxgrow.analyze(Heads(4, act=torch.tanh), x).graph_module
    with pytest.raises(TargetMismatchError, match="tanh|relu"):
        correspond(target, grown, set(), {})


def test_a_split_spelled_out_by_the_widening_matches_an_int_split():
    class Packed(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.w = width
            self.qkv, self.o = nn.Linear(4, 3 * width), nn.Linear(width, 2)

        def forward(self, x):
            q, k, v = self.qkv(x).split(self.w, dim=-1)
            return self.o(q * torch.sigmoid(k) + v)
    x = torch.randn(5, 4)
    a = fxgrow.analyze(Packed(6), x)
    grown = _grown(a, x, 2.0)
    assert any(isinstance(n.args[1], (list, tuple)) for n in grown.graph.nodes
               if "split" in str(n.target))
    pairs = correspond(fxgrow.analyze(Packed(12), x).graph_module, grown, set(), {})
    assert "qkv.weight" in pairs


def test_a_leaf_module_setting_outside_its_repr_is_compared():
    # nn.MultiheadAttention's extra_repr is empty: num_heads must still agree
    class Attn(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.inp = nn.Linear(4, d)
            self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
            self.out = nn.Linear(d, 2)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.mha(h, h, h, need_weights=False)[0])
    x = torch.randn(2, 5, 4)
    a = fxgrow.analyze(Attn(16, 2).eval(), x)
    grown = _grown(a, x, 2.0)  # 4 heads of 8
    assert grown.get_submodule("mha").num_heads == 4
    assert correspond(fxgrow.analyze(Attn(32, 4).eval(), x).graph_module, grown, set(), {})
    with pytest.raises(TargetMismatchError, match="num_heads"):
        correspond(fxgrow.analyze(Attn(32, 2).eval(), x).graph_module, grown, set(), {})
