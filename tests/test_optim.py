"""fxgrow.grow_optimizer: optimizer state grows by the gradient map.

The claim tested: after one step at ``lr=0`` on the same batch, the state of the
grown optimizer equals the grown source state (momentum by the ratio, second
moments by its square) -- i.e. the growth maps the source's gradient to the grown
model's own gradient.  Models in float64, so the comparison is tight.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
import transformer_models as tm
from helpers import every_group

OPTIMIZERS = [
    (torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99))),
    (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]


class CNN(nn.Module):
    """Conv-BN-ReLU twice, max-pool, flatten, linear (convs without bias: a bias before
    a BatchNorm in training mode has no gradient, only rounding)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5 * 16, 3)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        return self.fc(F.max_pool2d(F.relu(self.b2(self.c2(x))), 2).flatten(1))


def _mlp():
    m = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))
    x = torch.randn(16, 5, dtype=torch.float64)
    y = torch.randn(16, 3, dtype=torch.float64)
    return m.double(), x, lambda out: F.mse_loss(out, y)


def _cnn():
    x = torch.randn(8, 2, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    return CNN().double(), x, lambda out: F.cross_entropy(out, y)


def _gpt():
    idx = torch.randint(0, 50, (4, 12))
    return tm.GPT(norm="ln").double(), idx, \
        lambda out: F.cross_entropy(out.flatten(0, 1), idx.flatten())


MODELS = {"mlp": _mlp, "cnn_batchnorm": _cnn, "gpt": _gpt, "gpt_head_dims": _gpt}


def _spec(name, model, x):
    """2.0 (a factor grows heads), or every group by id for ``gpt_head_dims`` (the
    head dims too: the key rows divided by the counts)."""
    return every_group(fxgrow.analyze(model, x)) if name == "gpt_head_dims" else 2.0


def _step(model, opt, x, loss, lr=None):
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    model.train()
    opt.zero_grad()
    loss(model(x)).backward()
    opt.step()


def _trained(make, cls, kw, steps=3):
    model, x, loss = make()
    opt = cls(model.parameters(), **kw)
    for _ in range(steps):
        _step(model, opt, x, loss)
    return model.eval(), opt, x, loss


def _assert_states_equal(a, b, params, rtol=1e-10):
    scale = max(float(v.abs().max()) for p in params.values() for k, v in b.state[p].items()
                if torch.is_tensor(v) and k != "step")
    for name, p in params.items():
        assert a.state[p].keys() == b.state[p].keys(), name
        for k, v in b.state[p].items():
            if k == "step":
                assert float(a.state[p][k]) == float(v), name
                continue
            err = float((a.state[p][k] - v).abs().max())
            assert err <= rtol * scale, f"{name} {k}: {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=[c.__name__ for c, _ in OPTIMIZERS])
@pytest.mark.parametrize("name", list(MODELS))
def test_grown_state_is_the_state_of_the_grown_models_own_gradients(name, cls, kw):
    model, opt, x, loss = _trained(MODELS[name], cls, kw)
    grown = fxgrow.widen(model, x, _spec(name, model, x))  # net2net, verified
    grown_opt = fxgrow.grow_optimizer(opt, model, grown)
    _step(model, opt, x, loss, lr=0.0)  # the source's state after one more gradient
    _step(grown, grown_opt, x, loss, lr=0.0)  # the grown model's, from its own gradient
    want = fxgrow.grow_optimizer(opt, model, grown)
    _assert_states_equal(want, grown_opt, dict(grown.named_parameters()))


def test_non_integer_widths_and_split_shares_map_exactly_where_no_norm_averages():
    for spec, init in ((2.5, "net2net"), (2.0, "split"), (3.0, "split")):
        model, opt, x, loss = _trained(_mlp, torch.optim.Adam, dict(lr=1e-2))
        grown = fxgrow.widen(model, x, spec, init=init)
        grown_opt = fxgrow.grow_optimizer(opt, model, grown)
        _step(model, opt, x, loss, lr=0.0)
        _step(grown, grown_opt, x, loss, lr=0.0)
        _assert_states_equal(fxgrow.grow_optimizer(opt, model, grown), grown_opt,
                             dict(grown.named_parameters()))


def test_producer_rows_take_the_share_and_consumer_columns_the_whole_state():
    model, opt, x, _ = _trained(_mlp, torch.optim.SGD, dict(lr=0.05, momentum=0.9))
    plan = fxgrow.plan_widening(fxgrow.analyze(model, x), {"0": 9})
    grown = fxgrow.apply_plan(plan)
    new = fxgrow.grow_optimizer(opt, model, grown)
    gg = next(iter(plan.growth.values()))
    share = 1.0 / gg.counts[gg.index].double()
    rows = new.state[grown.get_parameter("0.weight")]["momentum_buffer"]
    cols = new.state[grown.get_parameter("2.weight")]["momentum_buffer"]
    old_rows = opt.state[model[0].weight]["momentum_buffer"]
    old_cols = opt.state[model[2].weight]["momentum_buffer"]
    assert torch.allclose(rows, old_rows[gg.index] * share[:, None])
    assert torch.allclose(cols, old_cols[:, gg.index])


def test_param_groups_hyperparameters_and_untouched_parameters_carry_over():
    model, x, loss = _mlp()
    opt = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                             {"params": list(model[2].parameters()) + list(model[4].parameters()),
                              "weight_decay": 0.3}], lr=5e-3, betas=(0.85, 0.95))
    _step(model, opt, x, loss)
    grown = fxgrow.widen(model.eval(), x, {"0": 12})  # only the first group grows
    new = fxgrow.grow_optimizer(opt, model, grown)
    assert type(new) is torch.optim.AdamW and new.defaults == opt.defaults
    for a, b in zip(opt.param_groups, new.param_groups):
        assert {k: v for k, v in a.items() if k != "params"} == \
            {k: v for k, v in b.items() if k != "params"}
    assert [p.shape for p in new.param_groups[0]["params"]] == [(12, 5), (12,)]
    out = grown.get_parameter("4.weight")  # did not grow: its state is kept as it was
    assert torch.equal(new.state[out]["exp_avg"], opt.state[model[4].weight]["exp_avg"])
    assert new.state[out]["exp_avg"] is not opt.state[model[4].weight]["exp_avg"]
    _step(grown, new, x, loss)  # and it runs


