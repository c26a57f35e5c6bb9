"""The run's latency and its timeline (issue 23, 8): figures in results.json from the exchanges the run made,
and report.html's timeline marking each exchange by outcome, escaped, capped, seen in a real browser."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx

from conformance.client import Client
from conformance.evidence import Exchange
from conformance.latency import TIMELINE_CAP, latency_of, outcome_of, percentile, timeline_of
from conformance.reports.html import render_html, write_html
from conformance.reports.schema import results_errors
from conformance.results import build_results
from conformance.target import Limits, Target

STARTED = 1767225600.0  # 2026-01-01T00:00:00Z
HOSTILE = "</title></svg><script>alert('tl')</script><img src=x onerror=alert(1)>"
TARGET = {"base_url": "http://127.0.0.1:8080/v1", "model": "m", "profile": "seed"}
COST = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}


def _ex(label: str, *, sent: float | None, status: int | None = 200, elapsed: float = 0.1,
        stream: bool = False, error: str | None = None, ttft: float | None = None,
        **kw: Any) -> dict[str, Any]:
    events = []
    if stream and ttft is not None:
        role = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}  # no token yet: not the first
        token = {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}
        events = [{"t": ttft / 2, "data": json.dumps(role), "event": "message", "id": None, "done": False,
                   "json": role, "json_error": None},
                  {"t": ttft, "data": json.dumps(token), "event": "message", "id": None, "done": False,
                   "json": token, "json_error": None},
                  {"t": elapsed, "data": "[DONE]", "event": "message", "id": None, "done": True, "json": None,
                   "json_error": None}]
    ex = Exchange(label=label, method="POST", url=TARGET["base_url"] + "/chat/completions",
                  request_headers={}, request_body="{}", stream=stream, status=status,
                  body_text=None if stream else "{}", ttfb=min(elapsed, 0.05), elapsed=elapsed,
                  transport_error=error, sent_at=None if sent is None else STARTED + sent).to_dict()
    ex["events"] = events
    ex.update(kw)
    return ex


def _record(name: str, exchanges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nodeid": f"conformance/checks/test_core.py::{name}", "requirements": ["CORE-OBJECT"],
            "outcome": "passed", "skip_reason": "", "error": "", "duration": 0.1, "judged": ["CORE-OBJECT"],
            "violations": [], "exchanges": exchanges}


def _collapse() -> list[dict[str, Any]]:
    """A target that answers, throws 500s, then refuses; one stream stalls; a 400 for an invalid request."""
    answered = [_ex(f"ok-{i}", sent=0.1 * i, elapsed=0.05 + 0.01 * i) for i in range(10)]
    streams = [_ex(f"stream-{i}", sent=1.0 + 0.1 * i, stream=True, ttft=0.02 * (i + 1), elapsed=0.3)
               for i in range(4)]
    rejected = [_ex("invalid-temperature", sent=1.5, status=400, elapsed=0.01)]
    errors = [_ex(f"crash-{i}", sent=2.0 + 0.1 * i, status=500, elapsed=0.02) for i in range(3)]
    timeouts = [_ex("stalled", sent=2.5, status=None, elapsed=5.0,
                    error="total deadline 5.0s exceeded (no response headers)"),
                _ex("stalled-stream", sent=2.6, status=200, stream=True, elapsed=5.0,
                    error="idle timeout: no data for 5.0s")]
    refused = [_ex(f"refused-{i}", sent=3.0 + 0.1 * i, status=None, elapsed=0.001,
                   error="connect failed: [Errno 111] Connection refused") for i in range(5)]
    refused.append(_ex("reset", sent=3.6, status=200, stream=True, elapsed=0.2,
                       error="connection closed mid-stream: peer reset"))
    return [_record("answers", answered + streams + rejected), _record("crash", errors + timeouts + refused)]


def _results(records: list[dict[str, Any]]) -> dict[str, Any]:
    return build_results(records, target=TARGET, profile="seed", level="may", started=STARTED,
                         finished=STARTED + 4.0, cost=COST, capabilities={})


def _svg(html: str) -> ET.Element:
    """The timeline's SVG, parsed as XML: well-formed only if every piece of target text was escaped."""
    m = re.search(r'<svg class="tl".*?</svg>', html, re.S)
    assert m, "no timeline in the report"
    return ET.fromstring(m.group(0))


# ---- the figures ----------------------------------------------------------------------------------------


