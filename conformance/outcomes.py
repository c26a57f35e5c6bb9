"""What became of one request, typed: answered, timed out, connection failed, server error, throttled.

Pure (no I/O). Only an answered exchange is judged against a requirement about the answer; a request that was
not answered leaves its check unanswered (never pass, never fail), and a run of unhealthy outcomes is the
target's health, judged once (spec/DECISIONS.md#target-health).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RequestOutcome", "request_outcome", "unhealthy", "SUITE_SIDE"]


class RequestOutcome(StrEnum):
    ANSWERED = "answered"  # a status came back (2xx, 4xx, 501...): the target's answer, judged
    TIMED_OUT = "timed out"  # no status within the deadline or the idle timeout
    CONNECTION_FAILED = "connection failed"  # refused, reset or closed before the status
    SERVER_ERROR = "server error"  # 500, 502, 504, ...: answered, and judged by the error requirements
    THROTTLED = "throttled"  # 429 or 503: "not now" (spec/DECISIONS.md#rate-limits)
    NOT_SENT = "not sent"  # the suite could not build or send the request: never the target's doing


# transport errors of the suite's own making (the client's message prefixes): the request never left
SUITE_SIDE = ("invalid request:", "unsupported URL:")
_TIMEOUT_WORDS = ("timeout", "deadline", "timed out")


def request_outcome(status: int | None, transport_error: str | None = None) -> RequestOutcome:
    """The outcome of an exchange from its status and its transport error (the client's wording)."""
    if status is None:
        error = transport_error or ""
        if error.startswith(SUITE_SIDE):
            return RequestOutcome.NOT_SENT
        if any(w in error.lower() for w in _TIMEOUT_WORDS):
            return RequestOutcome.TIMED_OUT
        return RequestOutcome.CONNECTION_FAILED
    if status in (429, 503):
        return RequestOutcome.THROTTLED
    if 500 <= status <= 599 and status != 501:
        return RequestOutcome.SERVER_ERROR
    return RequestOutcome.ANSWERED


def unhealthy(status: int | None, transport_error: str | None = None) -> bool:
    """A sign that the target is not well: no answer, a server error, or an answer cut off mid-way (a stream
    reset or stalled after its status). A throttle (429/503) is the target keeping itself well: neither."""
    outcome = request_outcome(status, transport_error)
    if outcome in (RequestOutcome.TIMED_OUT, RequestOutcome.CONNECTION_FAILED, RequestOutcome.SERVER_ERROR):
        return True
    cut = any(w in (transport_error or "").lower() for w in ("closed", "reset", *_TIMEOUT_WORDS))
    return outcome is RequestOutcome.ANSWERED and cut and status is not None and status < 300
