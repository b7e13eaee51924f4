"""Bugs the fuzz campaign (``fxgrow.testing``) found, shrunk to hand-written models.

Each test reproduces one bug and is marked ``xfail(strict=True)`` until the
core is fixed: when a fix lands the test starts passing, the strict xfail
fails, and the marker must be removed, so the regression stays guarded.
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


@pytest.mark.xfail(strict=True, reason="view(b, g, c // g, ...): literal g is rewritten but "
                                       "the size-derived c // g node is kept (shape_ops._shape_literal)")
@pytest.mark.parametrize("groups", [2, 4])
def test_shuffle_with_size_derived_group_width(groups):
    torch.manual_seed(0)
    model = ShuffleFromShape(groups).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    analysis = fxgrow.analyze(model, x)
    for group in analysis.growable:
        _exact_or_refused(model, x, {group.id: 2.0})
