"""The run's budget (requests, tokens) and its shared rate limit, across all pytest-xdist workers.

Every worker builds a ``Budget`` over the same state directory; the counters live in one JSON file there,
read and written under an exclusive ``fcntl.flock`` on a lock file beside it. The rate limit reserves
send slots in the same file (the next allowed ``time.monotonic()``, shared by all processes on the host)
and sleeps outside the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import BudgetExhausted

__all__ = ["Budget"]

_STATE = "budget.json"
_LOCK = "budget.lock"


class Budget:
    def __init__(self, state_dir: Path | str, *, max_requests: int | None = None,
                 max_tokens_total: int | None = None, rate_limit: float | None = None) -> None:
        if max_requests is not None and max_requests < 0:
            raise ValueError("max_requests must be >= 0")
        if max_tokens_total is not None and max_tokens_total < 0:
            raise ValueError("max_tokens_total must be >= 0")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 requests per second")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.max_requests = max_requests
        self.max_tokens_total = max_tokens_total
        self.rate_limit = rate_limit
        self._state_path = self.state_dir / _STATE
        self._lock_path = self.state_dir / _LOCK
        # with no limit to enforce there is nothing to share between workers: count in memory, and spare
        # every request a locked read and rewrite of the state file
        self.shared = any(x is not None for x in (max_requests, max_tokens_total, rate_limit))
        self._memory: dict[str, Any] = {"requests": 0, "tokens": 0, "retries": 0, "next_slot": 0.0}

    # ---- shared state -----------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        if not self.shared:
            yield self._memory
            return
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                state = self._read()
                before = dict(state)
                yield state
                if state != before:
                    self._write(state)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        state: dict[str, Any] = {"requests": 0, "tokens": 0, "retries": 0, "next_slot": 0.0}
        try:
            loaded = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return state
        if isinstance(loaded, dict):
            state.update(loaded)
        return state

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_name(f"{_STATE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_path)

    # ---- public API -------------------------------------------------------------------------------
    def acquire(self, *, retry: bool = False) -> None:
        """Take one request from the budget (call before every request, retries included) and wait for
        the shared rate limit. Raises ``BudgetExhausted`` when the request or token budget is spent."""
        wait = 0.0
        with self._locked() as state:
            why = self._why(state)
            if why is not None:
                raise BudgetExhausted(why)
            state["requests"] += 1
            if retry:
                state["retries"] += 1
            if self.rate_limit is not None:
                now = time.monotonic()
                slot = max(now, float(state["next_slot"]))
                state["next_slot"] = slot + 1.0 / self.rate_limit
                wait = slot - now
        if wait > 0:
            time.sleep(wait)

    def add_tokens(self, n: int) -> None:
        """Count tokens used by a finished request. Never raises: the request that crosses the token budget
        completes, and the next ``acquire`` raises ``BudgetExhausted``."""
        if n <= 0:
            return
        with self._locked() as state:
            state["tokens"] += int(n)

    @property
    def exhausted(self) -> str | None:
        """Why the next ``acquire`` would raise, or None."""
        return self._why(self.snapshot())

    def _why(self, state: dict[str, Any]) -> str | None:
        if self.max_tokens_total is not None and state["tokens"] >= self.max_tokens_total:
            return f"token budget of {self.max_tokens_total} exhausted (--max-tokens-total)"
        if self.max_requests is not None and state["requests"] >= self.max_requests:
            return f"request budget of {self.max_requests} exhausted (--max-requests)"
        return None

    def snapshot(self) -> dict[str, Any]:
        """Counters of the whole run so far: requests (retries included), tokens, retries, and the limits."""
        with self._locked() as state:
            return {"requests": state["requests"], "tokens": state["tokens"], "retries": state["retries"],
                    "max_requests": self.max_requests, "max_tokens_total": self.max_tokens_total,
                    "rate_limit": self.rate_limit}
