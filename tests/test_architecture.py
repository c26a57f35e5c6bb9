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
def test_checks_never_import_harness_cli_or_reference(path: Path) -> None:
    forbidden = ("conformance.plugin", "conformance.cli", "conformance.reference", "conformance.results")
    bad = [m for m in _imports(path) if m.startswith(forbidden)]
    assert not bad, f"{path.name} imports {bad}: checks use fixtures, not the harness"


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
]


@pytest.mark.parametrize("name", CORE)
def test_core_has_no_io_layers_above(name: str) -> None:
    path = PKG / name
    bad = [
        m
        for m in _imports(path)
        if m.startswith(
            ("conformance.client", "conformance.plugin", "conformance.cli", "conformance.checks", "httpx")
        )
    ]
    assert not bad, f"{name} (core layer) imports {bad}"
