"""A CI gate gives the same verdict twice: two runs against the same target agree on every requirement, and
send the same generated requests (drawn before any is sent: spec/DECISIONS.md#reproducible-draws)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import generated_requests

from conformance.cli import main


def _verdicts(report: Path, *args: str) -> tuple[int, dict[str, str], list[tuple[str, str | None]]]:
    code = main(["run", "--report-dir", str(report), *args])
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    return code, {k: v["verdict"] for k, v in results["requirements"].items()}, generated_requests(results)


def test_two_runs_give_identical_verdicts(tmp_path: Path) -> None:
    # a faulty server, so that failures too must repeat (one check's fault, one only the run-wide judges see)
    faults = ("--fault", "usage-total-wrong", "--fault", "max-tokens-overshoot")
    first = _verdicts(tmp_path / "a", *faults)
    second = _verdicts(tmp_path / "b", *faults)
    assert first[0] == second[0] == 1
    assert first[1]["USAGE-TOTAL-SUM"] == first[1]["MAXTOK-BOUND"] == "fail"
    diff = {k: (v, second[1][k]) for k, v in first[1].items() if second[1][k] != v}
    assert diff == {}
    assert len(first[2]) > 50 and first[2] == second[2]
