"""fxgrow.capture.runner: running a module without changing it."""

import torch
from torch import nn

from fxgrow.capture.runner import call_pure


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
