"""The false-alarm matrix, mirror of the kill matrix: legitimate behaviours of real servers pass the gate.

Under every variant of :mod:`conformance.reference.variants` the suite's default gate exits 0 against the
reference server. Under a ``legit`` variant nothing fails at any level; under a ``should`` variant no MUST
fails and the SHOULD requirements it breaks are reported as failed. Under every variant the number of
requirements judged stays within ``JUDGED_SLACK`` of the clean run: "could not be judged" is no hiding place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from conformance.catalog import catalog
from conformance.cli import main
from conformance.reference.variants import VARIANTS

JUDGED_SLACK = 10
JUDGED = ("pass", "fail", "informational")


def _run(report: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["run", "--report-dir", str(report), *args])
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    return code, results


def _judged(results: dict[str, Any]) -> set[str]:
    return {k for k, v in results["requirements"].items() if v["verdict"] in JUDGED}


_CLEAN: dict[str, set[str]] = {}


def _clean_judged(profile: str, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    if profile not in _CLEAN:
        code, results = _run(tmp_path_factory.mktemp(f"clean-{profile}"), "--profile", profile)
        assert code == 0, results["verdict"]
        _CLEAN[profile] = _judged(results)
    return _CLEAN[profile]


@pytest.mark.parametrize("name", sorted(v for v in VARIANTS if VARIANTS[v].kind != "health"), ids=str)
def test_variant_is_no_false_alarm(
    name: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    variant = VARIANTS[name]
    profile = variant.profile or "seed"
    code, results = _run(tmp_path / "reports", "--variant", name, "--profile", profile)
    reqs = results["requirements"]
    failing = {k: v["reason"] for k, v in reqs.items() if v["verdict"] in ("fail", "error")}
    errors = [c["nodeid"] for c in results["checks"] if c["outcome"] == "error"]
    assert errors == [], f"internal errors under {name}"
    assert code == 0, f"{name}: the default gate failed: {results['verdict']}\n{failing}"
    if variant.kind == "legit":
        assert failing == {}, f"false alarm(s) under the legitimate variant {name}"
    else:
        must_fails = {k: r for k, r in failing.items() if reqs[k]["level"] == "MUST"}
        assert must_fails == {}, f"MUST failure(s) under the SHOULD-level variant {name}"
        for req in variant.breaks:
            assert catalog()[req].level_for(profile) == "SHOULD", f"{req} is not a SHOULD under {profile}"
            assert reqs[req]["verdict"] == "fail", f"{name} breaks {req}, reported {reqs[req]['verdict']}"
        assert set(failing) == set(variant.breaks), f"{name} fails more than it breaks"
        assert "warnings:" in results["verdict"]
    clean = _clean_judged(profile, tmp_path_factory)
    table = os.environ.get("VARIANT_TABLE")  # the closing note's judged counts: VARIANT_TABLE=FILE pytest ...
    if table:
        with open(table, "a", encoding="utf-8") as f:
            row = {"variant": name, "exit": code, "judged": len(_judged(results)), "clean": len(clean)}
            f.write(json.dumps({**row, "failing": sorted(failing), "requests": results["cost"]["requests"]}))
            f.write("\n")
    lost = clean - _judged(results)
    assert len(lost) <= JUDGED_SLACK, f"{name}: {len(lost)} requirements no longer judged: {sorted(lost)}"


def test_variants_are_described() -> None:
    """Each description names what it imitates; SHOULD-level variants name what they break."""
    assert len(VARIANTS) >= 20
    for v in VARIANTS.values():
        assert v.kind in ("legit", "should", "health"), v.name  # health: tests/test_target_health.py
        assert len(v.description) > 40, v.name
        assert (v.kind == "should") == bool(v.breaks), v.name
