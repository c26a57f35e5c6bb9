"""Record and replay (conformance/har.py): a run written as HAR 1.2, re-judged from it offline."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance import cli
from conformance.cli import main
from conformance.client import Client
from conformance.evidence import Exchange, SSEEvent
from conformance.har import (
    RECORDED_AT_HEADER,
    NotRecorded,
    ReplayTransport,
    build_har,
    event_text,
    load_har,
    recorded_exchanges,
)
from conformance.reference.server import start_in_thread
from conformance.target import Limits, Target
from conformance.violations import Inconclusive, NoAnswer, Unanswered

CANARY = "sk-canary-har-5d1e-never-write-me"
# a slice of the suite with discovery probes, streams, auth refusals, generated requests and run-wide rules
ONLY = ["--only", "core", "--only", "streaming", "--only", "auth", "--only", "stop"]


def _results(report: Path) -> dict[str, Any]:
    return json.loads((report / "results.json").read_text(encoding="utf-8"))


def _verdicts(report: Path) -> dict[str, str]:
    return {k: v["verdict"] for k, v in _results(report)["requirements"].items()}


ROOT = Path(__file__).resolve().parents[1]
# the replay in its own process with every way out refused: no connection, no server
_OFFLINE_REPLAY = """
import socket, sys
def refuse(*a, **k):
    raise AssertionError("replay opened a network connection")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = refuse