def test_fresh_positions_start_with_zero_state():
    model, opt, x, _ = _trained(_mlp, torch.optim.Adam, dict(lr=1e-2))
    for init in ("zero_out", "random_pad"):
        grown = fxgrow.widen(model, x, {"0": 10}, init=init, verify=False)
        new = fxgrow.grow_optimizer(opt, model, grown)
        rows = new.state[grown.get_parameter("0.weight")]
        cols = new.state[grown.get_parameter("2.weight")]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.count_nonzero(rows[key][6:]) == 0 and torch.count_nonzero(cols[key][:, 6:]) == 0
            assert torch.equal(rows[key][:6], opt.state[model[0].weight][key])  # old: unscaled
    grown = fxgrow.widen(model, x, 2.0, init="random_init")
    assert not fxgrow.grow_optimizer(opt, model, grown).state  # nothing carries over


def test_a_fresh_optimizer_has_no_state_to_grow():
    model, x, _ = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    new = fxgrow.grow_optimizer(opt, model, fxgrow.widen(model.eval(), x, 2.0))
    assert not new.state and len(new.param_groups[0]["params"]) == 6


def test_unsupported_optimizers_states_and_models_are_refused():
    model, x, loss = _mlp()
    grown = fxgrow.widen(model.eval(), x, 2.0)
    rms = torch.optim.RMSprop(model.parameters())
    with pytest.raises(fxgrow.OptimizerError, match="supports.*not RMSprop"):
        fxgrow.grow_optimizer(rms, model, grown)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    bare = fxgrow.widen(model, x, 2.0)
    del bare.meta["fxgrow.growth"]
    with pytest.raises(fxgrow.OptimizerError, match="no growth record.*`0.weight` changed shape"):
        fxgrow.grow_optimizer(sgd, model, bare)
    stranger = torch.optim.SGD([nn.Parameter(torch.zeros(3))], lr=0.1)
    with pytest.raises(fxgrow.OptimizerError, match="not a parameter of `source`"):
        fxgrow.grow_optimizer(stranger, model, grown)
    sgd.state[model[0].weight]["my_trace"] = torch.zeros(6, 5)
    with pytest.raises(fxgrow.OptimizerError, match="cannot grow optimizer state 'my_trace'"):
        fxgrow.grow_optimizer(sgd, model, grown)


