"""The target's health over a run: when it stops answering under the run's own load, said once.

Every exchange of the run's checks is observed in the order it completed (after the run, from the records:
``Health.of_run``; every process's under pytest-xdist). A **collapse** is a streak of
at least ``STREAK`` unhealthy exchanges in a row (no answer, a server error, an answer cut off mid-way:
:func:`conformance.outcomes.unhealthy`), from at least ``SCOPES`` different checks (one check's burst of
invalid requests answered 500 is that check's finding, not the target's health), ended by the next healthy
answer to a request sent after the first unhealthy one came back (the target came back: the run went on;
an answer to a request already in flight says nothing of that) or by the run's end. Throttles (429/503)
neither start nor end one. What a collapse makes unknowable is not judged: the plugin turns every check
that saw one of its exchanges into an unanswered one, and TARGET-AVAILABLE names the collapse with the last
good and the first bad exchange as evidence (spec/DECISIONS.md#target-health).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conformance.outcomes import RequestOutcome, request_outcome, unhealthy

if TYPE_CHECKING:
    from conformance.evidence import Exchange

__all__ = ["Health", "Collapse", "STREAK", "SCOPES", "REQUIREMENT"]

STREAK = 5
SCOPES = 3
REQUIREMENT = "TARGET-AVAILABLE"


@dataclass
class _Seen:
    exchange: Exchange
    scope: str
    bad: bool
    neutral: bool
    refused: bool  # a 5xx to a request the suite sent to be refused: part of a collapse it falls in, no sign
    at: float  # when it completed
    sent: float  # when it was sent (its completion less its elapsed time)
    # a 4xx: the target's front door answered (validation runs before any model): no sign that the engine
    # behind it is up, nor down. Neither ends a collapse nor counts as the last good answer before one
    front_door: bool = False


@dataclass
class Collapse:
    """One stretch of the run where the target did not answer."""

    bad: list[Any] = field(default_factory=list)  # the unhealthy exchanges, in completion order
    scopes: set[str] = field(default_factory=set)
    last_good: Any = None  # the last healthy exchange before it, if any
    recovered: Any = None  # the first healthy exchange after it, if the target came back
    started: float = 0.0
    ended: float = 0.0
    # 5xx answers to requests sent to be refused, between the last good answer and the next: the collapse's
    # too (their checks are not judged), though they neither start nor extend it
    swept: list[Any] = field(default_factory=list)

    @property
    def xids(self) -> set[str]:
        return {ex.xid for ex in (*self.bad, *self.swept)}

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for ex in self.bad:
            o = request_outcome(ex.status, ex.transport_error)
            what = f"HTTP {ex.status}" if o is RequestOutcome.SERVER_ERROR else (
                o.value if o is not RequestOutcome.ANSWERED else "cut off mid-answer")
            kinds[what] = kinds.get(what, 0) + 1
        said = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
        came_back = (f"it answered again {self.recovered_after():.0f} s later and the run went on"
                     if self.recovered is not None else "it did not answer again before the run ended")
        return (f"the target stopped answering under the run's own load: {len(self.bad)} requests in a row "
                f"from {len(self.scopes)} checks were not answered ({said}); {came_back}")

    def recovered_after(self) -> float:
        return max(0.0, self.ended - self.started)


class Health:
    """Observes the run's exchanges as they complete; :meth:`collapses` after the run."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._seen: list[_Seen] = []
        self._clock = clock

    def observe(self, ex: Exchange, scope: str | None, *, at: float | None = None) -> None:
        """``ex`` completed (now, or at ``at``), sent by the check ``scope``."""
        outcome = request_outcome(ex.status, ex.transport_error)
        now = self._clock() if at is None else at
        # a server error to a request the suite sent to be refused is the error requirements' finding
        # (ERROR-NO-5XX: some servers answer every invalid request 500): no sign of trouble, nor of health
        refused = outcome is RequestOutcome.SERVER_ERROR and ex.refusal_expected
        seen = _Seen(ex, scope or "", unhealthy(ex.status, ex.transport_error) and not refused,
                     refused or outcome in (RequestOutcome.THROTTLED, RequestOutcome.NOT_SENT), refused, now,
                     now - float(ex.elapsed or 0.0),
                     front_door=outcome is RequestOutcome.ANSWERED and ex.status is not None
                     and 400 <= ex.status < 500 and not ex.transport_error)
        with self._lock:
            self._seen.append(seen)

    @classmethod
    def of_run(cls, records: list[dict[str, Any]]) -> Health:
        """The health of a finished run, from the exchanges of its records (every process's, under
        pytest-xdist too), each once, in the order they completed (``sent_at`` + ``elapsed``; records written
        before ``sent_at`` keep the order they were recorded in)."""
        from conformance.evidence import Exchange

        first: dict[str, tuple[dict[str, Any], str]] = {}
        for r in records:
            if str(r.get("nodeid", "")).startswith("run-wide::"):
                continue
            for ex in r.get("exchanges", []):
                first.setdefault(str(ex.get("xid") or id(ex)), (ex, str(r.get("nodeid", ""))))

        def done(item: tuple[dict[str, Any], str]) -> float:
            ex = item[0]
            return float(ex.get("sent_at") or 0.0) + float(ex.get("elapsed") or 0.0)

        health = cls()
        for ex, scope in sorted(first.values(), key=done):
            health.observe(Exchange.from_dict(ex), scope, at=done((ex, scope)))
        return health

    def answered(self) -> int:
        with self._lock:
            return sum(not s.bad and not s.neutral for s in self._seen)

    def collapses(self) -> list[Collapse]:
        with self._lock:
            seen = list(self._seen)
        out: list[Collapse] = []
        last_good: Any = None
        last_good_at = float("-inf")
        run: list[_Seen] = []

        def close(recovered: _Seen | None) -> None:
            scopes = {s.scope for s in run}
            # sustained: the target also failed a request sent after the first failure showed. A burst of
            # quick 5xx to requests all sent before it (one server bug met by several checks at once, as
            # transformers serve's 500 on frequency_penalty < 0) is no collapse.
            sustained = any(s.sent >= run[0].at for s in run[1:])
            if len(run) >= STREAK and len(scopes) >= SCOPES and sustained:
                hi = recovered.at if recovered else float("inf")
                swept = [s.exchange for s in seen if s.refused and last_good_at < s.at < hi]
                out.append(Collapse(bad=[s.exchange for s in run], scopes=scopes, last_good=last_good,
                                    recovered=recovered.exchange if recovered else None,
                                    started=run[0].at, ended=recovered.at if recovered else run[-1].at,
                                    swept=swept))

        for s in seen:
            if s.neutral or s.front_door:
                continue
            if s.bad:
                run.append(s)
                continue
            if run and s.sent < run[0].at:
                # sent before the trouble showed (a request already in flight): no sign of a recovery
                continue
            if run:
                close(s)
                run = []
            last_good, last_good_at = s.exchange, s.at
        if run:
            close(None)
        return out


