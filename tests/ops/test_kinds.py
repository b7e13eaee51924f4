"""Which ops the linearity proofs accept."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

import fxgrow
from fxgrow import meta
from fxgrow.ops.kinds import kind, node_inputs


class _Ops(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.drop, self.norm = nn.Linear(4, 4), nn.Dropout(0.1), nn.LayerNorm(4)
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        y = self.drop(self.lin(x)).view(2, 2, 4).transpose(0, 1)
        y = -(y * 2.0) / 3.0 + y
        y = torch.cat([y[..., 2:], y[..., :2]], -1) @ self.w
        return F.linear(self.norm(y), self.w), torch.relu(y)


def test_kinds():
    gm = fx.symbolic_trace(_Ops())
    got = {n.name: kind(gm, n) for n in gm.graph.nodes}
    assert got["lin"] == "layer" and got["drop"] == "move" and got["norm"] is None
    assert got["view"] == got["transpose"] == got["getitem"] == got["cat"] == "move"
    assert got["mul"] == got["neg"] == "scale" and got["truediv"] == "divide"
    assert got["add"] == "add" and got["matmul"] == got["linear"] == "layer"
    assert got["relu"] is None and got["x"] is None and got["w"] is None


def test_export_graphs_read_as_the_canonical_ops():
    ep = torch.export.export(_Ops().eval(), (torch.randn(4, 4),))
    gm = ep.module()
    kinds = {str(n.target): kind(gm, n) for n in gm.graph.nodes if n.op == "call_function"}
    assert kinds["aten.view.default"] == "move" and kinds["aten.relu.default"] is None
    assert kinds["aten.linear.default"] == "layer" and kinds["aten.add.Tensor"] == "add"


def test_node_inputs_include_nested_arguments():
    gm = fx.symbolic_trace(_Ops())
    (cat,) = [n for n in gm.graph.nodes if n.target is torch.cat]
    assert [n.name for n in node_inputs(cat)] == ["getitem", "getitem_1"]  # from a list
    assert {n.target for n in node_inputs(cat)} == {operator.getitem}


def test_casts_move_values_only_between_floating_dtypes():
    class Casts(nn.Module):
        def forward(self, x):
            return x.to(torch.float32).double() + x.to(torch.int64).double()

    gm = fx.symbolic_trace(Casts())
    from fxgrow.capture import capture
    gm = capture(gm, torch.randn(2, 3, dtype=torch.float64)).graph_module
    kinds = {n.name: kind(gm, n) for n in gm.graph.nodes if n.op == "call_method"}
    assert kinds == {"to": "move", "double": "move", "to_1": None, "double_1": None}


def test_value_users_leave_out_export_asserts():
    from fxgrow.ops.kinds import value_users

    class Cast(nn.Module):
        def forward(self, x):
            return torch.relu(x.to(torch.float32))

    ep = torch.export.export(Cast(), (torch.randn(2, 3),))
    a = fxgrow.analyze(ep, torch.randn(2, 3))
    x = next(n for n in a.graph_module.graph.nodes if n.op == "placeholder")
    # the guards and the dtype assert read the input but compute nothing from it
    rules = {meta.rule(u) for u in x.users}
    assert {"export_guards", "assert_tensor_metadata"} <= rules
    assert [u.name for u in value_users(x)] == ["to"]
