"""The package layout: no import cycle, theory never reaches the engine, old paths still work.

The import graph is read from the source (every ``import`` statement, including those inside
functions), so a lazy import cannot hide a cycle. Importing ``a.b.c`` runs the package
``a.b`` first, so it counts as an edge to both ``a.b.c`` and ``a.b``.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import deltastats

ROOT = Path(deltastats.__file__).parent
PKG = "deltastats"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    base = importer if _is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    if node.level == 0:
        return node.module or ""
    return f"{base}.{node.module}" if node.module else base


def _targets(importer: str) -> set[str]:
    """Modules of the package that importing ``importer`` executes directly."""
    tree = ast.parse(MODULES[importer].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(importer, node)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if not name.startswith(PKG):
                continue
            parts = name.split(".")
            for k in range(2, len(parts) + 1):  # the module and every package above it
                prefix = ".".join(parts[:k])
                if prefix in MODULES and not importer.startswith(prefix + "."):
                    out.add(prefix)
    out.discard(importer)
    out.discard(PKG)  # the root package only re-exports; every module lives below it
    return out


GRAPH = {name: _targets(name) for name in MODULES if name != PKG}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_sees_known_edges():
    # The checker itself: these imports exist, so a broken parser cannot pass silently.
    assert "deltastats.engine.passes" in GRAPH["deltastats.engine"]
    assert "deltastats.model.networks" in GRAPH["deltastats.engine.passes"]
    assert "deltastats.model" in GRAPH["deltastats.engine.passes"]
    assert "deltastats.workflow.report" in GRAPH["deltastats.workflow.runner"]  # lazy import


def test_no_import_cycle_inside_the_package():
    cycles = sorted(name for name in GRAPH if name in _reachable(name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_theory_never_reaches_the_engine():
    theory = [name for name in GRAPH if name.startswith("deltastats.theory")]
    assert theory
    for name in theory:
        bad = sorted(m for m in _reachable(name) if m.startswith("deltastats.engine"))
        assert bad == [], f"{name} reaches the engine through {bad}"


def test_modules_stay_small():
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > 800} == {}


@pytest.mark.parametrize(
    "old, new",
    [
        ("deltastats.activations", "deltastats.model.activations"),
        ("deltastats.networks", "deltastats.model.networks"),
        ("deltastats.inputs", "deltastats.model.inputs"),
        ("deltastats.targets", "deltastats.model.targets"),
        ("deltastats.losses", "deltastats.model.losses"),
        ("deltastats.seeding", "deltastats.model.seeding"),
        ("deltastats.kernels", "deltastats.engine.kernels"),
        ("deltastats.feature_kernels", "deltastats.stats.features"),
        ("deltastats.accumulators", "deltastats.stats.accumulators"),
        ("deltastats.quadrature", "deltastats.theory.quadrature"),
        ("deltastats.config", "deltastats.workflow.config"),
        ("deltastats.runner", "deltastats.workflow.runner"),
        ("deltastats.sweeps", "deltastats.workflow.sweeps"),
        ("deltastats.compare", "deltastats.workflow.compare"),
        ("deltastats.report", "deltastats.workflow.report"),
        ("deltastats.plots", "deltastats.workflow.plots"),
        ("deltastats.metadata", "deltastats.workflow.metadata"),
    ],
)
def test_old_import_paths_are_the_new_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert sys.modules[old] is sys.modules[new]


def test_old_estimators_and_engine_names_still_import():
    from deltastats.engine import USE_COMPILED_KERNELS, Trace, backprop, forward  # noqa: F401
    from deltastats.estimators import (  # noqa: F401
        COLUMNS,
        METHODS,
        Estimates,
        estimate,
        stein_check,
        stream,
        suggest_allocation,
        summarize,
    )
    from deltastats.theory import predict, q_map  # noqa: F401

    assert estimate is deltastats.estimate and predict is deltastats.theory.predict


def test_public_signatures_have_no_private_parameters():
    import inspect

    for fn in (deltastats.stream, deltastats.estimate, deltastats.stein_check):
        private = [p for p in inspect.signature(fn).parameters if p.startswith("_")]
        assert private == [], f"{fn.__name__} exposes {private}"


def test_ds_compare_is_callable_after_the_old_module_path_was_imported():
    import pandas as pd

    import deltastats.compare  # noqa: F401  (binds the package attribute to the module)

    est = pd.DataFrame(dict(layer=[1], statistic="delta_sq", estimate=1.0, std_error=0.1))
    pred = pd.DataFrame(dict(layer=[1], statistic="delta_sq", prediction=1.0))
    assert deltastats.compare(est, pred)["verdict"].tolist() == ["agrees"]


def test_ds_compare_pickles_as_the_function():
    import pickle

    import deltastats.compare  # noqa: F401
    from deltastats.workflow.compare import compare

    assert pickle.loads(pickle.dumps(deltastats.compare)) is compare
