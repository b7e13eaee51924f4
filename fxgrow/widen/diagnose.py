"""Find where a grown graph first departs from the original: in shape, or in value.

``widen`` calls :func:`first_divergence` when verification fails, so the
error names the node where the grown model goes wrong instead of only saying
the outputs differ.  It runs the analysed graph (the original) and the grown
graph on the example input, node by node (through
:func:`fxgrow.capture.runner.call_pure`, so neither is changed), and checks
each node of the grown graph:

* **shape**: every node's new shape follows from its layouts and the plan
  (:func:`fxgrow.ir.layout.new_size`);
* **value**: a copy of a neuron computes what the neuron computes, so the
  grown tensor, read at the old neurons' positions along every grown dim
  (the first new position copying each old index, by
  :func:`fxgrow.ir.layout.expand`; the first ``n`` for padded groups), must
  equal the original node's value (tolerance by dtype, as
  :func:`fxgrow.verify.compare_values`).

Some values differ by design, and are not blamed: tensors read only from
weights (consumer columns are divided by the counts), the output of a gain
that took a tied output layer's division (:mod:`fxgrow.analysis.ties`), the
divided side of a product between activations (:meth:`GrowthPlan.rescaled`, halved groups), a
product scaled by a size read at run time, and the statistics inside a
written-out RMSNorm over a zero-padded group.  A node that differs is
reported only when every input it reads agrees with the original; one whose
input already differs by design passes that on to its readers.

Examples
--------
>>> import torch, fxgrow
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> x = torch.randn(3, 4)
>>> plan = fxgrow.plan_widening(fxgrow.analyze(m, x), 2.0)
>>> grown = fxgrow.apply_plan(plan)
>>> with torch.no_grad():
...     grown.get_submodule("0").bias[1] += 1.0       # break the copy of neuron 1
>>> first_divergence(plan, grown, (x,))  # doctest: +ELLIPSIS
'node `_0` (Linear) differs from the original at the old neurons: max abs error 1, ...'
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Set, Tuple

import torch
from torch import fx

from .. import meta
from ..capture.runner import call_pure
from ..capture.shapes import TensorSpec, describe
from ..ir.layout import expand, leaves, new_size
from ..ir.roles import CONSUMER
from ..ir.values import TV
from ..ops.access import tensor_by_name
from ..verify import compare_values
from .growth import GrowthPlan

__all__ = ["first_divergence"]


class _Stop(Exception):
    pass


def _excused(plan: GrowthPlan) -> Set[str]:
    """Nodes whose values may differ by design (see the module documentation)."""
    analysis = plan.analysis
    scaled = set(plan.rescaled()) | set(analysis.halved)
    out = {p.node for p in analysis.pairings if p.sqrt_scale and p.primary in plan.growth}
    for gg in plan.padded.values():
        out |= {site.node for site in gg.norms if site.eps_node is not None}
    gains = _divided_gains(plan)
    for node in analysis.graph_module.graph.nodes:
        if (node.op == "call_module" and node.target in gains["modules"]) or any(
                i.op == "get_attr" and i.target in gains["tensors"] for i in node.all_input_nodes):
            out.add(node.name)
        value = meta.value(node)
        if isinstance(value, TV) and any(a.space in scaled for d in value.dims
                                         for a in leaves(d)):
            out.add(node.name)
    return out


def _divided_gains(plan: GrowthPlan) -> Dict[str, Set[str]]:
    """Per-neuron gains divided by the counts (a tied output layer's scaling moved onto
    the norm before it, :mod:`fxgrow.analysis.ties`): 1-D consumers of a growing group."""
    out: Dict[str, Set[str]] = {"tensors": set(), "modules": set()}
    gm = plan.analysis.graph_module
    for m in plan.analysis.members.values():
        if m.role != CONSUMER or not any(a.space in plan.growth for a in leaves(m.layout)):
            continue
        try:
            if tensor_by_name(gm, m.tensor).dim() != 1:
                continue
        except Exception:  # noqa: BLE001 - not a tensor of the graph: nothing to excuse
            continue
        out["tensors"].add(m.tensor)
        out["modules"].add(m.module)
    return out


def _old_positions(value: TV, plan: GrowthPlan, maps) -> Dict[int, torch.Tensor]:
    """Per grown dim, the new positions holding the old neurons (first copy of each)."""
    out = {}
    for dim, layout in enumerate(value.dims):
        if new_size(layout, plan.sizes) == layout.size:
            continue
        index, _ = expand(layout, maps)
        first = torch.full((layout.size,), len(index), dtype=torch.long)
        out[dim] = first.scatter_reduce(0, index, torch.arange(len(index)), "amin")
    return out


def first_divergence(plan: GrowthPlan, grown: fx.GraphModule,
                     placeholder_values: Tuple[Any, ...]) -> Optional[str]:
    """The first node of ``grown`` whose shape or value departs from the original,
    described (op, node name, error); or None if none does."""
    analysis = plan.analysis
    sizes = plan.sizes
    values = {n.name: meta.value(n) for n in analysis.graph_module.graph.nodes}
    maps = dict(plan.maps())
    maps.update({g: (torch.arange(gg.new) % gg.old, torch.ones(gg.new, dtype=torch.float64))
                 for g, gg in plan.padded.items()})
    excused = _excused(plan)
    reference: Dict[str, Any] = {}

    class Record(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(values.get(n.name), TV) and isinstance(out, torch.Tensor):
                reference[n.name] = out.detach().clone()  # later in-place ops change `out`
            return out

    found = []
    computed: Set[str] = set()  # nodes that read the model's inputs (not only weights)
    tainted: Set[str] = set()  # nodes whose values differ by design

    def check_value(n: fx.Node, out: Any) -> None:
        ins = [i.name for i in n.all_input_nodes]
        if n.op == "placeholder" or any(i in computed for i in ins):
            computed.add(n.name)
        else:
            return  # weights only: consumer columns are divided by the counts
        inherited = any(i in tainted for i in ins)
        ref, value = reference.get(n.name), values.get(n.name)
        if ref is None or not isinstance(out, torch.Tensor) or not isinstance(value, TV):
            if inherited:
                tainted.add(n.name)
            return
        got = out
        for dim, pos in _old_positions(value, plan, maps).items():
            got = got.index_select(dim, pos.to(got.device))
        if got.shape != ref.shape:
            return
        err, rel, tol, ok, problem = compare_values(ref, got)
        if ok:
            return
        if inherited or n.name in excused:
            tainted.add(n.name)
            return
        found.append(f"node `{n.name}` ({meta.op(n) or n.op}) differs from the original at "
                     f"the old neurons: max abs error {err:.3g}, max rel {rel:.3g} (tolerance "
                     f"{tol:.0e})" + (f"; {problem}" if problem else ""))
        raise _Stop()

    class Check(fx.Interpreter):
        def run_node(self, n):
            try:
                out = super().run_node(n)
            except Exception as e:
                found.append(f"node `{n.name}` ({n.format_node()}) fails: {type(e).__name__}: {e}")
                raise _Stop() from e
            spec, value = describe(out), values.get(n.name)
            want = tuple(new_size(d, sizes) for d in value.dims) if isinstance(value, TV) else None
            if isinstance(spec, TensorSpec) and want is not None and spec.shape != want:
                found.append(f"node `{n.name}` ({n.format_node()}) has shape {spec.shape}, "
                             f"the analysis predicted {want}")
                raise _Stop()
            check_value(n, out)
            return out

    try:
        call_pure(analysis.graph_module, placeholder_values, seed=plan.seed,
                  fn=lambda m, a, k: Record(m).run(*a))
        call_pure(grown, placeholder_values, seed=plan.seed, fn=lambda m, a, k: Check(m).run(*a))
    except _Stop:
        pass
    except Exception as e:  # pragma: no cover - diagnostics must not hide the real error
        return f"could not diagnose: {type(e).__name__}: {e}"
    return found[0] if found else None
