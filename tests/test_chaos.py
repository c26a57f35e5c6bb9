"""Hostile and broken targets (issue 9): the real CLI, in a subprocess, against ``tests/chaos_server.py``.

Every run must end in bounded time and memory, with the truthful exit code (3 when the preflight cannot
complete; 1 naming a requirement the target really broke; never 4, never a traceback), its reports written,
the canary key nowhere, target HTML escaped in report.html and target ANSI escapes never raw on a terminal.

Set ``CHAOS_TABLE=FILE`` to append one JSON line per run (behaviour, seconds, peak MB, exit code, verdict).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance.reference.server import RunningServer, start_in_thread

sys.path.insert(0, str(Path(__file__).parent))
from chaos_server import ChaosServer, RecordingServer  # noqa: E402

CANARY = "sk-canary-5d1f0e7a-chaos-never-print-me"
LIMITS = ["--timeout", "3", "--idle-timeout", "1"]
WALL_BOUND_S = 60.0
# a clean run of the suite peaks near 300 MB on its own (its imports, the generated phase's draws, a first
# pass of 16 checks at a time: measured 296 MB serial, 300 MB at --concurrency 16); a hostile target may add
# little: a 100 MB body is kept as its 64 KB head (client.KEEP_TRUNCATED)
RSS_BOUND_MB = 400.0
STREAM_ONLY = ["--only", "STREAM-DONE-TERMINATES"]  # the two stream checks that judge [DONE]
CORE_ONLY = ["--only", "core"]


@dataclass
class Run:
    behaviour: str
    code: int
    seconds: float
    peak_mb: float
    out: str
    err: str
    report: Path
    results: dict[str, Any] | None = field(default=None)

    @property
    def failing(self) -> list[str]:
        reqs = (self.results or {}).get("requirements", {})
        return sorted(k for k, v in reqs.items() if v["verdict"] in ("fail", "error"))


@pytest.fixture(scope="module")
def reference() -> Iterator[RunningServer]:
    srv = start_in_thread(api_key=CANARY)
    yield srv
    srv.stop()


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _run_cli(
    behaviour: str, base_url: str, model: str, report: Path, args: list[str], *, sigint_after: Any = None
) -> Run:
    """``chat-conformance run`` in a subprocess; its own peak RSS from wait4; killed past 2x the bound."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["CONFORMANCE_API_KEY"] = CANARY
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from conformance.cli import main; sys.exit(main())",
        "run",
        "--base-url",
        base_url,
        "--model",
        model,
        "--report-dir",
        str(report),
        *args,
    ]
    out_path, err_path = report.parent / f"{report.name}.out", report.parent / f"{report.name}.err"
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=report.parent)
        status = rusage = None
        sent = False
        hwm_kb = 0  # VmHWM of the child's own address space (ru_maxrss would count the forked parent's)
        while True:
            hwm_kb = max(hwm_kb, _vm_hwm_kb(proc.pid))
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if sigint_after is not None and not sent and sigint_after():
                proc.send_signal(signal.SIGINT)
                sent, start = True, time.monotonic()  # from now on, time the way out
            if time.monotonic() - start > 2 * WALL_BOUND_S:
                proc.kill()
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    results = None
    if (report / "results.json").exists():
        results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    run = Run(
        behaviour,
        proc.returncode,
        round(seconds, 1),
        round((hwm_kb or rusage.ru_maxrss) / 1024, 1),
        out_path.read_text(encoding="utf-8", errors="replace"),
        err_path.read_text(encoding="utf-8", errors="replace"),
        report,
        results,
    )
    table = os.environ.get("CHAOS_TABLE")
    if table:
        with open(table, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "behaviour": behaviour,
                        "args": args,
                        "seconds": run.seconds,
                        "peak_mb": run.peak_mb,
                        "exit": run.code,
                        "verdict": (results or {}).get("verdict", "unreachable"),
                        "failing": run.failing,
                    }
                )
                + "\n"
            )
    return run


def _assert_sound(run: Run, *, code: int) -> None:
    """The invariants of every chaos run."""
    where = f"{run.behaviour}: exit {run.code}\nstderr:\n{run.err[-2000:]}\nstdout:\n{run.out[-2000:]}"
    assert run.code != 4, where
    assert run.code == code, where
    assert run.seconds < WALL_BOUND_S, where
    assert run.peak_mb < RSS_BOUND_MB, f"{run.behaviour}: peak RSS {run.peak_mb} MB"
    assert "Traceback" not in run.err, where
    assert CANARY not in run.out + run.err, f"{run.behaviour}: key on the terminal"
    assert "\x1b" not in run.out + run.err, f"{run.behaviour}: a raw escape sequence reached the terminal"
    for path in run.report.parent.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"{run.behaviour}: key leaked into {path}"
    names = {"results.json", "summary.md", "junit.xml", "report.html"}
    if code == 3:
        assert run.results is None, "an unreachable target leaves no results"
        assert "chat-conformance: " in run.err
    else:
        assert run.report.is_dir() and names <= {p.name for p in run.report.iterdir()}, where
        assert run.results is not None and run.results["exit_code"] == run.code


