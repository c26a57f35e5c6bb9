"""Evidence of one HTTP exchange with the target: what was sent, what came back, when.

Pure data (no I/O). The recording client fills it; checks judge it; reports render it.
Secrets never enter it: request headers are masked when the exchange is built.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# CPython 3.11 builds Python AST objects with one interpreter-wide recursion counter: two threads parsing at
# once fail ("AST constructor recursion depth mismatch"). The first pass's hypothesis draws (which parse
# lambdas' source) and pytest's traceback formatting (which parses the test's source) take this lock.
PARSE_LOCK = threading.Lock()

__all__ = [
    "SSEEvent", "Exchange", "mask_headers", "exchange_key", "looks_like_secret", "SENSITIVE_HEADERS", "MASK",
    "DEFAULT_KEY_ENV",
]

MASK = "***"
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)


DEFAULT_KEY_ENV = "CONFORMANCE_API_KEY"  # where a run reads its key unless --api-key-env names another
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "gsk_", "xai-", "hf_", "ghp_", "gho_", "github_pat_", "glpat-",
                 "akia", "aiza", "eyj", "bearer ", "basic ")
_RANDOM_RUN = re.compile(r"[A-Za-z0-9]{16,}")  # 16 letters and digits unbroken: no word, no id


def looks_like_secret(text: str) -> bool:
    """Whether a value a user typed may be a credential (an API key pasted where a name or path belonged): a
    known key prefix (``sk-``, ``hf_``, a JWT, ``Bearer ...``), or a long random-looking run of letters and
    digits. Errors name such a value's option, never the value."""
    t = text.strip()
    if len(t) < 8:
        return False
    if t.lower().startswith(_KEY_PREFIXES):
        return True
    return any(
        any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
        for run in _RANDOM_RUN.findall(t)
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
    # what each masked credential header carried, for the reproducer (header name in lower case): "$VAR", the
    # run's key read from that variable, or a value the check chose that is no secret (the wrong-key check's
    # key). None in records older than this field: the reproducer reads the key from $CONFORMANCE_API_KEY
    credentials: dict[str, str] | None = None
    sent_at: float | None = None  # Unix time it was sent (report.html's timeline); None in older records
    # a request the suite sent to be refused (a check judged it as an error answer): a 5xx there is a finding
    # of the error requirements (ERROR-NO-5XX), never a sign of the target's health (health.py)
    refusal_expected: bool = False
    # on a request asked a second time because its first answer was a server error (the check was run again:
    # engine.run.run_check): the first answer's xid. Judged run-wide (CORE-REQUEST-JSON); absent otherwise
    asked_again: str | None = None

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
        d = asdict(self)
        if not d["refusal_expected"]:  # said only where true: results.json keeps its shape
            del d["refusal_expected"]
        if d["asked_again"] is None:
            del d["asked_again"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Exchange:
        d = dict(d)
        d["events"] = [SSEEvent(**e) for e in d.get("events", [])]
        return cls(**d)

    def curl(self) -> str:
        """A copy-paste reproducer sending what the check sent: the run's key read from the variable the run
        read it from (``$VAR``, never written), in the header and style the request used (``Authorization:
        Bearer $VAR``, ``x-api-key: $VAR``); the wrong key the wrong-key check sent; no credential where the
        request had none. A credential given with ``--header`` stays masked (``***``): fill it in."""
        parts = ["curl", "-sS", "-N" if self.stream else "", "-X", self.method, shlex.quote(self.url)]
        for k, v in self.request_headers.items():
            if k.lower() in SENSITIVE_HEADERS and MASK in v:
                parts += ["-H", self._credential(k, v)]
            elif k.lower() not in {"content-length", "host", "accept-encoding", "connection", "user-agent"}:
                parts += ["-H", shlex.quote(f"{k}: {v}")]
        if self.request_body is not None:
            parts += ["--data-raw", shlex.quote(self.request_body)]
        return " ".join(p for p in parts if p)

    def _credential(self, name: str, masked: str) -> str:
        """One masked credential header as a shell word: the masked part replaced by what was sent."""
        if self.credentials is None:  # an older record: the default variable, as reproducers always wrote
            sent: str | None = "$" + DEFAULT_KEY_ENV
        else:
            sent = self.credentials.get(name.lower())
        if sent is not None and sent.startswith("$"):
            if ENV_NAME.fullmatch(sent[1:]):  # "name: Bearer $VAR": the shell expands it
                escaped = re.sub(r'([\\"$`])', r"\\\1", f"{name}: {masked}")
                return '"' + escaped.replace(MASK, sent) + '"'
            sent = None  # no variable the shell can read: kept masked
        if sent is None:  # not the run's key nor a value of the check's: a --header credential, kept masked
            return shlex.quote(f"{name}: {masked}")
        return shlex.quote(f"{name}: {masked.replace(MASK, sent)}")
