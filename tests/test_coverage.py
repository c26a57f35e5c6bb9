"""Every MUST and SHOULD requirement of the catalog has a check; every check names known requirements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.catalog import catalog

CHECKS = Path(__file__).resolve().parent.parent / "conformance" / "checks"


class _Collect:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def pytest_collection_finish(self, session: Any) -> None:
        self.items = list(session.items)


@pytest.fixture(scope="module")
def marked() -> dict[str, set[str]]:
    col = _Collect()
    code = pytest.main(
        [
            str(CHECKS),
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(CHECKS / "pytest.ini"),
            "--rootdir",
            str(CHECKS),
        ],
        plugins=[col],
    )
    assert code == 0, "collecting the checks failed"
    out: dict[str, set[str]] = {}
    for item in col.items:
        for mark in item.iter_markers("requirement"):
            for rid in mark.args:
                out.setdefault(rid, set()).add(item.nodeid)
    return out


def test_every_check_is_marked_with_known_ids(marked: dict[str, set[str]]) -> None:
    unknown = sorted(set(marked) - set(catalog()))
    assert not unknown, f"checks name requirement ids missing from spec/requirements.yaml: {unknown}"


@pytest.mark.parametrize("level", ["MUST", "SHOULD", "MAY"])
def test_every_requirement_has_a_check(marked: dict[str, set[str]], level: str) -> None:
    missing = sorted(r.id for r in catalog().values() if r.level == level and r.id not in marked)
    assert not missing, f"{level} requirements without a check: {missing}"
