"""Preflight (issue 21, points 3 and 4): configuration is decided before any check, in one line, and a
warming target is waited for, bounded by --wait-ready.

Small local servers play the targets: the reference server (an unknown model, a base URL without /v1),
hand-written ones (an OpenAI-, vLLM- or Ollama-shaped "model not found", an HTML page, a 503 that stays),
and the reference app behind a 503-while-loading front (a whole run that proceeds once it is ready)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from conformance.cli import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from conformance.errors import TargetUnreachable
from conformance.reference.app import create_app
from conformance.reference.server import RunningServer, start_in_thread
from conformance.target import Limits, Target

CANARY = "sk-canary-preflight-4b1d"
QUICK = ["--timeout", "5"]

Answer = tuple[int, dict[str, str], bytes]


class FakeTarget:
    """A target on 127.0.0.1 answering every request with ``respond(method, path)``; counts requests."""

    def __init__(self, respond: Callable[[str, str], Answer]) -> None:
        self.requests: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                fake.requests.append((self.command, self.path))
                fake.auth.append(self.headers.get("Authorization"))
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, headers, body = respond(self.command, self.path)
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.root = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def chats(self) -> int:
        return sum(1 for m, p in self.requests if m == "POST" and p.endswith("/chat/completions"))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[str, str], Answer]], FakeTarget]]:
    started: list[FakeTarget] = []

    def make(respond: Callable[[str, str], Answer]) -> FakeTarget:
        started.append(FakeTarget(respond))
        return started[-1]

    yield make
    for f in started:
        f.stop()


@pytest.fixture(scope="module")
def reference() -> Iterator[RunningServer]:
    server = start_in_thread()
    yield server
    server.stop()


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _models(*ids: str) -> Answer:
    return 200, {}, _json({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})


def _run(argv: list[str], report: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", *argv, "--report-dir", str(report)])
    out = capsys.readouterr()
    assert CANARY not in out.out + out.err
    return code, out.err


def _one_line(err: str) -> str:
    """The run's one line (the usage error or the unreachable target); nothing else, no verdict."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "CONFORMANT" not in err
    return lines[0]


def _no_report(report: Path) -> None:
    assert not (report / "results.json").exists(), "preflight decides before any check: no report"


# ---- point 3: an unknown model is the user's mistake (exit 2), naming what the server lists --------------


