"""The recording client: every request to the target becomes an ``Exchange`` (evidence), never an exception.

Timeouts, resets, refused connections, oversized or garbage responses end up in
``Exchange.transport_error``; only the suite's own limits (``BudgetExhausted``) and programming errors
raise, and, for a client built with ``raise_unanswered`` (the checks' client), a 429 or 503 that survives
the retries (``Unanswered``, an ``Inconclusive``: no check judges a "not now").

A 429 or 503 is retried ``limits.max_retries`` times after its Retry-After (``retry-after-ms`` first, as
OpenAI's SDKs read it; without one, an exponential backoff from 0.5 s capped at ``limits.max_retry_after``);
a Retry-After beyond ``limits.max_retry_after`` is not waited for. With a ``Budget`` the wait is the run's:
every request of every worker is held until then and a 429 slows the shared pace
(spec/DECISIONS.md#rate-limits); and a 429 that comes after the run got other answers since this request's
last 429 is the run's own crowd at the target's limiter, not a refusal of this request: it does not count
against ``max_retries``, up to ``CROWDED_RETRIES`` more.

Secrets never enter an exchange: request and response headers are masked, and the target's API key is
scrubbed from every recorded string (URL, bodies, events, error texts).

Concurrency (spec/DECISIONS.md#concurrency): one ``Client`` is safe to share between threads; at most
``concurrency`` requests are in flight at once, on one pool of keep-alive connections. ``handle()`` gives each
check its own view of it (its own ``on_exchange``, so every exchange lands in the check that sent it) over the
same pool and budget: the engine (conformance.engine.run) runs every check once, many at a time, each on its
own handle.
"""

from __future__ import annotations

import copy
import functools
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .budget import Budget
from .errors import UsageError
from .evidence import MASK, SENSITIVE_HEADERS, Exchange, SSEEvent, looks_like_secret, mask_headers
from .sse import CAPPED, SocketWatchdog, parse_event_data, read_body, read_stream
from .target import Target
from .violations import Unanswered

__all__ = [
    "Client", "RunAborted", "retry_after_seconds", "retry_delay", "usage_tokens", "USER_AGENT"
]

USER_AGENT = "chat-conformance/0.1"
_RETRY_STATUSES = frozenset({429, 503})
CROWDED_RETRIES = 8  # 429s after other requests of the run were answered: the run's crowd, not a refusal
_NO_DEFAULT_MAX_TOKENS = "_no_default_max_tokens"
_STALE = "stale keep-alive connection"

KEEP_TRUNCATED = 64 * 1024  # characters of a body cut by the byte cap kept as evidence
# idle pooled connections are dropped before common servers' keep-alive timeouts (uvicorn and Node 5 s)
KEEPALIVE_EXPIRY = 2.0


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date); None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def retry_delay(headers: dict[str, str]) -> float | None:
    """Seconds a 429/503 asks to wait: ``retry-after-ms`` (OpenAI's, read first by its SDKs), else
    ``Retry-After``; None when neither is there or valid."""
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            value = float(ms.strip())
        except ValueError:
            value = float("nan")
        if value == value and value >= 0:
            return value / 1000.0
    return retry_after_seconds(_header(headers, "retry-after"))


def usage_tokens(ex: Exchange) -> int:
    """Tokens a finished 2xx exchange used: ``usage.total_tokens`` of the body or of the last stream chunk
    carrying usage; otherwise a rough count (content chunks of a stream, the request's max_tokens else)."""

    def total(obj: Any) -> int | None:
        if isinstance(obj, dict):
            usage = obj.get("usage")
            if isinstance(usage, dict):
                t = usage.get("total_tokens")
                if isinstance(t, int) and not isinstance(t, bool) and t >= 0:
                    return t
                parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
                if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
                    return sum(parts)  # type: ignore[arg-type]
        return None

    if ex.events:
        for ev in reversed(ex.events):
            t = total(ev.json)
            if t is not None:
                return t
        n = 0
        for ev in ex.events:
            choices = ev.json.get("choices") if isinstance(ev.json, dict) else None
            if isinstance(choices, list) and any(
                isinstance(c, dict) and isinstance(c.get("delta"), dict) and c["delta"].get("content")
                for c in choices
            ):
                n += 1
        return n
    t = total(ex.json())
    if t is not None:
        return t
    req = ex.request_json
    mt = req.get("max_tokens") if isinstance(req, dict) else None
    return mt if isinstance(mt, int) and not isinstance(mt, bool) and mt > 0 else 0


