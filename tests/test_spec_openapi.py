"""spec/openapi.yaml: a valid OpenAPI 3.1 document whose named schemas judge bodies as intended."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parent.parent / "spec" / "openapi.yaml"
URI = "urn:test:openapi"
NAMED = ("CreateChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk", "ErrorResponse", "ModelList")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    with open(SPEC, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def registry(doc: dict[str, Any]) -> Registry:
    return Registry().with_resource(URI, Resource.from_contents(doc, default_specification=DRAFT202012))


def _validator(registry: Registry, name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{URI}#/components/schemas/{name}"}, registry=registry)


def _ok(registry: Registry, name: str, instance: Any) -> bool:
    return _validator(registry, name).is_valid(instance)


COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "tiny-chat",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello.", "reasoning_content": None},
            "logprobs": {
                "content": [
                    {"token": "Hello", "logprob": -0.1, "bytes": [72, 101, 108, 108, 111],
                     "top_logprobs": [{"token": "Hello", "logprob": -0.1, "bytes": None}]},
                    {"token": ".", "logprob": 0.0, "bytes": None, "top_logprobs": []},
                ]
            },
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
    "vendor_extra": {"servers": "may add fields"},
}

CHUNKS: list[dict[str, Any]] = [
    {"id": "c1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {"content": "Hi", "reasoning_content": None},
                  "logprobs": {"content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}]},
                  "finish_reason": None}], "usage": None},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {"tool_calls": [
         {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
         "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                  "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
]

ERRORS: list[dict[str, Any]] = [
    {"error": {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature",
               "code": None}},
    {"error": {"message": "nope", "code": 401}},
    {"error": {"message": "model not found", "type": "invalid_request_error", "param": None,
               "code": "model_not_found"}},
]

MODELS: dict[str, Any] = {
    "object": "list",
    "data": [
        {"id": "tiny-chat", "object": "model", "created": 1_700_000_000, "owned_by": "me",
         "context_size": 2048},
        {"id": "other", "object": "model", "created": 0, "owned_by": "someone"},
    ],
}

REQUEST: dict[str, Any] = {
    "model": "tiny-chat",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "max_tokens": 16,
    "context_length_exceeded_behavior": "error",
    "stream": True,
    "stream_options": {"include_usage": True},
    "n": 2,
    "seed": 1234,
    "frequency_penalty": 0.5,
    "presence_penalty": -1,
    "repetition_penalty": 1.2,
    "stop": ["\n", "END"],
    "temperature": 0.7,
    "top_p": 1e-06,
    "top_k": 40,
    "min_p": 0.1,
    "logit_bias": {"1024": 6, "100": -100},
    "logprobs": True,
    "top_logprobs": 5,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                                                "parameters": {"type": "object"}, "strict": True}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"},
                                                               "strict": True}},
    "separate_reasoning": True,
    "enable_thinking": False,
    "vendor_field": "allowed",
}


def test_openapi_spec_validator_accepts(doc: dict[str, Any]) -> None:
    validate(doc)


def test_header(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"][0]["url"] == "http://127.0.0.1:8080/v1"
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "post" in doc["paths"]["/chat/completions"]
    assert "get" in doc["paths"]["/models"]


def test_stream_response_declares_chunk_schema(doc: dict[str, Any]) -> None:
    content = doc["paths"]["/chat/completions"]["post"]["responses"]["200"]["content"]
    sse = content["text/event-stream"]
    assert sse["x-sse-event-schema"] == {"$ref": "#/components/schemas/ChatCompletionChunk"}
    assert "[DONE]" in sse["schema"]["description"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}


@pytest.mark.parametrize("name", NAMED)
def test_named_schema_compiles(doc: dict[str, Any], registry: Registry, name: str) -> None:
    schema = doc["components"]["schemas"][name]
    Draft202012Validator.check_schema(schema)
    # Resolving every reference: validating any instance walks the refs it meets; iterate a few shapes.
    validator = _validator(registry, name)
    for instance in ({}, [], None, "x", {"choices": [{}], "data": [{}], "messages": [{}], "error": {}}):
        list(validator.iter_errors(instance))


def test_all_refs_resolve(doc: dict[str, Any], registry: Registry) -> None:
    resolver = registry.resolver()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    refs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    assert refs
    for ref in set(refs):
        resolver.lookup(f"{URI}{ref}")


def test_valid_documents_pass(registry: Registry) -> None:
    assert _ok(registry, "ChatCompletion", COMPLETION)
    for chunk in CHUNKS:
        assert _ok(registry, "ChatCompletionChunk", chunk), chunk
    for error in ERRORS:
        assert _ok(registry, "ErrorResponse", error), error
    assert _ok(registry, "ModelList", MODELS)
    assert _ok(registry, "ModelList", {"object": "list", "data": []})


def _broken(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["object"], "chat.completion.chunk"),
        (["object"], "text_completion"),
        (["created"], "1700000000"),
        (["created"], 1.7e9 + 0.5),
        (["id"], 123),
        (["model"], None),
        (["choices"], _DELETE),
        (["usage", "total_tokens"], _DELETE),
        (["usage", "prompt_tokens"], -1),
        (["usage"], {"prompt_tokens": 1}),
        (["choices", 0, "finish_reason"], ""),
        (["choices", 0, "finish_reason"], None),
        (["choices", 0, "finish_reason"], "eos"),
        (["choices", 0, "message", "role"], "user"),
        (["choices", 0, "message", "content"], 5),
        (["choices", 0, "logprobs", "content", 0, "logprob"], 0.5),
        (["choices", 0, "logprobs", "content", 0, "bytes"], "Hello"),
        (["choices", 1, "message", "tool_calls", 0, "function", "arguments"], {"city": "Paris"}),
        (["choices", 1, "message", "tool_calls", 0, "type"], "tool"),
    ],
)
def test_broken_completions_fail(registry: Registry, path: list[Any], value: Any) -> None:
    assert not _ok(registry, "ChatCompletion", _broken(COMPLETION, path, value))


@pytest.mark.parametrize(
    ("index", "path", "value"),
    [
        (0, ["object"], "chat.completion"),
        (0, ["created"], "now"),
        (0, ["choices", 0, "finish_reason"], ""),
        (0, ["choices", 0, "delta"], _DELETE),
        (0, ["choices", 0, "delta", "role"], "system"),
        (2, ["choices", 0, "delta", "tool_calls", 0, "index"], _DELETE),
        (5, ["usage"], {"prompt_tokens": 3, "completion_tokens": 2}),
        (5, ["usage", "total_tokens"], "5"),
    ],
)
def test_broken_chunks_fail(registry: Registry, index: int, path: list[Any], value: Any) -> None:
    assert not _ok(registry, "ChatCompletionChunk", _broken(CHUNKS[index], path, value))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"error": "bad"},
        {"error": {}},
        {"error": {"message": 5}},
        {"error": {"message": "m", "code": 1.5}},
        {"error": {"message": "m", "param": 3}},
        {"message": "flat body"},
    ],
)
def test_broken_errors_fail(registry: Registry, body: Any) -> None:
    assert not _ok(registry, "ErrorResponse", body)


@pytest.mark.parametrize(
    "body",
    [
        {"object": "models", "data": []},
        {"object": "list"},
        {"object": "list", "data": [{"object": "model", "created": 0, "owned_by": "x"}]},
        {"object": "list", "data": [{"id": "m", "object": "model", "created": "0", "owned_by": "x"}]},
        {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x",
                                     "context_size": "2k"}]},
    ],
)
def test_broken_model_lists_fail(registry: Registry, body: Any) -> None:
    assert not _ok(registry, "ModelList", body)


def test_request_documents_every_seed_field(doc: dict[str, Any]) -> None:
    props = doc["components"]["schemas"]["CreateChatCompletionRequest"]["properties"]
    for field in (
        "model", "messages", "max_tokens", "context_length_exceeded_behavior", "stream", "stream_options",
        "n", "seed", "frequency_penalty", "presence_penalty", "repetition_penalty", "stop", "temperature",
        "top_p", "top_k", "min_p", "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice",
        "response_format", "separate_reasoning", "enable_thinking",
    ):
        assert field in props, field
    ranged = ("n", "frequency_penalty", "presence_penalty", "repetition_penalty", "temperature", "top_p",
              "top_k", "min_p", "top_logprobs")
    for field in ranged:
        assert "Required range:" in props[field]["description"], field
        assert "exclusiveMinimum" not in props[field] and "exclusiveMaximum" not in props[field], field


def test_valid_request_passes(registry: Registry) -> None:
    errors = list(_validator(registry, "CreateChatCompletionRequest").iter_errors(REQUEST))
    assert not errors, [e.message for e in errors]
    minimal = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert _ok(registry, "CreateChatCompletionRequest", minimal)
    for fmt in ({"type": "text"}, {"type": "json_object"}):
        assert _ok(registry, "CreateChatCompletionRequest", {**minimal, "response_format": fmt})
    for choice in ("none", "auto", "required"):
        assert _ok(registry, "CreateChatCompletionRequest", {**minimal, "tool_choice": choice})
    for stop in ("END", None, ["a"], ["a", "b", "c", "d"]):
        assert _ok(registry, "CreateChatCompletionRequest", {**minimal, "stop": stop})
    # Closed ranges: the bounds themselves are valid in the schema (the profile judges them).
    for field, value in (("temperature", 0), ("temperature", 2), ("top_p", 0), ("top_p", 1), ("n", 1),
                         ("n", 128), ("top_k", 1), ("top_k", 128), ("frequency_penalty", -2),
                         ("presence_penalty", 2), ("repetition_penalty", 0), ("min_p", 0), ("min_p", 1),
                         ("top_logprobs", 0), ("top_logprobs", 20)):
        assert _ok(registry, "CreateChatCompletionRequest", {**minimal, field: value}), (field, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.5), ("temperature", -0.5), ("top_p", 1.5), ("top_p", -0.1), ("n", 0), ("n", 129),
        ("top_k", 0), ("top_k", 200), ("min_p", 1.5), ("frequency_penalty", -2.5), ("presence_penalty", 2.5),
        ("repetition_penalty", 2.5), ("top_logprobs", 21), ("top_logprobs", -1), ("max_tokens", 0),
        ("max_tokens", "16"), ("logit_bias", {"1024": 150}), ("logit_bias", {"abc": 1}),
        ("stop", ["a", "b", "c", "d", "e"]), ("stop", []), ("context_length_exceeded_behavior", "drop"),
        ("stream", "yes"), ("stream_options", {"include_usage": True, "x": 1}), ("tool_choice", "any"),
        ("response_format", {"type": "yaml"}), ("response_format", {"type": "json_schema"}),
        ("messages", []), ("messages", [{"role": "robot", "content": "hi"}]),
        ("messages", [{"role": "tool", "content": "x"}]), ("messages", {"role": "user", "content": "hi"}),
        ("tools", [{"type": "retrieval"}]),
    ],
)
def test_invalid_requests_fail(registry: Registry, field: str, value: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: value}
    assert not _ok(registry, "CreateChatCompletionRequest", body)


def test_request_without_model_or_messages_fails(registry: Registry) -> None:
    assert not _ok(registry, "CreateChatCompletionRequest", {"model": "m"})
    assert not _ok(registry, "CreateChatCompletionRequest", {"messages": [{"role": "user", "content": "hi"}]})


def test_schemas_module_agrees(doc: dict[str, Any]) -> None:
    """conformance.schemas, when present, builds the same validators by name."""
    schemas = pytest.importorskip("conformance.schemas")
    for name in NAMED:
        assert schemas.validator(name) is not None
    assert not schemas.schema_errors("ChatCompletion", COMPLETION)
    assert schemas.schema_errors("ChatCompletion", {**COMPLETION, "object": "x"})


# ---- null and extra response fields (spec/DECISIONS.md#nulls) ---------------------------------------------

# SGLang/LMDeploy: pydantic models serialised without exclude_none, every optional field null
NULL_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-9", "object": "chat.completion", "created": 1_700_000_000, "model": "tiny-chat",
    "system_fingerprint": None, "service_tier": None,
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hi.", "reasoning_content": None, "tool_calls": None,
                    "refusal": None, "function_call": None, "annotations": None},
        "logprobs": {"content": [{"token": "Hi", "logprob": -0.2, "bytes": None,
                                  "top_logprobs": [{"token": "Hi", "logprob": -0.2, "bytes": None}]}],
                     "refusal": None},
        "finish_reason": "stop", "matched_stop": None,
    }],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "prompt_tokens_details": None,
              "completion_tokens_details": None, "reasoning_tokens": 0},
}

# the OpenAI API itself: fields the suite does not judge, and a structured-outputs refusal
EXTRA_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-10", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
    "system_fingerprint": "fp_507c9469a1", "service_tier": "default",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": "I'm sorry, I can't help with that.",
                    "annotations": []},
        "logprobs": None, "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0,
                                            "rejected_prediction_tokens": 0}},
}

_NULL_DELTA = {"role": None, "content": None, "reasoning_content": None, "tool_calls": None}
NULL_CHUNKS: list[dict[str, Any]] = [
    {"id": "c9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {**_NULL_DELTA, "role": "assistant", "content": ""}, "logprobs": None,
                  "finish_reason": None, "matched_stop": None}], "usage": None, "system_fingerprint": None},
    {"id": "c9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {**_NULL_DELTA, "tool_calls": [
         {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
         "logprobs": None, "finish_reason": None}], "usage": None},
    {"id": "c9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {**_NULL_DELTA, "tool_calls": [
         {"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": "{}"}}]},
         "logprobs": None, "finish_reason": None}], "usage": None},
    {"id": "c9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {**_NULL_DELTA, "tool_calls": [{"index": 0, "function": None}]},
                  "finish_reason": None}]},
    {"id": "c9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "tiny-chat",
     "choices": [{"index": 0, "delta": {**_NULL_DELTA, "refusal": None, "function_call": None},
                  "logprobs": None, "finish_reason": "tool_calls"}], "usage": None},
    {"id": "c9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-4o",
     "choices": [{"index": 0, "delta": {"refusal": "I'm sorry"}, "finish_reason": None}],
     "system_fingerprint": "fp_1", "service_tier": "default", "obfuscation": "x1Yz"},
    {"id": "c9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-4o",
     "choices": [], "obfuscation": "abc",
     "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
               "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": None}},
]


def test_null_and_extra_fields_pass(registry: Registry) -> None:
    """Optional properties sent as null (OpenAI's SDKs read null as absent) and fields the OpenAI API adds."""
    for completion in (NULL_COMPLETION, EXTRA_COMPLETION):
        errors = list(_validator(registry, "ChatCompletion").iter_errors(completion))
        assert not errors, [e.message for e in errors]
    for chunk in NULL_CHUNKS:
        errors = list(_validator(registry, "ChatCompletionChunk").iter_errors(chunk))
        assert not errors, (chunk, [e.message for e in errors])


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["id"], None),
        (["id"], 7),
        (["created"], "1700000000"),
        (["created"], None),
        (["object"], None),
        (["choices"], None),
        (["choices", 0, "message", "role"], None),
        (["choices", 0, "message"], None),
        (["choices", 0, "index"], None),
        (["choices", 0, "finish_reason"], None),
        (["choices", 0, "message", "refusal"], 5),
        (["choices", 0, "message", "tool_calls"], {"id": "call_1"}),
        (["choices", 0, "message", "function_call"], "f"),
        (["choices", 0, "logprobs", "content", 0, "token"], None),
        (["choices", 0, "logprobs", "content", 0, "logprob"], None),
        (["usage", "prompt_tokens"], None),
        (["usage", "prompt_tokens_details"], {"cached_tokens": "0"}),
        (["usage", "completion_tokens_details"], {"reasoning_tokens": -1}),
    ],
)
def test_null_shapes_keep_required_fields_required(registry: Registry, path: list[Any], value: Any) -> None:
    assert not _ok(registry, "ChatCompletion", _broken(NULL_COMPLETION, path, value))


@pytest.mark.parametrize(
    ("index", "path", "value"),
    [
        (0, ["id"], 5),
        (0, ["created"], "now"),
        (0, ["choices", 0, "delta"], None),
        (0, ["choices", 0, "delta", "role"], "user"),
        (0, ["choices", 0, "index"], None),
        (1, ["choices", 0, "delta", "tool_calls", 0, "index"], None),
        (1, ["choices", 0, "delta", "tool_calls", 0, "id"], 12),
        (1, ["choices", 0, "delta", "tool_calls", 0, "type"], "tool"),
        (2, ["choices", 0, "delta", "tool_calls", 0, "function", "name"], 3),
        (2, ["choices", 0, "delta", "tool_calls", 0, "function", "arguments"], {"a": 1}),
        (5, ["choices", 0, "delta", "refusal"], ["I'm"]),
        (5, ["obfuscation"], 42),
        (6, ["usage", "prompt_tokens_details"], {"cached_tokens": 1.5}),
    ],
)
def test_null_chunks_keep_types(registry: Registry, index: int, path: list[Any], value: Any) -> None:
    assert not _ok(registry, "ChatCompletionChunk", _broken(NULL_CHUNKS[index], path, value))
