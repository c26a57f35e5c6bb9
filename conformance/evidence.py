"""Evidence of one HTTP exchange with the target: what was sent, what came back, when.

Pure data (no I/O). The recording client fills it; checks judge it; reports render it.
Secrets never enter it: request headers are masked when the exchange is built.
"""

from __future__ import annotations

import json
import shlex
import threading
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# CPython 3.11 builds Python AST objects with one interpreter-wide recursion counter: two threads parsing at
# once fail ("AST constructor recursion depth mismatch"). The first pass's hypothesis draws (which parse
# lambdas' source) and pytest's traceback formatting (which parses the test's source) take this lock.
PARSE_LOCK = threading.Lock()

__all__ = ["SSEEvent", "Exchange", "mask_headers", "exchange_key", "SENSITIVE_HEADERS", "MASK"]

MASK = "***"
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    """Copy of headers with credentials masked (``Bearer ***``)."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        if k.lower() in SENSITIVE_HEADERS:
            out[k] = "Bearer " + MASK if v.lower().startswith("bearer ") else MASK
        else:
            out[k] = v
    return out


def exchange_key(ex: dict[str, Any]) -> str:
    """One exchange's identity in the records: a shared exchange sits in the evidence of several checks."""
    if ex.get("xid"):
        return str(ex["xid"])
    return repr([ex.get(k) for k in ("url", "request_body", "ttfb", "elapsed", "label")])


@dataclass
class SSEEvent:
    """One server-sent event as decoded, with its arrival time (seconds since the request was sent)."""

    t: float
    data: str
    event: str = "message"
    id: str | None = None
    done: bool = False  # data == "[DONE]"
    json: Any = None  # parsed data, when it is JSON
    json_error: str | None = None  # why data is not JSON (None when it parsed or is [DONE])


@dataclass
class Exchange:
    """One request and its response. ``transport_error`` is set when the exchange did not complete."""

    label: str
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str | None = None
    stream: bool = False
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body_text: str | None = None  # non-stream body (decoded, capped)
    body_truncated: bool = False
    events: list[SSEEvent] = field(default_factory=list)
    comments: int = 0  # SSE comment lines seen (keep-alives)
    ttfb: float | None = None  # seconds to response headers
    elapsed: float | None = None  # seconds to the last byte / event
    transport_error: str | None = None  # "idle timeout after 10.0s", "byte cap 1048576 exceeded", ...
    retries: int = 0
    xid: str = field(default_factory=lambda: uuid.uuid4().hex)  # identity across records (shared exchanges)

    # ---- derived views used by checks -------------------------------------------------------------
    @property
    def request_json(self) -> Any:
        try:
            return json.loads(self.request_body) if self.request_body else None
        except ValueError:
            return None

    @property
    def content_type(self) -> str:
        for k, v in self.response_headers.items():
            if k.lower() == "content-type":
                return v.split(";")[0].strip().lower()
        return ""

    def json(self) -> Any:
        """The parsed non-stream body, or None when it is absent or not JSON."""
        if self.body_text is None:
            return None
        try:
            return json.loads(self.body_text)
        except ValueError:
            return None

    @property
    def done_index(self) -> int | None:
        for i, ev in enumerate(self.events):
            if ev.done:
                return i
        return None

    @property
    def chunks(self) -> list[Any]:
        """Parsed JSON payloads of the events before [DONE] (non-JSON events skipped)."""
        end = self.done_index if self.done_index is not None else len(self.events)
        return [ev.json for ev in self.events[:end] if ev.json is not None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Exchange:
        d = dict(d)
        d["events"] = [SSEEvent(**e) for e in d.get("events", [])]
        return cls(**d)

    def curl(self) -> str:
        """A copy-paste reproducer; the key is read from $CONFORMANCE_API_KEY, never written."""
        parts = ["curl", "-sS", "-N" if self.stream else "", "-X", self.method, shlex.quote(self.url)]
        for k, v in self.request_headers.items():
            if k.lower() in SENSITIVE_HEADERS:
                parts += ["-H", '"' + k + ': Bearer $CONFORMANCE_API_KEY"']
            elif k.lower() not in {"content-length", "host", "accept-encoding", "connection", "user-agent"}:
                parts += ["-H", shlex.quote(f"{k}: {v}")]
        if self.request_body is not None:
            parts += ["--data-raw", shlex.quote(self.request_body)]
        return " ".join(p for p in parts if p)
