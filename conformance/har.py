"""Record and replay: a run's exchanges as HAR 1.2, and an httpx transport that answers from such a file.

``build_har`` turns the exchanges of a run (already masked and scrubbed by the recording client: the key is
never in them) into a HAR 1.2 log; a stream's response content is its raw event text, rebuilt from the
decoded events (comments dropped). An exchange that got no response is an entry with ``response.status`` 0
and ``_error``. ``log._conformance`` holds what a replay needs: base URL, model, profile, the run's options.

``ReplayTransport`` answers each request with the recorded response of the same method, URL path (and query),
body and credential (the run's key, no key, or the key a check chose: ``credential_of``): the n-th identical
request gets the n-th recorded answer. It never opens a connection. A request the recording lacks raises
``NotRecorded`` (an ``Inconclusive``): the check that sent it is "not recorded", never judged, never failed.
A request without a key is never answered with the answer to one with the key (nor the reverse), so a
recording that lacks the auth checks' requests never reads as "accepted without a key".

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
from conformance.evidence import SENSITIVE_HEADERS, Exchange, exchange_key
from conformance.files import write_atomic
from conformance.violations import Inconclusive

__all__ = [
    "NO_KEY",
    "NotRecorded",
    "RUN_KEY",
    "ReplayTransport",
    "RECORDED_AT_HEADER",
    "build_har",
    "credential_of",
    "event_text",
    "load_har",
    "recorded_exchanges",
    "run_info",
    "write_har",
]

HAR_VERSION = "1.2"
RECORDED_AT_HEADER = "X-Conformance-Recorded-At"  # on replayed answers: Unix time the answer was recorded
_DROPPED_ON_REPLAY = frozenset({"content-encoding", "content-length", "transfer-encoding"})
RUN_KEY = "the run's key"  # a request's credential: what every request of the run sends (or nothing, keyless)
NO_KEY = "no key"  # a request sent without any credential, on a run that has a key (the missing-key check)


class NotRecorded(Inconclusive):
    """The recording holds no (more) answers to this request: the check is "not recorded", never judged.
    Its message starts with ``not recorded:`` (results.py groups such checks as "not in the recording")."""

    def __init__(self, method: str, path: str, source: str, credential: str = RUN_KEY) -> None:
        sent = "" if credential == RUN_KEY else (" without a key" if credential == NO_KEY else
                                                 " with a key of the check's own")
        super().__init__(f"not recorded: {method} {path}{sent} with this body is not in {source} (or was "
                         "asked more often than recorded), so the request was not judged")
        self.method = method
        self.path = path
        self.credential = credential


# ---- record ------------------------------------------------------------------------------------------------


DISCOVERY = "discovery"  # the asker of the discovery probes (``_checks`` of their entries)


def recorded_exchanges(records: Iterable[dict[str, Any]], probes: Iterable[Exchange | dict[str, Any]] = ()
                       ) -> list[dict[str, Any]]:
    """Every exchange once (by ``xid``), discovery probes first, then the checks' in record order; each with
    ``_checks``: the checks whose evidence holds it (``DISCOVERY`` for a probe), the only askers a replay
    answers with it."""
    out: dict[str, dict[str, Any]] = {}

    def add(ex: dict[str, Any], asker: str) -> None:
        key = exchange_key(ex)
        if key not in out:
            out[key] = {**ex, "_checks": []}
        if asker not in out[key]["_checks"]:
            out[key]["_checks"].append(asker)

    for probe in probes:
        add(probe.to_dict() if isinstance(probe, Exchange) else probe, DISCOVERY)
    for record in records:
        for ex in record.get("exchanges", []):
            add(ex, str(record.get("nodeid", "")))
    return list(out.values())


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
    if ex.get("_checks"):
        entry["_checks"] = list(ex["_checks"])
    if ex.get("credentials") is not None:  # what the credential headers carried ($VAR: the run's key)
        entry["_credentials"] = ex["credentials"]
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
    write_atomic(out, json.dumps(har, ensure_ascii=False, indent=1), errors="backslashreplace")
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


def _request_key(method: str, url: httpx.URL | str, body: str | None, credential: str = RUN_KEY
                 ) -> tuple[str, str, str, str]:
    try:
        path = httpx.URL(url).raw_path.decode("ascii", errors="replace")  # path and query
    except (httpx.InvalidURL, ValueError, TypeError):
        path = str(url)
    return method.upper(), path, body or "", credential


def _credential_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(str(k).lower(), str(v)) for k, v in headers if str(k).lower() in SENSITIVE_HEADERS]


def credential_of(entry: dict[str, Any], *, keyed: bool = True) -> str:
    """The credential a recorded HAR entry was sent with: ``RUN_KEY``, ``NO_KEY`` (no credential header on a
    run that had a key: ``keyed``), or ``"key " + value`` for a key a check chose (the wrong-key check's,
    kept in ``_credentials``; never the user's). A recording older than ``_credentials`` tells only whether
    a credential was sent."""
    sent = _credential_headers((h.get("name", ""), h.get("value", ""))
                               for h in (entry.get("request") or {}).get("headers") or [])
    if not sent:
        return NO_KEY if keyed else RUN_KEY
    chosen = sorted(v for v in (entry.get("_credentials") or {}).values()
                    if isinstance(v, str) and not v.startswith("$"))
    return "key " + chosen[0] if chosen else RUN_KEY


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

    def __init__(self, har: dict[str, Any], source: str = "the recording", *, api_key: str | None = None
                 ) -> None:
        """``api_key``: the key the replaying run sends (a placeholder: sent nowhere), which tells the run's
        own requests from those without a key or with a key of a check's own."""
        self.source = source
        self.api_key = api_key
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str, str, str], deque[dict[str, Any]]] = {}
        self.served = 0
        self.missed: list[str] = []
        # the check now asking (set by the plugin around each check; None: discovery): a recorded answer goes
        # only to a check whose evidence held it, so a check the recorded run did not run never takes the
        # answers of one it did (an entry without ``_checks``, from an older recording, goes to any)
        self.asking: str | None = None
        keyed = bool(run_info(har).get("auth", True))
        for entry in har["log"]["entries"]:
            req = entry.get("request") or {}
            body = (req.get("postData") or {}).get("text")
            key = _request_key(str(req.get("method", "GET")), str(req.get("url", "")), body,
                               credential_of(entry, keyed=keyed))
            # a 429/503 that outlived the retries was asked retries+1 times: answered as often on replay
            status = (entry.get("response") or {}).get("status")
            times = 1 + int(entry.get("_retries") or 0) if status in (429, 503) else 1
            self._answers.setdefault(key, deque()).extend([entry] * times)

    @classmethod
    def from_file(cls, path: str | Path, *, api_key: str | None = None) -> ReplayTransport:
        return cls(load_har(path), source=f"the recording {Path(path).name}", api_key=api_key)

    def _credential(self, request: httpx.Request) -> str:
        """What ``request`` carries: the run's key, no key or a key of the check's own (``credential_of``)."""
        sent = _credential_headers(request.headers.items())
        if not sent:
            return NO_KEY if self.api_key else RUN_KEY
        values = [v[len("bearer "):] if v.lower().startswith("bearer ") else v for _, v in sent]
        if not self.api_key or self.api_key in values:
            return RUN_KEY
        return "key " + sorted(values)[0]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read().decode("utf-8", errors="replace") if request.method != "GET" else ""
        credential = self._credential(request)
        key = _request_key(request.method, request.url, body, credential)
        asker = self.asking or DISCOVERY
        with self._lock:
            queue = self._answers.get(key) or deque()
            entry = next((e for e in queue if not e.get("_checks") or asker in e["_checks"]), None)
            if entry is not None:
                queue.remove(entry)
            if entry is None:
                self.missed.append(f"{key[0]} {key[1]}")
            else:
                self.served += 1
        if entry is None:
            raise NotRecorded(key[0], key[1], self.source, NO_KEY if credential == NO_KEY else
                              RUN_KEY if credential == RUN_KEY else "key")
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
