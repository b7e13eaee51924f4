"""Find where a grown graph first departs from what the analysis predicted.

After a widening, every node's output shape is determined by its layouts and
the plan (:func:`fxgrow.ir.layout.new_size`).  :func:`first_divergence` runs the
grown graph once on the example input, node by node, and returns the first
node whose actual shape differs from the predicted one.  ``widen`` calls it
when verification fails, so the error names the node where the rewrite and
the analysis disagree instead of only saying the outputs differ.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from torch import fx

from .. import meta
from ..capture.runner import call_pure
from ..capture.shapes import TensorSpec, describe
from ..ir.layout import new_size
from ..ir.values import TV
from .growth import GrowthPlan

__all__ = ["first_divergence"]


class _Stop(Exception):
    pass


def first_divergence(plan: GrowthPlan, grown: fx.GraphModule,
                     placeholder_values: Tuple[Any, ...]) -> Optional[str]:
    """The first node whose grown shape differs from the prediction, described; or None."""
    analysis = plan.analysis
    sizes = plan.sizes
    expected = {}
    for node in analysis.graph_module.graph.nodes:
        value = meta.value(node)
        if isinstance(value, TV):
            expected[node.name] = tuple(new_size(d, sizes) for d in value.dims)
    found = []

    class Check(fx.Interpreter):
        def run_node(self, n):
            try:
                out = super().run_node(n)
            except Exception as e:
                found.append(f"node `{n.name}` ({n.format_node()}) fails: {type(e).__name__}: {e}")
                raise _Stop() from e
            spec = describe(out)
            want = expected.get(n.name)
            if isinstance(spec, TensorSpec) and want is not None and spec.shape != want:
                found.append(f"node `{n.name}` ({n.format_node()}) has shape {spec.shape}, "
                             f"the analysis predicted {want}")
                raise _Stop()
            return out

    try:
        call_pure(grown, placeholder_values, fn=lambda m, a, k: Check(m).run(*a))
    except _Stop:
        pass
    except Exception as e:  # pragma: no cover - diagnostics must not hide the real error
        return f"could not diagnose: {type(e).__name__}: {e}"
    return found[0] if found else None
