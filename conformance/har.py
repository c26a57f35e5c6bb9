"""Record and replay: a run's exchanges as HAR 1.2, and an httpx transport that answers from such a file.

``build_har`` turns the exchanges of a run (already masked and scrubbed by the recording client: the key is
never in them) into a HAR 1.2 log; a stream's response content is its raw event text, rebuilt from the
decoded events (comments dropped). An exchange that got no response is an entry with ``response.status`` 0
and ``_error``. ``log._conformance`` holds what a replay needs: base URL, model, profile, the run's options.

``ReplayTransport`` answers each request with the recorded response of the same method, URL path (and query)
and body: the n-th identical request gets the n-th recorded answer. It never opens a connection. A request
the recording lacks raises ``NotRecorded`` (an ``Inconclusive``): the check that sent it is not judged,
never failed.

Layer 2 (engine): imports layer 1 only, no pytest.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from conformance import __version__
from conformance.errors import UsageError
from conformance.evidence import Exchange, exchange_key
from conformance.violations import Inconclusive

__all__ = [
    "NotRecorded",
    "ReplayTransport",
    "RECORDED_AT_HEADER",
    "build_har",
    "event_text",
    "load_har",
    "recorded_exchanges",
    "run_info",
    "write_har",
]

HAR_VERSION = "1.2"
RECORDED_AT_HEADER = "X-Conformance-Recorded-At"  # on replayed answers: Unix time the answer was recorded
_DROPPED_ON_REPLAY = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class NotRecorded(Inconclusive):
    """The recording holds no (more) answers to this request: the check is not judged."""

    def __init__(self, method: str, path: str, source: str) -> None:
        super().__init__(f"not recorded: {method} {path} with this body is not in {source} (or was asked "
                         "more often than recorded), so the request was not judged")
        self.method = method
        self.path = path


# ---- record ------------------------------------------------------------------------------------------------


def recorded_exchanges(records: Iterable[dict[str, Any]], probes: Iterable[Exchange | dict[str, Any]] = ()
                       ) -> list[dict[str, Any]]:
    """Every exchange once (by ``xid``), discovery probes first, then the checks' in record order."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(ex: dict[str, Any]) -> None:
        key = exchange_key(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)

    for probe in probes:
        add(probe.to_dict() if isinstance(probe, Exchange) else probe)
    for record in records:
        for ex in record.get("exchanges", []):
            add(ex)
    return out


def event_text(events: Iterable[dict[str, Any]]) -> str:
    """The raw ``text/event-stream`` body of decoded events (``event:``/``id:`` when set, ``data:`` lines)."""
    parts: list[str] = []
    for ev in events:
        lines = []
        if ev.get("event") not in (None, "", "message"):
            lines.append(f"event: {ev['event']}")
        if ev.get("id") is not None:
            lines.append(f"id: {ev['id']}")
        lines += [f"data: {line}" for line in str(ev.get("data", "")).split("\n")]
        parts.append("\n".join(lines) + "\n\n")
    return "".join(parts)


def _header_list(headers: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in headers.items()]


