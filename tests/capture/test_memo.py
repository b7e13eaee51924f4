"""LeafMemo: the graph's run takes a layer's output from the model's run only when the
layer would compute exactly that again; an unfaithful graph is still caught."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.capture import memo as memo_module
from fxgrow.capture.memo import LeafMemo
from fxgrow.errors import TraceError
from fxgrow.verify import verify


def _recorded(model, *args, memo=None):
    memo = memo or LeafMemo(model)
    with memo.recording():
        out = model(*args)
    return memo, out


def _offer(memo, layer, *args, **kwargs):
    with memo.offering():
        return memo.lookup(layer, args, kwargs)


def test_a_call_on_equal_inputs_gets_the_recorded_output():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    memo, _ = _recorded(m, x)
    with memo.offering():
        first = memo.lookup(m[0], (x.clone(),), {})
        second = memo.lookup(m[2], (torch.relu(first),), {})
    assert first is not None and torch.equal(first, m[0](x))
    assert second is not None and torch.equal(second, m[2](m[1](m[0](x))))
    assert memo.hits == 2


def test_different_values_or_layout_are_computed():
    lin = nn.Linear(4, 4)
    x = torch.randn(4, 4)
    memo, _ = _recorded(lin, x)
    assert _offer(memo, lin, x + 1e-7) is None  # values
    memo, _ = _recorded(lin, x)
    assert _offer(memo, lin, x.t().contiguous().t()) is None  # same values, other strides
    memo, _ = _recorded(lin, x)
    assert _offer(memo, lin, x.double()) is None


def test_the_kth_graph_call_is_matched_with_the_kth_model_call():
    lin = nn.Linear(3, 3)
    shared = nn.Sequential(lin, nn.Tanh(), lin)
    x = torch.randn(2, 3)
    memo, _ = _recorded(shared, x)
    with memo.offering():
        h = memo.lookup(lin, (x,), {})
        y = memo.lookup(lin, (torch.tanh(h),), {})
    assert torch.equal(h, lin(x)) and torch.equal(y, lin(torch.tanh(lin(x))))
    with memo.offering():  # out of order: the first recorded call does not match
        assert memo.lookup(lin, (torch.tanh(lin(x)),), {}) is None


def test_a_layer_written_or_changed_since_the_run_started_is_computed():
    lin = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    memo, _ = _recorded(lin, x)
    with memo.offering():
        with torch.no_grad():
            lin.weight.mul_(1.0)  # a write: the version counter moves
        assert memo.lookup(lin, (x,), {}) is None
    norm = nn.LayerNorm(3)
    memo, _ = _recorded(norm, x)
    norm.eps = 1.0
    assert _offer(memo, norm, x) is None


def test_an_output_or_input_written_after_the_call_is_computed():
    lin = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    memo, out = _recorded(lin, x)
    out.mul_(2)
    assert _offer(memo, lin, x.clone()) is None
    memo, _ = _recorded(lin, x)
    x.add_(1)
    assert _offer(memo, lin, x) is None


def test_global_state_must_match():
    lin = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    memo, _ = _recorded(lin, x)
    with memo.offering(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert memo.lookup(lin, (x,), {}) is None


def test_keyword_arguments_are_compared():
    attn = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    q = torch.randn(2, 5, 8)
    memo = LeafMemo(attn)
    with memo.recording():
        attn(q, q, q, need_weights=False)
    with memo.offering():
        assert memo.lookup(attn, (q, q, q), {"need_weights": True}) is None
    memo = LeafMemo(attn)
    with memo.recording():
        ref = attn(q, q, q, need_weights=False)
    got = _offer(memo, attn, q, q, q, need_weights=False)
    assert got is not None and torch.equal(got[0], ref[0]) and got[1] is None


class _Sub(nn.Linear):
    pass


def test_only_torch_layers_without_hooks_and_state_writes_are_trusted():
    hooked = nn.Linear(3, 3)
    hooked.register_forward_hook(lambda *a: None)
    bn_train = nn.BatchNorm1d(3).train()
    renorm = nn.Embedding(5, 3, max_norm=1.0)
    for layer in (hooked, _Sub(3, 3), bn_train, renorm):
        memo = LeafMemo(nn.Sequential(layer))
        assert not memo._layers, layer
    handle = nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert not LeafMemo(nn.Linear(3, 3))._layers  # a global hook could see every call
    finally:
        handle.remove()


def test_the_budget_bounds_what_is_kept():
    lin = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    memo, _ = _recorded(lin, x, memo=LeafMemo(lin, budget=0))
    assert _offer(memo, lin, x) is None


def test_the_recording_leaves_no_hook_behind():
    m = nn.Sequential(nn.Linear(3, 3))
    _recorded(m, torch.randn(1, 3))
    assert not m[0]._forward_hooks


class _EpsSideEffect(nn.Module):
    """fx runs the Python side effect at trace time only: the graph's norm uses eps 1e-5,
    the model's eps 10, on the same input."""

    def __init__(self):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(16), nn.Linear(16, 4)

    def forward(self, x):
        self.norm.eps = 10.0
        y = self.norm(x)
        self.norm.eps = 1e-5
        return self.fc(y)


def test_an_unfaithful_graph_is_still_refused():
    m = _EpsSideEffect().eval()
    with pytest.raises(TraceError, match="does not compute what the model computes"):
        fxgrow.analyze(m, torch.randn(3, 16), capture="fx")


def _no_memo(model, budget=None):
    return LeafMemo(model, budget=0)


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 5)),
    lambda: nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
])
def test_sharing_changes_neither_the_analysis_nor_the_grown_model(make, monkeypatch):
    m = make().eval()
    x = torch.randn(2, 3, 10, 10) if isinstance(m, nn.Sequential) else torch.randn(2, 6, 16)
    before = {n: t.clone() for n, t in m.state_dict().items()}
    shared = fxgrow.analyze(m, x)
    grown = fxgrow.widen(shared, spec=2.0, verify=False)
    monkeypatch.setattr(fxgrow.api, "LeafMemo", _no_memo)
    plain = fxgrow.analyze(m, x)
    assert [(g.size, g.status, g.reason) for g in shared.groups] == \
        [(g.size, g.status, g.reason) for g in plain.groups]
    assert verify(m, grown, x).ok
    assert all(torch.equal(before[n], t) for n, t in m.state_dict().items())


def test_layers_are_shared_in_a_real_check(monkeypatch):
    hits = []
    offer = memo_module.LeafMemo.lookup

    def counting(self, *a):
        out = offer(self, *a)
        hits.append(out is not None)
        return out
    monkeypatch.setattr(memo_module.LeafMemo, "lookup", counting)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    fxgrow.analyze(m, torch.randn(3, 4), capture="fx")
    assert hits == [True, False, True]  # ReLU is not recorded: it is computed
