"""The run's latency, from the exchanges it already made (no extra request): pure, no I/O.

- :func:`outcome_of` types one recorded exchange for the eye: ``answered`` (a 2xx answer, whole),
  ``rejected`` (a 4xx but 429: mostly the answers to the suite's deliberately invalid requests), ``error``
  (5xx, 429, or any other status: a server in trouble or throttling), ``timed_out`` (no answer, or no
  end of it, within the client's idle timeout or total deadline), ``connection_failed`` (refused, reset or
  closed under the request, before or during the answer) or ``not_sent`` (the suite could not build or send
  it: never the target's doing). conformance.outcomes types 429 and 503 apart, as throttled, for the
  verdicts; here they are drawn with the server errors. A 200 stream that stalled or was cut mid-answer is
  drawn as timed out or connection failed: the timeline shows what the target did, the verdicts judge what
  it said.
- :func:`latency_of` gives results.json's ``latency``: time to first token and total time, p50/p95/max,
  separately for stream and non-stream answers (answered exchanges only: a timeout or a refusal measures the
  client's limit, not the target), and how many exchanges ended each way.
- :func:`timeline_of` gives the points report.html draws: when each exchange was sent (seconds since the
  run's start), how long it took, its time to first token (streams), its outcome; at most ``cap`` of them.

Time to first token: for a stream, the arrival time of the first event whose delta carries generated text
(content, reasoning, a refusal or a tool call); for a non-stream answer, the time to its response headers
(the whole answer follows at once). Percentiles are nearest-rank (the value of a measured exchange, never an
interpolation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from conformance.evidence import exchange_key

__all__ = ["OUTCOMES", "outcome_of", "first_token_at", "latency_of", "timeline_of", "percentile",
           "TIMELINE_CAP"]

# the outcome classes, in the order the report lists them, with the words it uses
OUTCOMES = {
    "answered": "answered (2xx)",
    "rejected": "rejected (4xx)",
    "error": "server error or throttled (5xx, 429)",
    "timed_out": "timed out",
    "connection_failed": "connection refused, reset or closed",
    "not_sent": "not sent (the suite could not send it)",
}
TIMELINE_CAP = 2000  # points drawn at most: a huge run keeps its report small
_TIMEOUT_WORDS = ("timeout", "deadline", "timed out")
_SUITE_SIDE = ("invalid request:", "unsupported URL:")  # the client's words for a request that never left
_CONNECTION_WORDS = ("connect failed", "connection closed", "stale keep-alive", "transport error")
_TOKEN_KEYS = ("content", "reasoning_content", "reasoning", "refusal", "tool_calls")


def outcome_of(ex: dict[str, Any]) -> str:
    """One of :data:`OUTCOMES` for a recorded exchange (``Exchange.to_dict()``)."""
    error = str(ex.get("transport_error") or "")
    status = ex.get("status")
    if status is None and error.startswith(_SUITE_SIDE):
        return "not_sent"
    error = error.lower()
    if error and any(w in error for w in _TIMEOUT_WORDS):
        return "timed_out"  # no headers in time, or a stream that stalled mid-answer
    if status is None or (error and error.startswith(_CONNECTION_WORDS)):
        return "connection_failed"  # never answered, or cut under the answer (a reset mid-stream)
    if isinstance(status, int) and 200 <= status < 300:
        return "answered"  # a size limit met (byte cap) is still an answer: it is judged on its size
    if isinstance(status, int) and 400 <= status < 500 and status != 429:
        return "rejected"  # mostly the answers to the suite's deliberately invalid requests: expected
    return "error"


def first_token_at(ex: dict[str, Any]) -> float | None:
    """Seconds from sending to the first token: the first stream event carrying generated text, or a
    non-stream answer's response headers. None when there was none."""
    if not ex.get("stream"):
        ttfb = ex.get("ttfb")
        return float(ttfb) if isinstance(ttfb, (int, float)) else None
    for ev in ex.get("events") or []:
        payload = ev.get("json")
        if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
            continue
        for choice in payload["choices"]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and any(delta.get(k) for k in _TOKEN_KEYS):
                t = ev.get("t")
                return float(t) if isinstance(t, (int, float)) else None
    return None


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of non-empty ``values`` (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _figures(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "p50": round(percentile(values, 50), 4),
            "p95": round(percentile(values, 95), 4), "max": round(max(values), 4)}


def _unique(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each exchange of ``records`` once (a shared exchange sits in the evidence of several checks)."""
    seen: set[str] = set()
    for r in records:
        for ex in r.get("exchanges") or []:
            key = exchange_key(ex)
            if key not in seen:
                seen.add(key)
                yield ex


def latency_of(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """results.json's ``latency``: outcome counts of every exchange in ``records`` (each once), and the time
    to first token and total time of the answered ones, stream and non-stream apart."""
    outcomes = dict.fromkeys(OUTCOMES, 0)
    ttft: dict[str, list[float]] = {"stream": [], "non_stream": []}
    total: dict[str, list[float]] = {"stream": [], "non_stream": []}
    for ex in _unique(records):
        outcome = outcome_of(ex)
        outcomes[outcome] += 1
        if outcome != "answered":
            continue
        kind = "stream" if ex.get("stream") else "non_stream"
        elapsed = ex.get("elapsed")
        if isinstance(elapsed, (int, float)):
            total[kind].append(float(elapsed))
        first = first_token_at(ex)
        if first is not None:
            ttft[kind].append(first)
    return {
        "exchanges": sum(outcomes.values()),
        "outcomes": outcomes,
        **{kind: {"answered": len(total[kind]), "ttft_s": _figures(ttft[kind]),
                  "total_s": _figures(total[kind])} for kind in ("stream", "non_stream")},
    }


def _sample(points: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most ``most`` of ``points``, evenly spread over them (their order kept)."""
    if len(points) <= most:
        return points
    if most <= 0:
        return []
    step = len(points) / most
    return [points[int(i * step)] for i in range(most)]


def timeline_of(records: Iterable[dict[str, Any]], started: float | None,
                cap: int = TIMELINE_CAP) -> dict[str, Any]:
    """The points of the report's timeline: each exchange of ``records`` once that recorded when it was
    sent (``sent_at``, Unix time), at ``x`` seconds since the run's start ``started`` (or since the first
    exchange, when that came earlier), with ``y`` its total time, ``ttft`` its time to first token (streams)
    and its outcome. Past ``cap`` points, the answered ones are sampled evenly and the others (the rare ones,
    the ones that show a collapse) are kept, sampled only if they alone exceed half the cap. ``counts``:
    every exchange per outcome, drawn or not; ``undated``: exchanges without ``sent_at`` (older results)."""
    points: list[dict[str, Any]] = []
    counts = dict.fromkeys(OUTCOMES, 0)
    undated = 0
    for ex in _unique(records):
        outcome = outcome_of(ex)
        counts[outcome] += 1
        sent = ex.get("sent_at")
        if not isinstance(sent, (int, float)):
            undated += 1
            continue
        elapsed = ex.get("elapsed")
        points.append({
            "sent": float(sent),
            "y": float(elapsed) if isinstance(elapsed, (int, float)) else 0.0,
            "ttft": first_token_at(ex) if ex.get("stream") and outcome == "answered" else None,
            "outcome": outcome,
            "label": str(ex.get("label") or ""),
            "status": ex.get("status"),
            "stream": bool(ex.get("stream")),
            "error": str(ex.get("transport_error") or ""),
        })
    points.sort(key=lambda p: p["sent"])
    known = [v for v in (started, points[0]["sent"] if points else None) if v is not None]
    origin = min(known) if known else 0.0
    for p in points:
        p["x"] = round(p.pop("sent") - origin, 6)
    dated = len(points)
    if dated > cap:
        rare = [p for p in points if p["outcome"] != "answered"]
        rare = _sample(rare, max(cap // 2, cap - (dated - len(rare))))
        answered = _sample([p for p in points if p["outcome"] == "answered"], cap - len(rare))
        points = sorted(rare + answered, key=lambda p: p["x"])
    return {"points": points, "counts": counts, "dated": dated, "undated": undated}
