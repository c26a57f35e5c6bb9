"""A check's outcome as data (layer 1, no I/O): what the engine hands every front-end and writer.

A check ends in one ``Outcome``; a skipped one says why as a ``SkipKind`` (typed, set where the skip is
raised) and a reason in words. results.json keeps its schema: a record's dict has the keys it always had,
plus ``skip_kind``; ``skip_kind_of`` reads the kind of a record written before the field existed from its
reason's first words, the only place that wording is parsed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.StrEnum):
    PASSED = "passed"  # every requirement the check judged was kept
    FAILED = "failed"  # a violation naming a requirement: the target broke the contract
    SKIPPED = "skipped"  # nothing judged: the kind says why (SkipKind)
    ERROR = "error"  # the suite's own fault (a crash in a check): never blamed on the target


class SkipKind(enum.StrEnum):
    UNSUPPORTED = "unsupported"  # an optional capability the target does not offer
    INCONCLUSIVE = "inconclusive"  # the answers could not decide
    UNANSWERED = "unanswered"  # 429/503 after the retries, or no answer at all: never judged
    BUDGET = "budget"  # not run: the run's budget was spent
    NOT_RECORDED = "not-recorded"  # a replay: the recording lacks a request
    NOT_APPLICABLE = "not-applicable"  # the profile judges another requirement instead
    INTERRUPTED = "interrupted"  # the run was stopped while the check ran

    @property
    def sent(self) -> bool:
        """Whether a check skipped this way may have sent requests (those that did not: never asked)."""
        return self not in (SkipKind.UNSUPPORTED, SkipKind.BUDGET, SkipKind.NOT_RECORDED)


_PREFIXES = (
    ("inconclusive: rate-limited after", SkipKind.UNANSWERED),
    ("inconclusive: overloaded after", SkipKind.UNANSWERED),
    ("inconclusive: no answer", SkipKind.UNANSWERED),
    ("inconclusive", SkipKind.INCONCLUSIVE),
    ("unsupported", SkipKind.UNSUPPORTED),
    ("not run: budget exhausted", SkipKind.BUDGET),
    ("not recorded", SkipKind.NOT_RECORDED),
    ("interrupted", SkipKind.INTERRUPTED),
)


def skip_kind_of(record: dict[str, Any]) -> SkipKind | None:
    """The kind of a skipped record: its ``skip_kind``, or (a results.json written before the field) read
    from the first words of its reason. None for a record that was not skipped."""
    if record.get("outcome") != Outcome.SKIPPED.value:
        return None
    kind = record.get("skip_kind")
    if kind:
        try:
            return SkipKind(kind)
        except ValueError:
            pass
    reason = str(record.get("skip_reason", ""))
    for prefix, k in _PREFIXES:
        if reason.startswith(prefix):
            return k
    return SkipKind.NOT_APPLICABLE


@dataclass
class CheckRecord:
    """One check, run once: its outcome and everything it saw (the exchanges as dicts, the evidence)."""

    nodeid: str
    requirements: list[str]
    outcome: Outcome
    skip_kind: SkipKind | None = None
    skip_reason: str = ""
    error: str = ""
    duration: float = 0.0
    judged: list[str] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record as results.json holds it (``spec/results.schema.json``)."""
        out: dict[str, Any] = {
            "nodeid": self.nodeid,
            "requirements": list(self.requirements),
            "outcome": self.outcome.value,
            "skip_reason": self.skip_reason,
            "error": self.error,
            "duration": round(self.duration, 4),
            "judged": sorted(self.judged),
            "violations": self.violations,
            "exchanges": self.exchanges,
        }
        if self.skip_kind is not None:
            out["skip_kind"] = self.skip_kind.value
        return out
