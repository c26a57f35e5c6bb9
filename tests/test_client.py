"""The recording client: request shapes (MockTransport), time and byte limits against a misbehaving server."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from conformance.budget import Budget
from conformance.client import CROWDED_RETRIES, Client, retry_after_seconds, retry_delay, usage_tokens
from conformance.errors import BudgetExhausted, UsageError
from conformance.evidence import Exchange
from conformance.target import Limits, Target
from conformance.violations import Inconclusive, Unanswered

KEY = "sk-canary-7f3a"
LIMITS = Limits(connect_timeout=1.0, idle_timeout=0.5, total_timeout=2.0, max_bytes=64 * 1024,
                max_event_bytes=8 * 1024, max_retries=2, max_retry_after=5.0)
SSE = "text/event-stream"


def _chunk(content: str, **extra: Any) -> bytes:
    obj = {"id": "c1", "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {"content": content}}]}
    obj.update(extra)
    return f"data: {json.dumps(obj)}\n\n".encode()


# ---- a misbehaving target -------------------------------------------------------------------------------

_retry_seen: set[str] = set()


async def _forever_sleep() -> None:
    await asyncio.sleep(30)


async def endpoint(request: Request) -> Response:
    mode = request.path_params["mode"]
    auth = request.headers.get("authorization", "")
    if mode == "ok":
        return JSONResponse({"echo": auth, "usage": {"total_tokens": 7}}, headers={"x-echo": auth})
    if mode == "sse":
        async def sse() -> AsyncIterator[bytes]:
            yield b": keep-alive\n\n"
            yield _chunk("Hel")
            yield _chunk("lo " + auth)
            yield b"data: [DONE]\n\n"
        return StreamingResponse(sse(), media_type=SSE)
    if mode == "stall-headers":
        await _forever_sleep()
        return Response("late")
    if mode == "stall-body":
        async def stall() -> AsyncIterator[bytes]:
            yield _chunk("a")
            await _forever_sleep()
        return StreamingResponse(stall(), media_type=SSE)
    if mode == "trickle":
        async def trickle() -> AsyncIterator[bytes]:
            while True:
                yield b" "
                await asyncio.sleep(0.1)
        return StreamingResponse(trickle(), media_type="application/json")
    if mode == "forever":
        async def forever() -> AsyncIterator[bytes]:
            while True:
                yield _chunk("x")
                await asyncio.sleep(0.05)
        return StreamingResponse(forever(), media_type=SSE)
    if mode == "huge":
        async def huge() -> AsyncIterator[bytes]:
            for _ in range(160):
                yield b"x" * 65536
        return StreamingResponse(huge(), media_type="application/json")
    if mode == "big-event":
        async def big() -> AsyncIterator[bytes]:
            yield _chunk("a")
            yield b"data: " + b"y" * 32768 + b"\n\n"
            yield b"data: [DONE]\n\n"
        return StreamingResponse(big(), media_type=SSE)
    if mode == "after-done":
        async def after() -> AsyncIterator[bytes]:
            yield _chunk("a")
            yield b"data: [DONE]\n\n"
            await asyncio.sleep(0.1)
            yield _chunk("late")
        return StreamingResponse(after(), media_type=SSE)
    if mode == "done-then-hang":
        async def hang() -> AsyncIterator[bytes]:
            yield _chunk("a")
            yield b"data: [DONE]\n\n"
            await _forever_sleep()
        return StreamingResponse(hang(), media_type=SSE)
    if mode == "json-for-stream":
        return JSONResponse({"object": "chat.completion"})
    if mode == "redirect":
        return Response(status_code=302, headers={"location": "http://other.invalid/v1/chat/completions"})
    if mode.startswith("retry-once"):
        if mode not in _retry_seen:
            _retry_seen.add(mode)
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"retry-after": "1"})
        return JSONResponse({"ok": True, "usage": {"total_tokens": 3}})
    if mode == "retry-huge":
        return JSONResponse({"error": {"message": "come back tomorrow"}}, 429,
                            headers={"retry-after": "99999"})
    return JSONResponse({"error": "unknown mode"}, 404)


def _raw_server(sock: socket.socket) -> None:
    """Answers /reset/... with a chunked stream then a TCP reset, anything else with garbage."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                part = conn.recv(65536)
                if not part:
                    break
                data += part
            if b" /reset/" in data.split(b"\r\n", 1)[0]:
                head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n")
                conn.sendall(head + b"%x\r\n" % len(_chunk("a")) + _chunk("a") + b"\r\n")
                time.sleep(0.05)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.sendall(b"this is not HTTP at all\r\n\r\n")


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, int]]:
    app = Starlette(routes=[Route("/{mode:path}/chat/completions", endpoint, methods=["POST", "GET"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    raw.listen(8)
    raw_thread = threading.Thread(target=_raw_server, args=(raw,), daemon=True)
    raw_thread.start()
    yield {"port": sock.getsockname()[1], "raw": raw.getsockname()[1]}
    srv.should_exit = True
    raw.close()
    thread.join(5)


def _client(server: dict[str, int], mode: str, limits: Limits = LIMITS, **kw: Any) -> Client:
    port = server["raw"] if kw.pop("raw", False) else server["port"]
    return Client(Target(f"http://127.0.0.1:{port}/{mode}", "m", api_key=KEY, limits=limits), **kw)


def _timed_chat(server: dict[str, int], mode: str, *, stream: bool = True,
                **kw: Any) -> tuple[Exchange, float]:
    with _client(server, mode, **kw) as c:
        t0 = time.monotonic()
        ex = c.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
        return ex, time.monotonic() - t0


def _assert_no_key(ex: Exchange) -> None:
    assert KEY not in repr(ex)
    assert KEY not in json.dumps(ex.to_dict(), default=str)
    assert KEY not in ex.curl()


# ---- limits against the live server -----------------------------------------------------------------------

def test_stall_before_headers_is_an_idle_timeout(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "stall-headers", stream=False)
    assert ex.status is None and ex.ttfb is None
    assert ex.transport_error is not None and ex.transport_error.startswith("idle timeout: no data for 0.5s")
    assert wall < 3


def test_stall_after_headers_is_an_idle_timeout_with_the_events_so_far(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "stall-body")
    assert ex.status == 200 and ex.ttfb is not None
    assert ex.transport_error == "idle timeout: no data for 0.5s"
    assert len(ex.events) == 1 and ex.events[0].json["choices"][0]["delta"]["content"] == "a"
    assert wall < 3


def test_trickle_hits_the_total_deadline(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "trickle", stream=False)
    assert ex.transport_error == "total deadline 2.0s exceeded"
    assert ex.body_text is not None and ex.body_text.strip() == ""
    assert 1.9 < wall < 4


def test_endless_stream_hits_the_total_deadline(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "forever")
    assert ex.transport_error == "total deadline 2.0s exceeded"
    assert 10 < len(ex.events) and ex.elapsed is not None and ex.elapsed < 3
    assert wall < 4


def test_deadline_is_enforced_during_a_blocked_read(server: dict[str, int]) -> None:
    limits = Limits(idle_timeout=5.0, total_timeout=1.0)  # the idle timeout alone would wait 5 s
    ex, wall = _timed_chat(server, "stall-body", limits=limits)
    assert ex.transport_error == "total deadline 1.0s exceeded"
    assert wall < 2.5


def test_huge_body_is_capped(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "huge", stream=False)
    assert ex.transport_error == f"response larger than {64 * 1024} bytes"
    assert ex.body_truncated and ex.body_text is not None and len(ex.body_text) == 64 * 1024
    assert wall < 3


def test_oversized_event(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "big-event")
    assert ex.transport_error == "SSE event larger than 8192 bytes"
    assert len(ex.events) == 1
    assert wall < 3


def test_events_after_done_are_recorded(server: dict[str, int]) -> None:
    ex, _ = _timed_chat(server, "after-done")
    assert ex.transport_error is None
    assert [e.done for e in ex.events] == [False, True, False]
    assert ex.done_index == 1 and len(ex.chunks) == 1


def test_open_connection_after_done_is_left_after_a_short_grace(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "done-then-hang", limits=Limits(idle_timeout=5.0, total_timeout=10.0))
    assert ex.transport_error is None and ex.done_index == 1
    assert 0.9 < wall < 2.5


def test_reset_mid_stream(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "reset", raw=True)
    assert ex.status == 200 and len(ex.events) == 1
    assert ex.transport_error is not None and ex.transport_error.startswith("connection closed mid-stream")
    assert wall < 3


def test_garbage_instead_of_http(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "garbage", raw=True, stream=False)
    assert ex.status is None and ex.transport_error
    assert wall < 3


def test_refused_connection() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    target = Target(f"http://user:{KEY}@127.0.0.1:{port}/v1", "m", api_key=KEY, limits=LIMITS)
    with Client(target) as c:
        ex = c.chat({"model": "m", "messages": []})
    assert ex.transport_error is not None and ex.transport_error.startswith("connect failed:")
    assert ex.status is None
    _assert_no_key(ex)


def test_stream_requested_but_json_returned_is_kept_as_evidence(server: dict[str, int]) -> None:
    ex, _ = _timed_chat(server, "json-for-stream")
    assert ex.stream and ex.content_type == "application/json"
    assert ex.events == [] and ex.body_text == '{"object":"chat.completion"}'


def test_redirect_is_recorded_not_followed(server: dict[str, int]) -> None:
    ex, _ = _timed_chat(server, "redirect", stream=False)
    assert ex.status == 302 and ex.transport_error is None
    assert ex.response_headers["location"].startswith("http://other.invalid/")


def test_429_retry_after_1_is_retried_once(server: dict[str, int], tmp_path: Path) -> None:
    budget = Budget(tmp_path, max_requests=10, max_tokens_total=None, rate_limit=None)
    ex, wall = _timed_chat(server, f"retry-once-{time.monotonic_ns()}", stream=False, budget=budget)
    assert ex.status == 200 and ex.retries == 1
    assert 0.9 < wall < 3
    snap = budget.snapshot()
    assert snap["requests"] == 2 and snap["retries"] == 1 and snap["tokens"] == 3


def test_429_with_huge_retry_after_is_not_waited(server: dict[str, int]) -> None:
    ex, wall = _timed_chat(server, "retry-huge", stream=False)
    assert ex.status == 429 and ex.retries == 0
    assert wall < 1


def test_canary_key_never_recorded(server: dict[str, int]) -> None:
    for mode, stream in (("ok", False), ("sse", True), ("redirect", False), ("stall-body", True)):
        ex, _ = _timed_chat(server, mode, stream=stream)
        _assert_no_key(ex)
    ex, _ = _timed_chat(server, "ok", stream=False)
    assert ex.json() == {"echo": "Bearer ***", "usage": {"total_tokens": 7}}  # the server did get the key
    assert ex.response_headers["x-echo"] == "Bearer ***"
    ex, _ = _timed_chat(server, "sse")
    assert ex.events[1].json["choices"][0]["delta"]["content"] == "lo Bearer ***" and ex.comments == 1


def test_connection_reuse(server: dict[str, int]) -> None:
    with _client(server, "ok") as c:
        for _ in range(3):
            assert c.get("chat/completions").status == 200
        pool = c._http._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1


# ---- request shapes over MockTransport ----------------------------------------------------------------

class Recorder:
    def __init__(self, responses: list[httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.responses = responses or []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if self.responses:
            return self.responses.pop(0)
        return httpx.Response(200, json={"usage": {"total_tokens": 4}})


def _mock(rec: Recorder, *, api_key: str | None = KEY, limits: Limits = LIMITS, **kw: Any) -> Client:
    target = Target("https://api.example.test/v1/", "m", api_key=api_key, limits=limits,
                    extra_headers={"X-Org": "acme"})
    return Client(target, transport=httpx.MockTransport(rec), **kw)


def test_chat_request_shape_and_default_max_tokens() -> None:
    rec = Recorder()
    seen: list[Exchange] = []
    with _mock(rec, on_exchange=seen.append) as c:
        ex = c.chat({"model": "m", "messages": []}, label="basic")
        c.chat({"model": "m", "messages": [], "max_tokens": 3})
        c.chat({"model": "m", "messages": [], "max_completion_tokens": 3})
        c.chat({"model": "m", "messages": [], "_no_default_max_tokens": True})
    r = rec.requests[0]
    assert r.method == "POST" and str(r.url) == "https://api.example.test/v1/chat/completions"
    assert r.headers["authorization"] == f"Bearer {KEY}" and r.headers["x-org"] == "acme"
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.content) == {"model": "m", "messages": [], "max_tokens": 8}
    assert json.loads(rec.requests[1].content)["max_tokens"] == 3
    assert "max_tokens" not in json.loads(rec.requests[2].content)
    assert json.loads(rec.requests[3].content) == {"model": "m", "messages": []}
    assert ex.label == "basic" and ex.status == 200 and ex.request_json["max_tokens"] == 8
    assert ex.request_headers["authorization"] == "Bearer ***" and ex.request_headers["x-org"] == "acme"
    assert ex.ttfb is not None and ex.elapsed is not None and ex.elapsed >= ex.ttfb
    assert seen[0] is ex and len(seen) == 4
    _assert_no_key(ex)


def test_auth_variants() -> None:
    rec = Recorder()
    with _mock(rec) as c:
        c.chat({}, auth=False)
        ex = c.chat({}, auth="sk-wrong")
        c.chat({}, headers={"Authorization": "Basic abc"})
    assert "authorization" not in rec.requests[0].headers
    assert rec.requests[1].headers["authorization"] == "Bearer sk-wrong"
    assert ex.request_headers["authorization"] == "Bearer ***"
    assert rec.requests[2].headers.get_list("authorization") == ["Basic abc"]
    rec2 = Recorder()
    with _mock(rec2, api_key=None) as c:
        c.chat({})
    assert "authorization" not in rec2.requests[0].headers


def test_credentials_in_extra_headers_follow_auth() -> None:
    rec = Recorder()
    target = Target("http://x.test/v1", "m", api_key=None, limits=LIMITS,
                    extra_headers={"api-key": KEY, "X-Team": "t"})
    with Client(target, transport=httpx.MockTransport(rec)) as c:
        with_key = c.chat({})
        c.chat({}, auth=False)
        c.chat({}, auth="sk-wrong")
    assert rec.requests[0].headers["api-key"] == KEY and with_key.request_headers["api-key"] == "***"
    assert "api-key" not in rec.requests[1].headers and rec.requests[1].headers["x-team"] == "t"
    assert "api-key" not in rec.requests[2].headers
    assert rec.requests[2].headers["authorization"] == "Bearer sk-wrong"


def test_bad_ca_bundle_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="CA bundle"):
        Client(Target("https://x.test", "m", verify_tls=str(tmp_path / "missing.pem")))


def test_post_raw_and_get() -> None:
    rec = Recorder([httpx.Response(400, json={"error": {"message": "bad json"}}),
                    httpx.Response(200, json={})])
    with _mock(rec) as c:
        ex = c.post_raw("chat/completions", b"{not json", content_type="application/json")
        ex2 = c.get("/models")
    assert rec.requests[0].content == b"{not json" and ex.request_body == "{not json"
    assert ex.status == 400 and ex.json() == {"error": {"message": "bad json"}}
    assert rec.requests[1].method == "GET" and str(rec.requests[1].url) == "https://api.example.test/v1/models"
    assert ex2.status == 200 and ex2.request_body is None


def test_redirect_not_followed_so_the_key_stays_home() -> None:
    rec = Recorder([httpx.Response(307, headers={"location": "https://evil.test/steal"})])
    with _mock(rec) as c:
        ex = c.chat({})
    assert ex.status == 307 and len(rec.requests) == 1


def test_stream_parsed_only_on_2xx() -> None:
    sse = b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\ndata: [DONE]\n\n'
    rec = Recorder([httpx.Response(200, headers={"content-type": SSE}, content=sse),
                    httpx.Response(400, headers={"content-type": SSE}, content=sse),
                    httpx.Response(200, headers={"content-type": SSE}, content=sse)])
    with _mock(rec) as c:
        ok = c.chat({"stream": True})
        bad = c.chat({"stream": True})
        forced = c.chat({"stream": "yes"}, stream=True)
    assert ok.stream and len(ok.events) == 2 and ok.body_text is None and ok.done_index == 1
    assert bad.events == [] and bad.body_text == sse.decode()
    assert len(forced.events) == 2


def test_retry_backoff_without_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("conformance.client.time.sleep", sleeps.append)
    rec = Recorder([httpx.Response(503), httpx.Response(503), httpx.Response(503), httpx.Response(200)])
    with _mock(rec) as c:
        ex = c.chat({})
    assert sleeps == [0.5, 1.0] and ex.status == 503 and ex.retries == 2 and len(rec.requests) == 3


def test_retry_after_http_date(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("conformance.client.time.sleep", sleeps.append)
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
    rec = Recorder([httpx.Response(429, headers={"retry-after": when}), httpx.Response(200)])
    with _mock(rec) as c:
        ex = c.chat({})
    assert ex.status == 200 and ex.retries == 1 and 1.5 < sleeps[0] <= 3.5
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds("-1") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_backoff_is_capped_by_max_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("conformance.client.time.sleep", sleeps.append)
    limits = Limits(max_retries=4, max_retry_after=1.5)
    rec = Recorder([httpx.Response(429)] * 4 + [httpx.Response(200)])
    with _mock(rec, limits=limits) as c:
        ex = c.chat({})
    assert sleeps == [0.5, 1.0, 1.5, 1.5] and ex.status == 200 and ex.retries == 4


def test_retry_after_ms_is_read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("conformance.client.time.sleep", sleeps.append)
    rec = Recorder([httpx.Response(429, headers={"retry-after-ms": "250", "retry-after": "1"}),
                    httpx.Response(200)])
    with _mock(rec) as c:
        ex = c.chat({})
    assert sleeps == [0.25] and ex.retries == 1
    assert retry_delay({"Retry-After-Ms": "bad", "Retry-After": "2"}) == 2.0
    assert retry_delay({"retry-after-ms": "-5"}) is None and retry_delay({}) is None


def test_unanswered_after_the_retries_raises_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' client: a 429/503 that survives the retries is no answer to judge (the exchange is in
    the evidence first); other clients (preflight, discovery) get the exchange."""
    monkeypatch.setattr("conformance.client.time.sleep", lambda s: None)
    limited = httpx.Response(429, headers={"retry-after": "1"},
                             json={"error": {"message": "slow down", "type": "rate_limit_error"}})
    seen: list[Exchange] = []
    rec = Recorder([limited] * 3)
    with _mock(rec, on_exchange=seen.append, raise_unanswered=True) as c:
        with pytest.raises(Unanswered) as info:
            c.chat({})
    assert isinstance(info.value, Inconclusive)
    assert str(info.value).startswith("rate-limited after 2 retries (HTTP 429, Retry-After 1)")
    assert info.value.status == 429 and info.value.retries == 2
    assert len(seen) == 1 and seen[0].status == 429 and seen[0].retries == 2 and len(rec.requests) == 3

    rec = Recorder([httpx.Response(503)] * 3)
    with _mock(rec, raise_unanswered=True) as c, pytest.raises(Unanswered, match=(
            r"^overloaded after 2 retries \(HTTP 503, no Retry-After\)")):
        c.chat({})

    rec = Recorder([httpx.Response(429, headers={"retry-after": "99999"})])
    with _mock(rec, raise_unanswered=True) as c, pytest.raises(Unanswered, match=(
            r"after 0 retries \(HTTP 429, Retry-After 99999\) \(a Retry-After too long to wait for")):
        c.chat({})
    assert len(rec.requests) == 1

    rec = Recorder([httpx.Response(429)] * 3)
    with _mock(rec) as c:
        assert c.chat({}).status == 429  # not the checks' client: the exchange is returned


def test_a_throttle_holds_the_whole_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget, the client does not sleep itself: the budget holds every request of the run (every
    client, every worker) until the Retry-After, and a 429 slows the shared pace."""
    sleeps: list[tuple[str, float]] = []
    monkeypatch.setattr("conformance.client.time", type("T", (), {
        "sleep": staticmethod(lambda s: sleeps.append(("client", s))), "monotonic": time.monotonic,
        "time": time.time}))
    clock = [time.monotonic()]

    def budget_sleep(s: float) -> None:
        sleeps.append(("budget", s))
        clock[0] += s

    monkeypatch.setattr("conformance.budget.time", type("T", (), {
        "sleep": staticmethod(budget_sleep), "monotonic": staticmethod(lambda: clock[0])}))
    budget = Budget(tmp_path)
    rec = Recorder([httpx.Response(429, headers={"retry-after": "1"}), httpx.Response(200)])
    with _mock(rec, budget=budget) as c:
        ex = c.chat({})
    assert ex.status == 200 and ex.retries == 1
    assert [who for who, _ in sleeps] == ["budget"] and 0.9 < sleeps[0][1] <= 1.0  # the hold, once
    other = Budget(tmp_path)  # another worker's view of the same run
    assert other.pace == {"throttled": 1, "interval": 0.05, "hold_left": 0.0}
    assert budget.snapshot()["retries"] == 1


def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conformance.client.time.sleep", lambda s: None)
    monkeypatch.setattr("conformance.budget.time", type("T", (), {
        "sleep": staticmethod(lambda s: None), "monotonic": time.monotonic}))


def test_a_429_in_the_runs_own_crowd_is_not_a_refusal(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A request refused again after the run got other answers since its last 429 lost its turn at the
    target's limiter (the run's many requests in flight): that retry does not count against max_retries,
    up to CROWDED_RETRIES more; a 429 with nobody answered in between does (spec/DECISIONS.md#rate-limits)."""
    _no_wait(monkeypatch)
    budget = Budget(tmp_path)
    other = Budget(tmp_path)  # another request of the run (another worker: the same state)

    def crowded(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        if len(rec.requests) <= 6:
            other.answered()  # while this request waited for its retry, the target answered others
            return httpx.Response(429, headers={"retry-after": "0"})
        return httpx.Response(200, json={"usage": {"total_tokens": 4}})

    rec = Recorder()
    with Client(Target("https://api.example.test/v1/", "m", limits=LIMITS),
                transport=httpx.MockTransport(crowded), budget=budget, raise_unanswered=True) as c:
        ex = c.chat({})
    assert ex.status == 200 and ex.retries == 6  # the first 429 its own, the 5 after it lost in the crowd

    lonely = Recorder([httpx.Response(429, headers={"retry-after": "0"})] * 5)
    with _mock(lonely, budget=Budget(tmp_path / "alone"), raise_unanswered=True) as c, pytest.raises(
            Unanswered, match=r"^rate-limited after 2 retries"):
        c.chat({})  # nobody else answered: refused, after the usual 2 retries
    assert len(lonely.requests) == 3

    forever = Budget(tmp_path / "forever")
    sent: list[httpx.Request] = []

    def always(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        forever.answered()
        return httpx.Response(429, headers={"retry-after": "0"})

    with Client(Target("https://api.example.test/v1/", "m", limits=LIMITS),
                transport=httpx.MockTransport(always), budget=forever, raise_unanswered=True) as c, \
            pytest.raises(Unanswered):
        c.chat({})  # bounded: never more than max_retries + CROWDED_RETRIES retries
    assert len(sent) == 1 + LIMITS.max_retries + CROWDED_RETRIES


def test_mock_transport_errors_become_exchanges() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused for {KEY}", request=request)

    target = Target("http://x.test", "m", api_key=KEY, limits=LIMITS)
    with Client(target, transport=httpx.MockTransport(boom)) as c:
        ex = c.chat({})
    assert ex.transport_error == "connect failed: refused for ***"
    _assert_no_key(ex)


def test_budget_is_used_and_exhaustion_raises(tmp_path: Path) -> None:
    budget = Budget(tmp_path, max_requests=2, max_tokens_total=None, rate_limit=None)
    rec = Recorder()
    with _mock(rec, budget=budget) as c:
        c.chat({})
        c.chat({})
        with pytest.raises(BudgetExhausted, match="request budget of 2 exhausted"):
            c.chat({})
    assert len(rec.requests) == 2 and budget.snapshot()["tokens"] == 8


def test_usage_tokens_from_stream() -> None:
    def ev(obj: Any) -> Any:
        from conformance.evidence import SSEEvent

        return SSEEvent(t=0.0, data=json.dumps(obj), json=obj)

    content = {"choices": [{"index": 0, "delta": {"content": "x"}}]}
    ex = Exchange(label="", method="POST", url="u", request_headers={}, stream=True, status=200,
                  events=[ev(content), ev(content), ev({"choices": [{"index": 0, "delta": {}}]})])
    assert usage_tokens(ex) == 2
    ex.events.append(ev({"choices": [], "usage": {"total_tokens": 11}}))
    assert usage_tokens(ex) == 11
