"""The architecture docs/architecture.md describes, checked on the source tree.

Imports are read from the source (module level, inside functions and under
``TYPE_CHECKING`` alike), so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import os

import networkx as nx
import pytest

import fxgrow

ROOT = os.path.dirname(fxgrow.__file__)
MAX_LINES = 500


def _modules():
    mods = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                mods[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return mods


def _import_graph() -> nx.DiGraph:
    """fxgrow module -> fxgrow modules it imports (``from pkg import mod`` names ``pkg.mod``)."""
    mods = _modules()
    G = nx.DiGraph()
    for name, path in mods.items():
        G.add_node(name)
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names]
                names = [t for t in subs if t in mods]
                if any(t not in mods for t in subs):
                    names.append(target)
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            G.add_edges_from((name, t) for t in names if t in mods and t != name)
    return G


GRAPH = _import_graph()


def _imports(module: str):
    return set(GRAPH.successors(module))


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(GRAPH) if len(c) > 1]
    assert not cycles, f"import cycles among fxgrow modules: {cycles}"


def test_no_module_over_500_lines():
    long = {m: sum(1 for _ in open(p)) for m, p in _modules().items()}
    assert not {m: n for m, n in long.items() if n > MAX_LINES}


@pytest.mark.parametrize("package, forbidden", [
    ("fxgrow.ir", ("fxgrow.capture", "fxgrow.ops", "fxgrow.rules", "fxgrow.analysis",
                   "fxgrow.widen", "fxgrow.deepen", "fxgrow.viz", "fxgrow.api", "fxgrow.grow")),
    ("fxgrow.capture", ("fxgrow.ops", "fxgrow.rules", "fxgrow.analysis", "fxgrow.widen",
                        "fxgrow.deepen", "fxgrow.viz", "fxgrow.api", "fxgrow.grow")),
    ("fxgrow.ops", ("fxgrow.rules", "fxgrow.analysis", "fxgrow.widen", "fxgrow.deepen",
                    "fxgrow.api", "fxgrow.grow")),
    ("fxgrow.rules", ("fxgrow.analysis", "fxgrow.widen", "fxgrow.deepen", "fxgrow.api", "fxgrow.grow")),
    ("fxgrow.analysis", ("fxgrow.widen", "fxgrow.deepen", "fxgrow.api", "fxgrow.cli",
                         "fxgrow.grow")),
    ("fxgrow.widen", ("fxgrow.grow", "fxgrow.api", "fxgrow.cli")),
    ("fxgrow.deepen", ("fxgrow.grow", "fxgrow.cli")),
    ("fxgrow.viz", ("fxgrow.analysis", "fxgrow.rules", "fxgrow.widen", "fxgrow.deepen",
                    "fxgrow.api", "fxgrow.grow")),
])
def test_layers_import_downwards_only(package, forbidden):
    for module in GRAPH:
        if module == package or module.startswith(package + "."):
            bad = {t for t in _imports(module) if t.startswith(forbidden)}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_the_rewrite_pass_runs_no_analysis_or_rule_code():
    # apply carries out plain data: it reads the analysis through the plan, never imports it
    for module in ("fxgrow.widen.apply", "fxgrow.widen.gather", "fxgrow.widen.pad"):
        assert not {t for t in nx.descendants(GRAPH, module)
                    if t.startswith(("fxgrow.analysis", "fxgrow.rules"))}, module


def test_importing_the_op_vocabulary_does_not_load_the_rule_table():
    assert not {t for t in nx.descendants(GRAPH, "fxgrow.ops") | {
        d for m in GRAPH if m.startswith("fxgrow.ops.") for d in nx.descendants(GRAPH, m)}
        if t.startswith("fxgrow.rules")}


def test_meta_keys_are_named_once():
    # every `"fxgrow.<key>"` literal in code lives in fxgrow/meta.py
    offenders = []
    for module, path in _modules().items():
        if module == "fxgrow.meta":
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.startswith("fxgrow.") and " " not in node.value \
                    and node.value.count(".") == 1 and node.value[7:].isidentifier():
                offenders.append(f"{module}: {node.value!r}")
    assert not offenders
