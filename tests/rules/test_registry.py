"""fxgrow.rules: the rule table, lookup and user registration."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import assert_same_function
from fxgrow.rules import RULES, lookup, register_rule


class Twice(nn.Module):
    """A user leaf module fxgrow knows nothing about."""

    def forward(self, x):
        return x * 2


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 6)
        self.act = Twice()
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def test_unknown_leaf_blocks_with_reason_then_registration_unblocks():
    m, x = Net(), torch.randn(4, 3)
    a = fxgrow.analyze(m, x, leaf_modules=[Twice])
    g = a.group("a")
    assert g.status == "blocked" and "no rule for Twice" in g.reason and "`act`" in g.reason
    try:
        register_rule(Twice)(fxgrow.rules.elementwise)
        a = fxgrow.analyze(m, x, leaf_modules=[Twice])
        assert a.group("a").growable
        assert_same_function(m, fxgrow.widen(a, x, 2.0), x)
    finally:
        RULES.pop(Twice, None)


def test_subclass_lookup_only_without_new_forward():
    class MyLinear(nn.Linear):
        pass

    class Odd(nn.Linear):
        def forward(self, x):
            return super().forward(x).flip(-1)

    assert lookup(MyLinear) is lookup(nn.Linear)
    assert lookup(Odd) is None
    assert lookup(torch.relu) is not None and lookup("view") is not None


def test_custom_rule_with_context_verbs():
    """A user rule for a channel-mixing op: it must say the dim cannot grow."""

    def roll_rule(ctx):
        x = ctx.tensor(ctx.arg(0))
        ctx.block(x.dims[-1], "roll moves neurons to other positions")
        return x

    class Rolled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 5)

        def forward(self, x):
            return torch.roll(self.a(x), 1, -1).sum(0)

    try:
        register_rule(torch.roll)(roll_rule)
        a = fxgrow.analyze(Rolled(), torch.randn(2, 3))
        assert "roll moves neurons" in a.group("a").reason
    finally:
        RULES.pop(torch.roll, None)


def test_more_elementwise_functions_pass_through():
    class E(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.atan(torch.special.expit(self.a(x))) + torch.sinh(self.a(x)))

    m, x = E(), torch.randn(2, 3)
    assert_same_function(m, fxgrow.widen(m, x, 2.0), x)


def test_a_subclass_inherits_its_base_rule_only_if_it_computes_the_same():
    class Plain(nn.Conv2d):
        def extra_repr(self):
            return "plain"

    class Standardised(nn.Conv2d):  # weight standardisation: a different function
        def _conv_forward(self, x, w, b):
            return super()._conv_forward(x, (w - w.mean()) / w.std(), b)

    assert lookup(Plain) is lookup(nn.Conv2d)
    assert lookup(Standardised) is None
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), Plain(8, 8, 3), nn.ReLU(),
                      nn.Conv2d(8, 2, 1)).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert_same_function(m, fxgrow.widen(m, x, 2.0, verify=False, leaf_modules=[Plain]), x)


@pytest.mark.parametrize("targets", [(12345,), (), ("",), (nn.Linear(2, 2),), (int,)],
                         ids=repr)
def test_bad_targets_are_refused(targets):
    before = (dict(RULES), dict(fxgrow.rules.RULES_BY_NAME))
    with pytest.raises(fxgrow.SpecError, match="register_rule|cannot register"):
        register_rule(*targets)(lambda ctx: None)
    assert (RULES, fxgrow.rules.RULES_BY_NAME) == before


def test_a_rule_must_be_callable():
    with pytest.raises(fxgrow.SpecError, match="function of a RuleContext"):
        register_rule("my_unused_method_xyz")(42)
    assert "my_unused_method_xyz" not in RULES


def _documented_rules():
    """The rule names in the middle column of docs/neuron-spaces.md's rule table."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).parents[2] / "docs" / "neuron-spaces.md").read_text()
    table = text[text.index("| ops | rules | what they do to neurons | file |"):]
    table = table[:table.index("\n\n")]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return [name for row in rows for name in re.findall(r"`(\w+)`", row[1])]


def test_every_built_in_rule_is_in_the_docs_rule_table_once():
    from fxgrow.rules import BUILTIN, moe
    registered = {rule.name for rules in BUILTIN for _, rule in rules.entries}
    registered |= {rule.name for rule in moe._CUSTOM.values()}
    documented = _documented_rules()
    assert sorted(n for n in set(documented) if documented.count(n) > 1) == []
    assert sorted(registered - set(documented)) == [], "rules missing from docs/neuron-spaces.md"
    optional = {"export_guards"}  # registered where torch.export has a guard module
    assert sorted(set(documented) - registered - optional) == [], \
        "documented rules that do not exist"
