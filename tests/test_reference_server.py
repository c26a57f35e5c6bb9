"""The embedded reference server, clean: shapes, sampling, formats, streaming, validation."""

from __future__ import annotations

import ast
import json
import math
import random
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from starlette.testclient import TestClient

from conformance.reference import create_app, start_in_thread
from conformance.reference.model import VOCAB, Decoder, SamplingParams, log_softmax

MODEL = "reference-tiny"
STORY = [{"role": "user", "content": "Tell me a story"}]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "minLength": 2},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    "hourly": {"type": "boolean"},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        },
    },
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def chat(client: TestClient, **kw: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": MODEL, "messages": STORY}
    body.update(kw)
    return client.post("/v1/chat/completions", json=body)


def sse_events(text: str) -> list[str]:
    """The data payloads of an event stream, in order."""
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln]
        if lines:
            assert all(ln.startswith("data: ") for ln in lines), block
            out.append("\n".join(ln[len("data: ") :] for ln in lines))
    return out


def reassemble(text: str) -> dict[int, dict[str, Any]]:
    got: dict[int, dict[str, Any]] = {}
    for payload in sse_events(text):
        if payload == "[DONE]":
            continue
        for ch in json.loads(payload)["choices"]:
            c = got.setdefault(ch["index"], {"content": "", "finish_reason": None, "reasoning": ""})
            c["content"] += ch["delta"].get("content") or ""
            c["reasoning"] += ch["delta"].get("reasoning_content") or ""
            if ch["finish_reason"]:
                c["finish_reason"] = ch["finish_reason"]
    return got


# --------------------------------------------------------------------------- model


def test_vocabulary_shape() -> None:
    assert VOCAB.tokens[0] == "<eos>"
    assert VOCAB.tokens[100] == " the"
    assert VOCAB.tokens[1] == "<think>" and VOCAB.tokens[2] == "</think>"
    for text in ["Hello, the cat sat on the mat!", "émoji 🙂 and \x00 control", '{"a": [1, 2]}', ""]:
        assert VOCAB.decode(VOCAB.encode(text)) == text


def test_full_distribution_sums_to_one() -> None:
    params = SamplingParams(
        temperature=0.7,
        frequency_penalty=1.0,
        presence_penalty=0.5,
        repetition_penalty=1.3,
        logit_bias={100: 5.0, 101: -100.0},
    )
    dec = Decoder(VOCAB.encode("<|user|>hello<|assistant|>"), params, random.Random(1))
    for _ in range(10):
        lps = dec.full_logprobs()
        assert math.isclose(math.fsum(math.exp(v) for v in lps), 1.0, rel_tol=1e-9)
        assert max(lps) <= 0
        dec.step()
    assert math.isclose(math.fsum(math.exp(v) for v in log_softmax([1.0, 2.0, 3.0])), 1.0)


# --------------------------------------------------------------------------- core


def test_basic_completion_shape(client: TestClient) -> None:
    r = chat(client, temperature=0, max_tokens=8)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and body["model"] == MODEL
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["logprobs"] is None and choice["finish_reason"] == "length"
    u = body["usage"]
    assert u["completion_tokens"] == 8 and u["total_tokens"] == u["prompt_tokens"] + 8
    assert chat(client, temperature=0, max_tokens=8).json()["id"] != body["id"]


def test_greedy_output_repeats_and_default_max_tokens(client: TestClient) -> None:
    body = chat(client, temperature=0).json()
    tokens = VOCAB.encode(body["choices"][0]["message"]["content"])
    assert len(tokens[:16]) > len(set(tokens[:16]))
    assert body["usage"]["completion_tokens"] <= 64


