"""fxgrow.capture.runner: running a module without changing it."""

import torch
from torch import nn

import fxgrow
from fxgrow.capture.runner import call_pure
from helpers import assert_unchanged, snapshot


def test_buffers_are_private_copies():
    m = nn.Sequential(nn.BatchNorm1d(2)).train()
    out = call_pure(m, (torch.randn(4, 2) + 3,))
    assert out.shape == (4, 2)
    assert torch.equal(m[0].running_mean, torch.zeros(2))


def test_seeded_calls_repeat_and_leave_global_rng_alone():
    m = nn.Dropout(0.5).train()
    x = torch.ones(100)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = call_pure(m, (x,), seed=7)
    b = call_pure(m, (x,), seed=7)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_full_precision_restores_flags():
    from fxgrow.capture.runner import full_precision
    before = (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    with full_precision():
        assert not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
    assert (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == before


class _SideEffects(nn.Module):
    """A forward that edits its input, its weights, its buffers and its attributes."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)
        self.emb = nn.Embedding(6, 4, max_norm=0.5)
        self.register_buffer("steps", torch.zeros(()))
        self.calls = 0

    def forward(self, x, ids):
        x.mul_(2)                                   # the caller's tensor
        with torch.no_grad():
            self.a.weight.clamp_(-0.3, 0.3)         # weights edited in place
        self.steps = self.steps + 1                 # a buffer reassigned (a Proxy while traced)
        self.calls += 1                             # a Python attribute
        return self.b(torch.relu(self.a(x + self.emb(ids).sum(1))))


def test_no_public_call_changes_the_model_or_the_input():
    m = _SideEffects().double()
    x, ids = torch.randn(3, 4, dtype=torch.float64), torch.randint(0, 6, (3, 2))
    snap, x0 = snapshot(m), x.clone()
    a = fxgrow.analyze(m, (x, ids))
    assert not a.group("emb").growable  # max_norm renormalises rows over the embedding dim
    grown = fxgrow.widen(a, (x, ids), 2.0, verify=False)
    fxgrow.verify(m, grown, (x, ids))
    fxgrow.deepen(m, (x, ids), after="a", method="residual", verify=False)
    assert_unchanged(m, snap)
    assert torch.equal(x, x0)
    assert isinstance(m.steps, torch.Tensor) and m.calls == 0


def test_call_pure_restores_python_attributes_and_copies_inputs():
    m = _SideEffects().double()
    x, ids = torch.randn(3, 4, dtype=torch.float64), torch.randint(0, 6, (3, 2))
    snap, x0 = snapshot(m), x.clone()
    first = call_pure(m, (x, ids))
    assert torch.equal(call_pure(m, (x, ids)), first)  # the same function, run twice
    assert_unchanged(m, snap)
    assert torch.equal(x, x0)