socket.socket.bind = socket.socket.listen = refuse  # no server either
from conformance.cli import main
sys.exit(main(["replay", *sys.argv[1:]]))
"""


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # each run in a fresh process, as a user runs them
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=900,
                          check=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A run of the reference server (with a canary key) recorded to run.har: (har, report dir, exit code)."""
    base = tmp_path_factory.mktemp("har")
    srv = start_in_thread(api_key=CANARY)
    try:
        done = _cli(["-m", "conformance.cli", "run", "--base-url", srv.base_url, "--model", srv.model, *ONLY,
                     "--report-dir", str(base / "live"), "--record", str(base / "run.har")],
                    {"CONFORMANCE_API_KEY": CANARY})
    finally:
        srv.stop()
    assert CANARY not in done.stdout + done.stderr
    return base / "run.har", base / "live", done.returncode


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection may be opened and no embedded server started."""

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("replay opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("conformance.reference.server.start_in_thread", refuse)
    monkeypatch.delenv(cli.REPLAY_KEY_ENV, raising=False)


def test_record_writes_har_12_with_every_exchange_once_and_never_the_key(recorded: tuple[Path, Path, int]
                                                                         ) -> None:
    har_path, live, code = recorded
    assert code == 0
    text = har_path.read_text(encoding="utf-8")
    assert CANARY not in text
    log = json.loads(text)["log"]
    assert log["version"] == "1.2"
    assert log["creator"]["name"] == "chat-conformance"
    assert log["_conformance"]["model"] == "reference-tiny"
    entries = log["entries"]
    xids = [e["_xid"] for e in entries]
    assert len(xids) == len(set(xids))
    # every exchange of every check record and every discovery probe is there
    results = _results(live)
    in_records = {ex["xid"] for c in results["checks"] for ex in c.get("exchanges", [])}
    assert in_records <= set(xids)
    assert any(e["_label"].startswith("discovery") for e in entries)
    for e in entries:
        assert {"method", "url", "headers"} <= set(e["request"])
        assert {"status", "headers", "content"} <= set(e["response"])
        assert e["timings"]["wait"] >= 0 and e["timings"]["receive"] >= 0
        for h in e["request"]["headers"]:
            if h["name"].lower() == "authorization":
                assert h["value"] == "Bearer ***"
    streams = [e for e in entries if e["_stream"] and e["response"]["status"] == 200]
    assert streams
    for e in streams:
        assert e["response"]["content"]["mimeType"].startswith("text/event-stream")
        assert e["response"]["content"]["text"].startswith("data: ")
        assert e["response"]["content"]["text"].endswith("data: [DONE]\n\n")
    posts = [e for e in entries if e["request"]["method"] == "POST"]
    assert all(e["request"]["postData"]["mimeType"] for e in posts)


def test_replay_offline_gives_the_same_verdicts_from_the_same_requests(recorded: tuple[Path, Path, int],
                                                                      tmp_path: Path) -> None:
    har_path, live, _ = recorded
    done = _cli(["-c", _OFFLINE_REPLAY, str(har_path), *ONLY, "--report-dir", str(tmp_path / "replay")],
                {"CONFORMANCE_API_KEY": ""})
    assert "no request leaves this machine" in done.stderr
    assert done.returncode == 0, done.stderr[-2000:]
    assert _verdicts(tmp_path / "replay") == _verdicts(live)
    checks = _results(tmp_path / "replay")["checks"]
    assert not [c for c in checks if "not recorded" in c.get("skip_reason", "")]
    # the same requests, the property-based checks' included
    sent = {c["nodeid"]: len(c["exchanges"]) for c in _results(live)["checks"]}
    assert {c["nodeid"]: len(c["exchanges"]) for c in checks} == sent


def test_a_request_the_recording_lacks_is_inconclusive_never_a_failure(
    recorded: tuple[Path, Path, int], tmp_path: Path, offline: None
) -> None:
    har_path, _, _ = recorded
    har = json.loads(har_path.read_text(encoding="utf-8"))
    har["log"]["entries"] = [e for e in har["log"]["entries"] if e["_label"] != "list models"]
    cut = tmp_path / "cut.har"
    cut.write_text(json.dumps(har), encoding="utf-8")
    code = main(["replay", str(cut), "--only", "CORE-MODELS-LIST", "--report-dir", str(tmp_path / "r")])
    assert code == 0
    results = _results(tmp_path / "r")
    check = next(c for c in results["checks"] if c["nodeid"].endswith("test_models_list"))
    assert check["outcome"] == "skipped"
    assert "not recorded: GET /v1/models" in check["skip_reason"]
    assert results["requirements"]["CORE-MODELS-LIST"]["verdict"] not in ("pass", "fail", "error")
    assert "fail" not in {r["verdict"] for r in results["requirements"].values()}


def test_replay_of_a_missing_or_foreign_file_is_a_usage_error(tmp_path: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "none.har")]) == 2
    assert "not found" in capfd.readouterr().err
    (tmp_path / "x.har").write_text('{"log": {"version": "1.2", "entries": []}}', encoding="utf-8")
    assert main(["replay", str(tmp_path / "x.har")]) == 2
    assert "no recorded target" in capfd.readouterr().err
    (tmp_path / "y.har").write_text("[1]", encoding="utf-8")
    with pytest.raises(Exception, match="not a HAR file"):
        load_har(tmp_path / "y.har")


# ---- units -------------------------------------------------------------------------------------------------

_TARGET = Target(base_url="http://recorded.invalid/v1", model="m", limits=Limits(max_retries=2))


def _ex(**kw: Any) -> dict[str, Any]:
    base = Exchange(label="x", method="POST", url="http://recorded.invalid/v1/chat/completions",
                    request_headers={"Authorization": "Bearer ***", "Content-Type": "application/json"},
                    request_body='{"a": 1}')
    for k, v in kw.items():
        setattr(base, k, v)
    return base.to_dict()


def _transport(*exchanges: dict[str, Any]) -> ReplayTransport:
    return ReplayTransport(build_har(list(exchanges), run={"base_url": "b", "model": "m", "started": 0}))


def test_event_text_rebuilds_the_stream() -> None:
    events = [{"data": '{"x": 1}', "event": "message", "id": None},
              {"data": "a\nb", "event": "delta", "id": "7"},
              {"data": "[DONE]", "event": "message", "id": None}]
    assert event_text(events) == 'data: {"x": 1}\n\nevent: delta\nid: 7\ndata: a\ndata: b\n\ndata: [DONE]\n\n'


def test_identical_requests_get_the_recorded_answers_in_order_then_not_recorded() -> None:
    first = _ex(status=200, response_headers={"content-type": "application/json", "content-encoding": "gzip"},
                body_text='{"n": 1}')
    second = _ex(status=400, response_headers={"content-type": "application/json"}, body_text='{"n": 2}')
    with Client(_TARGET, transport=_transport(first, second), raise_unanswered=True) as c:
        a, b = c.post_raw("chat/completions", b'{"a": 1}'), c.post_raw("chat/completions", b'{"a": 1}')
        assert (a.status, a.json(), b.status, b.json()) == (200, {"n": 1}, 400, {"n": 2})
        assert a.response_headers[RECORDED_AT_HEADER.lower()] == "0.0"
        with pytest.raises(NotRecorded, match="not recorded: POST /v1/chat/completions"):
            c.post_raw("chat/completions", b'{"a": 1}')
        with pytest.raises(Inconclusive, match="not recorded"):
            c.post_raw("chat/completions", b'{"a": 2}')


def test_streams_transport_errors_and_retried_429s_replay_as_recorded() -> None:
    events = [SSEEvent(t=0.1, data='{"choices": []}', json={"choices": []}),
              SSEEvent(t=0.2, data="[DONE]", done=True)]
    stream = _ex(request_body='{"s": 1}', stream=True, status=200, events=events,
                 response_headers={"content-type": "text/event-stream"}, ttfb=0.05, elapsed=0.2)
    refused = _ex(request_body='{"r": 1}', transport_error="connect failed: [Errno 111] Connection refused")
    limited = _ex(request_body='{"l": 1}', status=429, retries=2, body_text="",
                  response_headers={"retry-after": "0"})
    har = build_har([stream, refused, limited], run={"started": 0})
    entries = har["log"]["entries"]
    assert entries[1]["response"]["status"] == 0 and entries[1]["_error"].startswith("connect failed")
    assert entries[0]["timings"]["wait"] == 50.0
    with Client(_TARGET, transport=ReplayTransport(har), raise_unanswered=True) as c:
        ex = c.post_raw("chat/completions", b'{"s": 1}', stream=True)
        assert [e.data for e in ex.events] == ['{"choices": []}', "[DONE]"] and ex.transport_error is None
        with pytest.raises(NoAnswer) as refused_run:  # the checks' client: no answer is never judged
            c.post_raw("chat/completions", b'{"r": 1}')
        ex = refused_run.value.exchange  # type: ignore[attr-defined]
        assert ex.status is None and "Connection refused" in (ex.transport_error or "")
        with pytest.raises(Unanswered):  # answered 429 as often as it was asked: retries + 1
            c.post_raw("chat/completions", b'{"l": 1}')


def test_recorded_exchanges_are_each_written_once_probes_first() -> None:
    probe = Exchange(label="probe", method="GET", url="u", request_headers={})
    a, b = _ex(label="a"), _ex(label="b")
    records = [{"exchanges": [a, b]}, {"exchanges": [a]}]
    assert [e["label"] for e in recorded_exchanges(records, [probe])] == ["probe", "a", "b"]


def test_har_module_stays_below_the_harness() -> None:
    tree = ast.parse(Path(__file__).resolve().parents[1].joinpath("conformance", "har.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in mods if m.startswith(("pytest", "conformance.plugin", "conformance.cli",
                                                "conformance.checks", "conformance.client"))]
    assert httpx  # the transport is an httpx one


def test_record_into_a_folder_is_a_usage_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--record", str(tmp_path)]) == 2
    assert "is a folder: give a file name" in capfd.readouterr().err


def test_record_with_a_fleet_is_a_usage_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "a", "--model", "b", "--record", str(tmp_path / "x.har")]) == 2
    assert "--record writes one model's run" in capfd.readouterr().err


def test_odd_exchanges_never_break_the_recording(tmp_path: Path) -> None:
    bad_url = _ex(url="http://[::1/v1/chat/completions", transport_error="invalid request: bad URL")
    surrogate = _ex(status=200, body_text='{"x": "\udcff"}',
                    response_headers={"content-type": "application/json"})
    path = tmp_path / "odd.har"
    from conformance.har import write_har

    write_har(path, [{"exchanges": [bad_url, surrogate]}], [], run={"started": 0})
    entries = load_har(path)["log"]["entries"]
    assert entries[0]["response"]["status"] == 0 and entries[0]["request"]["queryString"] == []
    assert entries[1]["response"]["content"]["text"] == '{"x": "\udcff"}'
    ReplayTransport(load_har(path))
