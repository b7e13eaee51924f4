"""Shared test helpers (``from helpers import ...``; ``tests/`` is on the test path).

``assert_same_function`` is the one equivalence helper every test uses: it
runs :func:`fxgrow.verify` (example input plus random inputs, dtype-based
tolerance) and fails with the report.  ``snapshot``/``assert_unchanged``
check that a public call left the user's model exactly as it was.
"""

from __future__ import annotations


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


def grow_exactly(model, example_input, spec=2.0, **kwargs):
    """Widen with ``verify=False`` (the analysis alone must be sound), then check the
    grown model against the original on fresh inputs; return it."""
    grown = fxgrow.widen(model, example_input, spec, verify=False, **kwargs)
    assert_same_function(model, grown, example_input)
    return grown
