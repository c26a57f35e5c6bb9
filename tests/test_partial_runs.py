"""A partial run is never conformant (issue 21, point 6): Ctrl-C, SIGTERM (a CI job's timeout), an exhausted
budget or the time limit give a verdict and an exit code of their own (INTERRUPTED 130/143, INCOMPLETE 5), in
the console and every report, with how much was judged; the reports are written in every case."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conformance import cli
from conformance.fleet import worst_exit
from conformance.reports.schema import results_errors
from conformance.results import EXIT_INCOMPLETE, EXIT_INTERRUPTED, build_results, level_reached

ROOT = Path(__file__).resolve().parent.parent
# "CONFORMANT" as a verdict word of its own: not inside "NOT CONFORMANT"
CONFORMANT = re.compile(r"(?<!NOT )\bCONFORMANT\b")
JUDGED = re.compile(r"(\d+) of (\d+) requirements judged")


def _start(report: Path, args: list[str]) -> tuple[subprocess.Popen[str], Path, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONUNBUFFERED"] = "1"
    out, err = report.parent / f"{report.name}.out", report.parent / f"{report.name}.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conformance.cli", "run", "--report-dir", str(report), *args],
            stdout=o, stderr=e, env=env, cwd=report.parent, text=True,
        )
    return proc, out, err


def _signal_mid_run(tmp_path: Path, sig: signal.Signals, args: list[str]) -> tuple[int, float, str, Path]:
    """A slow embedded server's run, stopped by ``sig`` once its checks are under way: (exit code, seconds
    from the signal to the exit, console, report folder)."""
    report = tmp_path / "report"
    # ttft 2: the run's streams take ~10 s, so the signal a second after the checks start always lands while
    # many are left, even on a loaded machine (at 0.5 the run ended ~3 s after its checks started: under a
    # full test run's load, once, every check was done when the signal came). It costs nothing: the run is
    # stopped, not waited for.
    proc, out, err = _start(report, ["--ttft", "2", *args])
    start = time.monotonic()
    # its checks are under way once the progress says so (or, whatever it says, after 4 s), plus a second
    while time.monotonic() - start < 4 and "running the checks" not in err.read_text():
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before the signal: make it slower"
    proc.send_signal(sig)
    sent = time.monotonic()
    try:
        code = proc.wait(20)
    finally:
        proc.kill()
    return code, time.monotonic() - sent, out.read_text() + err.read_text(), report


def _reports(report: Path) -> dict[str, str]:
    files = {n: (report / n).read_text(encoding="utf-8")
             for n in ("results.json", "summary.md", "junit.xml", "report.html")}
    ET.fromstring(files["junit.xml"].encode())
    return files


def _assert_partial(report: Path, word: str, code: int) -> dict[str, Any]:
    """Every report of the run says ``word`` and never CONFORMANT; the verdict says how much was judged; the
    level reached claims no level whose requirements were not all judged."""
    files = _reports(report)
    res = json.loads(files["results.json"])
    assert results_errors(res) == []
    verdict = res["verdict"]
    assert verdict.startswith(word) and not CONFORMANT.search(verdict), verdict
    assert res["exit_code"] == code
    m = JUDGED.search(verdict)
    assert m and int(m.group(1)) < int(m.group(2)) == len(res["requirements"]), verdict
    assert int(m.group(1)) == sum(
        r["verdict"] in ("pass", "fail", "waived", "unexpectedly-passing", "informational")
        for r in res["requirements"].values()
    )
    headline = files["summary.md"].splitlines()[0]
    assert word in headline and not CONFORMANT.search(headline), headline
    html_verdict = re.search(r'id="verdict">([^<]*)<', files["report.html"])
    assert html_verdict, "report.html has no verdict"
    shown = html.unescape(html_verdict.group(1))
    assert word in shown and not CONFORMANT.search(shown), shown
    reached = res["level_reached"]
    order = ("MUST", "SHOULD", "MAY")
    claimed = order[: order.index(reached) + 1] if reached != "none" else ()
    unjudged = [r["id"] for r in res["requirements"].values()
                if r["level"] in claimed and r["verdict"] in ("not-run", "error")]
    assert unjudged == [], f"level {reached} claimed with {unjudged[:5]} not judged"
    return res


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGINT, 130, "INTERRUPTED by Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "INTERRUPTED by SIGTERM")],
)
def test_a_signal_mid_run_is_interrupted_in_the_console_and_every_report(
    tmp_path: Path, sig: signal.Signals, code: int, said: str
) -> None:
    exit_code, seconds, console, report = _signal_mid_run(tmp_path, sig, [])
    assert exit_code == code, console[-3000:]
    # 2-3.5 s here; a loaded CI machine takes up to twice as long, and must still beat the runner's SIGKILL
    assert seconds < 9.5, f"{seconds:.1f} s from {sig.name} to the exit: a CI runner kills after ~10 s"
    res = _assert_partial(report, said, code)
    assert res["interrupted"] is True
    assert said in console and JUDGED.search(console), console[-3000:]
    assert not [line for line in console.splitlines() if CONFORMANT.search(line)], console[-3000:]
    assert "Traceback" not in console


def test_an_interrupted_fleet_judges_no_further_model(tmp_path: Path) -> None:
    fleet = ["--embedded", "--model", "m-a", "--model", "m-b"]
    code, _, console, report = _signal_mid_run(tmp_path, signal.SIGINT, fleet)
    assert code == 130, console[-3000:]
    _assert_partial(report / "m-a", "INTERRUPTED by Ctrl-C (SIGINT)", 130)
    assert not (report / "m-b").exists(), "the second model was run after Ctrl-C"
    assert "NOT JUDGED (exit 130: interrupted (SIGINT))" in (report / "matrix.md").read_text(encoding="utf-8")


def test_sigterm_during_the_preflight_still_writes_every_report(tmp_path: Path) -> None:
    """Stopped before any check ran (the preflight waits for the target's first answer): the reports say
    INTERRUPTED, 0 requirements judged."""
    report = tmp_path / "report"
    proc, out, err = _start(report, ["--ttft", "8"])
    start = time.monotonic()
    while time.monotonic() - start < 15 and "http://127.0.0.1" not in err.read_text():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    finally:
        proc.kill()
    assert code == 143, err.read_text()[-2000:]
    res = _assert_partial(report, "INTERRUPTED by SIGTERM", 143)
    assert res["verdict"].startswith("INTERRUPTED by SIGTERM (a CI job's timeout or cancel): 0 of ")
    assert res["level_reached"] == "none"


def test_an_exhausted_budget_is_incomplete_in_every_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", "--max-requests", "20", "--report-dir", str(tmp_path)])
    console = capsys.readouterr()
    assert code == EXIT_INCOMPLETE == 5, console.err[-2000:]
    res = _assert_partial(tmp_path, "INCOMPLETE: the run's budget was exhausted", 5)
    assert res["interrupted"] is False
    assert "INCOMPLETE" in console.out + console.err


def test_max_duration_stops_the_run_incomplete(tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc, out, err = _start(report, ["--ttft", "1", "--max-duration", "3"])
    try:
        code = proc.wait(20)
    finally:
        proc.kill()
    console = out.read_text() + err.read_text()
    assert code == 5, console[-3000:]
    res = _assert_partial(report, "INCOMPLETE: the run reached its time limit (--max-duration)", 5)
    # stopped at 3 s plus the stop itself (about 1 s here, twice that on a loaded CI machine)
    assert res["interrupted"] is False and res["duration_s"] < 7.5


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_max_duration_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--max-duration", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--max-duration" in err and "is not positive: give the run's time limit in seconds" in err


# ---- the verdict of a partial run, from records ------------------------------------------------------------


def _rec(nodeid: str, reqs: list[str], outcome: str = "passed", **kw: Any) -> dict[str, Any]:
    return {"nodeid": nodeid, "requirements": reqs, "outcome": outcome,
            "skip_reason": kw.get("skip_reason", ""), "error": "", "duration": 0.0,
            "judged": kw.get("judged", reqs), "violations": kw.get("violations", []), "exchanges": []}


def _build(records: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    target = {"base_url": "http://127.0.0.1:1/v1", "model": "m", "profile": "seed"}
    return build_results(records, target=target, profile="seed", level="may", started=0.0, finished=1.0,
                         cost={"requests": 1, "retries": 0, "prompt_tokens": 1, "completion_tokens": 1},
                         capabilities={}, **kw)


def _violation(req: str) -> dict[str, Any]:
    return {"requirement": req, "message": "broken", "path": "$", "expected": "x", "received": "y"}


@pytest.mark.parametrize(("stopped_by", "code"), [("SIGINT", 130), ("SIGTERM", 143), (None, 130)])
def test_an_interrupted_run_is_never_conformant(stopped_by: str | None, code: int) -> None:
    res = _build([_rec("a", ["CORE-OBJECT"])], interrupted=True, stopped_by=stopped_by)
    assert res["exit_code"] == code == EXIT_INTERRUPTED[stopped_by or "SIGINT"]
    assert res["verdict"].startswith("INTERRUPTED by ") and not CONFORMANT.search(res["verdict"])
    assert "1 of " in res["verdict"] and res["interrupted"] is True
    assert res["level_reached"] == "none"  # one MUST requirement judged: MUST is not reached
    assert results_errors(res) == []
    not_reached = res["requirements"]["CORE-ID-PRESENT"]["reason"]
    assert not_reached.startswith("not run: the run stopped (interrupted by "), not_reached


def test_an_interrupted_run_keeps_the_failures_it_found() -> None:
    res = _build([_rec("a", ["CORE-OBJECT"], "failed", violations=[_violation("CORE-OBJECT")])],
                 stopped_by="SIGTERM")
    assert res["exit_code"] == 143
    assert res["verdict"].startswith("INTERRUPTED by SIGTERM") and "NOT CONFORMANT: 1 MUST" in res["verdict"]


def test_a_budget_stop_with_a_failure_is_not_conformant_and_says_it_stopped() -> None:
    stop = _rec("b", ["CORE-ID-PRESENT"], "skipped", judged=[], skip_reason="not run: budget exhausted: 20")
    res = _build([_rec("a", ["CORE-OBJECT"], "failed", violations=[_violation("CORE-OBJECT")]), stop])
    assert res["exit_code"] == 1
    assert res["verdict"].startswith("NOT CONFORMANT") and "INCOMPLETE: the run's budget" in res["verdict"]
    res = _build([_rec("a", ["CORE-OBJECT"]), stop])
    assert res["exit_code"] == 5 and res["verdict"].startswith("INCOMPLETE") and not CONFORMANT.search(
        res["verdict"])


def test_too_many_unanswered_is_incomplete_without_the_word_conformant() -> None:
    limited = "inconclusive: rate-limited after 2 retries (HTTP 429, Retry-After 1): ..."
    records = [_rec("a", ["CORE-OBJECT"])] + [
        _rec(f"u{i}", ["CORE-ID-PRESENT"], "skipped", judged=[], skip_reason=limited) for i in range(3)]
    res = _build(records)
    assert res["exit_code"] == 5 and res["verdict"].startswith("INCOMPLETE: 3 of 4 check(s) unanswered")
    assert not CONFORMANT.search(res["verdict"]) and JUDGED.search(res["verdict"])


def test_level_reached_of_a_partial_run_counts_only_levels_wholly_judged() -> None:
    reqs = {
        "M1": {"level": "MUST", "verdict": "pass"},
        "S1": {"level": "SHOULD", "verdict": "pass"},
        "S2": {"level": "SHOULD", "verdict": "not-run"},
        "Y1": {"level": "MAY", "verdict": "pass"},
    }
    assert level_reached(reqs) == "MAY"  # a complete run: not-run is not a failure
    assert level_reached(reqs, partial=True) == "MUST"
    reqs["S2"]["verdict"] = "pass"
    assert level_reached(reqs, partial=True) == "MAY"
    assert level_reached(reqs, partial=True, level="should") == "SHOULD"  # never above the run's level
    reqs["M1"]["verdict"] = "error"
    assert level_reached(reqs, partial=True) == "none"


def test_the_junit_of_a_partial_run_says_so() -> None:
    from conformance.results import render_junit

    res = _build([_rec("a", ["CORE-OBJECT"])], stopped_by="SIGTERM")
    assert "INTERRUPTED by SIGTERM" in render_junit(res)


def test_exit_codes_are_documented_and_ranked_in_a_fleet() -> None:
    assert (cli.EXIT_INCOMPLETE, cli.EXIT_SIGINT, cli.EXIT_SIGTERM) == (
        EXIT_INCOMPLETE, EXIT_INTERRUPTED["SIGINT"], EXIT_INTERRUPTED["SIGTERM"])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = readme[readme.index("- Exit codes:"):]
    line = line[: line.index("\n- ")]
    for said in ("5 `INCOMPLETE`", "130 and 143", "`INTERRUPTED`", "--max-duration"):
        assert said in line, said
    assert all(str(c) in (cli.__doc__ or "") for c in (5, 130, 143))
    schema = json.loads((ROOT / "spec" / "results.schema.json").read_text(encoding="utf-8"))
    assert {5, 130, 143} <= set(schema["properties"]["exit_code"]["enum"])
    assert worst_exit([1, 5]) == 5 and worst_exit([3, 5, 1]) == 3
    assert worst_exit([2, 130, 4]) == 130 and worst_exit([0, 143, 1]) == 143
