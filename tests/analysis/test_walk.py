"""fxgrow.analysis: the walk, metadata and failure handling."""

import torch
from torch import nn

import fxgrow
from fxgrow.ir.values import TV
from models import resnet, split_net


def test_metadata_is_written_on_nodes():
    m, x = resnet()
    a = fxgrow.analyze(m, x)
    nodes = list(a.graph_module.graph.nodes)
    conv = next(n for n in nodes if n.target == "conv1")
    assert isinstance(conv.meta["fxgrow.value"], TV)
    assert conv.meta["fxgrow.rule"] == "conv" and conv.meta["fxgrow.op"] == "Conv2d"
    channel = conv.meta["fxgrow.value"].dims[1]
    assert channel.space == a.group("conv1").id


def test_analysis_does_not_touch_weights():
    m, x = split_net()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fxgrow.analyze(m, x)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_analysis_is_independent_of_parameter_values():
    m, x = resnet()
    a = fxgrow.analyze(m, x)
    for p in m.parameters():
        torch.nn.init.normal_(p)
    b = fxgrow.analyze(m, x)
    assert [(g.size, g.status) for g in a.groups] == [(g.size, g.status) for g in b.groups]


def test_unknown_op_blocks_every_space_it_touches():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(3, 4)

        def forward(self, x):
            return torch.cumprod(self.a(x), -1) + self.b(x)

    a = fxgrow.analyze(Odd(), torch.randn(2, 3))
    # `a` feeds the unknown op; `b` is added to its (unknown) output
    for name in ("a", "b"):
        g = a.group(name)
        assert g.status == "blocked" and "cumprod" in g.reason


def test_node_that_blocked_is_marked():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)

        def forward(self, x):
            return torch.fft.fft(self.a(x)).real

    a = fxgrow.analyze(Odd(), torch.randn(2, 3))
    marked = [n for n in a.graph_module.graph.nodes if "fxgrow.blocked" in n.meta]
    assert marked and "no rule" in marked[0].meta["fxgrow.blocked"][0]
