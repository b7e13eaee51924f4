"""LSTM / GRU / RNN hidden sizes grow through the recurrence (fxgrow.rules.recurrent)."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import blocked, exact_or_refused, grow_exactly

_CELLS = [nn.LSTM, nn.GRU, nn.RNN]


class _Seq(nn.Module):
    """Linear -> recurrent layer -> Linear on the outputs and on the final states."""

    def __init__(self, cls, state=False, **kw):
        super().__init__()
        self.lstm, self.state = cls is nn.LSTM, state
        d = 2 if kw.get("bidirectional") else 1
        self.a, self.rnn = nn.Linear(3, 6), cls(6, 5, **kw)
        self.b, self.c = nn.Linear(5 * d, 2), nn.Linear(5, 2)
        # a learned initial state, laid out like the hidden units
        self.h0 = nn.Parameter(torch.randn(d * kw.get("num_layers", 1), 1, 5)) if state else None

    def forward(self, x):
        h = self.a(x)
        if self.state:
            h0 = self.h0.expand(-1, x.shape[0 if self.rnn.batch_first else 1], -1).contiguous()
            y, s = self.rnn(h, (h0, torch.tanh(h0)) if self.lstm else h0)
        else:
            y, s = self.rnn(h)
        if self.lstm:
            return self.b(y), self.c(s[0]), self.c(s[1])
        return self.b(y), self.c(s)


@pytest.mark.parametrize("cls", _CELLS)
@pytest.mark.parametrize("kw", [
    {}, {"num_layers": 2, "bidirectional": True}, {"batch_first": True, "num_layers": 2},
    {"bias": False}, {"state": True, "num_layers": 2},
    {"state": True, "bidirectional": True, "batch_first": True},
])
def test_hidden_units_and_inputs_grow_through_the_recurrence(cls, kw):
    kw = dict(kw)
    m = _Seq(cls, kw.pop("state", False), **kw).double().eval()
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert a.group("a").growable, a
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cls]
    hidden = [g for g in a.groups if "rnn" in g.producers and g.size == 5]
    assert len(hidden) == 1 and hidden[0].growable, a
    for spec in (2.0, 1.5):  # non-uniform copies too: each unit reads its own state
        g = grow_exactly(m, x, spec)
        assert g.rnn.hidden_size == (8 if spec == 1.5 else 10)
        assert g.rnn.input_size == (9 if spec == 1.5 else 12)
        assert g.rnn.weight_hh_l0.shape[0] == gates * g.rnn.hidden_size


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_a_state_passed_on_shares_the_hidden_space(cls):
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.r1, self.r2, self.b = nn.Linear(3, 6), cls(6, 5), cls(5, 5), nn.Linear(5, 2)

        def forward(self, x):
            y, s = self.r1(self.a(x))
            y, s = self.r2(y, s)
            return self.b(y)

    m, x = Chain().double().eval(), torch.randn(4, 2, 3, dtype=torch.float64)
    g = grow_exactly(m, x, 1.5)
    assert g.r1.hidden_size == g.r2.hidden_size == g.r2.input_size == 8


def test_unbatched_input():
    class Unbatched(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.r, self.b = nn.Linear(3, 6), nn.LSTM(6, 5, num_layers=2), nn.Linear(5, 2)

        def forward(self, x):  # (T, 3)
            y, (h, c) = self.r(self.a(x))
            return self.b(y) + self.b(h).sum(0)

    m, x = Unbatched().double().eval(), torch.randn(4, 3, dtype=torch.float64)
    assert grow_exactly(m, x, 1.5).r.hidden_size == 8


def _groups_of(a, name):
    return [g for g in a.groups if name in g.producers and g.size == 5]


def test_projection_and_training_dropout_block_the_hidden_units():
    m = nn.Sequential(nn.Linear(3, 6), nn.LSTM(6, 5, proj_size=3)).double().eval()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert not a.group("0").growable and "proj_size" in a.group("0").reason
    assert "(node `_1`)" in a.group("0").reason
    assert exact_or_refused(m, x, 2.0) is not None

    m = _Seq(nn.GRU, num_layers=2, dropout=0.5).double().train()
    a = fxgrow.analyze(m, x)
    (hidden,) = _groups_of(a, "rnn")
    assert not hidden.growable and "dropout" in hidden.reason and "`rnn`" in hidden.reason


def test_time_along_neurons_blocks_them():
    """The recurrence carries positions along the time dim: neurons there cannot grow."""
    class Time(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.r, self.b = nn.Linear(3, 6), nn.GRU(2, 4), nn.Linear(4, 2)

        def forward(self, x):  # (B, 3) -> (6, B, 2): the Linear's outputs are the time steps
            h = self.a(x).unsqueeze(-1).expand(-1, -1, 2).transpose(0, 1)
            return self.b(self.r(h)[0])

    m, x = Time().double().eval(), torch.randn(2, 3, dtype=torch.float64)
    assert "recurrence" in blocked(m, x, "a")
    assert exact_or_refused(m, x, 2.0) is not None


def test_export_refuses_the_recurrent_op_by_name():
    m = nn.Sequential(nn.Linear(3, 6), nn.LSTM(6, 5)).double().eval()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    assert "aten.lstm" in blocked(m, x, "0", capture="export")
