"""What a provider reads: the console, the JUnit file CI shows, the self-test label of the embedded server.

Issue 21, points 1 (no green without a target), 8 (what CI shows matches the gate) and 9 (a console a provider
reads). Every test here failed on main before the change (said in each docstring).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import __version__
from conformance.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, main
from conformance.progress import Progress
from conformance.reference.server import start_in_thread
from conformance.target import EMBEDDED_NOTE

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--only", "core", "--progress", "off"]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---- 1. no green without a target -------------------------------------------------------------------------


def test_a_model_without_a_base_url_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Main ran the embedded server and exited 0 for `run --model my-staging-model` (a CI variable lost)."""
    code = main(["run", "--model", "my-staging-model", "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert _lines(err) == [
        "chat-conformance: error: --model without --base-url would judge the embedded reference server, not "
        "your endpoint: add --base-url URL (or --embedded for a self-test of the suite)"
    ]
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--base-url", ""], "--base-url is empty (an unset CI variable?): give the target's URL"),
        (["--base-url", " ", "--model", "m"], "--base-url is empty (an unset CI variable?)"),
        (["--base-url", "http://127.0.0.1:1/v1", "--model", ""], "--model is empty (an unset CI variable?)"),
    ],
)
def test_an_empty_base_url_or_model_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Main read `--base-url ""` (an unset variable in a hand-written recipe) as "no target": the embedded
    server, exit 0."""
    assert main(["run", *argv, "--report-dir", str(tmp_path)]) == EXIT_USAGE
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "results.json").exists()


def test_embedded_and_a_base_url_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--embedded", "--base-url", "http://127.0.0.1:1/v1", "--model", "m"])
    assert code == EXIT_USAGE
    assert "--embedded judges the embedded reference server: drop --base-url or --embedded" in (
        capsys.readouterr().err
    )


def test_a_self_test_says_so_in_the_console_and_every_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Main's reports and verdict line read as a verdict on an endpoint: the run judged the suite's own
    server."""
    code = main(["run", "--embedded", "--model", "my-model", *QUICK, "--report-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert _lines(err)[0].startswith(f"chat-conformance: {EMBEDDED_NOTE}, at http://127.0.0.1:")
    last = _lines(out)[-1]
    assert last.startswith("chat-conformance: CONFORMANT — no MUST failure;")
    assert last.endswith(f"[{EMBEDDED_NOTE}]")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["target"]["embedded"] is True and results["target"]["model"] == "my-model"
    summary = (tmp_path / "summary.md").read_text()
    assert summary.splitlines()[0] == f"# chat-conformance: {results['verdict']} [{EMBEDDED_NOTE}]"
    html = (tmp_path / "report.html").read_text()
    assert f'id="self-test"><strong>{EMBEDDED_NOTE}</strong>' in html
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and "self-test" in suite.get("name", "")


def test_a_real_target_is_not_called_a_self_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with start_in_thread() as srv:
        code = main(["run", "--base-url", srv.base_url, "--model", srv.model, *QUICK,
                     "--report-dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    assert "self-test" not in out and EMBEDDED_NOTE not in out
    assert "embedded" not in json.loads((tmp_path / "results.json").read_text())["target"]
    assert "self-test" not in (tmp_path / "summary.md").read_text()


# ---- 8. what CI shows matches the gate ------------------------------------------------------------------


def _junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {c.get("name", ""): c for c in root.iter("testcase")}


def test_junit_fails_exactly_what_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Main marked a SHOULD finding as a failed <testcase> (and pytest said "1 failed") while the job
    exited 0."""
    should = tmp_path / "should"
    code = main(["run", "--fault", "model-name-wrong", *QUICK, "--report-dir", str(should)])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    cases = _junit_cases(should / "junit.xml")
    suite = ET.parse(should / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    warned = cases["test_completion_fields"]
    assert warned.find("failure") is None
    props = {(p.get("name"), p.get("value")) for p in warned.iter("property")}
    assert ("warning", "CORE-MODEL-MATCHES (SHOULD warning)") in props
    system_out = warned.find("system-out")
    assert system_out is not None and "CORE-MODEL-MATCHES" in (system_out.text or "")
    assert "FAILURES" not in out and not re.search(r"\d+ failed", out)
    assert "WARN (below --fail-on must) CORE-MODEL-MATCHES (SHOULD)" in out
    assert _lines(out)[-1].startswith("chat-conformance: CONFORMANT — no MUST failure; 1 SHOULD warning;")
    # the same finding at --fail-on should fails the gate, and is then a failed case
    strict = tmp_path / "strict"
    code = main(["run", "--fault", "model-name-wrong", *QUICK, "--fail-on", "should",
                 "--report-dir", str(strict)])
    out, _ = capsys.readouterr()
    assert code == EXIT_FAIL
    failure = _junit_cases(strict / "junit.xml")["test_completion_fields"].find("failure")
    assert failure is not None and "CORE-MODEL-MATCHES" in failure.get("message", "")
    assert _lines(out)[-1].startswith(
        "chat-conformance: NOT CONFORMANT — 1 SHOULD failure (CORE-MODEL-MATCHES)"
    )


def test_a_must_failure_is_a_failed_case_and_the_verdict_is_the_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--fault", "wrong-object", *QUICK, "--report-dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == EXIT_FAIL
    cases = _junit_cases(tmp_path / "junit.xml")
    assert cases["test_completion_fields"].find("failure") is not None
    lines = _lines(out)
    assert lines[-1].startswith("chat-conformance: NOT CONFORMANT — ")
    assert "CORE-OBJECT" in lines[-1]
    assert not any(" passed" in line and "deselected" in line for line in lines)  # pytest's count is gone
    fail = next(line for line in lines if line.startswith("  FAIL CORE-OBJECT (MUST): wrong object"))
    assert "(at $.object: received " in fail  # where it was seen and what the target sent there
    assert not any("warnings summary" in line for line in lines)


def test_plain_pytest_ends_with_the_suites_verdict(tmp_path: Path) -> None:
    """Under `pytest --pyargs conformance.checks` main ended with pytest's "160 passed" count, and a SHOULD
    finding was a failed test under FAILURES while the session exited 0."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    with start_in_thread(faults=("model-name-wrong",)) as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--pyargs", "conformance.checks", "-p", "no:cacheprovider", "-q",
             "--conformance-base-url", srv.base_url, "--conformance-model", srv.model,
             "--conformance-only", "core", "--conformance-report-dir", str(tmp_path)],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
        )
        # the same run from the CLI (the engine in process, no pytest): the same verdicts (issue 22)
        cli = tmp_path / "cli"
        assert main(["run", "--base-url", srv.base_url, "--model", srv.model, "--only", "core",
                     "--report-dir", str(cli)]) == 0  # a SHOULD failure does not fail the gate
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = _lines(proc.stdout)
    verdict = "chat-conformance: CONFORMANT — no MUST failure; 1 SHOULD warning;"
    assert lines[-1].startswith(verdict), lines[-3:]
    assert "FAILURES" not in proc.stdout and not re.search(r"\d+ failed", proc.stdout)
    assert re.search(r"\d+ passed", proc.stdout)  # one pytest item per check

    def verdicts(folder: Path) -> dict[str, str]:
        res = json.loads((folder / "results.json").read_text())
        return {k: v["verdict"] for k, v in res["requirements"].items()}

    assert verdicts(tmp_path) == verdicts(cli)
    assert verdicts(cli)["CORE-MODEL-MATCHES"] == "fail"  # the SHOULD warning, from either front-end


def test_plain_pytest_under_xdist_gives_the_cli_s_verdicts(tmp_path: Path) -> None:
    """Under pytest-xdist each worker runs its own items' checks (no engine pool): the verdicts are the CLI's
    (the CLI's `-n` now means checks at once, so only plain pytest still takes this path)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    with start_in_thread() as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--pyargs", "conformance.checks", "-p", "no:cacheprovider", "-q",
             "-n", "2", "--conformance-base-url", srv.base_url, "--conformance-model", srv.model,
             "--conformance-only", "core", "--conformance-report-dir", str(tmp_path / "xdist")],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
        )
        assert main(["run", "--base-url", srv.base_url, "--model", srv.model, "--only", "core",
                     "--report-dir", str(tmp_path / "cli")]) == 0
    assert proc.returncode == 0, proc.stdout[-3000:]

    def verdicts(folder: Path) -> dict[str, str]:
        res = json.loads((folder / "results.json").read_text())
        return {k: v["verdict"] for k, v in res["requirements"].items()}

    assert verdicts(tmp_path / "xdist") == verdicts(tmp_path / "cli")
    assert "pass" in verdicts(tmp_path / "cli").values()


# ---- 9. a console a provider reads ------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"chat-conformance {__version__}"


def test_what_was_not_judged_is_said_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Main never said why requirements went unjudged; "level reached: MAY" read as the weakest grade."""
    code = main(["run", "--level", "must", *QUICK, "--report-dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    lines = _lines(out)
    head = next(line for line in lines if line.startswith("not judged: "))
    results = json.loads((tmp_path / "results.json").read_text())
    unjudged = [r for r in results["requirements"].values() if r["verdict"] in ("not-run", "unsupported")]
    assert head == f"not judged: {len(unjudged)} of {len(results['requirements'])} requirements, and why:"
    assert any("above the run's --level" in line for line in lines)
    assert any("not selected (--only" in line for line in lines)
    kept = "levels kept: MUST, SHOULD and MAY (nothing failed at any level); this run judged only up to MUST"
    assert kept in lines
    assert not any(line.startswith("level reached") for line in lines)
    assert "## Not judged, and why" in (tmp_path / "summary.md").read_text()


def test_the_progress_line_shows_in_a_ci_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Main printed nothing for the first seconds of a run, and only pytest's dots after."""
    code = main(["run", "--only", "core", "--progress", "lines", "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_OK
    lines = [line for line in _lines(err) if line.startswith("chat-conformance: ") and " requests, " in line]
    assert lines, err
    assert any(line.startswith("chat-conformance: running the checks: ") for line in lines)
    final = lines[-1]
    assert final.startswith("chat-conformance: judging the run and writing the reports: ")
    done, _, total = final.split(": ")[2].split(" checks")[0].partition("/")
    assert done == total and int(total) > 0
    assert "\r" not in err


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_line_counts_and_modes() -> None:
    clock = _Clock()
    sent = iter(range(0, 1000, 7))
    p = Progress("lines", stream=io.StringIO(), requests=lambda: next(sent), clock=clock)
    p.total = 12
    p.phase = "running the checks"
    for _ in range(5):
        p.check_done()
    clock.now += 42.4
    assert p.line() == "chat-conformance: running the checks: 5/12 checks, 0 requests, 42 s"
    assert p.line() == "chat-conformance: running the checks: 5/12 checks, 7 requests, 42 s"
    live = io.StringIO()
    q = Progress("live", stream=live, requests=lambda: 3, clock=clock)
    q.start()
    q.stop()
    text = live.getvalue()
    assert text.startswith("\rchat-conformance: collecting the checks: 3 requests, 0 s")
    assert text.endswith("\r")  # wiped before the summary is written
    with pytest.raises(ValueError):
        Progress("sometimes")


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CONFORMANCE_API_KEY", raising=False)
    yield
