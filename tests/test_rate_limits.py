"""Rate limits, overload and unanswered requests (spec/DECISIONS.md#rate-limits, issue 13).

The reference server's transport variants (a token-bucket 429, a now-and-then 503, a slow first token),
what the engine does with a "not now" (never judged; the run says how many checks it left undecided), a
stream that never got its status line, and the measure the issue asks for: a rate-limited run judges at
least 95% of what an unlimited run judges.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from conformance.checks._stream import judge_stream
from conformance.cli import main
from conformance.evidence import Exchange
from conformance.reference.app import create_app
from conformance.reference.server import start_in_thread
from conformance.reference.transport import (
    FIRST_TOKEN_DELAY_S,
    OVERLOAD_EVERY,
    RATE_LIMIT_BURST,
    RATE_LIMIT_RPS,
    TokenBucket,
)
from conformance.results import UNANSWERED_SHARE, _unanswered_gate, cost_of
from conformance.violations import Inconclusive, Judge

KEY = "sk-transport-test"
HDRS = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "reference-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


# ---- the reference server's transport variants ----------------------------------------------------------


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [None, None, None]
    assert bucket.take() == pytest.approx(0.5)  # empty: half a second until the next token
    now[0] += 0.5
    assert bucket.take() is None
    now[0] += 100.0
    assert [bucket.take() is None for _ in range(4)] == [True, True, True, False]  # never more than burst


def test_rate_limit_429_on_both_endpoints() -> None:
    app = create_app(api_key=KEY, variants=["rate-limit-429"])
    bucket = app.state.reference.traffic.bucket
    frozen = bucket.at
    bucket.clock = lambda: frozen  # no refill while the test runs
    with TestClient(app) as c:
        burst = [c.post("/v1/chat/completions", json=BODY, headers=HDRS)
                 for _ in range(int(RATE_LIMIT_BURST))]
        assert {r.status_code for r in burst} == {200}
        limited = c.post("/v1/chat/completions", json=BODY, headers=HDRS)
        models = c.get("/v1/models", headers=HDRS)
    for r in (limited, models):
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1  # whole seconds (RFC 9110 delay-seconds)
        assert r.headers["x-ratelimit-limit-requests"] == f"{RATE_LIMIT_RPS:g}"
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
        assert err["param"] is None and "Rate limit reached" in err["message"]


def test_overloaded_503_every_nth_request() -> None:
    app = create_app(api_key=KEY, variants=["overloaded-503"])
    with TestClient(app) as c:
        statuses = [c.post("/v1/chat/completions", json=BODY, headers=HDRS)
                    for _ in range(2 * OVERLOAD_EVERY)]
    refused = [i + 1 for i, r in enumerate(statuses) if r.status_code == 503]
    assert refused == [OVERLOAD_EVERY, 2 * OVERLOAD_EVERY]
    r = statuses[OVERLOAD_EVERY - 1]
    assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "server_error"


def test_slow_first_token_sends_headers_at_once() -> None:
    srv = start_in_thread(api_key=KEY, variants=["slow-first-token"])
    try:
        url = srv.base_url + "/chat/completions"
        with httpx.Client(timeout=10) as c:
            t0 = time.monotonic()
            with c.stream("POST", url, json={**BODY, "stream": True}, headers=HDRS) as r:
                headers_at = time.monotonic() - t0
                first = next(r.iter_lines())
                first_at = time.monotonic() - t0
            assert r.status_code == 200 and first.startswith("data: ")
            assert headers_at < FIRST_TOKEN_DELAY_S / 2 <= FIRST_TOKEN_DELAY_S * 0.9 <= first_at
            t0 = time.monotonic()
            slow = c.post(url, json=BODY, headers=HDRS)  # the first non-stream answer of the server
            assert slow.status_code == 200 and time.monotonic() - t0 >= FIRST_TOKEN_DELAY_S * 0.9
    finally:
        srv.stop()


# ---- a stream that never got its status line --------------------------------------------------------------


def _no_status(error: str) -> Exchange:
    return Exchange(label="s", method="POST", url="u", request_headers={}, stream=True, status=None,
                    transport_error=error)


STREAM_REQS = ("STREAM-CONTENT-TYPE", "STREAM-DONE-TERMINATES", "STREAM-CHOICE-INDEX", "STREAM-CHUNK-JSON")


@pytest.mark.parametrize("error", [
    "connection closed before response headers: Server disconnected without sending a response.",
    "connect failed: [Errno 111] Connection refused",
    "idle timeout: no data for 20.0s (no response headers)",
])
def test_a_stream_without_status_line_is_not_judged(error: str) -> None:
    judge = Judge(requirements=STREAM_REQS)
    ex = _no_status(error)
    judge.exchanges.append(ex)
    with pytest.raises(Inconclusive, match="the stream never got a status line"):
        judge_stream(judge, ex, n=2)
    assert not judge.violations and not judge.judged  # no Content-Type '' failure, no missing index


def test_a_stream_past_the_total_deadline_fails_only_its_end() -> None:
    """Bounded time: a stream that did not complete within --timeout fails STREAM-DONE-TERMINATES, as the
    chaos targets demand (tests/test_chaos.py, trickle), and nothing else is judged."""
    judge = Judge(requirements=STREAM_REQS)
    ex = _no_status("total deadline 3.0s exceeded (no response headers)")
    judge.exchanges.append(ex)
    judge_stream(judge, ex, n=2)
    assert [v.requirement for v in judge.violations] == ["STREAM-DONE-TERMINATES"]
    assert judge.judged == {"STREAM-DONE-TERMINATES"}
    assert "total deadline 3.0s exceeded" in judge.violations[0].received
    other = Judge(requirements=("STREAM-CONTENT-TYPE",))
    with pytest.raises(Inconclusive):
        judge_stream(other, ex)


# ---- what the run says about unanswered checks ------------------------------------------------------------


def _record(i: int, skip: str = "") -> dict[str, Any]:
    return {"nodeid": f"t{i}", "outcome": "skipped" if skip else "passed", "skip_reason": skip,
            "requirements": [], "exchanges": []}


def test_unanswered_checks_are_said_and_too_many_make_the_run_incomplete() -> None:
    limited = "inconclusive: rate-limited after 2 retries (HTTP 429, Retry-After 1): ..."
    few = [_record(i) for i in range(40)] + [_record(40, limited)]
    code, verdict = _unanswered_gate(few, 0, "CONFORMANT")
    assert code == 0 and verdict == (
        "CONFORMANT; 1 of 41 check(s) unanswered (HTTP 429/503 after the retries, no answer, or a collapse "
        "of the target: not judged)")
    many = [_record(i) for i in range(10)] + [_record(10 + i, limited) for i in range(3)]
    assert 3 > UNANSWERED_SHARE * 13
    code, verdict = _unanswered_gate(many, 0, "CONFORMANT")
    assert code == 5 and verdict.startswith("INCOMPLETE: 3 of 13 check(s) unanswered")
    assert "CONFORMANT" not in verdict  # a partial run never says it (spec/DECISIONS.md#partial-runs)
    code, verdict = _unanswered_gate(many, 1, "NOT CONFORMANT: 1 MUST requirement(s) failed")
    assert code == 1 and verdict.startswith("NOT CONFORMANT") and "3 of 13 check(s) unanswered" in verdict
    unsupported = [_record(i, "unsupported: tools") for i in range(50)]
    run_wide = [{**_record(i), "nodeid": f"run-wide::R{i}"} for i in range(50)]
    assert _unanswered_gate(many + unsupported + run_wide, 0, "CONFORMANT")[0] == 5  # none of them ran
    assert _unanswered_gate([_record(0)], 0, "CONFORMANT") == (0, "CONFORMANT")


def test_a_retried_exchange_costs_its_attempts_once() -> None:
    """A retried exchange is 1 + retries requests, counted once even when several checks judge it."""
    usage = '{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    ex = {"xid": "a1", "url": "u", "request_body": "{}", "ttfb": 0.1, "elapsed": 0.2, "label": "shared",
          "retries": 2, "stream": False, "body_text": usage}
    records = [{"exchanges": [ex]}, {"exchanges": [dict(ex)]}, {"exchanges": [{**ex, "xid": "b2"}]}]
    assert cost_of(records) == {"requests": 6, "retries": 4, "prompt_tokens": 6, "completion_tokens": 8}


# ---- the measure of issue 13: a rate-limited run judges >= 95% of an unlimited one -----------------------


def _judged(report: Path, *args: str) -> tuple[int, dict[str, Any], set[str]]:
    code = main(["run", "--report-dir", str(report), *args])
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    reqs = results["requirements"]
    return code, results, {k for k, v in reqs.items() if v["verdict"] in ("pass", "fail", "informational")}


def test_a_rate_limited_run_judges_at_least_95_percent(tmp_path: Path) -> None:
    clean_code, _, clean = _judged(tmp_path / "clean")
    # at 0.3 s to the first token, as a slow machine made it in the clean-clone CI of stop 19 (a run sending
    # slower than the limiter for a while, then its requests in flight all at once): 18 checks unanswered
    # after 213 retries before the pace remembered a 429 drawn at a free pace and held the requests waiting
    # for their slots; about 15 retries after
    code, results, limited = _judged(tmp_path / "limited", "--variant", "rate-limit-429", "--ttft", "0.3")
    assert clean_code == 0 and code == 0, results["verdict"]
    assert results["cost"]["retries"] > 0, "the rate limiter did not bite: nothing was measured"
    assert results["cost"]["retries"] <= 60, results["cost"]  # the pace settles: no burst after burst
    ratio = len(limited) / len(clean)
    assert ratio >= 0.95, f"judged {len(limited)} of {len(clean)}: {sorted(clean - limited)}"