def test_outcome_of_each_kind_of_ending() -> None:
    cases = {
        "answered": _ex("a", sent=0.0),
        "rejected": _ex("b", sent=0.0, status=422),
        "error": _ex("c", sent=0.0, status=503),
        "timed_out": _ex("d", sent=0.0, status=None, error="idle timeout: no data for 1s"),
        "connection_failed": _ex("e", sent=0.0, status=None, error="connect failed: [Errno 111] refused"),
        "not_sent": _ex("f", sent=0.0, status=None, error="invalid request: bad URL"),
    }
    assert {k: outcome_of(v) for k, v in cases.items()} == {k: k for k in cases}
    assert outcome_of(_ex("g", sent=0.0, status=429)) == "error"  # throttled: drawn with the server errors
    # a 200 stream that stalled or was cut mid-answer is not an answer on the timeline
    assert outcome_of(_ex("h", sent=0.0, stream=True, error="idle timeout: no data for 5.0s")) == "timed_out"
    assert outcome_of(_ex("i", sent=0.0, stream=True, error="connection closed mid-stream: x")) == \
        "connection_failed"
    assert outcome_of(_ex("j", sent=0.0, error="response larger than 1048576 bytes")) == "answered"


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0 and percentile(values, 95) == 19.0
    assert percentile(values, 100) == 20.0
    assert percentile([3.0], 95) == 3.0


def test_latency_of_times_only_answers_stream_and_non_stream_apart() -> None:
    records = _collapse()
    shared = records[0]["exchanges"][0]
    records.append(_record("shares-an-exchange", [shared]))  # the same exchange in two checks: counted once
    lat = latency_of(records)
    assert lat["outcomes"] == {"answered": 14, "rejected": 1, "error": 3, "timed_out": 2,
                               "connection_failed": 6, "not_sent": 0}
    assert lat["exchanges"] == 26
    ns, st = lat["non_stream"], lat["stream"]
    assert ns["answered"] == 10 and ns["total_s"] == {"n": 10, "p50": 0.09, "p95": 0.14, "max": 0.14}
    assert ns["ttft_s"]["p50"] == 0.05  # a non-stream answer's first token: its response headers
    # a stream's first token is its first event carrying text, not the role-only first event
    assert st["answered"] == 4 and st["ttft_s"] == {"n": 4, "p50": 0.04, "p95": 0.08, "max": 0.08}
    assert st["total_s"]["p95"] == 0.3  # the stalled stream (5 s, timed out) is counted, not timed


def test_results_json_carries_the_latency_and_older_results_stay_valid() -> None:
    res = _results(_collapse())
    assert res["latency"] == latency_of(_collapse())
    assert results_errors(res) == []
    older = {k: v for k, v in res.items() if k != "latency"}
    for r in older["checks"]:
        for ex in r["exchanges"]:
            ex.pop("sent_at")
    assert results_errors(older) == []
    html = render_html(older)  # an older results.json: figures from its exchanges, no timeline, said so
    assert 'data-kind="stream"' in html and "no timeline" in html and '<svg class="tl"' not in html
    broken = json.loads(json.dumps(res))
    broken["latency"]["stream"]["total_s"]["p50"] = -1
    assert results_errors(broken)
    other = json.loads(json.dumps(res))  # a latency of another version's shape: the report recomputes it
    del other["latency"]["outcomes"]["rejected"]
    assert "1 rejected (4xx)" in render_html(other)


def test_the_client_records_when_each_request_was_sent() -> None:
    import time

    target = Target("https://api.example.test/v1/", "m", api_key=None, limits=Limits())
    before = time.time()
    with Client(target, transport=httpx.MockTransport(lambda r: httpx.Response(200, json={}))) as c:
        first = c.chat({"model": "m", "messages": []})
        second = c.chat({"model": "m", "messages": []})
    assert first.sent_at is not None and second.sent_at is not None
    assert before <= first.sent_at <= second.sent_at <= time.time()


# ---- the timeline ---------------------------------------------------------------------------------------


