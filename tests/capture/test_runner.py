"""fxgrow.capture.runner: running a module without changing it."""

import torch
from torch import nn

import fxgrow
from fxgrow.capture.runner import call_pure
from helpers import assert_unchanged, snapshot


def test_buffers_are_private_copies(path):
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


def test_no_public_call_changes_the_model_or_the_input(path):
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


def test_call_pure_restores_python_attributes_and_copies_inputs(path):
    m = _SideEffects().double()
    x, ids = torch.randn(3, 4, dtype=torch.float64), torch.randint(0, 6, (3, 2))
    snap, x0 = snapshot(m), x.clone()
    first = call_pure(m, (x, ids))
    assert torch.equal(call_pure(m, (x, ids)), first)  # the same function, run twice
    assert_unchanged(m, snap)
    assert torch.equal(x, x0)


# ---- the guarded path: large parameters run uncopied under a dispatch mode that stops writes
import pytest
import torch.nn.functional as F
from fxgrow.capture import runner


@pytest.fixture(params=["guarded", "copied"])
def path(request, monkeypatch):
    """Both ways call_pure protects parameters: guarding them, or copying them."""
    monkeypatch.setattr(runner, "GUARD_BYTES_PER_MODULE", 0 if request.param == "guarded"
                        else float("inf"))
    return request.param


class _Writes(nn.Module):
    """A forward that writes to its own weight in one of many ways, then uses it."""

    def __init__(self, how):
        super().__init__()
        self.how, self.lin = how, nn.Linear(4, 4)
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        w = self.lin.weight
        with torch.no_grad():
            if self.how == "data_inplace":
                w.data.mul_(2)
            elif self.how == "data_assign":
                w.data = w.data * 2
            elif self.how == "view_inplace":
                w[0].zero_()
            elif self.how == "setitem":
                w[:, 1] = 3.0
            elif self.how == "out":
                torch.mul(w, 2, out=w)
            elif self.how == "init":
                nn.init.ones_(w)
            elif self.how == "storage":
                w.untyped_storage().fill_(0)
            elif self.how == "swallowed":
                try:
                    w.add_(1)
                except Exception:  # a forward that hides errors must not hide the guard
                    pass
            elif self.how == "flags":
                w.requires_grad_(False)
                w.tag = "seen"
                w.grad = torch.ones_like(w)
            self.count.add_(1)  # a buffer written in place
        return self.lin(x) + self.count


WRITES = ["data_inplace", "data_assign", "view_inplace", "setitem", "out", "init", "storage",
          "swallowed", "flags", "none"]


@pytest.mark.parametrize("how", WRITES)
def test_writes_to_parameters_never_reach_the_model(how, path):
    m = _Writes(how)
    snap, x = snapshot(m), torch.randn(3, 4)
    expected = copy_model_call(m, x)
    out = call_pure(m, (x,))
    assert torch.equal(out, expected)  # what the forward computes on a copy of the model
    assert torch.equal(call_pure(m, (x,)), expected)
    assert_unchanged(m, snap)
    w = m.lin.weight
    assert w.grad is None and w.requires_grad and not hasattr(w, "tag")


def copy_model_call(m, x):
    import copy
    with torch.no_grad():
        return copy.deepcopy(m)(x)


def test_a_parameter_returned_by_the_forward_is_a_copy(path):
    class Returns(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.w[:2], x

    m = Returns()
    out, _ = call_pure(m, (torch.ones(1),))
    with torch.no_grad():
        out.add_(1)  # the caller writing to the result
    assert torch.equal(m.w, torch.ones(3))


def test_guarded_calls_that_write_nothing_copy_no_parameter(monkeypatch):
    monkeypatch.setattr(runner, "GUARD_BYTES_PER_MODULE", 0)
    copied = []
    real = runner._copies
    monkeypatch.setattr(runner, "_copies", lambda named: copied.append(list(named)) or real(
        copied[-1]))
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU()).train()
    snap = snapshot(m)
    call_pure(m, (torch.randn(5, 4),))
    assert [[name for name, _ in c] for c in copied] == [[
        "1.running_mean", "1.running_var", "1.num_batches_tracked"]]  # buffers only
    assert_unchanged(m, snap)  # batch norm's running statistics were copies


def test_a_stopped_call_leaves_the_rng_as_one_call_would(monkeypatch):
    monkeypatch.setattr(runner, "GUARD_BYTES_PER_MODULE", 0)

    class Draws(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            noise = torch.randn(3)
            with torch.no_grad():
                self.w.add_(1)  # stops the guarded call after one draw
            return F.linear(x, self.w.diag()) + noise

    m = Draws()
    torch.manual_seed(3)
    out = call_pure(m, (torch.ones(3),))
    after = torch.get_rng_state()
    torch.manual_seed(3)
    assert torch.equal(out, torch.ones(3) * 2 + torch.randn(3))
    assert torch.equal(torch.get_rng_state(), after)
    assert torch.equal(m.w, torch.ones(3))


def test_a_cache_filled_in_place_does_not_outlive_the_block():
    from fxgrow.capture.runner import preserved

    class Cached(nn.Module):
        def __init__(self):
            super().__init__()
            self.cache, self.seen = {}, []

        def forward(self, x):
            self.cache.setdefault("k", x * 2)  # timm's attention_bias_cache, filled in place
            self.seen.append(1)
            return self.cache["k"]
    m = Cached()
    cache, seen = m.cache, m.seen
    with preserved(m):
        m(torch.ones(2))
    assert m.cache is cache and m.cache == {} and m.seen is seen and m.seen == []
