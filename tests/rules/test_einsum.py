"""Rules for einsum (fxgrow.rules.einsum): equations with ``...`` and implicit outputs."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.errors import RuleError
from fxgrow.rules.einsum import explicit_equation
from helpers import blocked, grow_exactly

CAPTURES = ["fx", "export"]

# (equation, operand shapes): every dim of a different size, so a letter given to the
# wrong dim (or an output in the wrong order) would change the result or fail
EQUATIONS = [
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (3, 5, 6)]),   # ellipses of different ranks
    ("...ij,...jk->...ik", [(2, 1, 4, 5), (3, 5, 6)]),   # and a size-1 dim under one
    ("b...d,bd->b...", [(2, 3, 4, 5), (2, 5)]),          # in the middle
    ("i...,i", [(3, 4, 5), (3,)]),                       # implicit: the ellipsis only
    ("btd,dk", [(2, 3, 4), (4, 5)]),                     # implicit: b, k, t sorted
    ("Ab,bA", [(2, 3), (3, 2)]),                         # upper case first: summed
    ("Bab", [(2, 3, 4)]),                                # implicit, upper case first
    ("...ii->...i", [(2, 3, 3)]),                        # a diagonal
    ("ij...->...", [(3, 4, 2)]),                         # summed before the ellipsis
    ("...,...", [(2, 3), (3,)]),                         # no letters at all
]


@pytest.mark.parametrize("eq,shapes", EQUATIONS)
def test_the_explicit_equation_computes_what_torch_computes(eq, shapes):
    xs = [torch.randn(s, dtype=torch.float64) for s in shapes]
    terms, out = explicit_equation(eq, [len(s) for s in shapes])
    assert "..." not in "".join(terms) + out
    expected = torch.einsum(eq, *xs)
    got = torch.einsum(",".join(terms) + "->" + out, *xs)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("eq,ranks", [("...ij,jk->ik", [1, 2]), ("ij,jk", [2, 3]),
                                      ("i.j,j", [2, 1]), ("i,j", [1])])
def test_an_equation_that_does_not_fit_its_operands_is_refused(eq, ranks):
    with pytest.raises(RuleError):
        explicit_equation(eq, ranks)


class Ellipses(nn.Module):
    """The equations above inside a model: the neurons of ``a`` (and of ``c``, unified
    with them) under ``...`` or named by a letter, passed to the output, once in
    the middle of an implicit output (``btd,tk`` is ``btd,tk->bdk``)."""

    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Linear(4, 6), nn.Linear(4, 6)
        self.pos = nn.Parameter(torch.randn(3, 4))
        self.w = nn.Parameter(torch.randn(3, 2))
        self.out = nn.Linear(6, 2)

    def forward(self, x):                                       # x: (B, T=3, 4)
        h = torch.relu(self.a(x))                               # (B, T, 6)
        p = torch.softmax(x.sum(-1), -1)                        # (B, T): no neurons
        mid = torch.einsum("b...t,bt->b...", h.transpose(1, 2), p)          # (B, 6)
        g = torch.relu(self.c(self.pos)).t()                    # (6, T)
        ranks = torch.einsum("...t,...t->...", h.transpose(1, 2), g)        # (B, 6)
        lead = torch.einsum("t...,t", h.transpose(0, 1), p[0])             # (B, 6)
        implicit = torch.einsum("btd,t", h, p[1])                           # (B, 6)
        k = torch.einsum("btd,tk", h, self.w)                               # (B, 6, 2)
        return self.out(mid + ranks + lead * implicit + k.mean(-1))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_einsum_with_ellipses_and_implicit_outputs_grows_exactly(capture, factor):
    m, x = Ellipses().double(), torch.randn(2, 3, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable and a.group("a").id == a.group("c").id, str(a)
    g = grow_exactly(m, x, factor, capture=capture)
    assert g.get_parameter("a.weight").shape[0] == g.get_parameter("c.weight").shape[0] == \
        int(6 * factor)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("eq", ["...i,...i", "...i,...i->...", "bti,bti->bt"])
def test_a_neuron_dim_summed_between_two_activations_still_blocks(capture, eq):
    class Gram(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(4, 6), nn.Linear(4, 6)

        def forward(self, x):
            return torch.einsum(eq, torch.relu(self.a(x)), torch.relu(self.c(x)))

    m, x = Gram().double(), torch.randn(2, 3, 4, dtype=torch.float64)
    for side in ("a", "c"):
        reason = blocked(m, x, side, capture=capture)
        assert reason.startswith("summed over by einsum") and "node `einsum`" in reason, reason
        assert "node `relu`" in reason, reason  # where dividing the copies fails
