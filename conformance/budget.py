"""The run's budget (requests, tokens) and its shared pace, across all pytest-xdist workers.

Every worker builds a ``Budget`` over the same state directory; the counters live in one JSON file there,
read and written under an exclusive ``fcntl.flock`` on a lock file beside it. The rate limit reserves
send slots in the same file (the next allowed ``time.monotonic()``, shared by all processes on the host)
and sleeps outside the lock.

The target slows the run down too (spec/DECISIONS.md#rate-limits): a 429 or 503 with a Retry-After the
client waits for holds every request of the run until then (``throttled``), and a 429 halves the run's
pace (the interval between two sends doubles, from ``MIN_INTERVAL`` up to ``MAX_INTERVAL``); every answer
that is not a 429 or 503 (``answered``) shortens the interval by ``RECOVERY`` again, never under
``LIMIT_MARGIN`` times the interval that drew the last such 429 (the pace known to be too fast: without that
memory the run sped up into the same wall over and over, each time costing retries), nor under
``MIN_INTERVAL`` (a 429 drawn at a free pace: the run was too fast, by how much is unknown), for
``LIMIT_MEMORY_S`` after it; then on until it falls under ``FREE_INTERVAL`` and the pace is free. That state
lives in its own file, created by the first throttle: until then a run pays one ``stat`` per request for it.
It also counts the run's answers since (``throttled`` returns the count): a request refused again after others
were answered lost its turn in the run's own crowd (``Client`` does not count that retry against
``max_retries``).
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import BudgetExhausted
from .files import write_atomic

__all__ = ["Budget"]

_STATE = "budget.json"
_LOCK = "budget.lock"
_PACE = "pace.json"

MIN_INTERVAL = 0.05  # seconds between two sends after the first 429 (20 requests per second)
MAX_INTERVAL = 2.0  # the slowest pace a run of 429s can bring the run to
RECOVERY = 0.97  # the interval after each answer that is not a 429/503 (about halved after 23 answers)
FREE_INTERVAL = 0.01  # below it (100 requests per second) the pace is free again
LIMIT_MARGIN = 1.25  # answers speed the pace up to this much slower than the pace that drew the last 429...
LIMIT_MEMORY_S = 30.0  # ...for this long after it (then on to free again)


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
        self._pace_path = self.state_dir / _PACE
        # with no limit to enforce there is nothing to share between workers: count in memory, and spare
        # every request a locked read and rewrite of the state file
        self.shared = any(x is not None for x in (max_requests, max_tokens_total, rate_limit))
        self._memory: dict[str, Any] = {"requests": 0, "tokens": 0, "retries": 0, "next_slot": 0.0}
        # the threads of one process (--concurrency) take this lock before the file lock of all processes
        self._thread_lock = threading.RLock()

    # ---- shared state -----------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with self._thread_lock:
            if not self.shared:
                yield self._memory
                return
            with self._file_lock():
                state = self._read()
                before = dict(state)
                yield state
                if state != before:
                    self._write(state)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
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
        write_atomic(self._state_path, json.dumps(state))

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
        wait = max(wait, self._pace_slot())
        while wait > 0:
            time.sleep(wait)
            wait = self._pace_slot(held_only=True)  # a throttle that came while it waited holds it too

    # ---- the pace the target asks for ------------------------------------------------------------
    @contextmanager
    def _pace(self, *, create: bool = False) -> Iterator[dict[str, Any] | None]:
        """The shared pace under the lock; None when no throttle was seen yet (and not ``create``)."""
        if not create and not self._pace_path.exists():
            yield None
            return
        with self._thread_lock, open(self._lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = {"interval": 0.0, "next_slot": 0.0, "hold_until": 0.0, "throttled": 0,
                                         "limit": 0.0, "limit_at": 0.0, "answers": 0}
                try:
                    loaded = json.loads(self._pace_path.read_text())
                    if isinstance(loaded, dict):
                        state.update(loaded)
                except (OSError, ValueError):
                    pass
                before = dict(state)
                yield state
                if state != before or not self._pace_path.exists():
                    write_atomic(self._pace_path, json.dumps(state))
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _pace_slot(self, *, held_only: bool = False) -> float:
        """Reserve the next send slot of the shared pace: the seconds to wait before sending. ``held_only``
        (after waiting for a slot): only when a throttle has come since and holds the run still, else 0;
        without it the requests that had reserved their slots before a 429 were all sent into the same wall
        during its hold."""
        with self._pace() as state:
            if state is None:
                return 0.0
            now = time.monotonic()
            if held_only and float(state["hold_until"]) <= now:
                return 0.0
            slot = max(now, float(state["next_slot"]), float(state["hold_until"]))
            state["next_slot"] = slot + float(state["interval"])
            return slot - now

    def throttled(self, status: int, wait: float | None) -> int:
        """The target answered ``status`` (429 or 503) and the client waits ``wait`` seconds before its
        retry (None: the Retry-After is too long to wait for, nothing changes). Every request of the run is
        held until then; a 429 not inside a hold already (another worker's throttle) also halves the pace.
        Returns the answers (not a 429/503) the run got since its first throttle, in every worker (0 when
        ``wait`` is None): a request refused again after others were answered lost its turn in the run's own
        crowd (``Client``'s retries)."""
        if wait is None:
            return 0
        with self._pace(create=True) as state:
            assert state is not None
            now = time.monotonic()
            held = float(state["hold_until"]) > now
            state["hold_until"] = max(float(state["hold_until"]), now + max(0.0, wait))
            state["throttled"] += 1
            if status == 429 and not held:
                state["limit"] = float(state["interval"])  # this pace was too fast
                state["limit_at"] = now
                state["interval"] = min(MAX_INTERVAL, max(MIN_INTERVAL, 2.0 * float(state["interval"])))
            return int(state["answers"])

    def answered(self) -> None:
        """An answer that was not a 429/503: the pace speeds up again, a little."""
        with self._pace() as state:
            if state is None:
                return
            state["answers"] = int(state["answers"]) + 1
            if not state["interval"]:
                return
            interval = float(state["interval"]) * RECOVERY
            if time.monotonic() - float(state["limit_at"]) < LIMIT_MEMORY_S:
                # never free while a 429 is remembered: a 429 drawn at a free pace says the run was too fast,
                # not how fast it was, so it starts again at MIN_INTERVAL at the fastest
                interval = max(interval, MIN_INTERVAL, LIMIT_MARGIN * float(state["limit"]))
            state["interval"] = interval if interval >= FREE_INTERVAL else 0.0

    @property
    def pace(self) -> dict[str, Any]:
        """The shared pace: interval between sends (s), throttles seen, seconds of hold left."""
        with self._pace() as state:
            if state is None:
                return {"interval": 0.0, "throttled": 0, "hold_left": 0.0}
            return {"interval": float(state["interval"]), "throttled": int(state["throttled"]),
                    "hold_left": max(0.0, float(state["hold_until"]) - time.monotonic())}

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