def test_models_list(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == MODEL and body["data"][0]["context_size"] == 256


def test_models_retrieve_one_model(client: TestClient) -> None:
    """GET /v1/models/{model} (the SDKs' models.retrieve): the listed object; another name is a 404 with an
    OpenAI error body."""
    r = client.get(f"/v1/models/{MODEL}")
    assert r.status_code == 200
    assert r.json() == client.get("/v1/models").json()["data"][0]
    r = client.get("/v1/models/org/other-model")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "'org/other-model' does not exist" in error["message"]


def test_models_retrieve_needs_the_key_and_publishes_the_context_length() -> None:
    c = TestClient(create_app(api_key="sk-test", context_length=1024))
    assert c.get(f"/v1/models/{MODEL}").status_code == 401
    r = c.get(f"/v1/models/{MODEL}", headers={"Authorization": "Bearer sk-test"})
    assert r.status_code == 200 and r.json()["context_size"] == 1024


def test_multi_turn_and_content_parts(client: TestClient) -> None:
    msgs = [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Tell me a story"},
    ]
    assert chat(client, messages=msgs).status_code == 200
    a = chat(client, temperature=0, max_tokens=8, messages=[{"role": "user", "content": "Tell me a story"}])
    b = chat(
        client,
        temperature=0,
        max_tokens=8,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story"}],
            }
        ],
    )
    assert a.json()["choices"][0]["message"] == b.json()["choices"][0]["message"]


# --------------------------------------------------------------------------- sampling


def test_seed_determinism_and_variety(client: TestClient) -> None:
    a = chat(client, temperature=1.5, seed=42, max_tokens=12).json()["choices"][0]["message"]["content"]
    b = chat(client, temperature=1.5, seed=42, max_tokens=12).json()["choices"][0]["message"]["content"]
    assert a == b
    others = {
        chat(client, temperature=1.5, seed=s, max_tokens=12).json()["choices"][0]["message"]["content"]
        for s in range(5)
    }
    assert len(others) > 1


@pytest.mark.parametrize("knob", [{"top_p": 0.01}, {"min_p": 1}, {"top_k": 1}])
def test_truncation_makes_high_temperature_deterministic(client: TestClient, knob: dict[str, Any]) -> None:
    outs = {
        chat(client, temperature=2, max_tokens=12, **knob).json()["choices"][0]["message"]["content"]
        for _ in range(3)
    }
    assert len(outs) == 1


@pytest.mark.parametrize(
    "knob", [{"frequency_penalty": 2}, {"presence_penalty": 2}, {"repetition_penalty": 2}]
)
def test_penalties_change_repeating_output(client: TestClient, knob: dict[str, Any]) -> None:
    plain = chat(client, temperature=0, max_tokens=16).json()["choices"][0]["message"]["content"]
    assert (
        chat(client, temperature=0, max_tokens=16, **knob).json()["choices"][0]["message"]["content"] != plain
    )


def test_n_choices(client: TestClient) -> None:
    body = chat(client, n=3, max_tokens=4, temperature=0).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 12
    assert len(chat(client, max_tokens=2).json()["choices"]) == 1


def test_logit_bias_force_and_ban(client: TestClient) -> None:
    body = chat(client, logit_bias={"100": 100}, max_tokens=6, logprobs=True).json()
    assert [e["token"] for e in body["choices"][0]["logprobs"]["content"]] == [" the"] * 6
    plain = chat(client, temperature=0, max_tokens=8).json()["choices"][0]["message"]["content"]
    first = VOCAB.encode(plain)[0]
    banned = chat(client, temperature=0, max_tokens=8, logit_bias={str(first): -100}, logprobs=True).json()
    assert first not in VOCAB.encode(banned["choices"][0]["message"]["content"])


def test_logprobs_are_log_probabilities(client: TestClient) -> None:
    body = chat(client, temperature=0, max_tokens=10, logprobs=True, top_logprobs=20).json()
    choice = body["choices"][0]
    entries = choice["logprobs"]["content"]
    assert len(entries) == body["usage"]["completion_tokens"] == 10
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    for e in entries:
        tops = [t["logprob"] for t in e["top_logprobs"]]
        assert len(tops) == 20 and tops == sorted(tops, reverse=True) and all(v <= 0 for v in tops)
        assert math.fsum(math.exp(v) for v in tops) <= 1 + 1e-9
        assert e["top_logprobs"][0]["token"] == e["token"] and e["top_logprobs"][0]["logprob"] == e["logprob"]
        assert e["bytes"] == list(e["token"].encode())


