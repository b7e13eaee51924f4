"""Train and eval mode in grown graphs (fxgrow.capture.modes)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
import fxgrow.errors


class Functional(nn.Module):  # dropout written functionally: traced with self.training baked in
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(F.dropout(torch.relu(self.a(x)), 0.5, self.training))


def test_layers_that_follow_the_mode_keep_following_it():
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    grown = fxgrow.widen(m, torch.randn(6, 4), 2.0)
    assert grown.meta["fxgrow.capture"]["modes"] == "same"
    grown.train()
    x = torch.randn(6, 4)
    torch.manual_seed(0)
    a = grown(x)
    torch.manual_seed(1)
    assert not torch.equal(a, grown(x))  # dropout is active again


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_graph_that_baked_the_mode_refuses_the_other_one(capture):
    m = Functional().eval()
    grown = fxgrow.widen(m, torch.randn(3, 4), 2.0, capture=capture)
    assert grown.meta["fxgrow.capture"]["modes"] == "differs"
    grown(torch.randn(3, 4))  # eval, as captured
    with pytest.raises(fxgrow.ModeError, match="captured in eval mode"):
        grown.train()(torch.randn(3, 4))
    # the user's own class keeps both modes
    mod = fxgrow.widen(m, torch.randn(3, 4), 2.0, output="module")
    mod.train()(torch.randn(3, 4))


def test_drop_path_modules_stay_leaves_that_follow_the_mode():
    tv = pytest.importorskip("torchvision")
    from torchvision.ops import StochasticDepth

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.sd, self.b = nn.Linear(4, 4), StochasticDepth(0.5, "row"), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(x + self.sd(self.a(x)))

    grown = fxgrow.widen(Block().eval(), torch.randn(3, 4), 2.0)
    assert any(n.op == "call_module" and n.target == "sd" for n in grown.graph.nodes)
    assert grown.meta["fxgrow.capture"]["modes"] == "same"


# ---- the second trace is skipped only when the first read no mode flag
from fxgrow.capture import frontend, modes


class PythonBranch(nn.Module):  # `if self.training:` leaves no op in the graph
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        if self.training:
            h = h * 0.5
        return self.b(h)


class ReadsAChild(nn.Module):  # another module's flag
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h + 1 if getattr(self.a, "training") else h)


class OwnTrain(nn.Sequential):  # train() does more than flip the flags
    def train(self, mode=True):
        return super().train(mode)


def _traces(monkeypatch):
    calls = []
    real = frontend.trace
    monkeypatch.setattr(frontend, "trace", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("cls", [PythonBranch, ReadsAChild])
def test_a_python_branch_on_the_mode_is_seen(cls, monkeypatch):
    calls = _traces(monkeypatch)
    m = cls().eval()
    grown = fxgrow.widen(m, torch.randn(3, 4), 2.0)
    assert grown.meta["fxgrow.capture"]["modes"] == "differs" and len(calls) == 2
    with pytest.raises(fxgrow.ModeError):
        grown.train()(torch.randn(3, 4))
    assert "training" not in vars(nn.Module)  # the watch is gone


def test_a_trace_that_reads_no_flag_is_not_repeated(monkeypatch):
    calls = _traces(monkeypatch)
    m = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    a = fxgrow.analyze(m, torch.randn(3, 4))
    assert a.graph_module.meta["fxgrow.capture"]["modes"] == "same" and len(calls) == 1
    assert "training" not in vars(nn.Module)


def test_models_the_watch_cannot_see_into_are_traced_again(monkeypatch):
    calls = _traces(monkeypatch)
    m = OwnTrain(nn.Linear(4, 8), nn.Linear(8, 2)).eval()
    assert not modes.TrainingWatch(m).watchable
    a = fxgrow.analyze(m, torch.randn(3, 4))
    assert a.graph_module.meta["fxgrow.capture"]["modes"] == "same" and len(calls) == 2


def test_the_watch_is_removed_when_tracing_fails():
    class Fails(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent: fx cannot trace it
                return x
            return -x

    with pytest.raises(fxgrow.TraceError):
        fxgrow.analyze(Fails(), torch.randn(3), capture="fx")
    assert "training" not in vars(nn.Module)
    m = nn.Linear(2, 2)
    m.train(False)
    assert vars(m)["training"] is False and not m.training
