"""Building the result: numbering, statuses (fxgrow.analysis.build)."""

import torch
from torch import nn

import fxgrow


def test_contraction_partners_share_a_status():
    class ParamProduct(nn.Module):  # one side of the product is a parameter read as a tensor
        def __init__(self):
            super().__init__()
            self.a, self.w, self.b = nn.Linear(4, 8), nn.Parameter(torch.randn(5, 8)), \
                nn.Linear(5, 2)

        def forward(self, x):
            return self.b(self.a(x) @ self.w.t())

    a = fxgrow.analyze(ParamProduct(), torch.randn(3, 4))
    for p in a.pairings:
        assert a.group(p.primary).status == a.group(p.rescaled).status
    grown = fxgrow.widen(a, None, 2.0).meta["fxgrow.plan"]
    for p in a.pairings:  # a family grows as a whole, or not at all
        assert (p.primary in grown) == (p.rescaled in grown)
