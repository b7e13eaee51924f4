"""The time limit on dynamic-shape export (fxgrow/capture/deadline.py)."""

from __future__ import annotations

import signal
import time

import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, snapshot
from fxgrow.capture.deadline import OutOfTime, dynamic_export_seconds, time_limit


def test_time_limit_stops_the_block_and_restores_the_alarm():
    def mine(signum, frame):
        pass
    previous = signal.signal(signal.SIGALRM, mine)
    try:
        t0 = time.monotonic()
        with pytest.raises(OutOfTime, match="more than 0.05 s"):
            with time_limit(0.05):
                while True:
                    pass
        assert time.monotonic() - t0 < 5
        assert signal.getsignal(signal.SIGALRM) is mine
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        with time_limit(None):  # no limit: the block runs to its end
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("raw, seconds", [("", 120.0), ("7.5", 7.5), ("0", None), ("junk", 120.0)])
def test_limit_from_the_environment(monkeypatch, raw, seconds):
    monkeypatch.setenv("FXGROW_DYNAMIC_EXPORT_SECONDS", raw)
    assert dynamic_export_seconds() == seconds


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_a_dynamic_export_past_the_limit_falls_back_to_static_sizes(monkeypatch):
    # a limit no export meets stands in for a model whose symbolic sizes blow up
    monkeypatch.setenv("FXGROW_DYNAMIC_EXPORT_SECONDS", "1e-6")
    torch.manual_seed(0)
    model, x = Net().double(), torch.randn(3, 4, dtype=torch.float64)
    snap = snapshot(model)
    with pytest.warns(UserWarning, match="could not keep the input sizes.*symbolic sizes took "
                                         "more than.*FXGROW_DYNAMIC_EXPORT_SECONDS"):
        a = fxgrow.analyze(model, x, capture="export")
    reason = a.graph_module.meta["fxgrow.capture"]["dynamic_fallback_reason"]
    assert reason.startswith("reasoning about symbolic sizes took more than 1e-06 s")
    assert_unchanged(model, snap)
    assert not vars(x)  # the example's tensor carries no export markings
    grown = fxgrow.widen(a, None, 2.0, verify=False)
    assert_same_function(model, grown, x)  # exact at the example's (static) sizes
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
