"""Sizes read from tensors (fxgrow.rules.sizes)."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import blocked, exact_or_refused, grow_exactly


def test_size_read_into_arithmetic_blocks():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h / h.size(-1))

    a = fxgrow.analyze(Scaled(), torch.randn(2, 3))
    assert a.group("a").status == "blocked" and "size" in a.group("a").reason


class _Checked(nn.Module):
    """A model checking its own widths (gcvit's ``_assert(x.shape[-1] == q.shape[-1])``)
    between two spaces that may grow apart, and a check on the batch, which must stay
    dynamic: the grown model must run at other batch and sequence sizes."""

    def __init__(self, how="eq"):
        super().__init__()
        self.how = how
        self.a, self.q = nn.Linear(3, 8), nn.Linear(3, 8)
        self.b = nn.Linear(16, 2)

    def forward(self, x):  # (B, T, 3)
        h, q = self.a(x), self.q(x)
        if self.how == "eq":
            torch._assert(h.shape[-1] == q.shape[-1], "widths differ")
        elif self.how == "tuple":  # a whole shape: (B, T) dynamic, the width kept
            torch._assert(h.shape == q.shape, "shapes differ")
        else:  # a width times the batch: cannot be kept apart from the input
            torch._assert(h.numel() == q.shape[0] * q.shape[1] * 8, "numel")
        torch._assert(h.shape[0] == x.shape[0], "batch")
        flag = (h.shape[-1] <= q.size(-1)) * 1.0  # a bool computed into a tensor
        return self.b(torch.cat([h, q * flag], -1))


def _at_other_size(m, grown):
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    torch.testing.assert_close(grown(x)[..., :2], m(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("how", ["eq", "tuple"])
def test_comparison_of_widths_keeps_its_truth_value(how, capture):
    m, x = _Checked(how).double(), torch.randn(2, 4, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable and a.group("q").growable, a
    # the two widths grow apart: a live comparison would now be False and raise
    grown = grow_exactly(m, x, {"a": 12, "q": 16}, capture=capture)
    _at_other_size(m, grown)
    _at_other_size(m, grow_exactly(m, x, 2.0, capture=capture))


def test_comparison_of_a_width_times_the_batch_blocks_it():
    m, x = _Checked("numel").double(), torch.randn(2, 4, 3, dtype=torch.float64)
    reason = blocked(m, x, "a")
    assert "eq compares a size made of a neuron count" in reason, reason
    assert "depends on the input" in reason
    assert "(node `eq`)" in reason
    _at_other_size(m, exact_or_refused(m, x, {"q": 12}))
