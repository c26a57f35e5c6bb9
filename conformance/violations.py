"""Typed failures: a violation names the requirement it breaks, where, what was expected and received."""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass, field
from typing import Any

from conformance.evidence import Exchange
from conformance.records import SkipKind

__all__ = ["Violation", "ViolationError", "Judge", "Inconclusive", "Unanswered", "Skipped"]

_MAX_SHOWN = 500


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + f"... ({len(text)} chars)"


@dataclass
class Violation:
    """One broken promise, with the evidence to act on it."""

    requirement: str
    message: str
    path: str = "$"
    expected: str = ""
    received: str = ""
    exchange: int | None = None  # index into the check's exchanges

    def __str__(self) -> str:
        return (
            f"[{self.requirement}] {self.message} at {self.path}: "
            f"expected {self.expected}, received {self.received}"
        )


class ViolationError(AssertionError):
    """Raised to stop a check at its first hard violation (pytest reports it as a failure)."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


class Inconclusive(Exception):
    """The check could not decide (e.g. the target's output gave nothing to judge); not a failure."""


class ServerError(Inconclusive):
    """A request of the check was answered with a server error (5xx) that does not stand yet: the check could
    not decide, and the engine runs it again (``engine.run.run_check``): a one-off (a gateway's 502, a
    restart) gets its answer on the next try; the same request answered 500 ``SERVER_ERROR_STANDS`` times
    stands (spec/DECISIONS.md, "A server error is asked twice")."""


# how many answers with a server error (500, 501, 505, ...) the same request needs before they stand as the
# target's answer: a random hiccup (a gateway failing 2% of requests) meets the same request three times in a
# row once in 2,500 such hiccups, an encoder that crashes on it every time (spec/DECISIONS.md, "A server error
# is asked twice"). A gateway's 502 and 504 never stand: they are not the endpoint's answer
SERVER_ERROR_STANDS = 3
# set by the engine while it runs a check again after a ServerError: how many times each request (method,
# url, body) was answered with a server error on the earlier tries
ASKED_BEFORE: contextvars.ContextVar[dict[tuple[str, str, str | None], int]] = contextvars.ContextVar(
    "conformance_asked_before", default={})  # noqa: B039 - never mutated: the engine sets a new dict


class Skipped(Exception):
    """The check judges nothing, for a reason known before it asks (an optional capability the target does
    not offer, a requirement the profile judges with another check): ``kind`` says which."""

    def __init__(self, reason: str, kind: SkipKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class Unanswered(Inconclusive):
    """A request still answered 429 or 503 after the client's retries (spec/DECISIONS.md#rate-limits): the
    target said "not now", not how it treats the request, so no check may judge it. The client raises it
    (the exchange is in the check's evidence already); the check is inconclusive with this reason."""

    def __init__(self, status: int, retries: int, retry_after: str | None, *, waited: bool = True) -> None:
        what = "rate-limited" if status == 429 else "overloaded"
        after = f", Retry-After {retry_after}" if retry_after is not None else ", no Retry-After"
        why = "" if waited else " (a Retry-After too long to wait for: not retried)"
        super().__init__(f"{what} after {retries} retries (HTTP {status}{after}){why}: the target did not "
                         "answer the request, so it is not judged")
        self.status = status
        self.retries = retries
        self.retry_after = retry_after


class NoAnswer(Unanswered):
    """A request the target did not answer at all: no status within the deadline, or the connection refused,
    reset or closed before it (spec/DECISIONS.md#target-health). Not how the target treats the request: the
    check is unanswered, never judged on it (a timeout is not a refusal, nor an acceptance)."""

    def __init__(self, outcome: str, error: str) -> None:
        Inconclusive.__init__(self, f"no answer ({outcome}: {error[:200]}): the target did not answer the "
                                    "request, so it is not judged")
        self.status = None  # type: ignore[assignment]
        self.retries = 0
        self.retry_after = None
        self.outcome = outcome


@dataclass
class Judge:
    """Collects violations for one check. ``check`` is soft (all are reported), ``require`` is hard."""

    requirements: tuple[str, ...] = ()
    violations: list[Violation] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    judged: set[str] = field(default_factory=set)
    # a check's judge (the engine's): a violation evidenced by a server error that does not stand yet raises
    # ServerError (the check is run again) instead of being recorded. Off for the run-wide judges
    asks_again: bool = False

    def _index(self, exchange: Exchange | None) -> int | None:
        if exchange is None:
            return None
        for i, ex in enumerate(self.exchanges):
            if ex is exchange:
                return i
        return None

    def _make(
        self,
        requirement: str,
        message: str,
        path: str,
        expected: Any,
        received: Any,
        exchange: Exchange | None,
    ) -> Violation:
        if self.asks_again and exchange is not None:
            # a finding whose evidence is a server error that does not stand yet is no finding: the check is
            # run again (spec/DECISIONS.md, "A server error is asked twice")
            ask_again_on_server_error(exchange, f"{message} (HTTP {exchange.status})")
        if self.requirements and requirement not in self.requirements:
            raise ValueError(
                f"check judges {requirement} but is not marked with it "
                f"(marked: {', '.join(self.requirements)})"
            )
        return Violation(requirement, message, path, _show(expected), _show(received), self._index(exchange))

    def wants(self, requirement: str) -> bool:
        """Whether this check is marked with ``requirement`` (shared judging code asks before judging)."""
        return not self.requirements or requirement in self.requirements

    def check(
        self,
        ok: bool,
        requirement: str,
        message: str,
        *,
        path: str = "$",
        expected: Any = "",
        received: Any = "",
        exchange: Exchange | None = None,
    ) -> bool:
        """Record a violation when ``ok`` is false; return ``ok``. The check goes on."""
        self.judged.add(requirement)
        if not ok:
            self.violations.append(self._make(requirement, message, path, expected, received, exchange))
        return ok

    def require(
        self,
        ok: bool,
        requirement: str,
        message: str,
        *,
        path: str = "$",
        expected: Any = "",
        received: Any = "",
        exchange: Exchange | None = None,
    ) -> None:
        """Like ``check``, but stop the check when ``ok`` is false."""
        if not self.check(ok, requirement, message, path=path, expected=expected, received=received,
                          exchange=exchange):
            raise ViolationError(self.violations[-1])

    def fail(self, requirement: str, message: str, **kw: Any) -> None:
        self.require(False, requirement, message, **kw)


def run_wide_record(requirement: str, violations: list[dict[str, Any]], exchanges: list[dict[str, Any]],
                    *, nodeid: str | None = None) -> dict[str, Any]:
    """The check record (results.json's ``checks`` item) of a requirement judged over the whole run: passed,
    or failed with ``violations`` whose ``exchange`` indexes ``exchanges``."""
    return {
        "nodeid": nodeid or f"run-wide::{requirement}",
        "requirements": [requirement],
        "outcome": "failed" if violations else "passed",
        "skip_reason": "",
        "error": "",
        "duration": 0.0,
        "judged": [requirement],
        "violations": violations,
        "exchanges": exchanges,
    }


def ask_again_on_server_error(ex: Exchange, said: str) -> None:
    """A request answered with a server error (500, 502, 504, ...; a 503 has had its retries) is no verdict
    until it stands: the check is run again (``ServerError``) and asks it again. The same request answered
    500 (501, 505, ...) ``SERVER_ERROR_STANDS`` times stands: this returns, and the caller judges it. A
    gateway's 502 or 504 never stands (not the endpoint's answer): the check ends inconclusive."""
    if ex.status is None or ex.status < 500 or ex.status == 503:
        return
    if ex.status in (502, 504):
        raise ServerError(said + " (a gateway's status, never judged as the endpoint's answer)")
    if ASKED_BEFORE.get().get((ex.method, ex.url, ex.request_body), 0) + 1 < SERVER_ERROR_STANDS:
        raise ServerError(said)