def test_deepened_models_keep_old_state_and_train_the_new_blocks():
    model, opt, x, loss = _trained(_mlp, torch.optim.Adam, dict(lr=1e-2))
    deep = fxgrow.deepen(model, x, after=["1"], method="residual")
    new = fxgrow.grow_optimizer(opt, model, deep)
    old = {n for n, _ in model.named_parameters()}
    added = [n for n, _ in deep.named_parameters() if n not in old]
    assert added and sum(len(g["params"]) for g in new.param_groups) == len(list(deep.parameters()))
    w = deep.get_parameter("0.weight")
    assert torch.equal(new.state[w]["exp_avg"], opt.state[model[0].weight]["exp_avg"])
    assert all(deep.get_parameter(n) not in new.state for n in added)
    _step(deep, new, x, loss)
    assert all(deep.get_parameter(n) in new.state for n in added)


def _optimizer_snapshot(opt):
    """Everything of an optimizer grow_optimizer must leave alone: each parameter's state
    (cloned tensors, step counts), the param groups (parameters by identity and
    hyper-parameters) and the defaults."""
    state = {id(p): {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for p, s in opt.state.items()}
    groups = [{k: [id(p) for p in v] if k == "params" else v for k, v in g.items()}
              for g in opt.param_groups]
    return state, groups, dict(opt.defaults)


def _assert_optimizer_unchanged(opt, snap):
    state, groups, defaults = snap
    assert {id(p): s.keys() for p, s in opt.state.items()} == \
        {k: s.keys() for k, s in state.items()}
    for p, s in opt.state.items():
        for k, v in s.items():
            before = state[id(p)][k]
            if torch.is_tensor(v):
                assert v.shape == before.shape and torch.equal(v, before), (tuple(p.shape), k)
            else:
                assert v == before, (tuple(p.shape), k)
    assert [{k: [id(p) for p in v] if k == "params" else v for k, v in g.items()}
            for g in opt.param_groups] == groups
    assert opt.defaults == defaults


@pytest.mark.parametrize("spec", [2.0, {"0": 12}], ids=["all", "one group"])
@pytest.mark.parametrize("cls, kw", [OPTIMIZERS[0], OPTIMIZERS[2]], ids=["SGD", "AdamW"])
def test_the_source_optimizer_is_left_unchanged(cls, kw, spec):
    model, opt, x, loss = _trained(_mlp, cls, kw)
    snap = _optimizer_snapshot(opt)
    grown = fxgrow.widen(model, x, spec)
    new = fxgrow.grow_optimizer(opt, model, grown)
    _assert_optimizer_unchanged(opt, snap)
    # the grown state is the grown optimizer's own: its steps (in place, step counts
    # too) reach nothing of the source's, parameters that did not grow included
    for _ in range(2):
        _step(grown, new, x, loss)
    _assert_optimizer_unchanged(opt, snap)
    assert all(p in new.state for p in grown.parameters())


class _Residual(nn.Module):
    def __init__(self, width=6, depth=2):
        super().__init__()
        self.inp, self.out = nn.Linear(5, width), nn.Linear(width, 3)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(),
                                                  nn.Linear(2 * width, width))
                                    for _ in range(depth))

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=[c.__name__ for c, _ in OPTIMIZERS])
def test_grow_into_targets_get_their_state_by_the_source_names(cls, kw):
    # wider and deeper, source block 1 moved to target position 2: the state follows it
    def make():
        x = torch.randn(16, 5, dtype=torch.float64)
        y = torch.randn(16, 3, dtype=torch.float64)
        return _Residual().double(), x, lambda out: F.mse_loss(out, y)
    model, opt, x, loss = _trained(make, cls, kw)
    big = _Residual(width=12, depth=3).double()
    fxgrow.grow_into(model, big, x, layers={"blocks.1": None, "blocks.2": "blocks.1"})
    grown_opt = fxgrow.grow_optimizer(opt, model, big)
    assert big.blocks[2][0].weight in grown_opt.state  # continues source blocks.1
    assert big.blocks[1][0].weight not in grown_opt.state  # new: fresh state
    assert len([p for g in grown_opt.param_groups for p in g["params"]]) == len(list(big.parameters()))
    _step(model, opt, x, loss, lr=0.0)
    _step(big, grown_opt, x, loss, lr=0.0)
    want = fxgrow.grow_optimizer(opt, model, big)
    continued = {n: p for n, p in big.named_parameters() if not n.startswith("blocks.1.")}
    _assert_states_equal(want, grown_opt, continued)
