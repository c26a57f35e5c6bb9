"""Issue 23, points 1-2: typed request outcomes, and a target that falls over named once, never blamed on
unrelated requirements (spec/DECISIONS.md#target-health)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.evidence import Exchange
from conformance.health import SCOPES, STREAK, Health
from conformance.health import availability_record as _availability_record
from conformance.health import not_judged_in_a_collapse as _not_judged_in_a_collapse
from conformance.outcomes import RequestOutcome, request_outcome, unhealthy


@pytest.mark.parametrize(
    "status, error, outcome",
    [
        (200, None, RequestOutcome.ANSWERED),
        (400, None, RequestOutcome.ANSWERED),
        (501, None, RequestOutcome.ANSWERED),
        (500, None, RequestOutcome.SERVER_ERROR),
        (502, None, RequestOutcome.SERVER_ERROR),
        (429, None, RequestOutcome.THROTTLED),
        (503, None, RequestOutcome.THROTTLED),
        (None, "idle timeout: no data for 20.0s (no response headers)", RequestOutcome.TIMED_OUT),
        (None, "total deadline 60.0s exceeded (no response headers)", RequestOutcome.TIMED_OUT),
        (None, "connect failed: [Errno 111] Connection refused", RequestOutcome.CONNECTION_FAILED),
        (None, "connection closed before response headers: reset", RequestOutcome.CONNECTION_FAILED),
        (None, "invalid request: header value", RequestOutcome.NOT_SENT),
    ],
)
def test_request_outcomes_are_typed(status: int | None, error: str | None, outcome: RequestOutcome) -> None:
    assert request_outcome(status, error) is outcome


def test_what_counts_as_unhealthy() -> None:
    assert unhealthy(None, "idle timeout: no data for 20.0s (no response headers)")
    assert unhealthy(500) and not unhealthy(503) and not unhealthy(429) and not unhealthy(400)
    assert unhealthy(200, "connection closed mid-stream")  # an answer cut off mid-way
    assert not unhealthy(200, "response larger than 8 MB")  # a flood is the answer's own finding


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ex(status: int | None, label: str = "x", elapsed: float = 0.1) -> Exchange:
    return Exchange(label=label, method="POST", url="http://t/v1/chat/completions", request_headers={},
                    status=status, transport_error=None if status is not None else "idle timeout: no data",
                    elapsed=elapsed)


def _observe(health: Health, clock: _Clock, items: list[tuple[int | None, str]], step: float = 1.0) -> None:
    for status, scope in items:
        clock.now += step
        health.observe(_ex(status, scope), scope)


def test_a_streak_from_several_checks_is_a_collapse_and_a_recovery_ends_it() -> None:
    clock = _Clock()
    h = Health(clock)
    _observe(h, clock, [(200, "a"), (200, "b")])
    _observe(h, clock, [(None if i % 2 else 500, f"c{i % SCOPES}") for i in range(STREAK)])
    _observe(h, clock, [(429, "d"), (200, "e")])  # a throttle is neither; then an answer: the target is back
    [c] = h.collapses()
    assert len(c.bad) == STREAK and len(c.scopes) == SCOPES
    assert c.last_good is not None and c.last_good.label == "b" and c.recovered.label == "e"
    assert "it answered again" in c.describe()


def test_one_checks_burst_of_500_is_no_collapse() -> None:
    clock = _Clock()
    h = Health(clock)
    _observe(h, clock, [(200, "a"), *[(500, "generated-invalid")] * (STREAK + 3), (200, "b")])
    assert h.collapses() == []


def test_an_answer_already_in_flight_is_no_recovery() -> None:
    clock = _Clock()
    h = Health(clock)
    _observe(h, clock, [(200, "a"), (500, "b"), (500, "c")])
    clock.now += 1
    h.observe(_ex(200, "slow", elapsed=30.0), "slow")  # sent 30 s ago, long before the trouble
    _observe(h, clock, [(500, "d"), (None, "e"), (500, "f")])
    [c] = h.collapses()
    assert len(c.bad) == 5 and c.recovered is None
    assert "did not answer again" in c.describe()


def _record(nodeid: str, reqs: list[str], outcome: str, xids: list[str], **kw: Any) -> dict[str, Any]:
    return {"nodeid": nodeid, "requirements": reqs, "outcome": outcome, "skip_reason": kw.get("skip", ""),
            "error": "", "duration": 0.0, "judged": reqs if outcome in ("passed", "failed") else [],
            "violations": kw.get("violations", []), "exchanges": [{"xid": x} for x in xids]}


def test_a_check_that_saw_the_collapse_is_unanswered_whatever_it_found() -> None:
    clock = _Clock()
    h = Health(clock)
    good = _ex(200, "good")
    h.observe(good, "good")
    bad = []
    for i in range(STREAK):
        clock.now += 1
        bad.append(_ex(500, f"check{i}"))
        h.observe(bad[-1], f"check{i}")
    collapses = h.collapses()
    failing = _record("t::fails", ["AUTH-MISSING-KEY"], "failed", [bad[0].xid],
                      violations=[{"requirement": "AUTH-MISSING-KEY", "message": "500"}])
    passing = _record("t::passes", ["AUTH-NOTHING-GENERATED"], "passed", [bad[1].xid])
    undecided = _record("t::inconclusive", ["USAGE-PRESENT"], "skipped", [bad[2].xid],
                        skip="inconclusive: no usage")
    unrelated = _record("t::fine", ["CORE-OBJECT"], "passed", [good.xid])
    records, judged = _not_judged_in_a_collapse([failing, passing, undecided, unrelated], collapses)
    for r in records[:3]:
        assert r["outcome"] == "skipped" and r["violations"] == [] and r["judged"] == []
        assert r["skip_reason"].startswith("inconclusive: no answer: the target stopped answering")
    assert "it would have failed AUTH-MISSING-KEY" in records[0]["skip_reason"]
    assert records[3] == unrelated
    assert [len(r["exchanges"]) for r in judged] == [0, 0, 0, 1]  # the run-wide judges never see them
    finding = _availability_record(h, collapses)
    assert finding["outcome"] == "failed" and finding["judged"] == ["TARGET-AVAILABLE"]
    [v] = finding["violations"]
    assert v["requirement"] == "TARGET-AVAILABLE" and "5 requests in a row from 5 checks" in v["message"]
    labels = [ex["label"] for ex in finding["exchanges"]]
    assert labels == ["good", "check0"] and finding["exchanges"][v["exchange"]]["label"] == "check0"


def test_a_healthy_run_keeps_target_available(tmp_path: Path) -> None:
    assert main(["run", "--only", "core", "--progress", "off", "--report-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["requirements"]["TARGET-AVAILABLE"]["verdict"] == "pass"


def test_a_target_that_collapses_is_named_once_and_nothing_else_is_misjudged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vLLM's CPU engine fell over under concurrent seeded requests; main reported 29 unrelated MUST failures
    and no word of a crash. --ttft puts requests in flight side by side (the embedded server is fast)."""
    code = main(["run", "--variant", "collapse-seeded", "--ttft", "0.5", "--progress", "off",
                 "--report-dir", str(tmp_path)])
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    failing = {k for k, r in results["requirements"].items() if r["verdict"] in ("fail", "error")}
    assert failing == {"TARGET-AVAILABLE"}, failing
    assert code == 5 and results["verdict"].startswith(
        "INCOMPLETE: the target stopped answering under the run's load (TARGET-AVAILABLE)")
    assert "CPU Generator does not use offset" in json.dumps(results["checks"][-1])  # the first bad answer
    assert out.splitlines()[-1].startswith("chat-conformance: INCOMPLETE: the target stopped answering")


