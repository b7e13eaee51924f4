"""Property tests: fxgrow on random architectures from :mod:`fxgrow.testing`.

Profiles (select with ``HYPOTHESIS_PROFILE=...``; default ``ci``):

* ``ci``: 300 examples per property, derandomized (the same examples every
  run, so CI is reproducible), no deadline.
* ``fuzz``: 5,000 examples per property, random, failures saved to the
  example database (``.hypothesis/examples``) and replayed first next time.
* ``dev``: 30 examples, for quick iterations.

A failure prints the drawn model as code (``Drawn architecture: ...``).
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

import fxgrow  # noqa: E402
from fxgrow.errors import AnalysisError, ConstraintError, FxGrowError, VerificationError  # noqa: E402
from fxgrow.testing import ArchSpec, architectures, arch_specs, one_size_per_family  # noqa: E402

from helpers import assert_unchanged, snapshot  # noqa: E402

_DB = DirectoryBasedExampleDatabase(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 ".hypothesis", "examples"))
_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=300, derandomize=True, database=None, **_COMMON)
settings.register_profile("fuzz", max_examples=5000, database=_DB, **_COMMON)
settings.register_profile("dev", max_examples=30, database=_DB, **_COMMON)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_SETTINGS = settings.get_profile(_PROFILE)

#: Errors a widening may raise on purpose for a growable group: a size that
#: breaks a uniform-replication constraint.  Anything else (another
#: exception, AnalysisError, a wrong model) is a bug.
DOCUMENTED = (ConstraintError,)

HAS_DEEPEN = hasattr(fxgrow, "deepen")
needs_deepen = pytest.mark.skipif(not HAS_DEEPEN,
                                  reason="fxgrow.deepen (issue 3) is not implemented yet")

warnings.filterwarnings("ignore", category=UserWarning)
# drawn specs may grow nothing (a factor 1.0, sizes equal to the old ones): that warns by design
pytestmark = pytest.mark.filterwarnings("ignore::fxgrow.GrowthWarning")


def fuzz(strategy_args, **kw):
    """``@given`` under the active profile; slow (``pytest -m "not slow"`` skips it)."""
    def deco(fn):
        return pytest.mark.slow(_SETTINGS(given(*strategy_args, **kw)(fn)))
    return deco


def _sizes(draw, analysis, groups):
    """A random subset of ``groups`` with random new sizes (ints, factors, non-multiples)."""
    chosen = draw(st.lists(st.sampled_from(groups), unique_by=lambda g: g.id,
                           min_size=1, max_size=len(groups)))
    spec = {}
    for g in chosen:
        if draw(st.booleans()):
            spec[g.id] = g.size + draw(st.integers(0, 2 * g.size + 1))
        else:
            spec[g.id] = draw(st.sampled_from([1.0, 1.5, 2.0, 3.0, 1.34]))
    return one_size_per_family(analysis, spec)


def _check_equal(original, grown, x, what):
    report = fxgrow.verify(original, grown, x, trials=2)
    assert report.ok, f"{what}: the grown model differs from the original\n{report}"


def _widen_or_documented(model, x, spec, seed=0):
    """Widen; return the grown model, or None on a documented refusal."""
    try:
        return fxgrow.widen(model, x, spec, init="net2net", seed=seed, verify=False)
    except DOCUMENTED as e:
        note(f"documented refusal: {type(e).__name__}: {e}")
        return None
    except (VerificationError, AnalysisError):
        raise
    except FxGrowError as e:  # a SpecError for a growable group we chose is unexpected
        raise AssertionError(f"undocumented refusal {type(e).__name__}: {e}") from e


def _group_table(analysis):
    return [(g.id, g.size, g.status, g.reasons, g.producers,
             tuple((m.tensor, m.dim, m.role) for m in g.members), g.uniform)
            for g in analysis.groups]


# -- (1) widen is exact or refuses on purpose -----------------------------------------
@fuzz([architectures(), st.data()])
def test_widen_is_exact_or_documented(drawn, data):
    model, x = drawn
    analysis = fxgrow.analyze(model, x)
    assume(analysis.growable)
    spec = _sizes(data.draw, analysis, analysis.growable)
    note(f"spec: {spec}")
    grown = _widen_or_documented(model, x, spec, seed=data.draw(st.integers(0, 3)))
    if grown is not None:
        _check_equal(model, grown, x, f"widen {spec}")


# -- (2) deepen is exact ---------------------------------------------------------------
def _deepen_sites(model):
    """Module names to insert after (any layer with weights or an activation), and "all"."""
    return ["all"] + [n for n, m in model.named_modules()
                      if n and "_deepen" not in n and not list(m.children())
                      and not isinstance(m, torch.nn.Dropout)]


def _deepen_or_documented(model, x, site, method):
    try:
        return fxgrow.deepen(model, x, after=site, method=method, calibration=x, verify=False)
    except (VerificationError, AnalysisError):
        raise
    except FxGrowError as e:
        note(f"documented refusal: {type(e).__name__}: {e}")
        return None


@needs_deepen
@fuzz([architectures(), st.data()])
def test_deepen_is_exact(drawn, data):
    model, x = drawn
    sites = _deepen_sites(model)
    site = data.draw(st.sampled_from(sites))
    method = data.draw(st.sampled_from(["identity", "residual", "auto"]))
    note(f"deepen after={site!r} method={method!r}")
    deep = _deepen_or_documented(model, x, site, method)
    if deep is not None:
        _check_equal(model, deep, x, f"deepen after {site} ({method})")


# -- (3) widen o deepen chains -----------------------------------------------------------
@needs_deepen
@fuzz([architectures(), st.data()])
def test_widen_deepen_chains(drawn, data):
    model, x = drawn
    current = model
    for step in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            sites = _deepen_sites(current)
            if not sites:
                continue
            site = data.draw(st.sampled_from(sites))
            method = data.draw(st.sampled_from(["identity", "residual", "auto"]))
            note(f"step {step}: deepen after={site!r} method={method!r}")
            nxt = _deepen_or_documented(current, x, site, method)
        else:
            analysis = fxgrow.analyze(current, x)
            if not analysis.growable:
                continue
            spec = _sizes(data.draw, analysis, analysis.growable)
            note(f"step {step}: widen {spec}")
            nxt = _widen_or_documented(current, x, spec)
        if nxt is not None:
            current = nxt
            _check_equal(model, current, x, f"after step {step}")


# -- (4) the original is never modified ----------------------------------------------------
@fuzz([architectures(), st.data()])
def test_original_unchanged(drawn, data):
    model, x = drawn
    snap = snapshot(model)
    x0 = x.clone()
    graph_code = None
    analysis = fxgrow.analyze(model, x)
    if analysis.growable:
        spec = _sizes(data.draw, analysis, analysis.growable)
        _widen_or_documented(model, x, spec)
    if HAS_DEEPEN:
        sites = _deepen_sites(model)
        if sites:
            _deepen_or_documented(model, x, data.draw(st.sampled_from(sites)), "auto")
    assert_unchanged(model, snap)
    assert torch.equal(x, x0), "the example input was modified"
    assert not model.training, "the model's mode changed"
    del graph_code


# -- (5) analysis is deterministic and independent of parameter values -------------------
@fuzz([architectures()])
def test_analysis_deterministic_and_value_independent(drawn):
    model, x = drawn
    first = _group_table(fxgrow.analyze(model, x))
    assert _group_table(fxgrow.analyze(model, x)) == first, "analysis is not deterministic"
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in list(other.parameters()) + [b for b in other.buffers() if b.is_floating_point()]:
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64).to(t))
    assert _group_table(fxgrow.analyze(other, x)) == first, \
        "analysis depends on parameter values"


# -- (6) blocked groups really block -------------------------------------------------------
_BLOCKERS = {
    "softmax": "F.softmax({x}, dim={d})",
    "log_softmax": "torch.log_softmax({x}, dim={d})",
    "sum": "({x} - {x}.sum({d}, keepdim=True))",
    "logsumexp": "({x} - {x}.logsumexp({d}, keepdim=True))",
    "normalize": "F.normalize({x}, dim={d})",
    "unbiased var": "({x} / ({x}.var({d}, keepdim=True) + 1.0))",
}


@st.composite
def _blocked_case(draw):
    """A random MLP prefix, then Linear(c, w) -> blocker over w -> Linear(w, k)."""
    prefix = draw(arch_specs("mlp", max_layers=3, tail=False,
                             ops=("linear", "act", "norm", "residual", "branches", "cat")))
    name = draw(st.sampled_from(sorted(_BLOCKERS)))
    w = draw(st.integers(1, 8))
    # the blocker needs a spread of values (w >= 2) except for softmax-like ones
    if name in ("normalize", "unbiased var", "sum"):
        w = max(w, 2)
    spec = ArchSpec(prefix.family, prefix.input,
                    prefix.layers + [{"op": "linear", "out": w},
                                     {"op": "reduce", "fn": _BLOCKERS[name]},
                                     {"op": "linear", "out": draw(st.integers(1, 3))}],
                    seed=prefix.seed)
    return name, spec


@fuzz([_blocked_case(), st.data()])
def test_blocked_groups_really_block(case, data):
    name, spec = case
    note(f"blocker: {name}\n{spec.to_code()}")
    model, x = spec.build()
    analysis = fxgrow.analyze(model, x)
    blocker_linear = f"fc{len(spec.layers) - 3}"
    (group,) = analysis.groups_of(blocker_linear)
    assert group.status == "blocked", f"{name} over a grown dim must block: {group}"
    new = group.size + data.draw(st.integers(1, 2 * group.size + 1))
    plan = fxgrow.plan_widening(analysis, {group.id: new}, seed=0, _allow_blocked=True)
    forced = fxgrow.apply_plan(plan)
    report = fxgrow.verify(model, forced, x, trials=2)
    assert not report.ok, f"forcing the blocked group through {name} kept the function"


# -- (7) state_dict keys kept; the grown model trains ------------------------------------
@fuzz([architectures(), st.data()])
def test_state_dict_kept_and_trains(drawn, data):
    model, x = drawn
    analysis = fxgrow.analyze(model, x)
    assume(analysis.growable)
    spec = _sizes(data.draw, analysis, analysis.growable)
    grown = _widen_or_documented(model, x, spec)
    assume(grown is not None)
    # the key set is kept (fx orders submodules by first use, so the order may differ)
    assert sorted(grown.state_dict()) == sorted(model.state_dict()), "state_dict keys changed"
    grown.load_state_dict(grown.state_dict())
    if grown.meta["fxgrow.capture"].get("modes") == "differs":
        # tracing baked eval mode in (F.dropout(x, p, self.training)): train mode is refused
        with pytest.raises(fxgrow.ModeError, match="captured in eval mode"):
            grown.train()(x)
        grown.eval()
    else:
        grown.train()
    opt = torch.optim.SGD([p for p in grown.parameters() if p.requires_grad], lr=1e-2)
    out = grown(x)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    loss = sum(o.double().pow(2).mean() for o in outs if o.is_floating_point())
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    for n, p in grown.named_parameters():
        assert torch.isfinite(p).all(), f"{n} is not finite after one step"
    again = grown(x)
    assert all(torch.isfinite(o).all() for o in (again if isinstance(again, tuple) else (again,)))


# -- the strategies themselves -----------------------------------------------------------
@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(architectures())
def test_drawn_models_run_and_print(drawn):
    model, x = drawn
    out = model(x)
    assert torch.isfinite(out).all()
    code = drawn.spec.to_code()
    assert "class Net(nn.Module)" in code
    again, x2 = drawn.spec.build()
    assert torch.equal(again(x2), out), "to_code() does not rebuild the same model"
