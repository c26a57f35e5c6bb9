"""Null and extra response fields (spec/DECISIONS.md#nulls): the reference server's shape variants send them,
and the checks read a null like an absent field while still catching what is really wrong."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from conformance.checks._stream import judge_stream
from conformance.checks._support import content_may_be_null, refusal_of
from conformance.checks.test_json import JSON_SCHEMA_FORMAT, _answer, _refusal, _stream_refusal
from conformance.evidence import Exchange, SSEEvent
from conformance.reference import create_app
from conformance.schemas import schema_errors
from conformance.violations import Inconclusive, Judge

MODEL = "reference-tiny"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]
            },
        },
    }
]


def _client(*variants: str) -> TestClient:
    return TestClient(create_app(variants=variants))


def _chat(client: TestClient, **kw: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "weather in Paris"}]}
    body.update(kw)
    return client.post("/v1/chat/completions", json=body)


def _chunks(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[len("data: ") :]))
    return out


def _deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [ch["delta"] for c in chunks for ch in c["choices"]]


# ---- the reference server's variants ----------------------------------------------------------------------


def test_null_optional_fields_shapes() -> None:
    client = _client("null-optional-fields")
    data = _chat(client, max_tokens=4, logprobs=True, top_logprobs=2).json()
    msg = data["choices"][0]["message"]
    assert msg["tool_calls"] is None and msg["refusal"] is None and msg["reasoning_content"] is None
    assert msg["function_call"] is None and isinstance(msg["content"], str)
    assert all(e["bytes"] is None for e in data["choices"][0]["logprobs"]["content"])
    assert data["usage"]["prompt_tokens_details"] is None
    assert schema_errors("ChatCompletion", data) == []
    r = _chat(client, max_tokens=40, stream=True, tools=TOOLS, tool_choice="required")
    chunks = _chunks(r.text)
    deltas = _deltas(chunks)
    assert deltas[0]["role"] == "assistant"
    assert all(d["role"] is None for d in deltas[1:])
    frags = [tc for d in deltas for tc in d["tool_calls"] or []]
    assert frags[0]["id"] and frags[0]["type"] == "function" and frags[0]["function"]["name"] == "get_weather"
    assert len(frags) > 2
    assert all(f["id"] is None and f["type"] is None and f["function"]["name"] is None for f in frags[1:])
    assert all(c["usage"] is None for c in chunks)
    for c in chunks:
        assert schema_errors("ChatCompletionChunk", c) == [], c


def test_extra_fields_shapes() -> None:
    client = _client("extra-fields")
    data = _chat(client, max_tokens=4).json()
    assert data["system_fingerprint"] and data["service_tier"] == "default"
    assert data["choices"][0]["message"]["refusal"] is None
    assert data["choices"][0]["message"]["annotations"] == []
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert schema_errors("ChatCompletion", data) == []
    chunks = _chunks(_chat(client, max_tokens=4, stream=True).text)
    assert all(isinstance(c["obfuscation"], str) and c["system_fingerprint"] for c in chunks)
    for c in chunks:
        assert schema_errors("ChatCompletionChunk", c) == [], c


def test_sse_comments_crlf_and_charset() -> None:
    client = _client("sse-comments-crlf", "content-type-charset")
    r = _chat(client, max_tokens=3, stream=True)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert ": ping\r\n\r\n" in r.text and "\r\n\r\ndata: " in r.text
    assert "\n" not in r.text.replace("\r\n", "")
    assert r.text.endswith("data: [DONE]\r\n\r\n")
    assert _chat(client, max_tokens=2).headers["content-type"] == "application/json; charset=utf-8"
    assert _chat(client, max_tokens=0).headers["content-type"] == "application/json; charset=utf-8"
    assert client.get("/v1/models").headers["content-type"] == "application/json; charset=utf-8"


def test_tool_call_one_fragment_and_role_with_content() -> None:
    client = _client("tool-call-one-fragment", "role-with-content")
    r = _chat(client, max_tokens=40, stream=True, tools=TOOLS, tool_choice="required")
    deltas = _deltas(_chunks(r.text))
    assert deltas[0]["role"] == "assistant"
    frags = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert len(frags) == 1 and frags[0] is deltas[0]["tool_calls"][0]
    assert json.loads(frags[0]["function"]["arguments"])["city"]
    deltas = _deltas(_chunks(_chat(client, max_tokens=4, stream=True).text))
    assert deltas[0]["role"] == "assistant" and deltas[0]["content"]


def test_refusal_every_other_json_schema_request() -> None:
    client = _client("refusal-json-schema")
    kw: dict[str, Any] = {"max_tokens": 40, "response_format": JSON_SCHEMA_FORMAT}
    first, second, third = (_chat(client, **kw).json() for _ in range(3))
    for data in (first, third):
        msg = data["choices"][0]["message"]
        assert msg["content"] is None and msg["refusal"] and data["choices"][0]["finish_reason"] == "stop"
        assert schema_errors("ChatCompletion", data) == []
    assert json.loads(second["choices"][0]["message"]["content"]) in ({"answer": True}, {"answer": False})
    streamed = _chunks(_chat(client, stream=True, **kw).text)
    assert "".join(d.get("refusal") or "" for d in _deltas(streamed)).startswith("I'm sorry")
    assert _stream_refusal(streamed)
    assert _stream_refusal(_chunks(_chat(client, stream=True, **kw).text)) is None
    # a request without json_schema is never refused
    assert isinstance(_chat(client, max_tokens=4).json()["choices"][0]["message"]["content"], str)


# ---- the checks read null as absent --------------------------------------------------------------------


def _stream_exchange(chunks: list[dict[str, Any]]) -> Exchange:
    events = [SSEEvent(t=0.0, data=json.dumps(c), json=c) for c in chunks]
    events.append(SSEEvent(t=0.0, data="[DONE]", done=True))
    return Exchange(
        label="s", method="POST", url="u", request_headers={}, stream=True, status=200,
        response_headers={"Content-Type": "text/event-stream; charset=utf-8"}, events=events,
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None}


NULLS = {"role": None, "content": None, "reasoning_content": None, "tool_calls": None}
STREAM_REQS = ("STREAM-CONTENT-TYPE", "STREAM-CHUNK-SCHEMA", "STREAM-ROLE-FIRST", "STREAM-FINISH-ONCE",
               "STREAM-FINISH-LAST", "STREAM-DATA-ONLY", "STREAM-CHOICE-INDEX", "USAGE-STREAM-ABSENT")


def test_stream_state_machine_reads_null_as_absent() -> None:
    chunks = [
        _chunk({**NULLS, "role": "assistant", "content": ""}),
        _chunk({**NULLS, "content": "Hi"}),
        _chunk({**NULLS, "content": "!"}),
        _chunk(NULLS, "stop"),
    ]
    judge = Judge(requirements=STREAM_REQS)
    judge_stream(judge, _stream_exchange(chunks), n=1, include_usage=False, forbid_usage=True)
    assert judge.violations == []
    assert {"STREAM-ROLE-FIRST", "STREAM-CHUNK-SCHEMA", "STREAM-FINISH-ONCE"} <= judge.judged


def test_stream_state_machine_still_catches_a_null_first_role() -> None:
    chunks = [_chunk({**NULLS, "content": ""}), _chunk({**NULLS, "content": "Hi"}), _chunk(NULLS, "stop")]
    judge = Judge(requirements=STREAM_REQS)
    judge_stream(judge, _stream_exchange(chunks), n=1)
    assert [v.requirement for v in judge.violations] == ["STREAM-ROLE-FIRST"]


def test_stream_schema_still_catches_a_wrong_type() -> None:
    chunks = [_chunk({**NULLS, "role": "assistant"}), _chunk(NULLS, "stop")]
    chunks[1]["created"] = "1700000000"
    judge = Judge(requirements=STREAM_REQS)
    judge_stream(judge, _stream_exchange(chunks), n=1)
    assert {v.requirement for v in judge.violations} == {"STREAM-CHUNK-SCHEMA"}


def test_refusal_helpers() -> None:
    assert refusal_of({"content": None, "refusal": "No."}) == "No."
    assert refusal_of({"content": None, "refusal": ""}) is None
    assert refusal_of({"content": None, "refusal": None}) is None
    assert refusal_of(None) is None
    assert content_may_be_null({"content": None, "refusal": "No."})
    assert content_may_be_null({"content": None, "tool_calls": [{"id": "x"}]})
    assert not content_may_be_null({"content": None, "refusal": None, "tool_calls": None})
    completion = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "No."}}]}
    assert _refusal(completion) == "No."
    # content wins over a refusal field: there is something to judge
    assert _refusal({"choices": [{"message": {"content": "{}", "refusal": "No."}}]}) is None


class _FakeClient:
    """Answers the JSON checks' requests from a list of messages, one per request."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = list(messages)
        self.labels: list[str] = []

    def chat(self, req: dict[str, Any], *, label: str) -> Exchange:
        self.labels.append(label)
        body = {"id": "x", "object": "chat.completion", "created": 1, "model": MODEL,
                "choices": [{"index": 0, "message": self.messages.pop(0), "finish_reason": "stop"}]}
        return Exchange(label=label, method="POST", url="u", request_headers={}, status=200,
                        body_text=json.dumps(body))


