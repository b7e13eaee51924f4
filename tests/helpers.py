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


def _plain(v):
    return isinstance(v, (int, float, str, bool, type(None), tuple))


def snapshot(model: torch.nn.Module):
    """The user's full state, to check a model was not mutated: every parameter and
    buffer (values, types, requires_grad), every submodule's type, training flag,
    hooks and plain Python attributes."""
    tensors = {k: (type(v), v.requires_grad, v.detach().clone())
               for k, v in model.state_dict(keep_vars=True).items()}
    modules = {name: (type(m), m.training, len(m._forward_hooks), len(m._forward_pre_hooks),
                      {k: v for k, v in vars(m).items() if not k.startswith("_") and _plain(v)})
               for name, m in model.named_modules()}
    return tensors, modules


def assert_unchanged(model: torch.nn.Module, snap) -> None:
    tensors, modules = snap
    now = model.state_dict(keep_vars=True)
    assert list(now) == list(tensors), "state_dict keys changed"
    for k, (kind, grad, v) in tensors.items():
        assert type(now[k]) is kind, f"{k} changed type to {type(now[k]).__name__}"
        assert now[k].requires_grad == grad, f"{k} changed requires_grad"
        assert now[k].shape == v.shape, f"{k} changed shape"
        assert torch.equal(now[k].detach(), v), f"{k} changed value"
    after = snapshot(model)[1]
    assert after.keys() == modules.keys(), "submodules changed"
    for name, before in modules.items():
        assert after[name] == before, f"module `{name}` changed: {before} -> {after[name]}"


def grow_exactly(model, example_input, spec=2.0, **kwargs):
    """Widen with ``verify=False`` (the analysis alone must be sound), then check the
    grown model against the original on fresh inputs; return it."""
    grown = fxgrow.widen(model, example_input, spec, verify=False, **kwargs)
    assert_same_function(model, grown, example_input)
    return grown


def exact_or_refused(model, example_input, spec=2.0, **kwargs):
    """Widen with ``verify=False``; the result must be exact on fresh inputs unless
    fxgrow refused with its own error.  Returns the grown model, or the error."""
    try:
        grown = fxgrow.widen(model, example_input, spec, verify=False, **kwargs)
    except fxgrow.FxGrowError as e:
        assert not isinstance(e, fxgrow.AnalysisError), f"internal error: {e}"
        return e
    assert_same_function(model, grown, example_input)
    return grown


def blocked(model, example_input, module: str, **kwargs) -> str:
    """The reason the group ``module`` produces is not growable (it must not be)."""
    analysis = fxgrow.analyze(model, example_input, **kwargs)
    group = analysis.group(module)
    assert not group.growable, f"group of `{module}` is growable:\n{analysis}"
    return group.reason


def every_group(analysis, factor: float = 2.0) -> dict:
    """``{group id: factor}`` for every growable group, head dims included (a plain factor
    leaves ``analysis.head_dims``; tests of the head-dim algebra name them this way)."""
    return {g.id: factor for g in analysis.growable}