@pytest.fixture
def chaos(reference: RunningServer, tmp_path: Path) -> Iterator[Any]:
    servers: list[Any] = []

    def start(behaviour: str, **kw: Any) -> ChaosServer:
        srv = ChaosServer(
            behaviour, upstream=reference.base_url, model=reference.model, tls_dir=tmp_path, **kw
        )
        servers.append(srv)
        return srv

    def run(behaviour: str, args: list[str], **kw: Any) -> tuple[ChaosServer, Run]:
        srv = start(behaviour, **kw)
        return srv, _run_cli(behaviour, srv.base_url, reference.model, tmp_path / "report", [*LIMITS, *args])

    run.start = start  # type: ignore[attr-defined]
    yield run
    for s in servers:
        s.stop()


# ---- the preflight cannot complete: exit 3, quickly, no reports -------------------------------------------


def test_never_answers_is_unreachable(chaos: Any) -> None:
    _, run = chaos("never-answer", CORE_ONLY)
    _assert_sound(run, code=3)
    assert "total deadline 3.0s exceeded" in run.err
    assert run.seconds < 15


def test_502_html_page_is_unreachable(chaos: Any) -> None:
    _, run = chaos("html-502", CORE_ONLY)
    _assert_sound(run, code=3)
    assert "HTTP 502" in run.err and "<html>" not in run.err


def test_429_flood_with_huge_retry_after_is_unreachable_at_once(chaos: Any) -> None:
    srv, run = chaos("flood-429", CORE_ONLY)
    _assert_sound(run, code=3)
    assert "HTTP 429" in run.err and srv.requests == 1  # no retry: Retry-After is far beyond the limit
    assert run.seconds < 15


def test_self_signed_tls_is_refused_unless_insecure(
    chaos: Any, reference: RunningServer, tmp_path: Path
) -> None:
    srv, run = chaos("tls-self-signed", CORE_ONLY)
    _assert_sound(run, code=3)
    assert "CERTIFICATE_VERIFY_FAILED" in run.err and srv.requests == 0
    ok = _run_cli(
        "tls-self-signed --insecure",
        srv.base_url,
        reference.model,
        tmp_path / "insecure",
        [*LIMITS, *CORE_ONLY, "--insecure"],
    )
    _assert_sound(ok, code=0)
    assert ok.results is not None and ok.results["verdict"].startswith("CONFORMANT")


# ---- the target answers, badly: exit 1 naming what it broke ----------------------------------------------


def test_stream_without_done(chaos: Any) -> None:
    _, run = chaos("no-done", STREAM_ONLY)
    _assert_sound(run, code=1)
    assert "STREAM-DONE-TERMINATES" in run.failing


def test_stream_reset_mid_stream(chaos: Any) -> None:
    _, run = chaos("reset-mid-stream", STREAM_ONLY)
    _assert_sound(run, code=1)
    assert "STREAM-DONE-TERMINATES" in run.failing
    assert "connection closed mid-stream" in json.dumps(run.results)


def test_stream_forever_is_cut_at_the_deadline(chaos: Any) -> None:
    _, run = chaos("stream-forever", STREAM_ONLY)
    _assert_sound(run, code=1)
    assert "STREAM-DONE-TERMINATES" in run.failing
    assert "total deadline 3.0s exceeded" in json.dumps(run.results)


def test_sse_event_over_the_event_cap(chaos: Any) -> None:
    _, run = chaos("huge-event", STREAM_ONLY)
    _assert_sound(run, code=1)
    assert "STREAM-DONE-TERMINATES" in run.failing
    assert "SSE event larger than" in json.dumps(run.results)


# A stream that never delivers a chunk after its status (stalled after its headers) is judged by the stream
# state machine: no [DONE] is a failure, never a skip. One whose status line never arrives (trickled slower
# than the deadline) was not answered at all: unanswered, never judged, and the run is INCOMPLETE
# (spec/DECISIONS.md#target-health).


def _stream_never_delivers(run: Run) -> None:
    assert run.code != 4 and run.seconds < WALL_BOUND_S and "Traceback" not in run.err
    assert CANARY not in run.out + run.err
    _assert_sound(run, code=1)
    assert "STREAM-DONE-TERMINATES" in run.failing


def test_stream_stalls_after_headers(chaos: Any) -> None:
    _, run = chaos("stall-after-headers", STREAM_ONLY)
    assert run.seconds < 30, "each stalled stream must end at the idle timeout"
    _stream_never_delivers(run)


def test_trickle_one_byte_per_second(chaos: Any) -> None:
    # --idle-timeout 2: each byte comes within the idle timeout, so only the total deadline (3 s, enforced
    # while the headers arrive too) ends each exchange
    _, run = chaos("trickle", [*STREAM_ONLY, "--idle-timeout", "2"])
    assert run.seconds < 30, "each trickled stream must end at the total deadline"
    assert run.code != 4 and "Traceback" not in run.err and CANARY not in run.out + run.err
    _assert_sound(run, code=5)
    assert run.failing == [] and run.results is not None
    assert run.results["verdict"].startswith("INCOMPLETE: 2 of 2 check(s) unanswered")
    assert "the target did not answer in time" in run.results["verdict"]
    reasons = [c["skip_reason"] for c in run.results["checks"] if c["outcome"] == "skipped"]
    assert reasons and all(r.startswith("inconclusive: no answer (timed out: total deadline 3.0s exceeded")
                           for r in reasons), reasons