def test_the_timeline_marks_every_exchange_by_its_outcome() -> None:
    html = render_html(_results(_collapse()))
    svg = _svg(html)
    marks = [el for el in svg.iter() if "mark" in el.get("class", "").split()]
    by_outcome: dict[str, int] = {}
    for el in marks:
        outcome = next(c[2:] for c in el.get("class", "").split() if c.startswith("o-"))
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    assert by_outcome == {"answered": 14, "rejected": 1, "error": 3, "timed_out": 2, "connection_failed": 6}
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "tl-title tl-desc"
    assert "Timeline of the run's exchanges" in (svg.findtext("title") or "")
    assert svg.findtext("desc") == ("26 exchanges: 14 answered (2xx), 1 rejected (4xx), 3 server error "
                                    "or throttled (5xx, 429), 2 timed out, 6 connection refused, reset or "
                                    "closed.")
    ttfts = [el for el in svg.iter() if "ttft" in el.get("class", "").split()]
    assert len(ttfts) == 4  # the answered streams
    # later sent, further right; longer, higher (SVG y grows downwards)
    xs = {el.findtext("title", "").split(" ")[0]: float(el.get("cx") or 0)
          for el in marks if el.tag == "circle"}
    assert xs["ok-0"] < xs["ok-9"] < xs["stream-3"]
    legend = html.split('<ul class="tl-legend">', 1)[1].split("</ul>", 1)[0]
    for outcome, n in by_outcome.items():
        assert re.search(rf'data-outcome="{outcome}">.*?<strong>{n}</strong>', legend, re.S), outcome


def test_target_text_cannot_inject_markup_into_the_timeline() -> None:
    records = _collapse()
    records[1]["exchanges"][0]["label"] = HOSTILE
    records[1]["exchanges"][-1]["transport_error"] = "connection closed mid-stream: " + HOSTILE
    html = render_html(_results(records))
    svg = _svg(html)  # parses: the hostile text closed no element
    titles = [el.findtext("title") or "" for el in svg.iter() if "mark" in el.get("class", "").split()]
    assert sum(HOSTILE in t for t in titles) == 2  # shown as text, in the marks' tooltips
    assert not any(el.tag.endswith(("script", "img")) for el in svg.iter())
    assert html.count("<script") == 1 and "<img" not in html  # the page's own script only


def test_a_huge_run_is_capped_but_keeps_every_exchange_that_went_wrong() -> None:
    many = [_ex(f"ok-{i}", sent=i * 0.001, elapsed=0.01) for i in range(TIMELINE_CAP + 1000)]
    bad = [_ex(f"refused-{i}", sent=5.0 + i * 0.01, status=None, elapsed=0.0, error="connect failed: refused")
           for i in range(7)]
    tl = timeline_of([_record("many", many + bad)], STARTED)
    drawn = tl["points"]
    assert len(drawn) == TIMELINE_CAP and tl["dated"] == TIMELINE_CAP + 1007
    assert sum(p["outcome"] == "connection_failed" for p in drawn) == 7
    assert [p["x"] for p in drawn] == sorted(p["x"] for p in drawn)
    html = render_html(_results([_record("many", many + bad)]))
    assert html.count('class="mark ') == TIMELINE_CAP
    assert f"{TIMELINE_CAP} of {TIMELINE_CAP + 1007} drawn" in html


def test_the_timeline_in_a_headless_browser(tmp_path: Path) -> None:
    """The SVG draws in a real browser: its marks have a size on screen, hostile text stays text, no page
    error."""
    from test_reports_html import open_in_browser  # tests/ is on sys.path (pytest's rootdir-less import)

    records = _collapse()
    records[1]["exchanges"][0]["label"] = HOSTILE
    page = write_html(_results(records), tmp_path / "report")
    browser = open_in_browser(page, tmp_path)
    try:
        boxes = json.loads(browser.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('svg.tl .mark'))"
            ".map(m => { const b = m.getBBox(); return [m.getAttribute('class'), b.width, b.height]; }))"))
        assert len(boxes) == 26 and all(w > 0 and h > 0 for _, w, h in boxes)
        width = browser.evaluate("document.querySelector('svg.tl').getBoundingClientRect().width")
        assert width > 600  # the timeline spans the card
        assert browser.evaluate("typeof window.alert_called") == "undefined"
        assert browser.evaluate("document.querySelectorAll('script').length") == 1
        browser.screenshot(tmp_path / "timeline.png")
        assert browser.errors() == []
    finally:
        browser.close()


def test_a_run_without_exchanges_says_so() -> None:
    html = render_html(_results([_record("none", [])]))
    assert "The run's checks made no exchange." in html and '<svg class="tl"' not in html
    assert _results([])["latency"]["stream"] == {"answered": 0, "ttft_s": None, "total_s": None}
