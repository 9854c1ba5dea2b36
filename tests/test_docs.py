"""The documentation covers the package: every public name has a docstring, every public module
is on an API reference page, every statistic and assumption is explained on the statistics
page, and nothing points at files that are not in the repository."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import deltastats

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _public_modules() -> list[str]:
    """Every public module of the package (no ``_`` part), without the former import paths
    (``deltastats.estimators`` …), which are the new modules under their old names."""
    names = []
    for info in pkgutil.walk_packages(deltastats.__path__, "deltastats."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as e:  # deltastats.torch without the torch extra
            if info.name == "deltastats.torch" and "torch" in str(e):
                continue
            raise
        if module.__name__ != info.name or info.name == "deltastats.estimators":
            continue  # a former path: sys.modules holds the new module (or a re-export list)
        names.append(info.name)
    return names


MODULES = _public_modules()


def _has_docstring(obj) -> bool:
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        # dataclasses make up "Name(field, …)" when the class has no docstring of its own
        return bool(doc.strip()) and not doc.startswith(f"{obj.__name__}(")
    if inspect.isclass(obj) and doc == inspect.getdoc(object):
        return False
    return bool(doc.strip())


def _has_comment_docstring(module_name: str, name: str) -> bool:
    """A module-level constant is documented by a ``#:`` comment above its assignment or a
    string right after it (what the API reference shows)."""
    path = Path(importlib.import_module(module_name).__file__)
    lines = path.read_text(encoding="utf-8").splitlines()
    body = ast.parse("\n".join(lines)).body
    for i, stmt in enumerate(body):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        if lines[stmt.lineno - 2].lstrip().startswith("#:"):
            return True
        after = body[i + 1] if i + 1 < len(body) else None
        return isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
    return False


def _undocumented_exports() -> list[str]:
    missing = []
    for name in deltastats.__all__:
        module_name, attr = deltastats._EXPORTS[name]
        obj = importlib.import_module(module_name)  # the defining module's own object
        obj = obj if attr is None else getattr(obj, attr)
        if attr is None or inspect.isclass(obj) or inspect.isroutine(obj):
            ok = _has_docstring(obj)
        else:
            ok = _has_comment_docstring(module_name, attr)
        if not ok:
            missing.append(name)
    return missing


def _undocumented_definitions(module_names) -> list[str]:
    missing = []
    for module_name in module_names:
        module = importlib.import_module(module_name)
        if not _has_docstring(module):
            missing.append(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not _has_docstring(obj):
                missing.append(f"{module_name}.{name}")
            if not inspect.isclass(obj):
                continue
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                if isinstance(member, property):
                    member = member.fget
                # an override documented by the method it overrides counts (help() shows it)
                if inspect.isfunction(member) and not _has_docstring(getattr(obj, attr)):
                    missing.append(f"{module_name}.{name}.{attr}")
    return missing


def test_every_exported_name_has_a_docstring():
    assert len(deltastats.__all__) > 40
    assert _undocumented_exports() == []


def test_every_public_function_and_class_of_every_module_has_a_docstring():
    assert "deltastats.stats.sampling" in MODULES and "deltastats.workflow.report" in MODULES
    assert _undocumented_definitions(MODULES) == []


def _undocumented_constants(module_names) -> list[str]:
    """Public module-level names bound by an assignment (constants, registries, type aliases,
    the activation and loss instances) without a ``#:`` comment or a docstring."""
    missing = []
    for module_name in module_names:
        source = Path(importlib.import_module(module_name).__file__).read_text(encoding="utf-8")
        for stmt in ast.parse(source).body:
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            else:
                continue
            for t in targets:
                if not isinstance(t, ast.Name) or t.id.startswith("_"):
                    continue
                if not _has_comment_docstring(module_name, t.id):
                    missing.append(f"{module_name}.{t.id}")
    return missing


def test_every_public_constant_of_every_module_is_documented():
    assert _undocumented_constants(MODULES) == []


def test_the_docstring_checks_can_fail(monkeypatch):
    from deltastats.stats import sampling

    monkeypatch.setattr(sampling.estimate, "__doc__", None)
    assert _undocumented_definitions(["deltastats.stats.sampling"]) == [
        "deltastats.stats.sampling.estimate"
    ]
    assert "estimate" in _undocumented_exports()
    assert not _has_comment_docstring("deltastats.stats.sampling", "no_such_constant")
    assert _has_comment_docstring("deltastats.stats.results", "MIN_NETWORKS")


def _api_directives() -> set[str]:
    found = set()
    for page in (DOCS / "api").glob("*.md"):
        found |= set(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"), re.M))
    return found


def test_every_public_module_is_on_an_api_reference_page():
    directives = _api_directives()
    assert {"deltastats.model.networks", "deltastats.stats.sampling"} <= directives
    missing = [m for m in MODULES if m not in directives]
    assert missing == [], f"add '::: {missing[0]}' to a page of docs/api/"
    unknown = sorted(d for d in directives if d not in MODULES and d != "deltastats.torch")
    assert unknown == []


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert "tutorials/own_model.md" in pages
    assert [p for p in pages if f": {p}" not in nav] == []


def test_every_statistic_and_assumption_is_explained():
    from deltastats import theory

    page = (DOCS / "statistics.md").read_text(encoding="utf-8")
    names = set(deltastats.STATISTICS) | set(theory.STATISTICS) | {"z_kurt"}
    names |= set(importlib.import_module("deltastats.theory.predict").PRIORITY)
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert missing == []


#: Strings that pointed at files the repository does not have (design notes, seed documents,
#: a shared folder); the maths they stood for is written out where it is used.
ABSENT = ("DESIGN.md", "seed document", "seeds/", "001_", "../shared", "shared/")


def _documentation_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "mkdocs.yml"]
    files += [ROOT / "experiments" / "README.md", *sorted((ROOT / "experiments").glob("*.toml"))]
    files += sorted((ROOT / "deltastats").rglob("*.py"))
    files += sorted((ROOT / "deltastats").rglob("*.toml"))
    files += sorted(p for p in DOCS.rglob("*") if p.suffix in (".md", ".py", ".js"))
    return [f for f in files if f.is_file()]


@pytest.mark.parametrize("needle", ABSENT)
def test_nothing_points_at_absent_files(needle):
    files = _documentation_files()
    assert len(files) > 50
    hits = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in files
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if needle.lower() in line.lower()
    ]
    assert hits == []


def test_the_figure_of_the_order_to_chaos_tutorial_is_the_committed_result():
    shown = DOCS / "tutorials" / "order_chaos_phase_diagram.png"
    committed = ROOT / "results" / "order_chaos" / "fig_phase_diagram.png"
    assert shown.read_bytes() == committed.read_bytes(), "copy the regenerated figure to docs/"
