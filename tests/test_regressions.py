"""Bugs the fuzz campaign (``fxgrow.testing``) found, shrunk to hand-written models.

Each test reproduces one bug.  While a bug is open its test is marked
``xfail(strict=True)``; when the fix lands the marker is removed, so the
regression stays guarded.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.errors import FxGrowError, VerificationError


def _exact_or_refused(model, x, spec):
    """Widen ``spec``: either a documented refusal, or an exact model."""
    try:
        grown = fxgrow.widen(model, x, spec, verify=False)
    except FxGrowError as e:
        assert not isinstance(e, VerificationError)
        return None
    report = fxgrow.verify(model, grown, x)
    assert report.ok, str(report)
    return grown


class ShuffleFromShape(nn.Module):
    """ShuffleNet's channel shuffle: ``c // groups`` read from ``x.shape``."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).flatten(1, 2)
        return self.head(x)


# Fixed: a size read from a dim that grows (c // g) is replaced by the new literal
# (rules/views.py, _shape_literal), not kept as a node computing the old arithmetic.
@pytest.mark.parametrize("groups", [2, 4])
def test_shuffle_with_size_derived_group_width(groups):
    torch.manual_seed(0)
    model = ShuffleFromShape(groups).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    analysis = fxgrow.analyze(model, x)
    for group in analysis.growable:
        _exact_or_refused(model, x, {group.id: 2.0})