def _get(headers: dict[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _query(url: str) -> list[dict[str, str]]:
    try:
        return [{"name": k, "value": v} for k, v in httpx.URL(url).params.multi_items()]
    except (httpx.InvalidURL, ValueError, TypeError):  # a request the client could not even build
        return []


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _answered_at(ex: dict[str, Any], default: float) -> float:
    """When the answer was sent: the response's Date header, else the run's start."""
    date = _get(ex.get("response_headers") or {}, "date")
    if date:
        try:
            return parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return default


def _ms(seconds: float | None) -> float:
    return round(max(0.0, seconds or 0.0) * 1000.0, 3)


def _entry(ex: dict[str, Any], started: float) -> dict[str, Any]:
    req_headers: dict[str, str] = ex.get("request_headers") or {}
    resp_headers: dict[str, str] = ex.get("response_headers") or {}
    body = ex.get("request_body")
    request: dict[str, Any] = {
        "method": ex["method"],
        "url": ex["url"],
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _header_list(req_headers),
        "queryString": _query(ex["url"]),
        "headersSize": -1,
        "bodySize": len(body.encode("utf-8", errors="replace")) if body is not None else 0,
    }
    if body is not None:
        request["postData"] = {"mimeType": _get(req_headers, "content-type") or "", "text": body}
    status = ex.get("status")
    events = ex.get("events") or []
    if events:
        text = event_text(events)
    else:
        text = ex.get("body_text") or ""
    mime = _get(resp_headers, "content-type") or ""
    response = {
        "status": status if status is not None else 0,
        "statusText": "",
        "httpVersion": "HTTP/1.1" if status is not None else "",
        "cookies": [],
        "headers": _header_list(resp_headers),
        "content": {"size": len(text.encode("utf-8", errors="replace")), "mimeType": mime, "text": text},
        "redirectURL": _get(resp_headers, "location") or "",
        "headersSize": -1,
        "bodySize": -1,
    }
    ttfb, elapsed = ex.get("ttfb"), ex.get("elapsed")
    wait = _ms(ttfb if ttfb is not None else elapsed)
    receive = _ms((elapsed or 0.0) - (ttfb or 0.0)) if ttfb is not None else 0.0
    entry: dict[str, Any] = {
        "startedDateTime": _iso(_answered_at(ex, started) if status is not None else started),
        "time": round(wait + receive, 3),
        "request": request,
        "response": response,
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0, "wait": wait,
                    "receive": receive},
        "_label": ex.get("label", ""),
        "_xid": ex.get("xid", ""),
        "_stream": bool(ex.get("stream")),
        "_retries": ex.get("retries", 0),
    }
    if ex.get("transport_error"):
        entry["_error"] = ex["transport_error"]
    if ex.get("body_truncated"):
        entry["_truncated"] = True
    return entry


def build_har(exchanges: Iterable[dict[str, Any]], *, run: dict[str, Any]) -> dict[str, Any]:
    """A HAR 1.2 document of ``exchanges`` (exchange dicts, masked and scrubbed). ``run``: base_url, model,
    profile and the run's options (kept in ``log._conformance`` for a replay); ``run["started"]`` (Unix
    time) dates the entries without a Date header."""
    started = float(run.get("started") or 0.0)
    return {
        "log": {
            "version": HAR_VERSION,
            "creator": {"name": "chat-conformance", "version": __version__},
            "comment": f"chat-conformance run: model {run.get('model')} at {run.get('base_url')}, "
                       f"profile {run.get('profile')}",
            "entries": [_entry(ex, started) for ex in exchanges],
            "_conformance": dict(run),
        }
    }


def write_har(path: str | Path, records: Iterable[dict[str, Any]],
              probes: Iterable[Exchange | dict[str, Any]], *, run: dict[str, Any]) -> Path:
    """Write every exchange of the run (each once) to ``path`` as HAR 1.2; returns the path."""
    out = Path(path)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    har = build_har(recorded_exchanges(records, probes), run=run)
    # a lone surrogate in a target's text is written as its JSON escape (\udcxx), never an encoding error
    out.write_text(json.dumps(har, ensure_ascii=False, indent=1), encoding="utf-8", errors="backslashreplace")
    return out


# ---- replay ------------------------------------------------------------------------------------------------


def load_har(path: str | Path) -> dict[str, Any]:
    """Read and check a HAR file; a missing or malformed one is a usage error naming the fix."""
    p = Path(path)
    try:
        har = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"recording {p} not found: give the file written by `run --record`") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the recording {p} ({e}): give a HAR file written by `run --record`"
                         ) from None
    log = har.get("log") if isinstance(har, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
        raise UsageError(f"{p} is not a HAR file (no log.entries): give the file written by `run --record`")
    return har


def run_info(har: dict[str, Any]) -> dict[str, Any]:
    """The recorded run's target and options (``log._conformance``); empty for a HAR from another tool."""
    info = har["log"].get("_conformance")
    return dict(info) if isinstance(info, dict) else {}


def _request_key(method: str, url: httpx.URL | str, body: str | None) -> tuple[str, str, str]:
    try:
        path = httpx.URL(url).raw_path.decode("ascii", errors="replace")  # path and query
    except (httpx.InvalidURL, ValueError, TypeError):
        path = str(url)
    return method.upper(), path, body or ""


class _Body(httpx.SyncByteStream):
    """The recorded body, then (when the recorded exchange broke off) the recorded transport error."""

    def __init__(self, content: bytes, error: Exception | None) -> None:
        self._content = content
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        if self._content:
            yield self._content
        if self._error is not None:
            raise self._error


def _transport_error(message: str, request: httpx.Request) -> Exception:
    """An httpx exception the recording client reads back as a transport error like the recorded one."""
    text = message.split(": ", 1)[1] if message.startswith("connect failed: ") else message
    if message.startswith("connect failed"):
        return httpx.ConnectError(text, request=request)
    if "idle timeout" in message:
        return httpx.ReadTimeout(text, request=request)
    return httpx.RemoteProtocolError(text, request=request)


class ReplayTransport(httpx.BaseTransport):
    """Answers from a HAR recording; never touches the network. Thread-safe."""

    def __init__(self, har: dict[str, Any], source: str = "the recording") -> None:
        self.source = source
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str, str], deque[dict[str, Any]]] = {}
        self.served = 0
        self.missed: list[str] = []
        for entry in har["log"]["entries"]:
            req = entry.get("request") or {}
            body = (req.get("postData") or {}).get("text")
            key = _request_key(str(req.get("method", "GET")), str(req.get("url", "")), body)
            # a 429/503 that outlived the retries was asked retries+1 times: answered as often on replay
            status = (entry.get("response") or {}).get("status")
            times = 1 + int(entry.get("_retries") or 0) if status in (429, 503) else 1
            self._answers.setdefault(key, deque()).extend([entry] * times)

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayTransport:
        return cls(load_har(path), source=f"the recording {Path(path).name}")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read().decode("utf-8", errors="replace") if request.method != "GET" else ""
        key = _request_key(request.method, request.url, body)
        with self._lock:
            queue = self._answers.get(key)
            entry = queue.popleft() if queue else None
            if entry is None:
                self.missed.append(f"{key[0]} {key[1]}")
            else:
                self.served += 1
        if entry is None:
            raise NotRecorded(key[0], key[1], self.source)
        resp = entry.get("response") or {}
        error = entry.get("_error")
        status = int(resp.get("status") or 0)
        if status == 0:
            raise _transport_error(str(error or "no response recorded"), request)
        headers = [(h["name"], h["value"]) for h in resp.get("headers", [])
                   if str(h.get("name", "")).lower() not in _DROPPED_ON_REPLAY]
        try:
            when = datetime.fromisoformat(str(entry.get("startedDateTime")).replace("Z", "+00:00"))
            headers.append((RECORDED_AT_HEADER, str(round(when.timestamp(), 3))))
        except ValueError:
            pass
        content = str((resp.get("content") or {}).get("text") or "").encode("utf-8", errors="replace")
        stream = _Body(content, _transport_error(str(error), request) if error else None)
        return httpx.Response(status, headers=headers, stream=stream, request=request)