def test_a_target_that_stalls_and_comes_back_is_named_and_the_run_goes_on(tmp_path: Path) -> None:
    """30 s without an answer from the 40th request on (--ttft: many in flight; --idle-timeout 5 ends each
    stalled request): the stall is named once, the run goes on after it, nothing else is misjudged."""
    code = main(["run", "--variant", "stall-mid-run", "--ttft", "0.3", "--idle-timeout", "5",
                 "--progress", "off", "--report-dir", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    failing = {k for k, r in results["requirements"].items() if r["verdict"] in ("fail", "error")}
    assert failing <= {"TARGET-AVAILABLE"}, failing
    finding = results["requirements"]["TARGET-AVAILABLE"]
    assert finding["verdict"] == "fail" and "it answered again" in finding["reason"], finding
    assert code in (0, 5)
    # the run went on after the stall: checks sent wholly after the target answered again passed; the engine
    # ran fewer checks at once while requests went unanswered, so the stall did not eat the run
    back = next(c for c in results["checks"] if c["nodeid"] == "run-wide::TARGET-AVAILABLE")["exchanges"][-1]
    judged_after = [c for c in results["checks"] if c["outcome"] == "passed" and c["exchanges"]
                    and min(e.get("sent_at") or 0 for e in c["exchanges"]) >= back["sent_at"]]
    assert len(judged_after) > 40, len(judged_after)
    unanswered = [c for c in results["checks"] if c.get("skip_kind") == "unanswered"]
    assert len(unanswered) < 60, len(unanswered)
    assert any("lowered the requests in flight to 1 (of at most 32)" in n for n in results["notes"]), \
        results["notes"]


def test_server_errors_to_requests_sent_to_be_refused_are_no_collapse() -> None:
    """transformers serve answers many invalid requests 500; run many at once, they came one after another
    from several checks and read as a collapse (a false TARGET-AVAILABLE). A 5xx to a request the suite sent
    to be refused is ERROR-NO-5XX's finding: it neither starts nor ends a collapse. The same 5xx to requests
    the target should have answered still is one."""
    def ex(i: int, status: int, refusal: bool) -> dict[str, Any]:
        e = Exchange(label=f"r{i}", method="POST", url="u", request_headers={}, status=status, elapsed=0.01,
                     sent_at=1000.0 + i, refusal_expected=refusal)
        return e.to_dict()

    refused = [{"nodeid": f"c{i}", "exchanges": [ex(i, 500, True)]} for i in range(8)]
    assert Health.of_run(refused).collapses() == []
    assert "refusal_expected" not in ex(0, 500, False)  # said only where true
    crashed = [{"nodeid": f"c{i}", "exchanges": [ex(i, 500, False)]} for i in range(8)]
    assert len(Health.of_run(crashed).collapses()) == 1
    # inside a collapse (from the last good answer on) a refused request's 5xx is the collapse's: not judged
    mixed = [{"nodeid": "ok", "exchanges": [ex(-1, 200, False)]},
             {"nodeid": "inv", "exchanges": [ex(0, 500, True)]}, *crashed[1:]]
    (collapse,) = Health.of_run(mixed).collapses()
    assert [e.label for e in collapse.swept] == ["r0"] and len(collapse.bad) == 7


def test_a_burst_of_5xx_all_sent_before_the_first_came_back_is_no_collapse() -> None:
    """transformers serve answers frequency_penalty < 0 with 500: five checks asking at once got five quick
    500s in a row (a false TARGET-AVAILABLE, 1 run in 4). A collapse is sustained: the target also fails a
    request sent after the first failure showed."""
    def ex(i: int, sent: float, status: int = 500) -> dict[str, Any]:
        return Exchange(label=f"r{i}", method="POST", url="u", request_headers={}, status=status,
                        elapsed=0.05, sent_at=sent).to_dict()

    burst = [{"nodeid": f"c{i}", "exchanges": [ex(i, 1000.0 + i / 1000)]} for i in range(6)]
    assert Health.of_run(burst).collapses() == []
    sustained = [*burst, {"nodeid": "late", "exchanges": [ex(9, 1000.5)]}]
    assert len(Health.of_run(sustained).collapses()) == 1


def test_a_4xx_amid_a_collapse_neither_ends_it_nor_hides_the_refused_5xx_before_it() -> None:
    """A crashed engine behind a live front door (vLLM: validation answers 400 while generation is dead):
    collapse-seeded's run judged ERROR-SHAPE and ERROR-CONTENT-TYPE on a refused request's bare 500 that came
    just before a 400 (1 run in 3 in CI). A 4xx says nothing of the engine: it is not the last good answer
    before a collapse, nor a recovery."""
    def ex(i: int, status: int, refusal: bool = False) -> dict[str, Any]:
        return Exchange(label=f"r{i}", method="POST", url="u", request_headers={}, status=status,
                        elapsed=0.01, sent_at=1000.0 + i, refusal_expected=refusal).to_dict()

    run = [{"nodeid": "ok", "exchanges": [ex(0, 200)]},
           {"nodeid": "inv", "exchanges": [ex(1, 500, refusal=True)]},
           {"nodeid": "val", "exchanges": [ex(2, 400, refusal=True)]},
           *({"nodeid": f"c{i}", "exchanges": [ex(i, 500)]} for i in range(3, 6)),
           {"nodeid": "val2", "exchanges": [ex(6, 400, refusal=True)]},
           *({"nodeid": f"d{i}", "exchanges": [ex(i, 500)]} for i in range(7, 10))]
    (collapse,) = Health.of_run(run).collapses()
    assert [e.label for e in collapse.swept] == ["r1"]
    assert len(collapse.bad) == 6 and collapse.recovered is None
    assert collapse.last_good is not None and collapse.last_good.label == "r0"
