"""Shared test helpers.

``assert_same_function`` is the one equivalence helper every test uses: it
runs :func:`fxgrow.verify` (example input plus random inputs, dtype-based
tolerance) and fails with the report.
"""

from __future__ import annotations

import copy

import pytest
import torch

import fxgrow


def assert_same_function(original, grown, example_input, *, trials: int = 3, rtol=None):
    """Fail unless ``grown`` computes what ``original`` computes (within dtype tolerance)."""
    report = fxgrow.verify(original, grown, example_input, trials=trials, rtol=rtol)
    assert report.ok, f"grown model differs from the original:\n{report}"
    return report


def snapshot(model: torch.nn.Module):
    """A deep copy of every parameter and buffer, to check a model was not mutated."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_unchanged(model: torch.nn.Module, snap) -> None:
    now = model.state_dict(keep_vars=True)
    assert list(now) == list(snap), "state_dict keys changed"
    for k, v in snap.items():
        assert now[k].shape == v.shape, f"{k} changed shape"
        assert torch.equal(now[k].detach(), v), f"{k} changed value"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