def _scrub(obj: Any, secret: str) -> None:
    """Replace ``secret`` by the mask in every string of a dataclass tree (in place)."""
    if not is_dataclass(obj) or isinstance(obj, type):
        return
    for f in fields(obj):
        value = getattr(obj, f.name)
        new = _scrub_value(value, secret)
        if new is not value:
            setattr(obj, f.name, new)
    if isinstance(obj, SSEEvent) and obj.json is not None and secret in json.dumps(obj.json, default=str):
        obj.json, obj.json_error = parse_event_data(obj.data)  # the parsed JSON follows the scrubbed data


def _scrub_value(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, MASK) if secret in value else value
    if isinstance(value, dict):
        return {_scrub_value(k, secret): _scrub_value(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(v, secret) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        _scrub(value, secret)
    return value


def _safe_url(url: httpx.URL) -> str:
    if url.userinfo:
        url = url.copy_with(username=MASK, password=MASK if url.password else None)
    return str(url)




class RunAborted(BaseException):
    """The run was stopped (Ctrl-C) while this request waited or was in flight (not a check's outcome)."""


START = 16  # requests in flight when a client starts (at most its concurrency): more as the target answers


class Limiter:
    """At most ``allowed`` requests in flight, adjusted as answers come (additive increase, multiplicative
    decrease): one more at each answered request, up to ``ceiling`` (``--concurrency``); halved, down to one,
    at each request left without an answer or answered with a server error (spec/DECISIONS.md#engine, gentle
    by default). A 429/503 leaves it as it is: the shared pace handles those. Shared by every handle."""

    def __init__(self, ceiling: int, start: int = START) -> None:
        self.ceiling = max(1, ceiling)
        self.allowed = float(min(self.ceiling, max(1, start)))
        self.lowest = int(self.allowed)
        self.lowered = False  # whether the target's answers ever halved it
        self._n = 0
        self._cond = threading.Condition()

    def __enter__(self) -> Limiter:
        with self._cond:
            while self._n >= int(self.allowed):
                self._cond.wait(0.5)
            self._n += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._n -= 1
            self._cond.notify_all()

    def answered(self, ex: Exchange) -> None:
        """Adjust to what became of one request."""
        from conformance.outcomes import RequestOutcome, request_outcome

        outcome = request_outcome(ex.status, ex.transport_error)
        strained = outcome in (RequestOutcome.TIMED_OUT, RequestOutcome.CONNECTION_FAILED,
                               RequestOutcome.SERVER_ERROR)
        with self._cond:
            if strained:
                self.allowed = max(1.0, self.allowed / 2)
                self.lowest = min(self.lowest, int(self.allowed))
                self.lowered = True
            elif outcome is RequestOutcome.ANSWERED:
                self.allowed = min(float(self.ceiling), self.allowed + 1)
            self._cond.notify_all()


class _Count:
    """A thread-safe counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n


def tls_context(verify: bool | str) -> ssl.SSLContext | bool:
    """What the clients of a run verify TLS with: ``False`` (``--insecure``), or one SSL context per CA bundle
    per process (the system's by default, as httpx builds it), shared by every client: building one reads the
    whole bundle (55 ms), and a run makes several clients. ``UsageError`` on a CA bundle that cannot be
    read."""
    if verify is False:
        return False
    try:
        return _tls_context(verify if isinstance(verify, str) else None)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot read the CA bundle {verify!r} ({e}): give a PEM file") from e


@functools.lru_cache(maxsize=8)
def _tls_context(cafile: str | None) -> ssl.SSLContext:
    if cafile is not None:
        return ssl.create_default_context(cafile=cafile)
    return httpx.create_ssl_context(verify=True)


class Client:
    """Recording client for one target, on one ``httpx.Client`` (connections are reused)."""

    def __init__(self, target: Target, *, budget: Budget | None = None,
                 transport: httpx.BaseTransport | None = None,
                 on_exchange: Callable[[Exchange], None] | None = None,
                 raise_unanswered: bool = False, concurrency: int = 1) -> None:
        self.target = target
        self.raise_unanswered = raise_unanswered
        self.concurrency = max(1, concurrency)
        self._in_flight = Limiter(self.concurrency)
        self.scope: str | None = None  # the check a handle sends for
        self._root = True
        self._aborted = threading.Event()
        # one response at a time grows past sse.BIG_BODY: memory stays near one byte cap, whatever in flight
        self._big = threading.Lock() if self.concurrency > 1 else None
        self._live: set[SocketWatchdog] = set()  # the watchdogs of the requests in flight
        self.sent = _Count()  # requests sent, retries included (shared by every handle): the progress line
        self._live_lock = threading.Lock()
        # the key, and any credential passed as an extra header (a credential header, or a value shaped like a
        # key under any name), are scrubbed from every exchange
        self._secrets = [v for v in (target.api_key, *(
            val.split(" ", 1)[-1] if val.lower().startswith("bearer ") else val
            for name, val in target.extra_headers.items()
            if name.lower() in SENSITIVE_HEADERS or looks_like_secret(val)
        )) if v and len(v) >= 4]
        self.limits = target.limits
        self.budget = budget
        self.on_exchange = on_exchange
        self._http = httpx.Client(
            transport=transport,
            verify=tls_context(target.verify_tls),
            follow_redirects=False,
            timeout=self._timeout(),
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=max(10, self.concurrency),
                                max_keepalive_connections=max(5, self.concurrency),
                                keepalive_expiry=KEEPALIVE_EXPIRY),
        )

    @property
    def limiter(self) -> Limiter:
        """The requests in flight, shared by every handle: at most ``concurrency``, fewer while strained."""
        return self._in_flight

    # ---- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._root:  # a handle shares its parent's connections: only the parent closes them
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (before a check is run again), or less if the run is stopped meanwhile."""
        self._aborted.wait(seconds)

    def abort(self) -> None:
        """Stop the run now: every request in flight ends at once (its socket is shut down), and every later
        one raises ``RunAborted`` (a Ctrl-C while many requests are in flight)."""
        self._aborted.set()
        with self._live_lock:
            live = list(self._live)
        for w in live:
            w.fire_now()

    def handle(self, *, on_exchange: Callable[[Exchange], None] | None, scope: str | None = None) -> Client:
        """A view of this client for one check (``scope``: its key): its own ``on_exchange``, the same
        connections, budget and in-flight limit (never closing the shared pool)."""
        h = copy.copy(self)
        h.on_exchange = on_exchange
        h.scope = scope
        h._root = False
        return h

    # ---- requests ---------------------------------------------------------------------------------
    def chat(self, body: dict[str, Any], *, label: str = "", auth: bool | str = True,
             headers: dict[str, str] | None = None, stream: bool | None = None) -> Exchange:
        """POST {base}/chat/completions with ``body`` as JSON.

        ``max_tokens`` is set to ``limits.default_max_tokens`` unless the body sets ``max_tokens`` or
        ``max_completion_tokens``, or carries the key ``_no_default_max_tokens`` (removed before sending).
        ``stream`` (default: ``body["stream"] is True``) reads a 2xx response as an event stream, whatever
        its content type."""
        body = dict(body)
        if body.pop(_NO_DEFAULT_MAX_TOKENS, False) is False and not (
            "max_tokens" in body or "max_completion_tokens" in body
        ):
            body["max_tokens"] = self.limits.default_max_tokens
        text = json.dumps(body, ensure_ascii=False)
        is_stream = body.get("stream") is True if stream is None else bool(stream)
        return self._exchange("POST", "chat/completions", content=text.encode("utf-8"), body_text=text,
                              label=label, auth=auth, headers=headers, content_type="application/json",
                              stream=is_stream)

    def post_raw(self, path: str, content: bytes, *, label: str = "", auth: bool | str = True,
                 headers: dict[str, str] | None = None, content_type: str | None = "application/json",
                 stream: bool = False) -> Exchange:
        """POST raw bytes (malformed JSON, wrong content types) to {base}/{path}."""
        return self._exchange("POST", path, content=content,
                              body_text=content.decode("utf-8", errors="replace"), label=label, auth=auth,
                              headers=headers, content_type=content_type, stream=stream)

    def get(self, path: str, *, label: str = "", auth: bool | str = True,
            headers: dict[str, str] | None = None) -> Exchange:
        """GET {base}/{path} (e.g. ``models`` for discovery)."""
        return self._exchange("GET", path, content=None, body_text=None, label=label, auth=auth,
                              headers=headers, content_type=None, stream=False)

    def chat_many(self, requests: list[tuple[dict[str, Any], str]]) -> list[Exchange | Unanswered]:
        """Send requests that do not depend on each other (``(body, label)`` pairs), up to the concurrency at
        a time; the answers, and this handle's ``on_exchange`` calls, in the order of ``requests``. A 429/503
        that survives the retries is its ``Unanswered`` in the list (raised only where the client raises
        them); ``BudgetExhausted`` and ``RunAborted`` propagate."""
        if self.concurrency <= 1 or len(requests) <= 1:
            return [self._one(body, label, self) for body, label in requests]
        from concurrent.futures import ThreadPoolExecutor

        quiet = copy.copy(self)  # the same request counts and recording, the evidence added in order below
        quiet.on_exchange = None
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            futures = [pool.submit(self._one, body, label, quiet) for body, label in requests]
            answers = [f.result() for f in futures]
        if self.on_exchange is not None:
            for a in answers:
                self.on_exchange(a if isinstance(a, Exchange) else a.exchange)  # type: ignore[attr-defined]
        return answers

    @staticmethod
    def _one(body: dict[str, Any], label: str, via: Client) -> Exchange | Unanswered:
        try:
            return via.chat(body, label=label)
        except Unanswered as exc:
            return exc

    # ---- internals --------------------------------------------------------------------------------
    def _timeout(self) -> httpx.Timeout:
        lim = self.limits
        first_read = min(lim.idle_timeout, lim.total_timeout)
        return httpx.Timeout(connect=min(lim.connect_timeout, lim.total_timeout), read=first_read,
                             write=lim.total_timeout, pool=lim.total_timeout)

    def _headers(self, auth: bool | str, headers: dict[str, str] | None,
                 content_type: str | None) -> dict[str, str]:
        """target.extra_headers, Content-Type, credentials, then the call's own headers (last wins). Unless
        ``auth`` is True, credential headers of extra_headers (Authorization, api-key, ...) are dropped."""
        out: dict[str, str] = {}

        def put(name: str, value: str) -> None:
            for existing in [e for e in out if e.lower() == name.lower()]:
                del out[existing]
            out[name] = value

        for k, v in self.target.extra_headers.items():
            if auth is True or k.lower() not in SENSITIVE_HEADERS:
                put(k, v)
        if content_type is not None:
            put("Content-Type", content_type)
        if auth is True:
            if self.target.api_key:
                put("Authorization", f"Bearer {self.target.api_key}")
        elif isinstance(auth, str):
            put("Authorization", f"Bearer {auth}")
        for k, v in (headers or {}).items():
            put(k, v)
        return out

    def _credentials(self, sent: dict[str, str], auth: bool | str) -> dict[str, str]:
        """What each credential header of a request carried, for its reproducer (``Exchange.credentials``):
        ``$VAR`` for the run's key, the key itself for one a check chose (``auth`` a string: the wrong-key
        check's, never the user's); a credential from ``--header`` that is not the run's key: nothing."""
        out: dict[str, str] = {}
        for name, value in sent.items():
            if name.lower() not in SENSITIVE_HEADERS:
                continue
            secret = value[len("bearer "):] if value.lower().startswith("bearer ") else value
            if self.target.api_key and secret == self.target.api_key:
                out[name.lower()] = "$" + self.target.api_key_env
            elif isinstance(auth, str) and secret == auth and auth not in self._secrets:
                out[name.lower()] = auth
        return out

    def _exchange(self, method: str, path: str, *, content: bytes | None, body_text: str | None, label: str,
                  auth: bool | str, headers: dict[str, str] | None, content_type: str | None,
                  stream: bool) -> Exchange:
        url = self.target.url(path)
        req_headers = self._headers(auth, headers, content_type)
        ex, waited = self._send(method, url, req_headers, content, body_text, label, stream)
        ex.credentials = self._credentials(req_headers, auth)
        return self._finish(ex, waited=waited)

    def _send(self, method: str, url: str, req_headers: dict[str, str], content: bytes | None,
              body_text: str | None, label: str, stream: bool) -> tuple[Exchange, bool]:
        retries = 0
        crowded = 0  # retries not counted against max_retries (see CROWDED_RETRIES)
        answers = -1  # the run's answer count at this request's last 429
        waited = True
        while True:
            if self._aborted.is_set():
                raise RunAborted()
            if self.budget is not None:
                self.budget.acquire(retry=retries > 0)
            self.sent.add()
            with self._in_flight:
                if self._aborted.is_set():  # aborted while it waited for its turn: never sent
                    raise RunAborted()
                ex = self._attempt(method, url, req_headers, content, body_text, label, stream)
                if ex.transport_error == _STALE:
                    # a pooled keep-alive connection lost under the request before any event was read: not
                    # the target's answer to this request (SDKs retry it too); sent again once, and the
                    # second attempt's failure stands
                    ex = self._attempt(method, url, req_headers, content, body_text, label, stream,
                                       fresh=True)
                self._in_flight.answered(ex)
            ex.retries = retries
            if ex.status not in _RETRY_STATUSES:
                if self.budget is not None and ex.status is not None:
                    self.budget.answered()
                break
            asked = retry_delay(ex.response_headers)
            waited = asked is None or asked <= self.limits.max_retry_after
            # a Retry-After beyond the limit is not waited for (the run would stall): the 429/503 stands
            delay: float | None = None
            if waited:
                delay = min(0.5 * 2**retries, self.limits.max_retry_after) if asked is None else asked
            if self.budget is not None:
                now_answers = self.budget.throttled(ex.status, delay)  # holds (and slows) the whole run
                if ex.status == 429 and 0 <= answers < now_answers and crowded < CROWDED_RETRIES:
                    crowded += 1  # others were answered meanwhile: this request lost its turn, not refused
                answers = now_answers
            if delay is None or retries - crowded >= self.limits.max_retries:
                break
            if self.budget is None:
                time.sleep(delay)  # with a budget, the next acquire() waits out the hold
            retries += 1
        if self.budget is not None and ex.status is not None and 200 <= ex.status < 300:
            self.budget.add_tokens(usage_tokens(ex))
        for secret in self._secrets:
            _scrub(ex, secret)
        return ex, waited

    def _finish(self, ex: Exchange, *, waited: bool) -> Exchange:
        if self.on_exchange is not None:
            self.on_exchange(ex)
        if self.raise_unanswered and ex.status is None:
            from conformance.outcomes import RequestOutcome, request_outcome
            from conformance.violations import NoAnswer

            outcome = request_outcome(ex.status, ex.transport_error)
            if outcome in (RequestOutcome.TIMED_OUT, RequestOutcome.CONNECTION_FAILED):
                no_answer = NoAnswer(outcome.value, ex.transport_error or "")
                no_answer.exchange = ex  # type: ignore[attr-defined]
                raise no_answer
        if self.raise_unanswered and ex.status in _RETRY_STATUSES:
            retry_after = _header(ex.response_headers, "retry-after")
            if retry_after is None and _header(ex.response_headers, "retry-after-ms") is not None:
                retry_after = f"{_header(ex.response_headers, 'retry-after-ms')} ms"
            exc = Unanswered(ex.status, ex.retries, retry_after, waited=waited)
            exc.exchange = ex  # type: ignore[attr-defined]
            raise exc
        return ex

    def _attempt(self, method: str, url: str, headers: dict[str, str], content: bytes | None,
                 body_text: str | None, label: str, stream: bool, *, fresh: bool = False) -> Exchange:
        lim = self.limits
        ex = Exchange(label=label, method=method, url=url, request_headers=mask_headers(dict(headers)),
                      request_body=body_text, stream=stream)
        try:
            watchdog = SocketWatchdog()
            request = self._http.build_request(method, url, headers=headers, content=content,
                                               extensions={"trace": _learn_socket(watchdog)})
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as e:
            ex.transport_error = f"invalid request: {e}"
            return ex
        ex.url = _safe_url(request.url)
        ex.request_headers = mask_headers(dict(request.headers.items()))
        start = time.monotonic()
        ex.sent_at = round(time.time(), 6)  # issue 23 (8): when it was sent, for report.html's timeline
        watchdog.arm(start + lim.total_timeout)
        with self._live_lock:
            self._live.add(watchdog)
        try:
            return self._attempt_on(ex, request, watchdog, start, stream, fresh)
        finally:
            with self._live_lock:
                self._live.discard(watchdog)

    def _attempt_on(self, ex: Exchange, request: httpx.Request, watchdog: SocketWatchdog, start: float,
                    stream: bool, fresh: bool) -> Exchange:
        lim = self.limits
        try:
            response = self._http.send(request, stream=True)
        except httpx.ConnectTimeout:
            connect = min(lim.connect_timeout, lim.total_timeout)
            ex.transport_error = f"connect failed: no connection within {connect}s"
        except httpx.ConnectError as e:
            ex.transport_error = f"connect failed: {_text(e)}"
        except httpx.ReadTimeout:
            if lim.total_timeout <= lim.idle_timeout:
                ex.transport_error = f"total deadline {lim.total_timeout}s exceeded (no response headers)"
            else:
                ex.transport_error = f"idle timeout: no data for {lim.idle_timeout}s (no response headers)"
        except httpx.WriteTimeout:
            ex.transport_error = f"write timeout: request not sent within {lim.total_timeout}s"
        except httpx.PoolTimeout:
            ex.transport_error = "connection pool timeout"
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            ex.transport_error = f"connection closed before response headers: {_text(e)}"
        except httpx.UnsupportedProtocol as e:
            ex.transport_error = f"unsupported URL: {_text(e)}"
        except (httpx.HTTPError, httpx.StreamError) as e:
            ex.transport_error = f"transport error ({type(e).__name__}): {_text(e)}"
        watchdog.disarm()
        if ex.transport_error is not None and watchdog.fired:
            ex.transport_error = f"total deadline {lim.total_timeout}s exceeded (no response headers)"
        elif not fresh and not watchdog.has_socket and _connection_lost(ex.transport_error):
            ex.transport_error = _STALE  # the request went out on a reused connection, closed under it
        if ex.transport_error is not None:
            ex.elapsed = round(time.monotonic() - start, 6)
            return ex
        try:
            ex.ttfb = round(time.monotonic() - start, 6)
            ex.status = response.status_code
            ex.response_headers = mask_headers(_header_dict(response.headers))
            if stream and 200 <= response.status_code < 300:
                is_sse = ex.content_type == "text/event-stream"
                raw: list[str] | None = None if is_sse else []
                ex.events, ex.comments, ex.transport_error = read_stream(
                    response, start=start, limits=lim, big=self._big, raw_text=raw
                )
                if raw is not None:
                    ex.body_text = "".join(raw)
                # an answer cut at a byte cap (a flood) says so by a flag, whatever cap cut it
                ex.body_truncated = (ex.transport_error or "").startswith(CAPPED)
            else:
                text, truncated, error_ = read_body(response, start=start, limits=lim, big=self._big)
                ex.body_text, ex.body_truncated, ex.transport_error = text, truncated, error_
            if ex.body_truncated and ex.body_text is not None and len(ex.body_text) > KEEP_TRUNCATED:
                # past the byte cap the answer is judged by its size alone: its head is the evidence, and a
                # flood of such answers costs no more memory than ordinary ones
                ex.body_text = ex.body_text[:KEEP_TRUNCATED]
        finally:
            response.close()
        ex.elapsed = round(time.monotonic() - start, 6)
        if not fresh and not watchdog.has_socket and not ex.events and _connection_lost(ex.transport_error):
            ex.transport_error = _STALE  # the same, with the answer's first bytes in: no event was read yet
        return ex


def _connection_lost(error: str | None) -> bool:
    """A connection that ended under the request (closed or reset; not a timeout, not a size limit)."""
    return error is not None and error.startswith(
        ("connection closed before response headers", "connection closed mid-stream")
    )


def _learn_socket(watchdog: SocketWatchdog) -> Callable[[str, dict[str, Any]], None]:
    """An httpcore trace hook handing the socket of a newly opened connection to ``watchdog``, so the total
    deadline holds while the response headers arrive (a server trickling its status line and headers byte by
    byte never trips the per-read idle timeout)."""

    def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            stream: Any = info.get("return_value")
            sock = stream.get_extra_info("socket") if hasattr(stream, "get_extra_info") else None
            if isinstance(sock, socket.socket):
                watchdog.set_socket(sock)

    return trace


def _header(headers: dict[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _header_dict(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers.multi_items():
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def _text(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
