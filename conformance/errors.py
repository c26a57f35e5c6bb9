"""The three kinds of outcome, kept apart: the target broke the contract, the user misused the suite,
the suite crashed."""

from __future__ import annotations

__all__ = ["UsageError", "TargetUnreachable", "BudgetExhausted", "SuiteError"]


class UsageError(Exception):
    """The user misused the suite. The message is one line and names the fix. Exit code 2."""


class TargetUnreachable(Exception):
    """The target could not be reached, or refused our credentials, before any check ran. Exit code 3."""


class BudgetExhausted(Exception):
    """The run's request or token budget is spent: the run stops cleanly and says so."""


class SuiteError(Exception):
    """An internal error of the suite itself (never blamed on the target). Exit code 4."""
