"""The rule context (fxgrow.analysis.context): reading weights through the graph."""

import pytest
import torch
from torch import nn

import fxgrow
from helpers import exact_or_refused


class _ScaledTransposedWeight(nn.Module):
    """``x @ (s * w).t()`` with a 0-d ``s``: the weight is looked for through the
    transpose and the product, whose first operand has no dims."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.w = nn.Parameter(torch.randn(5, 4))
        self.s = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        return torch.relu(self.a(x)) @ (self.s * self.w).t()


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_0d_operand_on_the_way_to_a_weight_is_no_transpose(capture):
    m, x = _ScaledTransposedWeight().double(), torch.randn(2, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)  # used to fail: integer modulo by zero
    assert a.group("a") is not None
    exact_or_refused(m, x, 2.0, capture=capture)
