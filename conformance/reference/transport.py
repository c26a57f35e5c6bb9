"""Transport-level variants of the reference server (see :mod:`.variants`): what a conformant server, or the
gateway in front of it, does to the traffic itself.

* ``rate-limit-429``: a token bucket in front of every endpoint (``RATE_LIMIT_RPS`` requests per second,
  bursts of ``RATE_LIMIT_BURST``); an empty bucket answers 429 with ``Retry-After`` (whole seconds until a
  token is back, as RFC 9110 writes it) and OpenAI's rate-limit headers and error body.
* ``overloaded-503``: every ``OVERLOAD_EVERY``-th request is answered 503 with ``Retry-After:
  OVERLOAD_RETRY_AFTER`` (deterministic, so a run is reproducible).
* ``server-error-once``: now and then (every ``HICCUP_EVERY``-th request after the ``HICCUP_AFTER``-th) one
  request is answered with a server error, once: a gateway's 502 (HTML) and a worker's 500 (OpenAI's error
  body) in turn; asked again, it is answered (a restarted worker, a load balancer's bad node).
* ``slow-first-token``: the status line and headers at once, the first stream event after
  ``FIRST_TOKEN_DELAY_S``; every ``SLOW_ANSWER_EVERY``-th non-stream completion after the same delay (every
  one would make a run of ~110 completions two minutes longer and prove nothing more).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable

from starlette.responses import Response

__all__ = [
    "TokenBucket",
    "Traffic",
    "RATE_LIMIT_RPS",
    "RATE_LIMIT_BURST",
    "OVERLOAD_EVERY",
    "OVERLOAD_RETRY_AFTER",
    "FIRST_TOKEN_DELAY_S",
    "SLOW_ANSWER_EVERY",
    "HICCUP_AFTER",
    "HICCUP_EVERY",
]

RATE_LIMIT_RPS = 12.0
RATE_LIMIT_BURST = 12.0
OVERLOAD_EVERY = 10
OVERLOAD_RETRY_AFTER = 1
FIRST_TOKEN_DELAY_S = 1.0
SLOW_ANSWER_EVERY = 8
# collapse-seeded: more seeded requests than this in flight at once and the engine falls over for good (vLLM
# 0.32's CPU engine under concurrent seeded requests: "CPU Generator does not use offset", then nothing)
COLLAPSE_SEEDED_IN_FLIGHT = 2
# server-error-once: after the HICCUP_AFTER-th request, every HICCUP_EVERY-th request is answered once with a
# server error (a gateway's 502 and a worker's 500 in turn), the next request served as usual
HICCUP_AFTER = 40
HICCUP_EVERY = 53
# stall-mid-run: from the STALL_AFTER-th request on, every request waits until STALL_S seconds have passed
STALL_AFTER = 40
STALL_S = 30.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held; one token per request."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.at = clock()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """Take a token: None when one was there, else the seconds until one will be."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return None
            return (1.0 - self.tokens) / self.rate


def _error(status: int, message: str, err_type: str, code: str, headers: dict[str, str]) -> Response:
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


class Traffic:
    """The transport variants switched on for one server."""

    def __init__(self, variants: frozenset[str]) -> None:
        self.rate_limited = "rate-limit-429" in variants
        self.overloaded = "overloaded-503" in variants
        self.slow = "slow-first-token" in variants
        self.collapsing = "collapse-seeded" in variants
        self.stalling = "stall-mid-run" in variants
        self.hiccups = "server-error-once" in variants
        self.crashed = False
        self._seeded = 0
        self._stall_until: float | None = None
        self.bucket = TokenBucket(RATE_LIMIT_RPS, RATE_LIMIT_BURST)
        self._lock = threading.Lock()
        self._requests = 0
        self._answers = 0

    def refuse(self) -> Response | None:
        """The 429 or 503 answering a request before the server looks at it, or None to serve it (a crashed
        engine answers every request with a bare 500)."""
        with self._lock:
            self._requests += 1
            n = self._requests
            if self.stalling and n == STALL_AFTER:
                self._stall_until = time.monotonic() + STALL_S
        if self.crashed:
            return Response("Internal Server Error: CPU Generator does not use offset", status_code=500,
                            media_type="text/plain")
        if self.hiccups and n > HICCUP_AFTER and n % HICCUP_EVERY == 0:
            if (n // HICCUP_EVERY) % 2:
                page = ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
                        "Gateway</h1></center></body></html>")
                return Response(page, status_code=502, media_type="text/html")
            body = {"error": {"message": "The server had an error while processing your request. Sorry about "
                              "that!", "type": "server_error", "param": None, "code": None}}
            return Response(json.dumps(body), status_code=500, media_type="application/json")
        if self.overloaded and n % OVERLOAD_EVERY == 0:
            return _error(
                503,
                "The server is overloaded or not ready yet; retry after the time in Retry-After.",
                "server_error",
                "overloaded",
                {"Retry-After": str(OVERLOAD_RETRY_AFTER)},
            )
        if self.rate_limited:
            wait = self.bucket.take()
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                return _error(
                    429,
                    f"Rate limit reached: {RATE_LIMIT_RPS:g} requests per second. Please try again in "
                    f"{seconds}s.",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    {
                        "Retry-After": str(seconds),
                        "x-ratelimit-limit-requests": f"{RATE_LIMIT_RPS:g}",
                        "x-ratelimit-remaining-requests": "0",
                        "x-ratelimit-reset-requests": f"{wait:.3f}s",
                    },
                )
        return None

    def stall_s(self) -> float:
        """Seconds this request waits (stall-mid-run: the server stops answering for STALL_S seconds)."""
        until = self._stall_until
        return max(0.0, until - time.monotonic()) if until is not None else 0.0

    def enter(self, seeded: bool) -> None:
        """A request starts generating (collapse-seeded counts the seeded ones in flight)."""
        if not (self.collapsing and seeded):
            return
        with self._lock:
            self._seeded += 1
            if self._seeded > COLLAPSE_SEEDED_IN_FLIGHT:
                self.crashed = True

    def leave(self, seeded: bool) -> None:
        if not (self.collapsing and seeded):
            return
        with self._lock:
            self._seeded -= 1

    def first_token_delay(self) -> float:
        """Seconds before the first event of a stream."""
        return FIRST_TOKEN_DELAY_S if self.slow else 0.0

    def answer_delay(self) -> float:
        """Seconds before a non-stream completion."""
        if not self.slow:
            return 0.0
        with self._lock:
            self._answers += 1
            n = self._answers
        return FIRST_TOKEN_DELAY_S if n % SLOW_ANSWER_EVERY == 1 else 0.0
