"""Chat-completions streaming rules above httpx-sse's decoder: incremental, bounded reading of a response.

``read_stream`` turns a streaming response into evidence (``SSEEvent`` list, comment count, transport error)
while enforcing the run's limits:

- idle timeout: the httpx read timeout of the request (the client sets it to ``limits.idle_timeout``, or
  less when the total deadline is nearer); a silence longer than that ends the read;
- total deadline: ``limits.total_timeout`` from ``start`` (a ``time.monotonic()`` value), checked after
  every chunk and enforced during a blocked read by a watchdog that shuts the socket down;
- byte caps: ``limits.max_bytes`` for the whole stream, ``limits.max_event_bytes`` per event.

Reading goes on after ``data: [DONE]`` until the server closes the stream, for at most a short grace
(``min(1 s, time left)``), so that events sent after [DONE] are captured as evidence.

Framing follows the WHATWG event-stream rules: lines end with CR, LF or CRLF; a blank line dispatches an
event; an event without any ``data`` field is not dispatched; ``id`` is per event here (``None`` when the
event has no ``id`` field); an event still open when the stream ends is discarded and reported in the
transport error. Bytes are decoded as UTF-8 with replacement characters: invalid input never crashes.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse._decoders import SSEDecoder

from .evidence import SSEEvent
from .target import Limits

__all__ = ["read_stream", "read_body", "parse_event_data", "ChunkReader", "DONE_GRACE", "CAPPED"]

# the transport errors of an answer cut at the suite's byte caps (a target that floods): the only place that
# knows their wording (the client marks such an exchange ``body_truncated``; nothing else reads the text)
CAPPED = ("response larger than", "SSE event larger than")
DONE_GRACE = 1.0  # seconds to keep reading after [DONE], bounded by the time left
# past this many bytes a response is read only while holding the client's ``big`` lock: with many requests
# in flight, at most one body grows towards the byte cap at a time (memory stays bounded by one cap)
BIG_BODY = 512 * 1024
_NEWLINE = re.compile(r"\r\n|\r|\n")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def parse_event_data(data: str) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, why it is not JSON). ``[DONE]`` gives (None, None). NaN/Infinity are
    rejected: they are not JSON."""
    if data == "[DONE]":
        return None, None
    try:
        return json.loads(data, parse_constant=_reject_constant), None
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        return None, str(e)


