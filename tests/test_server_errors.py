"""A server error is asked again before it is judged (issue 24: a 5xx to a valid request was only
Inconclusive, and 19 of the reference model's mutants that crash on some input survived through it; a
gateway's one-off 502 must never fail the gate). spec/DECISIONS.md, "A server error is asked twice".

Requirement ids: CORE-REQUEST-JSON (a valid request answered 500 on every ask, judged run-wide), ERROR-NO-5XX
(an invalid request answered 500 on every ask), and the engine's own rule (a check met by a server error that
does not stand is run again, never judged on it)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import check_context, fake_check, mock_completion

from conformance.checks._runwide import judge_run
from conformance.cli import main
from conformance.engine.run import CheckContext, run_check
from conformance.evidence import Exchange
from conformance.records import Outcome, SkipKind
from conformance.violations import ASKED_BEFORE, SERVER_ERROR_STANDS, Judge, ServerError

BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def _error(status: int) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": "boom", "type": "server_error", "param": None,
                                                  "code": None}})


class _Server:
    """Answers the n-th request (1-based) with ``statuses[n]`` when given, else a completion."""

    def __init__(self, statuses: dict[int, int] | None = None, always: int | None = None) -> None:
        self.statuses = statuses or {}
        self.always = always
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls += 1
            n = self.calls
        status = self.always or self.statuses.get(n)
        return _error(status) if status else mock_completion()


def _context(server: _Server) -> CheckContext:
    ctx = check_context(httpx.MockTransport(server))
    ctx.root.pause = lambda seconds: None  # no pause in a unit test
    return ctx


def _valid(client: Any, judge: Any) -> None:
    ex = client.chat(BODY)
    judge.check(ex.status == 200, "CORE-OBJECT", "the valid request was not answered", exchange=ex)


CHECK = fake_check("valid", _valid)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_one_off_server_error_is_asked_again_and_the_check_judges_the_answer(status: int) -> None:
    server = _Server({1: status})
    rec = run_check(CHECK, _context(server))
    assert rec is not None and rec.outcome is Outcome.PASSED, rec
    assert server.calls == 2
    assert [ex["status"] for ex in rec.exchanges] == [status, 200]  # both tries' evidence, in order
    assert rec.exchanges[1]["asked_again"] == rec.exchanges[0]["xid"]
    assert "asked_again" not in rec.exchanges[0]


def test_the_same_request_answered_500_on_every_ask_stands() -> None:
    server = _Server(always=500)
    rec = run_check(CHECK, _context(server))
    assert rec is not None and server.calls == SERVER_ERROR_STANDS == 3
    # the check's own finding stands on the last ask (it judged the 500), with every ask as evidence
    assert rec.outcome is Outcome.FAILED and rec.violations[0]["exchange"] == 2
    first = rec.exchanges[0]["xid"]
    assert [ex.get("asked_again") for ex in rec.exchanges] == [None, first, first]
    # the run-wide judge of CORE-REQUEST-JSON reads the chain
    [run_wide] = judge_run([rec.to_dict()], {"CORE-REQUEST-JSON"})
    assert run_wide["outcome"] == "failed"
    assert "answered with a server error each of the 3 times it was asked (HTTP 500, 500, 500" in (
        run_wide["violations"][0]["message"])


def test_a_gateways_502_never_stands_and_ends_inconclusive() -> None:
    server = _Server(always=502)
    rec = run_check(CHECK, _context(server))
    assert rec is not None and server.calls == 3
    assert rec.outcome is Outcome.SKIPPED and rec.skip_kind is SkipKind.INCONCLUSIVE
    assert "a gateway's status, never judged as the endpoint's answer" in rec.skip_reason
    assert judge_run([rec.to_dict()], {"CORE-REQUEST-JSON"}) == []  # 502 is not the endpoint's answer


def test_server_errors_on_different_requests_leave_the_check_inconclusive_not_failed() -> None:
    def two(client: Any, judge: Any) -> None:
        for i in range(2):
            ex = client.chat({**BODY, "messages": [{"role": "user", "content": str(i)}]})
            judge.check(ex.status == 200, "CORE-OBJECT", "not answered", exchange=ex)

    # try 1: request a -> 500; try 2: a -> 200, b -> 500; try 3: a -> 200, b -> 500 (b's second: no stand)
    server = _Server({1: 500, 3: 500, 5: 500})
    rec = run_check(fake_check("two", two), _context(server))
    assert rec is not None and server.calls == 5
    assert rec.outcome is Outcome.SKIPPED and rec.skip_kind is SkipKind.INCONCLUSIVE, rec
    assert "the check was run again after a server error, and met one again" in rec.skip_reason


def test_a_judge_raises_server_error_for_a_finding_on_a_5xx_that_does_not_stand() -> None:
    ex = Exchange(label="x", method="POST", url="u", request_headers={}, request_body="b", status=500)
    with pytest.raises(ServerError, match=r"not answered \(HTTP 500\)"):
        Judge(asks_again=True).check(False, "CORE-OBJECT", "not answered", exchange=ex)
    token = ASKED_BEFORE.set({("POST", "u", "b"): SERVER_ERROR_STANDS - 1})
    try:
        judge = Judge(asks_again=True)
        assert not judge.check(False, "CORE-OBJECT", "not answered", exchange=ex)  # it stands: judged
        assert len(judge.violations) == 1
    finally:
        ASKED_BEFORE.reset(token)
    run_wide = Judge()  # the run-wide judges judge what the run saw, once: never raise
    assert not run_wide.check(False, "ERROR-SHAPE", "bad shape", exchange=ex)


def _run(tmp_path: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "r"
    code = main(["run", "--embedded", "--report-dir", str(out), "--progress", "off", *flags])
    return code, json.loads((out / "results.json").read_text())


def test_a_valid_request_that_always_crashes_the_server_fails_core_request_json(tmp_path: Path) -> None:
    code, res = _run(tmp_path, "--fault", "non-ascii-prompt-500")
    assert code == 1
    by_id = {r["nodeid"]: r for r in res["checks"]}
    run_wide = by_id["run-wide::CORE-REQUEST-JSON"]
    assert run_wide["outcome"] == "failed"
    stream = by_id["test_streaming.py::test_stream_equals_nonstream"]
    assert stream["skip_kind"] == "inconclusive"
    assert "judged run-wide, CORE-REQUEST-JSON" in stream["skip_reason"]


def test_gateway_hiccups_fail_nothing(tmp_path: Path) -> None:
    """The variant server-error-once (also in the variant matrix), at the default concurrency: every check
    met by a hiccup is run again and judged."""
    code, res = _run(tmp_path, "--variant", "server-error-once")
    assert code == 0, [r["nodeid"] for r in res["checks"] if r["outcome"] == "failed"]
    hit = [r for r in res["checks"] if any((ex.get("status") or 0) >= 500 for ex in r["exchanges"])]
    assert hit, "the variant's hiccups met no check: the test proves nothing"
    again = [r for r in hit if any(ex.get("asked_again") for ex in r["exchanges"])]
    assert again and all(r["outcome"] in ("passed", "skipped") for r in hit)