# --------------------------------------------------------------------------- stop, length, context


def test_stop_inclusion_per_profile() -> None:
    seed_c, openai_c = TestClient(create_app()), TestClient(create_app(profile="openai"))
    full = chat(seed_c, temperature=0, max_tokens=32).json()["choices"][0]["message"]["content"]
    stop = " mat"
    assert stop in full
    s = chat(seed_c, temperature=0, max_tokens=32, stop=[stop]).json()["choices"][0]
    o = chat(openai_c, temperature=0, max_tokens=32, stop=stop).json()["choices"][0]
    assert s["finish_reason"] == o["finish_reason"] == "stop"
    assert s["message"]["content"] == full[: full.index(stop) + len(stop)]
    assert o["message"]["content"] == full[: full.index(stop)]


def test_max_tokens_length_and_context(client: TestClient) -> None:
    body = chat(client, max_tokens=3, temperature=0).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3
    ok = chat(client, max_tokens=1000, temperature=0).json()
    assert ok["usage"]["completion_tokens"] <= 256 - ok["usage"]["prompt_tokens"]
    err = chat(client, max_tokens=1000, context_length_exceeded_behavior="error")
    assert err.status_code == 400 and err.json()["error"]["code"] == "context_length_exceeded"
    long = chat(client, messages=[{"role": "user", "content": "word " * 300}])
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
    short = chat(client, messages=[{"role": "user", "content": "hi"}]).json()["usage"]["prompt_tokens"]
    assert (
        chat(client, messages=[{"role": "user", "content": "hi " * 20}]).json()["usage"]["prompt_tokens"]
        > short
    )


# --------------------------------------------------------------------------- tools and formats


