"""The SDK family (conformance/checks/_sdk.py): the official openai SDK reads every answer of the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.checks._runwide import judge_run
from conformance.checks._sdk import (
    ACCUMULATE,
    NOT_INSTALLED,
    PARSE,
    SDK,
    STRUCTURED,
    judge_exchange,
    judge_sdk,
    model_of,
    sdk_version,
)
from conformance.cli import main
from conformance.evidence import Exchange, SSEEvent
from conformance.violations import Judge

openai = pytest.importorskip("openai")  # the project's test extra installs it

URL = "http://127.0.0.1:1/v1/chat/completions"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"],
          "additionalProperties": False}
STRICT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}


def _request(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def completion(message: dict[str, Any], finish: str = "stop", **top: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, **top}


def answer(body: Any, *, request: dict[str, Any] | None = None, ctype: str = "application/json") -> Exchange:
    text = body if isinstance(body, str) else json.dumps(body)
    return Exchange(label="hand-made", method="POST", url=URL, request_headers={},
                    request_body=json.dumps(request or _request()), status=200,
                    response_headers={"content-type": ctype}, body_text=text)


def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **top}


def stream(chunks: list[dict[str, Any]], *, request: dict[str, Any] | None = None) -> Exchange:
    events = [SSEEvent(t=0.0, data=json.dumps(c), json=c) for c in chunks]
    events.append(SSEEvent(t=0.0, data="[DONE]", done=True))
    return Exchange(label="hand-made stream", method="POST", url=URL, request_headers={},
                    request_body=json.dumps(request or _request(stream=True)), stream=True, status=200,
                    response_headers={"content-type": "text/event-stream"}, events=events)


def judged(ex: Exchange) -> tuple[set[str], dict[str, list[Any]]]:
    judge = Judge(requirements=SDK)
    judge.exchanges.append(ex)
    judge_exchange(judge, ex)
    failed: dict[str, list[Any]] = {}
    for v in judge.violations:
        failed.setdefault(v.requirement, []).append(v)
    return set(judge.judged), failed


TEXT_STREAM = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}), chunk({}, "stop")]
CALL_STREAM = [
    chunk({"role": "assistant", "content": None}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "f", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
]


# ---- SDK-PARSE --------------------------------------------------------------------------------------------


def test_a_plain_completion_is_read() -> None:
    seen, failed = judged(answer(completion({"content": "Hi"})))
    assert seen == {PARSE} and failed == {}


def test_a_body_that_is_no_json_fails_sdk_parse_naming_what_the_sdk_returned() -> None:
    seen, failed = judged(answer("Hello there", ctype="text/plain"))
    assert set(failed) == {PARSE}
    v = failed[PARSE][0]
    assert v.message.startswith(f"openai {openai.__version__}: client.chat.completions.create() (and reading")
    assert "returned str, not a ChatCompletion" in str(v.received)


def test_a_json_body_without_choices_fails_sdk_parse_with_the_sdk_exception() -> None:
    body = completion({"content": "Hi"})
    del body["choices"]
    _, failed = judged(answer(body))
    assert set(failed) == {PARSE}
    assert "raised TypeError" in failed[PARSE][0].message  # the SDK reads a missing choices as None
    assert "'NoneType' object is not iterable" in str(failed[PARSE][0].received)


def test_a_stream_is_read_and_accumulated() -> None:
    for chunks in (TEXT_STREAM, CALL_STREAM):
        seen, failed = judged(stream(chunks))
        assert seen == {PARSE, ACCUMULATE} and failed == {}


def test_a_chunk_with_an_error_member_fails_sdk_parse_and_is_not_accumulated() -> None:
    chunks = [TEXT_STREAM[0], {**TEXT_STREAM[1], "error": {"code": 0, "message": ""}}, TEXT_STREAM[2]]
    seen, failed = judged(stream(chunks))
    assert set(failed) == {PARSE} and ACCUMULATE not in seen
    assert "APIError" in failed[PARSE][0].message


# ---- SDK-STREAM-ACCUMULATE -------------------------------------------------------------------------------


def test_tool_call_fragments_numbered_from_1_fail_the_accumulator() -> None:
    chunks = json.loads(json.dumps(CALL_STREAM).replace('"index": 0, "id"', '"index": 1, "id"')
                        .replace('"index": 0, "function"', '"index": 1, "function"'))
    seen, failed = judged(stream(chunks))
    assert set(failed) == {ACCUMULATE}, failed
    assert "IndexError" in failed[ACCUMULATE][0].message
    assert "_completions.py" in str(failed[ACCUMULATE][0].received)  # the SDK's line that raised


def test_a_null_type_on_a_continuation_fragment_is_the_sdks_defect_not_judged() -> None:
    chunks = json.loads(json.dumps(CALL_STREAM))
    chunks[2]["choices"][0]["delta"]["tool_calls"][0].update({"id": None, "type": None})
    from openai.lib.streaming.chat import ChatCompletionStreamState

    with pytest.raises(AssertionError):  # the SDK's own defect (its ChoiceDeltaToolCall allows type None)
        state = ChatCompletionStreamState()
        for c in chunks:
            state.handle_chunk(openai.types.chat.ChatCompletionChunk.construct(**c))
    seen, failed = judged(stream(chunks))
    assert seen == {PARSE} and failed == {}


def test_a_stream_cut_by_max_tokens_is_accumulated_without_the_sdks_length_error() -> None:
    chunks = [*TEXT_STREAM[:2], chunk({}, "length")]
    seen, failed = judged(stream(chunks))
    assert ACCUMULATE in seen and failed == {}


# ---- SDK-STRUCTURED-PARSE --------------------------------------------------------------------------------


def test_a_structured_answer_is_parsed() -> None:
    ex = answer(completion({"content": '{"answer": true}'}), request=_request(response_format=STRICT))
    seen, failed = judged(ex)
    assert seen == {PARSE, STRUCTURED} and failed == {}
    pieces = [chunk({"role": "assistant", "content": ""}), chunk({"content": '{"answer"'}),
              chunk({"content": ": false}"}), chunk({}, "stop")]
    seen, failed = judged(stream(pieces, request=_request(stream=True, response_format=STRICT)))
    assert seen == {PARSE, ACCUMULATE, STRUCTURED} and failed == {}


def test_content_with_a_refusal_is_read_as_refused() -> None:
    ex = answer(completion({"content": '{"answer": true}', "refusal": "none"}),
                request=_request(response_format=STRICT))
    _, failed = judged(ex)
    assert set(failed) == {STRUCTURED}
    assert "message.parsed is None" in failed[STRUCTURED][0].message
    streamed = stream([chunk({"role": "assistant", "content": ""}), chunk({"content": '{"answer": true}'}),
                       chunk({"refusal": "none"}), chunk({}, "stop")],
                      request=_request(stream=True, response_format=STRICT))
    _, failed = judged(streamed)
    assert set(failed) == {STRUCTURED}


def test_json_that_python_reads_but_pydantic_does_not_fails_structured_parse() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
              "additionalProperties": False}
    rf = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
    content = '{"name": "\\ud83d"}'  # a lone surrogate: json.loads takes it, pydantic's parser does not
    assert json.loads(content) == {"name": "\ud83d"}
    _, failed = judged(answer(completion({"content": content}), request=_request(response_format=rf)))
    assert set(failed) == {STRUCTURED}
    assert "ValidationError" in failed[STRUCTURED][0].message


def test_structured_parse_is_not_judged_where_the_sdk_raises_by_design_or_strict_is_off() -> None:
    cut = answer(completion({"content": '{"answer": '}, "length"), request=_request(response_format=STRICT))
    loose = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    prose = answer(completion({"content": "yes"}), request=_request(response_format=loose))
    for ex in (cut, prose):
        seen, failed = judged(ex)
        assert seen == {PARSE} and failed == {}


def test_model_of_builds_the_users_model() -> None:
    schema = {"type": "object", "required": ["a", "tags"], "properties": {
        "a": {"type": "integer"}, "b": {"type": ["string", "null"]}, "kind": {"enum": ["x", "y"]},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}}},
        "$defs": {"tag": {"type": "object", "properties": {"t": {"type": "string"}}, "required": ["t"]}}}
    model = model_of(schema)
    assert model.model_validate_json('{"a": 1, "tags": [{"t": "q"}]}').a == 1
    with pytest.raises(Exception, match="tags"):
        model.model_validate_json('{"a": 1}')
    with pytest.raises(Exception, match="kind"):
        model.model_validate_json('{"a": 1, "tags": [], "kind": "z"}')
    assert model_of({"type": "object", "properties": {"a": {"not": {}}}}) is None  # untranslated: not judged
    assert model_of({"type": "string"}) is None  # parse() takes a model


# ---- without the openai package ---------------------------------------------------------------------------


def test_without_the_package_nothing_is_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = {"exchanges": [answer("not json", ctype="text/plain").to_dict()]}
    assert {r["nodeid"].split("[")[0] for r in judge_sdk([rec], SDK)} == {"run-wide::SDK-PARSE"}
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai raises ImportError
    assert sdk_version() is None
    assert judge_sdk([rec], SDK) == []
    assert judge_run([rec], SDK) == []


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["run", "--report-dir", str(tmp_path / "r"), "--fail-on", "should", *args])
    return code, json.loads((tmp_path / "r" / "results.json").read_text(encoding="utf-8"))


def test_without_the_package_the_family_is_unsupported_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    code, results = _run(tmp_path, "--only", "SDK-PARSE", "--only", "SDK-STREAM-ACCUMULATE")
    assert code == 0, results["verdict"]
    for rid in (PARSE, ACCUMULATE):
        r = results["requirements"][rid]
        assert (r["verdict"], r["reason"]) == ("unsupported", f"unsupported: {NOT_INSTALLED}")


# ---- whole runs against the reference server -----------------------------------------------------------


def test_the_reference_server_is_read_by_the_sdk(tmp_path: Path) -> None:
    code, results = _run(tmp_path)
    assert code == 0, results["verdict"]
    for rid in SDK:
        assert results["requirements"][rid]["verdict"] == "pass", results["requirements"][rid]
        assert f"run-wide::{rid}[openai {openai.__version__}]" in results["requirements"][rid]["checks"]


@pytest.mark.parametrize(("fault", "rid", "raised"), [
    ("stream-chunk-error-member", PARSE, "APIError"),
    ("stream-tool-call-index-from-1", ACCUMULATE, "IndexError"),
    ("json-schema-refusal-with-answer", STRUCTURED, "message.parsed is None"),
])
def test_each_sdk_fault_is_caught(fault: str, rid: str, raised: str, tmp_path: Path) -> None:
    code, results = _run(tmp_path, "--fault", fault)
    assert code == 1
    failed = {k for k, v in results["requirements"].items() if v["verdict"] == "fail"}
    assert failed == {rid}, failed  # the SDK's own requirement, and nothing else
    assert raised in results["requirements"][rid]["reason"]
    record = next(c for c in results["checks"] if c["nodeid"].startswith(f"run-wide::{rid}"))
    assert record["exchanges"] and record["violations"][0]["exchange"] == 0  # the exchange is shown


def test_a_replay_judges_the_recording_with_the_installed_sdk(tmp_path: Path) -> None:
    har = tmp_path / "run.har"
    code, _ = _run(tmp_path, "--fault", "stream-tool-call-index-from-1", "--record", str(har))
    assert code == 1
    code = main(["replay", str(har), "--fail-on", "should", "--report-dir", str(tmp_path / "replay")])
    results = json.loads((tmp_path / "replay" / "results.json").read_text(encoding="utf-8"))
    assert code == 1
    assert results["requirements"][ACCUMULATE]["verdict"] == "fail"
    assert "IndexError" in results["requirements"][ACCUMULATE]["reason"]
    assert results["requirements"][PARSE]["verdict"] == "pass"