def test_unknown_model_on_the_reference_server_is_a_usage_error_naming_its_models(
    reference: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONFORMANCE_API_KEY", CANARY)
    argv = ["--base-url", reference.base_url, "--model", "my-staging-model", *QUICK]
    code, err = _run(argv, tmp_path, capsys)
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert line.startswith("chat-conformance: error: model 'my-staging-model' is not served by "
                           f"{reference.base_url}")
    assert "it lists 'reference-tiny': pass it with --model" in line
    _no_report(tmp_path)


OPENAI_404 = {"error": {"message": "The model `gpt-x` does not exist or you do not have access to it.",
                        "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
VLLM_404 = {"object": "error", "message": "The model `gpt-x` does not exist.", "type": "NotFoundError",
            "param": None, "code": 404}
OLLAMA_404 = {"error": {"message": 'model "gpt-x" not found, try pulling it first', "type": "api_error",
                        "param": None, "code": None}}
PARAM_400 = {"error": {"message": "Invalid value", "type": "invalid_request_error", "param": "model",
                       "code": None}}


@pytest.mark.parametrize("status, body", [(404, OPENAI_404), (404, VLLM_404), (404, OLLAMA_404),
                                          (400, PARAM_400)], ids=["openai", "vllm", "ollama", "param-model"])
def test_a_model_error_lists_at_most_ten_served_ids_in_one_line(
    fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, body: dict[str, Any]
) -> None:
    ids = [f"model-{i:02d}" for i in range(12)]

    def respond(method: str, path: str) -> Answer:
        return _models(*ids) if path == "/v1/models" else (status, {}, _json(body))

    srv = fake(respond)
    code, err = _run(["--base-url", f"{srv.root}/v1", "--model", "gpt-x", *QUICK], tmp_path, capsys)
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert f"model 'gpt-x' is not served by {srv.root}/v1 (HTTP {status}" in line
    assert "it lists 'model-00', 'model-01'" in line
    assert "'model-09', ... (12 in all): pass one of them with --model" in line
    assert "model-10" not in line
    assert len(srv.requests) == 2  # the chat request, then GET /models once


def test_a_model_error_without_a_model_list_still_names_the_model(
    fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = fake(lambda m, p: (404, {}, _json(OPENAI_404)))
    code, err = _run(["--base-url", f"{srv.root}/v1", "--model", "gpt-x", *QUICK], tmp_path, capsys)
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert "model 'gpt-x' is not served by" in line and "model_not_found" not in line.split("(")[0]
    assert "does not exist or you do not have access to it." in line
    assert "pass the name of a model it serves with --model" in line


def test_a_server_that_answers_any_model_name_is_not_an_unknown_model() -> None:
    """llama.cpp answers whatever model is asked and lists one file name: no error, and /models unasked."""
    requests: list[str] = []

    def respond(method: str, path: str) -> Answer:
        requests.append(path)
        if path == "/v1/models":
            return _models("tiny-q4.gguf")
        return 200, {}, _json({"id": "x", "object": "chat.completion", "created": 1, "model": "tiny-q4.gguf",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                            "finish_reason": "length"}]})

    srv = FakeTarget(respond)
    try:
        from conformance.preflight import preflight

        preflight(Target(base_url=f"{srv.root}/v1", model="my-alias"), wait_ready=0)
        assert requests == ["/v1/chat/completions"]
    finally:
        srv.stop()


def test_a_key_and_control_characters_never_reach_the_line(
    fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFORMANCE_API_KEY", CANARY)
    hostile = {"error": {"message": f"model not found, key {CANARY}\n\x1b[31mRED", "code": "model_not_found"}}

    def respond(method: str, path: str) -> Answer:
        return _models("ok\x1b]0;pwned\x07") if path == "/v1/models" else (404, {}, _json(hostile))

    srv = fake(respond)
    code, err = _run(["--base-url", f"{srv.root}/v1", "--model", "x", *QUICK], tmp_path, capsys)
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert "\x1b" not in line and "\x07" not in line
    assert all(a == f"Bearer {CANARY}" for a in srv.auth)  # the key was sent, and is in no output (_run)


# ---- point 3: the wrong place, or not the API at all: exit 3, the likely fix named ------------------------


def test_a_base_url_without_v1_names_the_fix(
    reference: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = reference.base_url.removesuffix("/v1")
    code, err = _run(["--base-url", root, "--model", reference.model, *QUICK], tmp_path, capsys)
    assert code == EXIT_UNREACHABLE
    line = _one_line(err)
    assert line.endswith(f"add /v1: --base-url {root}/v1")
    _no_report(tmp_path)


def test_a_base_url_with_v1_twice_names_the_fix(
    reference: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(["--base-url", reference.base_url + "/v1", "--model", reference.model, *QUICK], tmp_path,
                     capsys)
    assert code == EXIT_UNREACHABLE
    assert _one_line(err).endswith(f"--base-url has /v1 twice: --base-url {reference.base_url}")
    _no_report(tmp_path)


PAGE = b"<!doctype html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"


@pytest.mark.parametrize(
    "status, content_type, body, said",
    [
        (200, "text/html; charset=utf-8", PAGE, "answered HTTP 200 text/html (a web page)"),
        (404, "text/html", b"<html><body><h1>404</h1></body></html>", "HTTP 404 text/html (a web page)"),
        (200, "text/plain", b"Sure! Here is your completion: hello.\n", "HTTP 200 text/plain, not JSON"),
    ],
    ids=["html-200", "html-404", "text-200"],
)
def test_a_server_that_is_not_the_api_is_unreachable_in_one_line(
    fake: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    content_type: str,
    body: bytes,
    said: str,
) -> None:
    srv = fake(lambda m, p: (status, {"Content-Type": content_type}, body))
    code, err = _run(["--base-url", f"{srv.root}/v1", "--model", "m", *QUICK], tmp_path, capsys)
    assert code == EXIT_UNREACHABLE
    line = _one_line(err)
    assert f"target {srv.root}/v1 does not speak the OpenAI chat API" in line and said in line
    assert "check --base-url" in line and "<h1>" not in line
    _no_report(tmp_path)
    assert len(srv.requests) == 1  # the base URL ends in /v1: no likely other one to probe


def test_a_405_without_v1_probes_at_most_a_few_requests(
    fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = fake(lambda m, p: (405, {}, _json({"detail": "Method Not Allowed"})))
    code, err = _run(["--base-url", f"{srv.root}/api", "--model", "m", *QUICK], tmp_path, capsys)
    assert code == EXIT_UNREACHABLE
    line = _one_line(err)
    assert f"target {srv.root}/api has no POST /chat/completions (answered HTTP 405" in line
    assert len(srv.requests) <= 4


# ---- point 4: a warming target is waited for, bounded by --wait-ready ----------------------------------


def _loading(seconds_left: Callable[[], float], retry_after: str | None) -> Callable[..., Any]:
    """The reference app behind a front that answers 503 (llama.cpp's "Loading model") while it loads."""
    app = create_app()
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    body = _json({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})

    async def front(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and seconds_left() > 0:
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return front


@pytest.fixture
def loading() -> Iterator[Callable[[float, str | None], str]]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(load_s: float, retry_after: str | None = "1") -> str:
        ready_at = time.monotonic() + load_s
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = _loading(lambda: ready_at - time.monotonic(), retry_after)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        while not server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(5)


def test_a_target_loading_its_model_is_waited_for_and_the_run_proceeds(
    loading: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = loading(2.0)
    code, err = _run(["--base-url", base, "--model", "reference-tiny", "--only", "CORE-REQUEST-JSON",
                      "--wait-ready", "30", *QUICK], tmp_path, capsys)
    assert code == EXIT_OK, err[-2000:]
    waits = [ln for ln in err.splitlines() if "waiting" in ln]
    assert waits and waits[0] == (
        "chat-conformance: target not ready (HTTP 503, Retry-After 1 s): waiting 1 s, "
        "30 s left of --wait-ready 30"
    )
    assert (tmp_path / "results.json").is_file()


def test_a_target_that_stays_503_is_unreachable_after_wait_ready(
    loading: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = loading(3600.0)
    start = time.monotonic()
    code, err = _run(["--base-url", base, "--model", "reference-tiny", "--wait-ready", "2", *QUICK], tmp_path,
                     capsys)
    took = time.monotonic() - start
    assert code == EXIT_UNREACHABLE
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert all("waiting" in ln for ln in lines[:-1]) and len(lines) >= 2
    assert lines[-1].startswith(f"chat-conformance: target {base} was not ready after waiting 2")
    assert "(--wait-ready 2): not ready (HTTP 503, Retry-After 1 s); raise --wait-ready" in lines[-1]
    assert 1.9 < took < 2 + 5, "bounded by --wait-ready plus one request"
    _no_report(tmp_path)


def test_a_503_without_retry_after_is_waited_for_with_a_backoff() -> None:
    """llama.cpp answers 503 "Loading model" with no Retry-After while it loads."""
    attempts: list[float] = []

    def respond(method: str, path: str) -> Answer:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            return 503, {}, _json({"error": {"code": 503, "message": "Loading model"}})
        return 200, {}, _json({"choices": []})

    srv = FakeTarget(respond)
    lines: list[str] = []
    try:
        from conformance.preflight import preflight

        preflight(Target(base_url=f"{srv.root}/v1", model="m"), wait_ready=30, on_wait=lines.append)
    finally:
        srv.stop()
    assert len(attempts) == 3 and attempts[2] - attempts[0] >= 2.9  # waits of 1 s, then 2 s
    assert lines[0].startswith("target not ready (HTTP 503, no Retry-After): waiting 1 s, ")


def test_a_retry_after_beyond_wait_ready_is_not_waited_for(
    fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = fake(lambda m, p: (429, {"Retry-After": "600"}, _json({"error": {"message": "slow down"}})))
    start = time.monotonic()
    code, err = _run(["--base-url", f"{srv.root}/v1", "--model", "m", "--wait-ready", "30", *QUICK], tmp_path,
                     capsys)
    assert code == EXIT_UNREACHABLE and time.monotonic() - start < 8  # not the 600 s asked (slack for CI)
    assert _one_line(err).endswith("rate-limited the first request (HTTP 429, Retry-After 600 s): more than "
                                   "the 30 s left of --wait-ready 30: raise --wait-ready or retry later")
    assert srv.chats() == 1  # not the client's retries on top of the preflight's


def test_wait_ready_0_never_waits(fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv = fake(lambda m, p: (503, {"Retry-After": "1"}, _json({"error": {"message": "Loading model"}})))
    code, err = _run(["--base-url", f"{srv.root}/v1", "--model", "m", "--wait-ready", "0", *QUICK], tmp_path,
                     capsys)
    assert code == EXIT_UNREACHABLE
    assert "--wait-ready 0 waits for none: give --wait-ready SECONDS" in _one_line(err)
    assert srv.chats() == 1


def test_the_client_retries_do_not_multiply_the_wait() -> None:
    """Each request of the preflight is sent once (no retries of the client on top): a 503 every time with
    Retry-After 1 within --wait-ready 2 costs about three requests, never the client's 3 per attempt."""
    srv = FakeTarget(lambda m, p: (503, {"Retry-After": "1"}, b"{}"))
    try:
        from conformance.preflight import preflight

        start = time.monotonic()
        with pytest.raises(TargetUnreachable, match="--wait-ready 2"):
            target = Target(base_url=f"{srv.root}/v1", model="m", limits=Limits(max_retries=2))
            preflight(target, wait_ready=2)
        assert time.monotonic() - start < 6  # --wait-ready 2 plus one request (slack for a loaded CI)
        assert 2 <= srv.chats() <= 4
    finally:
        srv.stop()


# ---- point 4: a refused connection waits only when asked ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_unreachable_at_once_naming_the_opt_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"http://127.0.0.1:{_free_port()}/v1"
    start = time.monotonic()
    code, err = _run(["--base-url", base, "--model", "m", *QUICK], tmp_path, capsys)
    assert code == EXIT_UNREACHABLE and time.monotonic() - start < 6  # at once, not --wait-ready's 300 s
    line = _one_line(err)
    assert f"target {base} unreachable: connect failed" in line
    assert "add --wait-for-connect to wait for it up to --wait-ready" in line


def test_wait_for_connect_waits_for_a_server_still_starting() -> None:
    port = _free_port()
    started: list[RunningServer] = []
    timer = threading.Timer(1.5, lambda: started.append(start_in_thread(port=port)))
    timer.start()
    lines: list[str] = []
    try:
        from conformance.preflight import preflight

        preflight(Target(base_url=f"http://127.0.0.1:{port}/v1", model="reference-tiny"), wait_ready=20,
                  wait_for_connect=True, on_wait=lines.append)
    finally:
        timer.join()
        for s in started:
            s.stop()
    assert lines and lines[0].startswith("target not accepting connections yet (connect failed")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--wait-ready", "-1"], "--wait-ready is not 0 or more seconds: give e.g. --wait-ready 300"),
        (["--wait-ready", "nan"], "--wait-ready is not 0 or more seconds"),
        (["--wait-ready", "0", "--wait-for-connect"], "--wait-for-connect waits within --wait-ready"),
    ],
)
def test_wait_ready_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(["--base-url", "http://127.0.0.1:9/v1", "--model", "m", *argv], tmp_path, capsys)
    assert code == EXIT_USAGE
    assert message in _one_line(err)



def test_the_preflight_sends_the_runs_headers(fake: Any) -> None:
    """A key passed as --header 'api-key: ...' (Azure's style) reaches the preflight too: no false 401."""
    from conformance.cli import _preflight

    srv: list[FakeTarget] = []

    def respond(method: str, path: str) -> Answer:
        keyed = srv[0].headers[-1].get("api-key") == CANARY
        return (200, {}, _json({"choices": []})) if keyed else (401, {}, b"{}")

    srv.append(fake(respond))
    _preflight(f"{srv[0].root}/v1", "m", None, True, 5.0, headers=[f"api-key: {CANARY}"])
    with pytest.raises(TargetUnreachable, match=r"refused the credentials \(HTTP 401\)"):
        _preflight(f"{srv[0].root}/v1", "m", None, True, 5.0)
