"""Misses and false alarms seen on real servers (issue 23, points 6 and 7), each pinned at the unit level and
on the reference server.

Misses: a 5xx text/plain answer judged by ERROR-SHAPE whatever reasoning does; a character dropped from a
stream told from a near-tie by its bytes; a tool call cut by max_tokens that ends "tool_calls"; an error
event inside a 200 stream. False alarms: streamed arguments that are JSON but not an object (a SHOULD, under
TOOLS-ARGS-JSON); a server's default repeat penalty under LOGPROBS-GREEDY-CONSISTENT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from conformance.checks import run_wide as _run_wide
from conformance.checks._runwide import judge_run, run_wide_selection
from conformance.checks._stream import judge_stream
from conformance.checks._support import DIVERGED, NEAR_TIE, Answer, TokenLogprob, compare_answers
from conformance.cli import main
from conformance.evidence import Exchange, SSEEvent
from conformance.reference import create_app
from conformance.violations import Judge

URL = "http://target/v1/chat/completions"


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "reports"
    main(["run", "--report-dir", str(report), *args])
    return json.loads((report / "results.json").read_text(encoding="utf-8"))


def _exchange(request: dict[str, Any] | None = None, content_type: str = "application/json",
              **kw: Any) -> dict[str, Any]:
    """A recorded exchange (a record's dict), answered."""
    ex = Exchange(label="x", method="POST", url=URL, request_headers={},
                  request_body=json.dumps(request or {"model": "m"}),
                  response_headers={"content-type": content_type}, **{"status": 200, **kw})
    return ex.to_dict()


# ---- (a) ERROR-SHAPE never hinges on reasoning ------------------------------------------------------------

def _records_with_text_500() -> list[dict[str, Any]]:
    text_500 = _exchange(status=500, content_type="text/plain", body_text="Internal Server Error")
    skipped = {"nodeid": "test_generated.py::test_generated_invalid_request_rejected[separate_reasoning]",
               "requirements": ["GEN-INVALID-REJECTED", "ERROR-SHAPE", "REASONING-SEPARATE"],
               "outcome": "skipped", "skip_reason": "unsupported: separate_reasoning needs one of reasoning",
               "exchanges": []}
    ran = {"nodeid": "test_x.py::test_y", "requirements": ["CORE-OBJECT"], "outcome": "passed",
           "skip_reason": "", "exchanges": [text_500]}
    return [skipped, ran]


def test_a_check_skipped_for_reasoning_does_not_switch_error_shape_off() -> None:
    caps = {"reasoning": {"supported": False}, "tools": {"supported": True}}
    records = _records_with_text_500()
    selected = run_wide_selection(records, caps)
    assert "ERROR-SHAPE" in selected
    assert "REASONING-SEPARATE" not in selected  # its own capability is unsupported
    # without the run's capabilities, only optional requirements of a skipped check count as unsupported
    assert "ERROR-SHAPE" in run_wide_selection(records)
    assert "REASONING-SEPARATE" not in run_wide_selection(records)
    out = {r["nodeid"]: r for r in _run_wide(records, None, caps)}
    assert out["run-wide::ERROR-SHAPE"]["outcome"] == "failed"
    assert "not {\"error\"" in out["run-wide::ERROR-SHAPE"]["violations"][0]["message"]


def test_text_500_fails_error_shape_with_reasoning_unsupported(tmp_path: Path) -> None:
    results = _run(tmp_path, "--fault", "bad-input-500-text", "--variant", "reasoning-unsupported")
    assert results["capabilities"]["reasoning"]["supported"] is False
    shape = results["requirements"]["ERROR-SHAPE"]
    assert shape["verdict"] == "fail", shape
    assert shape["reason"].startswith("run-wide")


# ---- (b) a character dropped from a stream is not a near-tie -----------------------------------------------

def _tok(token: str, raw: bytes, lp: float, top: tuple[tuple[str, float], ...]) -> TokenLogprob:
    return TokenLogprob(token, lp, top, raw)


def test_a_dropped_multibyte_character_is_told_from_a_near_tie() -> None:
    # a tiny model's flat distribution: every candidate within 0.5 nats, so token strings alone read a tie
    flat = ((" é", -10.30), ("", -10.30), (" a", -10.35))
    plain = Answer(" aé b", tokens=(
        _tok(" a", b" a", -10.3, flat), _tok("é", "é".encode(), -10.3, flat), _tok(" b", b" b", -10.3, flat)))
    # the stream lost the character from its text and from its token string, not from the token's bytes
    stream = Answer(" a b", tokens=(
        _tok(" a", b" a", -10.3, flat), _tok("", "é".encode(), -10.3, flat), _tok(" b", b" b", -10.3, flat)))
    cmp = compare_answers(plain, stream, names=("non-streamed", "streamed"))
    assert cmp.kind == DIVERGED, cmp
    assert "missing or garbled in the streamed text" in cmp.detail and "c3 a9" in cmp.detail
    # without bytes the same pair is still what it was: a near-tie (nothing tells more)
    strip = [Answer(a.content, tokens=tuple(TokenLogprob(t.token, t.logprob, t.top) for t in a.tokens or ()))
             for a in (plain, stream)]
    assert compare_answers(*strip).kind == NEAR_TIE


def test_partial_byte_tokens_spell_the_text_by_their_bytes() -> None:
    fffd = "\ufffd"
    top = ((fffd, -0.01), (" a", -5.0))
    a = Answer(" aë", tokens=(_tok(" a", b" a", -0.1, ((" a", -0.1),)), _tok(fffd, b"\xc3", -0.01, top),
                              _tok(fffd, b"\xab", -0.01, top)))
    b = Answer(" a", tokens=a.tokens)
    cmp = compare_answers(a, b)
    assert cmp.kind == DIVERGED and "second text" in cmp.detail


def test_stream_dropping_multibyte_fails_stream_matches_nonstream(tmp_path: Path) -> None:
    results = _run(tmp_path, "--fault", "stream-drops-multibyte", "--only", "STREAM-MATCHES-NONSTREAM")
    req = results["requirements"]["STREAM-MATCHES-NONSTREAM"]
    assert req["verdict"] == "fail"
    assert "a character is missing or garbled in the streamed text" in req["reason"]


def test_the_reference_model_copies_non_ascii_characters() -> None:
    client = TestClient(create_app())
    r = client.post("/v1/chat/completions", json={
        "model": "reference-tiny", "messages": [{"role": "user", "content": "Zoë aime la crème brûlée"}],
        "temperature": 0, "max_tokens": 8, "logprobs": True})
    content = r.json()["choices"][0]["message"]["content"]
    assert "ë" in content and "è" in content
    entries = r.json()["choices"][0]["logprobs"]["content"]
    assert b"".join(bytes(e["bytes"]) for e in entries).decode("utf-8", errors="replace") == content


# ---- (c) a tool call cut by max_tokens ends with "length" --------------------------------------------------

def test_cut_tool_call_with_finish_tool_calls_fails(tmp_path: Path) -> None:
    results = _run(tmp_path, "--fault", "tool-call-cut-finish-tool-calls", "--only", "TOOLS-FINISH-REASON")
    req = results["requirements"]["TOOLS-FINISH-REASON"]
    assert req["verdict"] == "fail"
    assert "cut short by max_tokens" in req["reason"]


def test_cut_tool_call_judged_run_wide() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"city": "Par'}}

    def answer(finish: str) -> dict[str, Any]:
        return _exchange({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                          "tool_choice": "required",
                          "tools": [{"type": "function", "function": {"name": "f"}}]},
                         body_text=json.dumps({
                             "id": "a", "object": "chat.completion", "created": 1, "model": "m",
                             "choices": [{"index": 0, "finish_reason": finish, "message": {
                                 "role": "assistant", "content": None, "tool_calls": [call]}}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}))

    for finish, outcome in (("tool_calls", "failed"), ("length", "passed")):
        out = judge_run([{"requirements": [], "exchanges": [answer(finish)]}], ["TOOLS-FINISH-REASON"])
        assert [r["outcome"] for r in out] == [outcome], (finish, out)


# ---- (d) an error event inside a 200 stream ----------------------------------------------------------------

def _stream(*payloads: str) -> Exchange:
    events = [SSEEvent(t=0.0, data=p, json=json.loads(p) if p != "[DONE]" else None, done=p == "[DONE]")
              for p in payloads]
    return Exchange(label="s", method="POST", url=URL, request_headers={},
                    request_body=json.dumps({"model": "m", "stream": True}), stream=True, status=200,
                    response_headers={"content-type": "text/event-stream"}, events=events)


def test_an_error_event_mid_stream_is_one_stream_chunk_schema_failure() -> None:
    delta = {"role": "assistant", "content": "Hi"}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    error = {"error": {"message": "EngineCore encountered an issue.", "type": "InternalServerError",
                       "param": None, "code": 500}}
    ex = _stream(json.dumps(chunk), json.dumps(error), "[DONE]")
    judge = Judge(requirements=("STREAM-CHUNK-SCHEMA", "STREAM-CHUNK-OBJECT", "STREAM-ID-CONSTANT",
                                "STREAM-FINISH-ONCE", "STREAM-CHOICE-INDEX", "STREAM-MODEL-CONSTANT",
                                "USAGE-STREAM-LAST-CHUNK"))
    judge.exchanges.append(ex)
    judge_stream(judge, ex, n=1, include_usage=True)
    assert {v.requirement for v in judge.violations} == {"STREAM-CHUNK-SCHEMA"}
    assert "an error event inside a 200 stream" in judge.violations[0].message


def test_stream_error_event_fault_fails_stream_chunk_schema(tmp_path: Path) -> None:
    results = _run(tmp_path, "--fault", "stream-error-event")
    req = results["requirements"]["STREAM-CHUNK-SCHEMA"]
    assert req["verdict"] == "fail" and "an error event inside a 200 stream" in req["reason"]
    failing = {k for k, v in results["requirements"].items() if v["verdict"] == "fail"}
    assert failing <= {"STREAM-CHUNK-SCHEMA", "SDK-PARSE"}, failing


# ---- (e) streamed arguments that are JSON but not an object: TOOLS-ARGS-JSON (SHOULD) ----------------------

def test_streamed_arguments_not_an_object_fail_only_the_should(tmp_path: Path) -> None:
    results = _run(tmp_path, "--variant", "tool-args-not-object")
    reqs = results["requirements"]
    assert reqs["TOOLS-STREAM-FRAGMENTS"]["verdict"] == "pass"
    assert reqs["TOOLS-ARGS-JSON"]["verdict"] == "fail" and reqs["TOOLS-ARGS-JSON"]["level"] == "SHOULD"
    assert results["exit_code"] == 0


# ---- (f) a default repeat penalty never fails LOGPROBS-GREEDY-CONSISTENT -----------------------------------

def _greedy_mismatches(client: TestClient, **extra: Any) -> int:
    r = client.post("/v1/chat/completions", json={
        "model": "reference-tiny", "messages": [{"role": "user", "content": "A short story about a cat."}],
        "temperature": 1.0, "top_p": 1e-6, "seed": 1234, "max_tokens": 16, "logprobs": True,
        "top_logprobs": 5, **extra})
    entries = r.json()["choices"][0]["logprobs"]["content"]
    return sum(e["token"] != max(e["top_logprobs"], key=lambda t: t["logprob"])["token"] for e in entries)


def test_default_repeat_penalty_variant_moves_the_pick_off_the_logprobs() -> None:
    client = TestClient(create_app(variants=["default-repeat-penalty"]))
    assert _greedy_mismatches(client) > 0  # what a request that says nothing of penalties sees
    assert _greedy_mismatches(client, repetition_penalty=1.0) == 0


def test_greedy_consistency_states_the_penalties_neutral(tmp_path: Path) -> None:
    results = _run(tmp_path, "--variant", "default-repeat-penalty", "--only", "LOGPROBS-GREEDY-CONSISTENT")
    assert results["requirements"]["LOGPROBS-GREEDY-CONSISTENT"]["verdict"] == "pass"
    sent = [json.loads(ex["request_body"]) for c in results["checks"] for ex in c.get("exchanges", [])
            if "greedy" in c["nodeid"]]
    assert sent and all(r.get("repetition_penalty") == 1.0 for r in sent)