def test_100_mb_body_in_bounded_memory(chaos: Any) -> None:
    _, run = chaos("huge-body", CORE_ONLY)
    _assert_sound(run, code=1)
    assert "CORE-REQUEST-JSON" in run.failing
    assert "response larger than" in json.dumps(run.results)


def test_200_text_that_is_not_json(chaos: Any) -> None:
    # not the API at all: the preflight says so in one line (exit 3), no report says NOT CONFORMANT
    _, run = chaos("text-200", CORE_ONLY)
    _assert_sound(run, code=3)
    assert "HTTP 200 text/plain, not JSON" in run.err


def test_200_html_page(chaos: Any) -> None:
    _, run = chaos("html-200", CORE_ONLY)
    _assert_sound(run, code=3)
    assert "(a web page)" in run.err and "It works!" not in run.err


def test_invalid_utf8_is_decoded_with_replacement(chaos: Any) -> None:
    # no requirement judges the encoding: the evidence shows U+FFFD where the bytes were invalid
    _, run = chaos("invalid-utf8", CORE_ONLY)
    assert run.code in (0, 1)
    _assert_sound(run, code=run.code)
    assert "\ufffd" in json.dumps(run.results, ensure_ascii=False)


def test_redirect_to_another_host_is_not_followed(chaos: Any) -> None:
    other = RecordingServer("127.0.0.2")
    try:
        srv, run = chaos("redirect", CORE_ONLY, redirect_to=f"http://127.0.0.2:{other.port}/v1")
        _assert_sound(run, code=1)
        assert "CORE-REQUEST-JSON" in run.failing
        assert srv.requests > 1 and all(srv.auth_seen)
        assert other.auth_seen == [], "the key must not reach another host (nothing follows redirects)"
    finally:
        other.stop()


def test_429_flood_after_the_preflight_is_not_waited_for(chaos: Any) -> None:
    # a 429 is "not now", never the target's answer to judge (spec/DECISIONS.md#rate-limits): no requirement
    # fails on it, and a run that could judge next to nothing is INCOMPLETE (exit 5), never CONFORMANT
    srv, run = chaos("flood-429-after-preflight", CORE_ONLY)
    _assert_sound(run, code=5)
    assert run.failing == []
    assert run.results is not None and run.results["cost"]["retries"] == 0
    assert run.results["verdict"].startswith("INCOMPLETE: ")
    assert "check(s) unanswered (HTTP 429/503 after the retries" in run.results["verdict"]
    reasons = [c["skip_reason"] for c in run.results["checks"]
               if c["outcome"] == "skipped" and c["exchanges"]]
    assert reasons and all("rate-limited after 0 retries (HTTP 429, Retry-After 99999999)" in r
                           for r in reasons)
    assert run.seconds < 30


def test_script_and_ansi_from_the_target_are_escaped(chaos: Any) -> None:
    # the target's only failure (a model name with markup) is a SHOULD: the gate is widened to see it fail
    _, run = chaos("script-ansi", [*CORE_ONLY, "--only", "tools", "--fail-on", "should"])
    _assert_sound(run, code=1)  # raw ESC on the terminal is checked there
    assert "CORE-MODEL-MATCHES" in run.failing
    assert "\\x1b[31mRED" in run.out  # shown, escaped
    html = (run.report / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(" not in html
    assert "&lt;script&gt;alert(" in html
    assert "\x1b" not in (run.report / "summary.md").read_text(encoding="utf-8")


def test_junit_stays_well_formed_with_control_characters(chaos: Any) -> None:
    _, run = chaos("script-ansi", [*CORE_ONLY, "--fail-on", "should"])
    assert run.code == 1
    ET.parse(run.report / "junit.xml")


# ---- Ctrl-C ----------------------------------------------------------------------------------------------


def test_ctrl_c_ends_the_run_with_an_interrupted_report(
    chaos: Any, reference: RunningServer, tmp_path: Path
) -> None:
    srv = chaos.start("slow")
    run = _run_cli(
        "slow + SIGINT",
        srv.base_url,
        reference.model,
        tmp_path / "report",
        [*LIMITS, "--skip-discovery"],
        sigint_after=lambda: srv.requests >= 4,
    )
    assert run.code == 130, run.err[-2000:]
    assert run.seconds < 20, "the way out after SIGINT"
    assert "Traceback" not in run.err and CANARY not in run.out + run.err
    assert run.results is not None
    assert run.results["interrupted"] is True
    assert run.results["verdict"].startswith("INTERRUPTED")
    assert {"results.json", "summary.md", "junit.xml", "report.html"} <= {
        p.name for p in run.report.iterdir()
    }
