"""The progress line a run shows on stderr while it goes: phase, checks done of total, requests, elapsed.

``live`` redraws one line in place (a terminal); ``lines`` writes a plain line at each phase and every
``LINES_EVERY_S`` seconds (a CI log, where a redrawn line is one huge line). Written from a daemon thread;
stopped (and a live line wiped) before the run's summary is printed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "LINES_EVERY_S", "LIVE_EVERY_S"]

LINES_EVERY_S = 10.0
LIVE_EVERY_S = 0.5


class Progress:
    """``mode``: "live", "lines" or "off". ``requests`` is asked for the number of requests sent so far."""

    def __init__(self, mode: str, *, stream: TextIO | None = None, requests: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in ("live", "lines", "off"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.requests = requests
        self.clock = clock
        self.phase = "collecting the checks"
        self.done = 0
        self.total = 0
        self._started = clock()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._width = 0

    def line(self) -> str:
        elapsed = self.clock() - self._started
        checks = f"{self.done}/{self.total} checks, " if self.total else ""
        try:
            sent = int(self.requests())
        except Exception:  # noqa: BLE001 - a progress line never breaks a run
            sent = 0
        return f"chat-conformance: {self.phase}: {checks}{sent} requests, {elapsed:.0f} s"

    def start(self) -> None:
        if self.mode == "off" or self._thread is not None:
            return
        self._emit()
        self._thread = threading.Thread(target=self._loop, name="conformance-progress", daemon=True)
        self._thread.start()

    def set_phase(self, phase: str) -> None:
        if phase == self.phase:
            return
        self.phase = phase
        if self.mode == "lines" and self._thread is not None:
            self._emit()

    def check_done(self) -> None:
        with self._lock:
            self.done += 1

    def stop(self) -> None:
        """Stop the thread; a live line is wiped so that what follows starts on a clean line."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._thread = None
        if self.mode == "live" and self._width:
            self._write("\r" + " " * self._width + "\r")

    def _loop(self) -> None:
        every = LIVE_EVERY_S if self.mode == "live" else LINES_EVERY_S
        while not self._stop.wait(every):
            self._emit()

    def _emit(self) -> None:
        text = self.line()
        if self.mode == "live":
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self._write("\r" + text + " " * pad)
        else:
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        with self._lock:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed console: the run goes on without its progress line
                pass