def test_tool_calls_validate(client: TestClient) -> None:
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    for choice in ("auto", "required", {"type": "function", "function": {"name": "get_weather"}}):
        body = chat(client, messages=msgs, tools=WEATHER_TOOLS, tool_choice=choice, seed=1).json()
        c = body["choices"][0]
        assert c["finish_reason"] == "tool_calls" and c["message"]["content"] is None
        (call,) = c["message"]["tool_calls"]
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert call["function"]["name"] == "get_weather"
        jsonschema.validate(
            json.loads(call["function"]["arguments"]), WEATHER_TOOLS[0]["function"]["parameters"]
        )
    named = chat(
        client,
        messages=msgs,
        tools=WEATHER_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    ).json()
    assert named["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"
    none = chat(client, messages=msgs, tools=WEATHER_TOOLS, tool_choice="none").json()["choices"][0]
    assert "tool_calls" not in none["message"] and isinstance(none["message"]["content"], str)
    plain = chat(client, tools=WEATHER_TOOLS).json()["choices"][0]
    assert "tool_calls" not in plain["message"]


def test_tool_result_turn(client: TestClient) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    msgs = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    r = chat(client, messages=msgs, tools=WEATHER_TOOLS, max_tokens=8)
    assert r.status_code == 200 and isinstance(r.json()["choices"][0]["message"]["content"], str)
    bad = [*msgs[:2], {"role": "tool", "content": "x"}]
    assert chat(client, messages=bad, tools=WEATHER_TOOLS).status_code == 400


def test_tool_stream_fragments(client: TestClient) -> None:
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = chat(client, messages=msgs, tools=WEATHER_TOOLS, stream=True, seed=3)
    frags = [
        tc
        for p in sse_events(r.text)
        if p != "[DONE]"
        for ch in json.loads(p)["choices"]
        for tc in ch["delta"].get("tool_calls") or []
    ]
    assert frags[0]["id"].startswith("call_") and frags[0]["type"] == "function"
    assert frags[0]["function"] == {"name": "get_weather", "arguments": ""}
    args = json.loads("".join(f["function"]["arguments"] for f in frags))
    jsonschema.validate(args, WEATHER_TOOLS[0]["function"]["parameters"])


def test_json_object_and_schema(client: TestClient) -> None:
    obj = chat(client, response_format={"type": "json_object"}, max_tokens=32).json()["choices"][0]
    assert obj["finish_reason"] == "stop" and isinstance(json.loads(obj["message"]["content"]), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    out = chat(client, response_format=rf, max_tokens=64).json()["choices"][0]
    jsonschema.validate(json.loads(out["message"]["content"]), schema)
    streamed = reassemble(chat(client, response_format=rf, max_tokens=64, stream=True).text)
    jsonschema.validate(json.loads(streamed[0]["content"]), schema)
    assert chat(client, response_format={"type": "text"}).status_code == 200
    assert chat(client, response_format={"type": "json_schema"}).status_code == 400


def test_reasoning_modes(client: TestClient) -> None:
    sep = chat(client, separate_reasoning=True, temperature=0, max_tokens=16).json()["choices"][0]["message"]
    assert isinstance(sep["reasoning_content"], str) and sep["reasoning_content"]
    assert "<think>" not in sep["content"]
    off = chat(client, separate_reasoning=True, enable_thinking=False, max_tokens=16).json()["choices"][0]
    assert not off["message"].get("reasoning_content") and "<think>" not in off["message"]["content"]
    inline = chat(client, enable_thinking=True, max_tokens=16).json()["choices"][0]["message"]
    assert inline["content"].startswith("<think>") and "</think>" in inline["content"]
    assert inline.get("reasoning_content") is None
    default = chat(client, max_tokens=16).json()["choices"][0]["message"]
    assert default.get("reasoning_content") is None and "<think>" not in default["content"]
    got = reassemble(chat(client, separate_reasoning=True, temperature=0, max_tokens=16, stream=True).text)[0]
    assert got["reasoning"] == sep["reasoning_content"] and got["content"] == sep["content"]


# --------------------------------------------------------------------------- streaming


def test_stream_sequence(client: TestClient) -> None:
    r = chat(
        client, stream=True, stream_options={"include_usage": True}, max_tokens=5, n=2, seed=9, logprobs=True
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_events(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    *body, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 10
    assert all(c["usage"] is None for c in body)
    for idx in (0, 1):
        mine = [c["choices"][0] for c in body if c["choices"][0]["index"] == idx]
        assert mine[0]["delta"]["role"] == "assistant"
        assert [m["finish_reason"] for m in mine] == [None] * (len(mine) - 1) + ["length"]
        assert sum(1 for m in mine if m["delta"].get("content")) == 5
        assert all(m["logprobs"] for m in mine if m["delta"].get("content"))
    plain = chat(client, stream=True, max_tokens=3)
    assert all("usage" not in json.loads(p) for p in sse_events(plain.text)[:-1])


def test_stream_matches_nonstream(client: TestClient) -> None:
    for kw in (
        {"temperature": 0},
        {"seed": 5, "temperature": 1.2},
        {"seed": 5, "stop": [" mat"], "temperature": 0},
    ):
        ns = chat(client, max_tokens=24, **kw).json()
        st = chat(client, max_tokens=24, stream=True, stream_options={"include_usage": True}, **kw)
        got = reassemble(st.text)[0]
        assert got["content"] == ns["choices"][0]["message"]["content"]
        assert got["finish_reason"] == ns["choices"][0]["finish_reason"]
        assert json.loads(sse_events(st.text)[-2])["usage"] == ns["usage"]


# --------------------------------------------------------------------------- errors and auth


def test_auth() -> None:
    c = TestClient(create_app(api_key="sk-test"))
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": STORY}, headers=headers)
        assert r.status_code == 401 and isinstance(r.json()["error"]["message"], str)
    r = c.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": STORY, "max_tokens": 2},
        headers={"Authorization": "Bearer sk-test"},
    )
    assert r.status_code == 200
    assert c.get("/v1/models").status_code == 401


BAD_REQUESTS: list[tuple[dict[str, Any], int]] = [
    ({"temperature": 2.5}, 400),
    ({"temperature": -0.5}, 400),
    ({"top_p": 1.5}, 400),
    ({"top_k": 0}, 400),
    ({"top_k": 200}, 400),
    ({"min_p": -0.1}, 400),
    ({"n": 0}, 400),
    ({"n": 129}, 400),
    ({"frequency_penalty": 2.5}, 400),
    ({"presence_penalty": -2.5}, 400),
    ({"repetition_penalty": -0.5}, 400),
    ({"top_logprobs": 21, "logprobs": True}, 400),
    ({"top_logprobs": 2}, 400),
    ({"logit_bias": {"100": 150}}, 400),
    ({"logit_bias": {"abc": 1}}, 400),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400),
    ({"max_tokens": 0}, 400),
    ({"max_tokens": "5"}, 400),
    ({"messages": {"role": "user"}}, 400),
    ({"messages": []}, 400),
    ({"messages": None}, 400),
    ({"model": None}, 400),
    ({"model": "nope"}, 404),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400),
    ({"stream_options": {"include_usage": True}}, 400),
    ({"context_length_exceeded_behavior": "drop"}, 400),
    ({"tool_choice": "required"}, 400),
    ({"tools": WEATHER_TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, 400),
    ({"response_format": {"type": "xml"}}, 400),
    ({"temperature": "hot"}, 400),
    ({"stream": "yes"}, 400),
    ({"seed": 1.5}, 400),
    ({"temperature": True}, 400),
]


@pytest.mark.parametrize(("extra", "status"), BAD_REQUESTS, ids=[str(b[0])[:40] for b in BAD_REQUESTS])
def test_invalid_requests_are_rejected(client: TestClient, extra: dict[str, Any], status: int) -> None:
    body = {"model": MODEL, "messages": STORY, **extra}
    body = {k: v for k, v in body.items() if v is not None}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["type"] == "invalid_request_error"
    assert "param" in err and "code" in err


GOOD_REQUESTS: list[dict[str, Any]] = [
    {"temperature": 0},
    {"temperature": 2},
    {"top_p": 0},
    {"top_p": 1},
    {"top_k": 1},
    {"top_k": 128},
    {"min_p": 0},
    {"min_p": 1},
    {"n": 128, "max_tokens": 1},
    {"frequency_penalty": -2},
    {"presence_penalty": 2},
    {"repetition_penalty": 0},
    {"repetition_penalty": 2},
    {"logprobs": True, "top_logprobs": 0},
    {"logprobs": True, "top_logprobs": 20},
    {"logit_bias": {"5": -100, "6": 100}},
    {"stop": "x"},
    {"stop": ["a", "b", "c", "d"]},
    {"seed": 3},
    {"unknown_field": 1},
    {"response_format": {"type": "text"}},
    {"context_length_exceeded_behavior": "error"},
    {"max_completion_tokens": 3},
]


@pytest.mark.parametrize("extra", GOOD_REQUESTS, ids=[str(g)[:40] for g in GOOD_REQUESTS])
def test_valid_requests_are_accepted(client: TestClient, extra: dict[str, Any]) -> None:
    body = {"model": MODEL, "messages": STORY, "max_tokens": 4, **extra}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


def test_malformed_json_and_unknown_path(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert client.post("/v1/chat/completions", content=b"NaN").status_code == 400
    assert client.get("/v1/nowhere").status_code == 404
    r = chat(client, stream=True, temperature=9)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")


def test_create_app_rejects_unknown_fault_and_profile() -> None:
    with pytest.raises(ValueError):
        create_app(faults=["no-such-fault"])
    with pytest.raises(ValueError):
        create_app(profile="nope")


def test_start_in_thread_serves_http() -> None:
    server = start_in_thread(api_key="k")
    try:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        r = httpx.post(
            f"{server.base_url}/chat/completions",
            headers={"Authorization": "Bearer k"},
            json={"model": server.model, "messages": STORY, "max_tokens": 3},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    finally:
        server.stop()


def test_reference_never_imports_the_checks() -> None:
    forbidden = ("conformance.checks", "conformance.client", "conformance.plugin", "conformance.cli")
    root = Path(__file__).resolve().parent.parent / "conformance" / "reference"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n == f or n.startswith(f + ".") for n in names for f in forbidden), (path, names)


# --------------------------------------------------------------------------- reasoning variants


def _variant(name: str) -> TestClient:
    return TestClient(create_app(variants=[name]))


def test_variant_reasoning_unsupported_ignores_both_fields() -> None:
    c = _variant("reasoning-unsupported")
    for fields in ({"separate_reasoning": True}, {"enable_thinking": True}, {"enable_thinking": False}):
        msg = chat(c, max_tokens=16, **fields).json()["choices"][0]["message"]
        assert msg.get("reasoning_content") is None and "<think>" not in msg["content"]


def test_variant_reasoning_always_reasons_first() -> None:
    c = _variant("reasoning-always")
    for fields in ({}, {"enable_thinking": False}, {"enable_thinking": True}):
        data = chat(c, max_tokens=64, temperature=0, **fields).json()
        rc = data["choices"][0]["message"]["reasoning_content"]
        assert 12 <= len(rc.split()) <= 24  # a realistic reasoning segment, one word a token
        assert data["usage"]["completion_tokens"] > len(rc.split())  # the reasoning counts toward usage
    inline = chat(c, max_tokens=64, separate_reasoning=False).json()["choices"][0]["message"]
    assert inline["content"].startswith("<think>") and inline.get("reasoning_content") is None  # SGLang
    cut = chat(c, max_tokens=4).json()["choices"][0]
    assert cut["finish_reason"] == "length" and cut["message"]["content"] == ""


def test_variant_reasoning_cut_content_null() -> None:
    c = _variant("reasoning-cut-content-null")
    cut = chat(c, max_tokens=4).json()["choices"][0]
    assert cut["finish_reason"] == "length" and cut["message"]["content"] is None
    assert cut["message"]["reasoning_content"]
    events = [json.loads(p) for p in sse_events(chat(c, max_tokens=4, stream=True).text) if p != "[DONE]"]
    assert not any("content" in ch["delta"] for e in events for ch in e["choices"])
    whole = chat(c, max_tokens=64).json()["choices"][0]["message"]
    assert isinstance(whole["content"], str) and whole["reasoning_content"]


def test_variant_reasoning_inline_always() -> None:
    c = _variant("reasoning-inline-always")
    data = chat(c, max_tokens=64, temperature=0, logprobs=True, enable_thinking=False,
                separate_reasoning=True).json()
    msg = data["choices"][0]["message"]
    assert msg["content"].startswith("<think>") and "</think>" in msg["content"]
    tokens = [e["token"] for e in data["choices"][0]["logprobs"]["content"]]
    assert tokens[0] == "<think>" and "</think>" in tokens
    # stop sequences match inside the <think> segment too (it is content)
    text = msg["content"]
    stop = text.split("</think>")[0][12:18]
    got = chat(c, max_tokens=64, temperature=0, stop=[stop]).json()["choices"][0]
    assert got["finish_reason"] == "stop"
    assert got["message"]["content"] == text[: text.index(stop) + len(stop)]  # seed profile: stop kept
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = chat(c, max_tokens=64, tools=tools, tool_choice="required").json()["choices"][0]
    assert call["finish_reason"] == "tool_calls"  # a grammar-constrained answer starts at its first token