class SocketWatchdog:
    """Shuts a connection's socket down at a deadline, so that a blocked read returns at once. Re-armable;
    the socket may be learnt after arming (the client learns it from httpcore's trace hook)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._generation = 0
        self._active = True
        self.fired = False

    @classmethod
    def for_response(cls, response: httpx.Response) -> SocketWatchdog:
        stream = response.extensions.get("network_stream")
        sock = None
        if stream is not None and hasattr(stream, "get_extra_info"):
            try:
                sock = stream.get_extra_info("socket")
            except Exception:  # pragma: no cover - exotic transports
                sock = None
        return cls(sock if isinstance(sock, socket.socket) else None)

    @property
    def has_socket(self) -> bool:
        """Was a socket learnt (a new connection opened for this request)?"""
        with self._lock:
            return self._sock is not None

    def set_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock

    def arm(self, deadline: float) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._generation += 1
            gen = self._generation
            self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire, args=(gen,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, gen: int) -> None:
        with self._lock:
            if not self._active or gen != self._generation or self._sock is None:
                return
            self.fired = True
            try:
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def fire_now(self) -> None:
        """Shut the socket down now (the run is being stopped); the reader sees the connection end."""
        with self._lock:
            gen = self._generation
        self._fire(gen)

    def disarm(self) -> None:
        with self._lock:
            self._active = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class ChunkReader:
    """Iterates a response's (content-decoded) bytes incrementally under the limits.

    After iteration, ``error`` holds the transport error (None when the body ended normally or the
    [DONE] grace ran out), ``nbytes`` the bytes received and ``truncated`` whether the byte cap cut it.
    The caller closes the response.
    """

    def __init__(self, response: httpx.Response, *, start: float, limits: Limits,
                 big: threading.Lock | None = None) -> None:
        self.response = response
        self.big = big
        self._holds_big = False
        self.limits = limits
        self.deadline = start + limits.total_timeout
        self._stop_at = self.deadline
        self._grace = False
        self.error: str | None = None
        self.nbytes = 0
        self.truncated = False
        self._watchdog = SocketWatchdog.for_response(response)

    def start_grace(self, seconds: float = DONE_GRACE) -> None:
        """Read on for at most ``min(seconds, time left)`` more, then stop quietly."""
        if self._grace:
            return
        self._grace = True
        now = time.monotonic()
        self._stop_at = min(self.deadline, now + min(seconds, max(0.0, self.deadline - now)))
        self._watchdog.arm(self._stop_at)

    def _time_up(self) -> None:
        if not self._grace:
            self.error = f"total deadline {self.limits.total_timeout}s exceeded"

    def _read_timeout(self) -> float | None:
        timeout = self.response.request.extensions.get("timeout", {})
        value = timeout.get("read") if isinstance(timeout, dict) else None
        return float(value) if isinstance(value, int | float) else None

    def __iter__(self) -> Iterator[bytes]:
        cap = self.limits.max_bytes
        self._watchdog.arm(self._stop_at)
        it = self.response.iter_bytes()
        try:
            while True:
                if time.monotonic() >= self._stop_at:
                    self._time_up()
                    return
                try:
                    chunk = next(it)
                except StopIteration:
                    if self._watchdog.fired:
                        self._time_up()
                    return
                except httpx.ReadTimeout:
                    if self._watchdog.fired or time.monotonic() >= self._stop_at:
                        self._time_up()
                    else:
                        read = self._read_timeout()
                        idle = self.limits.idle_timeout if read is None else read
                        self.error = f"idle timeout: no data for {idle}s"
                    return
                except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                    if self._watchdog.fired:
                        self._time_up()
                    else:
                        self.error = f"connection closed mid-stream: {_describe(e)}"
                    return
                except httpx.DecodingError as e:
                    self.error = f"response decoding failed: {_describe(e)}"
                    return
                except (httpx.HTTPError, httpx.StreamError, OSError) as e:
                    if self._watchdog.fired:
                        self._time_up()
                    else:
                        self.error = f"transport error ({type(e).__name__}): {_describe(e)}"
                    return
                if not chunk:
                    continue
                if self.nbytes + len(chunk) > cap:
                    room = cap - self.nbytes
                    self.nbytes = cap
                    self.truncated = True
                    self.error = f"{CAPPED[0]} {cap} bytes"
                    if room > 0:
                        yield chunk[:room]
                    return
                self.nbytes += len(chunk)
                if self.big is not None and not self._holds_big and self.nbytes > BIG_BODY:
                    self._take_big()
                yield chunk
        finally:
            self._watchdog.disarm()
            if self._holds_big and self.big is not None:
                self._holds_big = False
                self.big.release()

    def _take_big(self) -> None:
        """Wait for the client's big-body lock; the wait is the suite's, not the target's: the deadline
        moves by it."""
        assert self.big is not None
        waited = time.monotonic()
        self._watchdog.disarm()
        self.big.acquire()
        self._holds_big = True
        waited = time.monotonic() - waited
        self.deadline += waited
        self._stop_at += waited
        self._watchdog = SocketWatchdog.for_response(self.response)
        self._watchdog.arm(self._stop_at)


def read_body(response: httpx.Response, *, start: float, limits: Limits,
              big: threading.Lock | None = None) -> tuple[str, bool, str | None]:
    """Read a non-stream body incrementally: (text decoded UTF-8 with replacement, truncated, error)."""
    reader = ChunkReader(response, start=start, limits=limits, big=big)
    parts = list(reader)
    return b"".join(parts).decode("utf-8", errors="replace"), reader.truncated, reader.error


class _EventParser:
    """Line splitting (CR, LF, CRLF) and per-event bookkeeping around httpx-sse's ``SSEDecoder``."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.decoder = SSEDecoder()
        self.buf = ""
        self.first = True
        self.comments = 0
        self.has_data = False
        self.event_id: str | None = None
        self.event_bytes = 0
        self.preview: str | None = None  # start of the open event's data, to describe a discarded event
        self.error: str | None = None

    def feed(self, text: str, *, final: bool = False) -> list[tuple[str, str, str | None]]:
        """Consume text; return dispatched events as (data, event type, id)."""
        if self.first and text:
            self.first = False
            if text.startswith("\ufeff"):
                text = text[1:]
        self.buf += text
        out: list[tuple[str, str, str | None]] = []
        pos = 0
        for m in _NEWLINE.finditer(self.buf):
            if m.group() == "\r" and m.end() == len(self.buf) and not final:
                break  # may be the first half of a CRLF split across chunks
            self._line(self.buf[pos : m.start()], out)
            pos = m.end()
            if self.error:
                return out
        self.buf = self.buf[pos:]
        if self.event_bytes + len(self.buf) > self.max_event_bytes:
            self.error = f"{CAPPED[1]} {self.max_event_bytes} bytes"
        if final and self.buf:
            tail, self.buf = self.buf, ""
            if tail.startswith(":"):
                self.comments += 1
            else:
                self._field(tail)
        return out

    def _field(self, line: str) -> None:
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            if not self.has_data:
                self.preview = value[:121]
            self.has_data = True
            self.event_bytes += len(value.encode("utf-8", errors="replace")) + 1
            if self.event_bytes - 1 > self.max_event_bytes:
                self.error = f"{CAPPED[1]} {self.max_event_bytes} bytes"
        elif name == "id" and "\0" not in value:
            self.event_id = value
        self.decoder.decode(line)

    def _line(self, line: str, out: list[tuple[str, str, str | None]]) -> None:
        if not line:
            sse = self.decoder.decode("")
            if sse is not None and self.has_data:
                out.append((sse.data, sse.event, self.event_id))
            self.has_data = False
            self.event_id = None
            self.event_bytes = 0
            self.preview = None
        elif line.startswith(":"):
            self.comments += 1
        else:
            self._field(line)

    def pending(self) -> str | None:
        """Data of an event left open at the end of the stream (None when there is none)."""
        return self.preview if self.has_data else None


