"""The layering of ARCHITECTURE.md, held by walking the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "conformance"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _under(module: str, packages: tuple[str, ...]) -> bool:
    """``module`` is one of ``packages`` or inside one (``conformance.client`` is not ``conformance.cli``)."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def _files(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py")) if (PKG / sub).is_dir() else [PKG / sub]


@pytest.mark.parametrize("path", _files("reference"), ids=lambda p: p.name)
def test_reference_server_never_imports_the_suite(path: Path) -> None:
    forbidden = (
        "conformance.checks",
        "conformance.client",
        "conformance.plugin",
        "conformance.cli",
        "conformance.sse",
        "conformance.violations",
        "conformance.results",
    )
    bad = [m for m in _imports(path) if m.startswith(forbidden)]
    assert not bad, f"{path.name} imports {bad}: the reference server must not depend on the checks"


@pytest.mark.parametrize("path", _files("checks"), ids=lambda p: p.name)
def test_checks_never_import_pytest_harness_cli_or_reference(path: Path) -> None:
    forbidden = ("pytest", "conformance.plugin", "conformance.cli", "conformance.reference",
                 "conformance.results", "conformance.engine.run", "conformance.engine.session")
    bad = [m for m in _imports(path) if _under(m, forbidden)]
    assert not bad, f"{path.name} imports {bad}: a check is a plain @check function of a CheckContext"


@pytest.mark.parametrize("path", _files("engine"), ids=lambda p: p.name)
def test_the_engine_never_imports_the_checks_or_a_front_end(path: Path) -> None:
    forbidden = ("pytest", "conformance.checks", "conformance.plugin", "conformance.cli",
                 "conformance.reference")
    bad = [m for m in _imports(path) if _under(m, forbidden)]
    assert not bad, f"{path.name} imports {bad}: the front-ends hand the checks to the engine"


@pytest.mark.parametrize("name", ["plugin.py", "cli.py", "fleet.py"])
def test_front_ends_import_the_checks_package_only(name: str) -> None:
    """A front-end imports ``conformance.checks`` (which registers every check) and hands the registry to the
    engine; never a check module or the checks' helpers (the plugin imported ``checks._runwide`` once)."""
    bad = [m for m in _imports(PKG / name) if m.startswith("conformance.checks.")]
    assert not bad, f"{name} imports {bad}: import conformance.checks (the package) only"


@pytest.mark.parametrize("path", [p for p in sorted(PKG.rglob("*.py")) if p.name != "plugin.py"],
                         ids=lambda p: str(p.relative_to(PKG)))
def test_only_the_pytest_front_end_imports_pytest(path: Path) -> None:
    """The CLI runs the engine in process: nothing it loads needs pytest (the plugin is its one user)."""
    assert "pytest" not in {m.split(".")[0] for m in _imports(path)}, f"{path.name} imports pytest"


CORE = [
    "specfiles.py",
    "catalog.py",
    "profiles.py",
    "schemas.py",
    "evidence.py",
    "target.py",
    "errors.py",
    "violations.py",
    "outcomes.py",
    "health.py",
    "latency.py",
    "records.py",
    "files.py",
]


@pytest.mark.parametrize("name", CORE)
def test_core_has_no_io_layers_above(name: str) -> None:
    path = PKG / name
    bad = [
        m
        for m in _imports(path)
        if m.startswith(
            ("conformance.client", "conformance.plugin", "conformance.cli", "conformance.checks", "httpx",
             "conformance.engine", "conformance.results", "conformance.reports", "pytest")
        )
    ]
    assert not bad, f"{name} (core layer) imports {bad}"


@pytest.mark.parametrize("name", ["results.py", "console.py", "progress.py"])
def test_reports_layer_never_imports_the_engine_checks_or_front_ends(name: str) -> None:
    forbidden = ("conformance.engine", "conformance.client", "conformance.checks", "conformance.plugin",
                 "conformance.cli")
    bad = [m for m in _imports(PKG / name) if _under(m, forbidden)]
    assert not bad, f"{name} (reports layer) imports {bad}"
