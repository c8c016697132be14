"""The package's layering, read from its source: no import cycles, a report that reads files only, methods/
holding methods alone, and a code fingerprint that covers all the shared code the methods run."""

from __future__ import annotations

import ast
import inspect
import pkgutil
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

import kepitfalls
from kepitfalls import methods
from kepitfalls.editing import CORE_SOURCES, NO_DELTA_SOURCES, code_fingerprint
from kepitfalls.methods import BASE_MODULE, SUPPORTED, method_class
from kepitfalls.methods.base import Artifacts, EditMethod
from kepitfalls.suites import SUPPORTED as SUITES, suite_module
from kepitfalls.suites.contract import check_suite

PACKAGE = Path(kepitfalls.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The package module `name` is or lies in (`kepitfalls.x.y.attr` -> `kepitfalls.x.y`), None outside it."""
    while name and name not in _modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports(module: str) -> frozenset[str]:
    """Every package module `module` imports: at module level, under TYPE_CHECKING or inside a function alike.

    `from pkg import sub` imports the module `pkg.sub` (its package runs first anyway, as for every
    submodule import, so such edges to a package are not counted).
    """
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in map(_resolve, targets) if target is not None and target != module)
    return frozenset(found)


def _cycle() -> list[str] | None:
    """One import cycle among the package's modules, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(imports(module)):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(_modules()):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def reachable(starts: list[str], enter=lambda module: True) -> set[str]:
    """The modules imported from `starts`, directly or through modules for which `enter` holds."""
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        for target in imports(todo.pop()):
            if target not in seen:
                seen.add(target)
                if enter(target):
                    todo.append(target)
    return seen


def test_the_import_graph_has_no_cycles() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_an_import_cycle_would_be_found(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = {"kepitfalls.a": {"kepitfalls.b"}, "kepitfalls.b": {"kepitfalls.a"}}
    monkeypatch.setattr(f"{__name__}._modules", lambda: dict.fromkeys(graph, PACKAGE))
    monkeypatch.setattr(f"{__name__}.imports", lambda module: frozenset(graph[module]))
    assert _cycle() == ["kepitfalls.a", "kepitfalls.b", "kepitfalls.a"]


def test_report_imports_neither_methods_nor_suites() -> None:
    report = [module for module in _modules() if module.startswith("kepitfalls.report")]
    assert report
    reached = reachable(report)
    assert not {m for m in reached if m.startswith(("kepitfalls.methods", "kepitfalls.suites", "kepitfalls.editing"))}


def test_methods_holds_only_method_modules_and_their_base() -> None:
    """Every module of methods/ but base is a method, discovered by its class's `name`: adding one is one file."""
    modules = {info.name for info in pkgutil.iter_modules(methods.__path__)}
    assert modules == {BASE_MODULE, *SUPPORTED}
    assert {"ROME", "MEMIT", "FT", "KN", "MEND", "MEND_untrained", "SERAC", "IKE", "GRACE"} <= set(SUPPORTED)
    for name in SUPPORTED:
        cls = method_class(name)
        assert issubclass(cls, EditMethod) and cls.name == name and not inspect.isabstract(cls)
        assert cls.__module__ == f"kepitfalls.methods.{name}"


def test_an_unknown_method_is_refused_by_name() -> None:
    with pytest.raises(NotImplementedError, match="'NOPE' is not implemented; supported: .*ROME"):
        method_class("NOPE")


def _source(module: str) -> str:
    return _modules()[module].relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("name", SUPPORTED)
def test_the_code_fingerprint_covers_what_the_method_runs(name: str) -> None:
    """Every package module the method's code imports, directly or through the fingerprinted shared code, is
    fingerprinted (CORE_SOURCES or the method's `own_sources`) or declared to compute no part of a delta."""
    cls = method_class(name)
    fingerprinted = {*CORE_SOURCES, *cls.own_sources}
    method_modules = {f"kepitfalls.methods.{other}" for other in SUPPORTED}
    module = f"kepitfalls.methods.{name}"
    reached = reachable([module], lambda m: _source(m) in fingerprinted or m in method_modules)
    missing = sorted(
        _source(m) for m in reached
        if m not in method_modules and m != "kepitfalls.methods" and _source(m) not in (*fingerprinted, *NO_DELTA_SOURCES)
    )
    assert not missing, f"{name} runs {missing}: add them to CORE_SOURCES (editing.py) or {cls.__name__}.own_sources"


def test_every_listed_source_exists() -> None:
    own = {source for name in SUPPORTED for source in method_class(name).own_sources}
    for source in (*CORE_SOURCES, *NO_DELTA_SOURCES, *own):
        assert (PACKAGE / source).is_file(), source


def test_the_fingerprint_covers_a_methods_own_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    mend = method_class("MEND")
    method = mend.__new__(mend)
    with_helpers = code_fingerprint(method)
    monkeypatch.setattr(mend, "own_sources", ())
    assert code_fingerprint(method) != with_helpers


@pytest.mark.parametrize("name", ["MEND", "IKE", "SERAC"])
def test_a_missing_prepared_file_names_its_stage(name: str, tmp_path: Path) -> None:
    """The one helper (`Artifacts.prepared`) every prepared method reads its files through."""
    cls = method_class(name)
    method = cls.__new__(cls)
    for artifacts in (Artifacts(), Artifacts(method_dir=tmp_path)):
        method.artifacts = artifacts
        with pytest.raises(FileNotFoundError, match=rf"run `dvc repro prepare@{name}` first"):
            method.upstream_files()


@pytest.mark.parametrize("name", SUITES)
def test_every_suite_meets_the_declared_contract(name: str) -> None:
    check_suite(suite_module(name))


def test_a_suite_that_breaks_the_contract_is_named() -> None:
    broken = ModuleType("kepitfalls.suites.broken")
    broken.PROTOCOL, broken.RECORD_TYPE = "text", dict
    broken.select = lambda lm, raw_root, config: []
    broken.score = lambda lm, item, deltas: None  # an old signature
    with pytest.raises(TypeError, match=r"kepitfalls.suites.broken .*no Config.*no function edit_cases.*score\(lm, item, deltas\) instead"):
        check_suite(broken)
