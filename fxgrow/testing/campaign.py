"""Long fuzz campaigns: draw thousands of architectures and count every outcome.

``python -m fxgrow.testing -n 5000`` runs one (see docs/testing.md).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from hypothesis import strategies as st

from .spec import ArchSpec
from .strategies import arch_specs, one_size_per_family

__all__ = ["campaign"]


def _classify_widen(model, x, spec, seed):
    """Widen and verify one architecture; return (outcome, detail)."""
    import fxgrow
    from ..errors import AnalysisError, ConstraintError, FxGrowError, VerificationError

    try:
        grown = fxgrow.widen(model, x, spec, seed=seed, verify=False)
    except ConstraintError as e:
        return "refused (ConstraintError)", str(e)
    except (AnalysisError, VerificationError) as e:
        return f"BUG {type(e).__name__}", str(e)
    except FxGrowError as e:
        return f"BUG undocumented {type(e).__name__}", str(e)
    except Exception as e:  # noqa: BLE001 - a crash is what we are looking for
        return f"BUG crash {type(e).__name__}", str(e)
    report = fxgrow.verify(model, grown, x, trials=2)
    if not report.ok:
        return "BUG wrong model", str(report)
    # fx registers submodules in call order, so only the key *set* is compared
    if sorted(grown.state_dict()) != sorted(model.state_dict()):
        return "BUG state_dict keys", ""
    return "exact", ""


def _classify_deepen(model, x, site, method):
    """Deepen and verify; return (outcome, detail, deepened model or None)."""
    import fxgrow
    from ..errors import AnalysisError, FxGrowError, VerificationError

    try:
        deep = fxgrow.deepen(model, x, after=site, method=method, calibration=x, verify=False)
    except (AnalysisError, VerificationError) as e:
        return f"BUG deepen {type(e).__name__}", str(e), None
    except FxGrowError as e:
        return f"deepen refused ({type(e).__name__})", str(e), None
    except Exception as e:  # noqa: BLE001
        return f"BUG deepen crash {type(e).__name__}", str(e), None
    report = fxgrow.verify(model, deep, x, trials=2)
    if not report.ok:
        return "BUG deepen wrong model", str(report), None
    return "deepen exact", "", deep


def campaign(n: int = 5000, *, seed: int = 0, family: Optional[str] = None,
             out_dir: Optional[str] = None, progress: int = 0) -> Dict[str, Any]:
    """Draw ``n`` architectures with hypothesis and widen each at random sizes.

    Unlike the property tests, a campaign never stops at a failure: every
    outcome is counted (``exact``, ``refused (...)``, ``BUG ...``), and the
    code of each failing architecture is written to ``out_dir`` (one file per
    failure, with the spec and the error) so it can be replayed.

    Returns ``{"counts": Counter, "groups": Counter of group statuses,
    "failures": [(outcome, code, detail), ...]}``.
    """
    import collections
    import os

    import fxgrow
    from hypothesis import HealthCheck, given, settings

    counts: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    failures: List[Tuple[str, str, str]] = []

    def record(outcome: str, detail: str, spec: Optional[ArchSpec] = None) -> None:
        code = current[0].to_code()
        failures.append((outcome, code, detail))
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, f"failure_{len(failures):04d}.py")
            with open(path, "w") as f:
                f.write(f"# {outcome}\n# " + detail.replace("\n", "\n# ") + "\n" + code)

    current: List[ArchSpec] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(arch_specs(family), st.data())
    def one(spec, data):
        current[:] = [spec]
        counts["architectures"] += 1
        try:
            model, x = spec.build()
        except Exception as e:  # noqa: BLE001
            counts["strategy error"] += 1
            failures.append(("strategy error", spec.to_code(), repr(e)))
            return
        # the widen outcome is counted once per architecture; deepen separately
        outcome, detail = "analysis", ""
        try:
            analysis = fxgrow.analyze(model, x)
        except Exception as e:  # noqa: BLE001
            outcome, detail = f"BUG analyze {type(e).__name__}", str(e)
            analysis = None
        if analysis is not None:
            for g in analysis.groups:
                statuses[g.status] += 1
            growable = analysis.growable
            if not growable:
                outcome = "nothing growable"
            else:
                chosen = data.draw(st.lists(st.sampled_from(growable), unique_by=lambda g: g.id,
                                            min_size=1, max_size=len(growable)))
                wspec = {g.id: (g.size + data.draw(st.integers(0, 2 * g.size + 1))
                                if data.draw(st.booleans())
                                else data.draw(st.sampled_from([1.5, 2.0, 3.0, 1.34])))
                         for g in chosen}
                wspec = one_size_per_family(analysis, wspec)
                outcome, detail = _classify_widen(model, x, wspec, data.draw(st.integers(0, 3)))
                detail = f"widen spec {wspec}\n{detail}"
        if hasattr(fxgrow, "deepen") and not outcome.startswith("BUG"):
            names = ["all"] + [n for n, m in model.named_modules()
                               if n and not list(m.children())]
            site = data.draw(st.sampled_from(names))
            method = data.draw(st.sampled_from(["identity", "residual", "auto"]))
            d_outcome, d_detail, _ = _classify_deepen(model, x, site, method)
            counts[d_outcome] += 1
            if d_outcome.startswith("BUG"):
                record(d_outcome, f"deepen after={site!r} method={method!r}\n{d_detail}")
        counts[outcome] += 1
        if outcome.startswith("BUG"):
            record(outcome, detail)
        if progress and counts["architectures"] % progress == 0:
            print(dict(counts), flush=True)

    torch.manual_seed(seed)
    one()
    counts["architectures"] = counts["architectures"]  # includes draws hypothesis aborted
    counts["completed"] = sum(v for k, v in counts.items()
                              if k not in ("architectures", "completed")
                              and not k.startswith(("deepen", "BUG deepen")))
    return {"counts": counts, "groups": statuses, "failures": failures}


def _main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse
    import warnings

    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(prog="python -m fxgrow.testing",
                                description="Run a fuzz campaign over random architectures.")
    p.add_argument("-n", type=int, default=5000, help="architectures to draw")
    p.add_argument("--family", choices=["mlp", "cnn", "transformer"], default=None)
    p.add_argument("--out", default="fxgrow-fuzz-failures", help="folder for failing models")
    p.add_argument("--progress", type=int, default=250)
    a = p.parse_args(argv)
    res = campaign(a.n, family=a.family, out_dir=a.out, progress=a.progress)
    print("outcomes:", dict(res["counts"]))
    print("group statuses:", dict(res["groups"]))
    print(f"{len(res['failures'])} failures written to {a.out}/")


if __name__ == "__main__":  # pragma: no cover
    _main()
