"""Op names across fx and export spellings, and in-place writes (fxgrow.grow.vocabulary)."""

import operator

import torch
from torch import fx

from fxgrow.grow.vocabulary import mutates, op_name, writes_into


def test_names_are_one_across_spellings():
    assert op_name(torch.ops.aten.add.Tensor) == op_name(operator.add) == op_name("add") == "add"
    assert op_name(torch.ops.aten.index_put_.default) == "index_put"


def test_writes_are_found_through_views():
    # y = x.clone(); y[0] = 1.0; y.view(-1).add_(1); return y  (written as a graph: fx
    # cannot trace an item assignment, export graphs hold such calls)
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.call_method("clone", (x,))
    put = g.call_function(operator.setitem, (y, 0, 1.0))
    z = g.call_method("view", (y, -1))
    add = g.call_method("add_", (z, 1))
    g.output(y)
    assert set(writes_into(y)) == {put, add}
    assert mutates(put, y) and mutates(add, z) and not mutates(add, y)
    assert writes_into(x) == []  # clone copies: writes into it do not reach x
