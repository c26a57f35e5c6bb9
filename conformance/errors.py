"""The three kinds of outcome, kept apart: the target broke the contract, the user misused the suite,
the suite crashed."""

from __future__ import annotations

__all__ = ["UsageError", "TargetUnreachable", "BudgetExhausted", "SuiteError", "TIME_LIMIT", "stop_cause"]

# what can stop a run before its end (spec/DECISIONS.md#partial-runs): Ctrl-C, SIGTERM, --max-duration. The
# CLI raises a KeyboardInterrupt naming its cause in the main thread; Python's own names none (Ctrl-C)
TIME_LIMIT = "max-duration"
_STOP_CAUSES = ("SIGINT", "SIGTERM", TIME_LIMIT)


def stop_cause(exc: BaseException) -> str:
    """What stopped the run: the cause a ``KeyboardInterrupt`` names (``SIGTERM``, ``max-duration``), else
    ``SIGINT`` (Ctrl-C, Python's own KeyboardInterrupt)."""
    cause = str(exc.args[0]) if exc.args else ""
    return cause if cause in _STOP_CAUSES else "SIGINT"


class UsageError(Exception):
    """The user misused the suite. The message is one line and names the fix. Exit code 2."""


class TargetUnreachable(Exception):
    """The target could not be reached, or refused our credentials, before any check ran. Exit code 3."""


class BudgetExhausted(Exception):
    """The run's request or token budget is spent: the run stops cleanly and says so."""


class SuiteError(Exception):
    """An internal error of the suite itself (never blamed on the target). Exit code 4."""