def read_stream(
    response: httpx.Response, *, start: float, limits: Limits, raw_text: list[str] | None = None,
    big: threading.Lock | None = None,
) -> tuple[list[SSEEvent], int, str | None]:
    """Read an event stream incrementally: (events, comment lines, transport error or None).

    ``start`` is the ``time.monotonic()`` at which the request was sent; event times are relative to it.
    When ``raw_text`` is given, the decoded text is appended to it too (evidence for a stream that is not
    text/event-stream). The caller closes the response.
    """
    events: list[SSEEvent] = []
    parser = _EventParser(limits.max_event_bytes)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    reader = ChunkReader(response, start=start, limits=limits, big=big)
    error: str | None = None

    def take(dispatched: list[tuple[str, str, str | None]]) -> None:
        now = time.monotonic() - start
        for data, event, event_id in dispatched:
            parsed, why = parse_event_data(data)
            done = data == "[DONE]"
            events.append(SSEEvent(t=round(now, 6), data=data, event=event, id=event_id, done=done,
                                   json=parsed, json_error=why))
            if done:
                reader.start_grace()

    gen = iter(reader)
    try:
        for chunk in gen:
            text = decoder.decode(chunk)
            if raw_text is not None:
                raw_text.append(text)
            take(parser.feed(text))
            if parser.error:
                error = parser.error
                break
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()
    if error is None:
        tail = decoder.decode(b"", final=True)
        if raw_text is not None and tail:
            raw_text.append(tail)
        take(parser.feed(tail, final=True))
        error = parser.error or reader.error
        if error is None:
            pending = parser.pending()
            if pending is not None:
                shown = pending if len(pending) <= 120 else pending[:120] + "..."
                error = ("connection closed mid-event: last event not ended by a blank line, discarded "
                         f"(data: {shown!r})")
    return events, parser.comments, error