REFUSAL = {"role": "assistant", "content": None, "refusal": "I'm sorry, I can't help with that."}
ANSWER = {"role": "assistant", "content": '{"answer": true}', "refusal": None}


def test_json_check_asks_again_after_one_refusal() -> None:
    client = _FakeClient([REFUSAL, ANSWER])
    judge = Judge(requirements=("JSON-SCHEMA-VALID",))
    _, data = _answer(client, judge, {}, "json_schema", "JSON-SCHEMA-VALID", "a json_schema request")
    assert data["choices"][0]["message"]["content"] == '{"answer": true}'
    assert client.labels == ["json_schema", "json_schema, asked again after a refusal"]


def test_json_check_is_inconclusive_after_two_refusals() -> None:
    client = _FakeClient([REFUSAL, REFUSAL])
    judge = Judge(requirements=("JSON-SCHEMA-VALID",))
    with pytest.raises(Inconclusive, match="refused twice .*message.refusal \"I'm sorry"):
        _answer(client, judge, {}, "json_schema", "JSON-SCHEMA-VALID", "a json_schema request")
    assert judge.violations == []


def test_json_check_does_not_excuse_null_content_without_refusal() -> None:
    client = _FakeClient([{"role": "assistant", "content": None}])
    judge = Judge(requirements=("JSON-SCHEMA-VALID",))
    _answer(client, judge, {}, "json_schema", "JSON-SCHEMA-VALID", "a json_schema request")
    assert client.labels == ["json_schema"]  # judged as it is (the content does not parse): no re-ask