# ---- what a collapse does to a run's records (the front-ends' finish) ------------------------------------


HEALTH = "TARGET-AVAILABLE"


def not_judged_in_a_collapse(
    records: list[dict[str, Any]], collapses: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, records for the run-wide judges): a check that saw an exchange of a collapse (the target had
    stopped answering) is unanswered, whatever it found: the crash made its verdict unknowable, and is named
    once (TARGET-AVAILABLE). The run-wide judges never see those exchanges either."""
    from conformance.records import SkipKind, skip_kind_of

    if not collapses:
        return records, records
    bad: set[str] = set().union(*(c.xids for c in collapses))
    out: list[dict[str, Any]] = []
    for r in records:
        hit = [ex for ex in r.get("exchanges", []) if ex.get("xid") in bad]
        undecided = skip_kind_of(r) in (SkipKind.INCONCLUSIVE, SkipKind.UNANSWERED)
        if hit and (r["outcome"] in ("passed", "failed") or undecided):
            said = ", ".join(sorted({str(v["requirement"]) for v in r.get("violations", [])}))
            why = (f"inconclusive: no answer: the target stopped answering while this check ran ({HEALTH}): "
                   "not judged" + (f" (it would have failed {said})" if said else ""))
            r = {**r, "outcome": "skipped", "judged": [], "violations": [], "skip_reason": why,
                 "skip_kind": SkipKind.UNANSWERED.value}
        out.append(r)
    judged = [{**r, "exchanges": [ex for ex in r.get("exchanges", []) if ex.get("xid") not in bad]}
              for r in out]
    return out, judged


def availability_record(health: Any, collapses: list[Any], *, replay: bool = False) -> dict[str, Any]:
    """TARGET-AVAILABLE, judged on the whole run: failed once per collapse, with the last good and the first
    bad exchange (and the one that showed the target back) as evidence."""
    from conformance.records import SkipKind
    from conformance.violations import run_wide_record

    record = run_wide_record(HEALTH, [], [])
    if not collapses:
        if not health.answered():
            why = ("not recorded: no answer of this run's checks is in the recording" if replay
                   else "inconclusive: the target answered none of the run's requests")
            kind = SkipKind.NOT_RECORDED if replay else SkipKind.INCONCLUSIVE
            record.update(outcome="skipped", judged=[], skip_reason=why, skip_kind=kind.value)
        return record
    record["outcome"] = "failed"
    for c in collapses:
        evidence = [ex for ex in (c.last_good, c.bad[0], c.recovered) if ex is not None]
        first = len(record["exchanges"]) + (1 if c.last_good is not None else 0)
        record["exchanges"] += [ex.to_dict() for ex in evidence]
        record["violations"].append({
            "requirement": HEALTH, "message": c.describe(), "path": "$",
            "expected": "an answer to every request of the run (at most --concurrency in flight), or a "
                        "429/503 with Retry-After while overloaded",
            "received": f"{c.bad[0].label}: " + (f"HTTP {c.bad[0].status}" if c.bad[0].status is not None
                                                  else str(c.bad[0].transport_error)),
            "exchange": first,
        })
    return record
