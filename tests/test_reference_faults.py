"""Every fault mode of the reference server names a catalog requirement and changes the server's behaviour."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.testclient import TestClient

from conformance.catalog import catalog
from conformance.reference import FAULTS, create_app
from conformance.reference.model import VOCAB

MODEL = "reference-tiny"
KEY = "sk-reference"
STORY = [{"role": "user", "content": "Tell me a story"}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
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
SCHEMA_RF = {
    "type": "json_schema",
    "json_schema": {
        "name": "p",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}
TOOL_TURN = [
    *WEATHER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
GREEDY = {"temperature": 0, "max_tokens": 8}
STREAM = {"temperature": 0, "max_tokens": 6, "stream": True}
STREAM_USAGE = {**STREAM, "stream_options": {"include_usage": True}}
FIRST_GREEDY = VOCAB.encode(" and")[0]  # the first greedy token for STORY


@dataclass
class Probe:
    body: dict[str, Any] | None = (
        None  # merged over {model, messages: STORY, temperature: 0}; None removes a key
    )
    raw: bytes | None = None
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {KEY}"})
    profile: str = "seed"


def p(**body: Any) -> Probe:
    return Probe(body=body)


NO_AUTH: dict[str, str] = {}
PROBES: dict[str, Probe] = {
    "wrong-object": p(**GREEDY),
    "system-fingerprint-integer": p(**GREEDY),
    "completion-status-201": p(**GREEDY),
    "non-ascii-prompt-500": p(messages=[{"role": "user", "content": "Un café, s'il vous plaît."}], **GREEDY),
    "choices-empty": p(**GREEDY),
    "id-reused": p(**GREEDY),
    "id-empty": p(**GREEDY),
    "created-milliseconds": p(**GREEDY),
    "model-missing": p(**GREEDY),
    "model-name-wrong": p(**GREEDY),
    "choices-index-wrong": p(**GREEDY),
    "role-wrong": p(**GREEDY),
    "content-null": p(**GREEDY),
    "finish-reason-invalid": p(response_format={"type": "json_object"}, max_tokens=32),
    "content-type-text": p(**GREEDY),
    "content-parts-rejected": p(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    "multi-turn-rejected": p(
        messages=[
            {"role": "system", "content": "s"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    ),
    "content-parts-text-dropped": p(**GREEDY, messages=[{"role": "user", "content": [{"type": "text",
                                                                                     "text": "hi"}]}]),
    "presence-penalty-ignored-confident": p(**GREEDY, presence_penalty=1.9),
    "history-counted-not-used": p(**GREEDY, messages=[{"role": "system", "content": "s"}, *STORY]),
    "history-ignored": p(
        **GREEDY,
        messages=[
            {"role": "system", "content": "s"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    ),
    "models-missing": Probe(path="/v1/models", method="GET"),
    "models-no-context-size": Probe(path="/v1/models", method="GET"),
    "usage-missing": p(**GREEDY),
    "usage-float": p(**GREEDY),
    "usage-total-wrong": p(**GREEDY),
    "completion-tokens-wrong": p(**GREEDY),
    "prompt-tokens-constant": p(**GREEDY),
    "no-usage-chunk": p(**STREAM_USAGE),
    "usage-every-chunk": p(**STREAM_USAGE),
    "usage-chunk-with-choices": p(**STREAM_USAGE),
    "stream-usage-differs": p(**STREAM_USAGE),
    "stream-usage-last-message": p(**STREAM_USAGE, messages=[{"role": "system", "content": "s"}, *STORY]),
    "stream-usage-first-choice": p(**STREAM_USAGE, n=2),
    "reasoning-tokens-uncounted": p(**GREEDY, separate_reasoning=True),
    "usage-stream-unrequested": p(**STREAM),
    "stream-wrong-content-type": p(**STREAM),
    "stream-event-field": p(**STREAM),
    "stream-invalid-json": p(**STREAM),
    "chunk-schema-invalid": p(**STREAM),
    "chunk-wrong-object": p(**STREAM),
    "no-done": p(**STREAM),
    "events-after-done": p(**STREAM),
    "stream-id-changes": p(**STREAM),
    "stream-created-changes": p(**STREAM),
    "stream-model-changes": p(**STREAM),
    "no-role-first": p(**STREAM),
    "two-finish-reasons": p(**STREAM),
    "content-after-finish": p(**STREAM),
    "single-chunk": p(**STREAM),
    "stream-choice-index-wrong": p(**STREAM),
    "stream-differs": p(**STREAM),
    "stream-options-without-stream-accepted": p(**GREEDY, stream_options={"include_usage": True}),
    "max-tokens-ignored": p(**GREEDY),
    "length-reported-as-stop": p(**GREEDY),
    "stream-max-tokens-ignored": p(**STREAM),
    "max-tokens-zero-accepted": p(max_tokens=0),
    "context-truncate-errors": p(max_tokens=1000),
    "context-truncate-prompt": p(messages=[{"role": "user", "content": "word " * 200}], max_tokens=100),
    "context-error-ignored": p(max_tokens=1000, context_length_exceeded_behavior="error"),
    "prompt-too-long-accepted": p(messages=[{"role": "user", "content": "word " * 300}], max_tokens=2),
    "context-behavior-any-accepted": p(**GREEDY, context_length_exceeded_behavior="drop"),
    "n-ignored": p(**GREEDY, n=2),
    "n-default-two": p(**GREEDY),
    "n-usage-one-choice": p(**GREEDY, n=2),
    "seed-ignored": p(temperature=1, seed=7, max_tokens=16),
    "always-greedy": p(temperature=1.5, seed=7, max_tokens=16),
    "greedy-at-temperature-1": p(temperature=1, seed=7, max_tokens=16),
    "top-p-keeps-only-the-top": p(temperature=1, top_p=0.9, seed=7, max_tokens=16),
    "min-p-keeps-only-the-top": p(temperature=1, min_p=0.05, seed=7, max_tokens=16),
    "top-p-ignored": p(temperature=2, top_p=0.01, max_tokens=16),
    "min-p-ignored": p(temperature=2, min_p=1, max_tokens=16),
    "top-k-ignored": p(temperature=2, top_k=1, max_tokens=16),
    "top-p-skips-top": p(temperature=2, top_p=0.01, max_tokens=16),
    "min-p-skips-top": p(temperature=2, min_p=1, max_tokens=16),
    "top-k-skips-top": p(temperature=2, top_k=1, max_tokens=16),
    "stop-ignored": p(temperature=0, max_tokens=32, stop=[" mat"]),
    "stop-wrong-inclusion": p(temperature=0, max_tokens=32, stop=[" mat"]),
    "stop-kept": Probe(body={"temperature": 0, "max_tokens": 32, "stop": [" mat"]}, profile="openai"),
    "stop-string-rejected": p(temperature=0, max_tokens=32, stop=" mat"),
    "stop-stream-ignored": p(temperature=0, max_tokens=32, stop=[" mat"], stream=True),
    "penalties-ignored": p(temperature=0, max_tokens=16, frequency_penalty=2),
    "presence-penalty-ignored": p(temperature=0, max_tokens=16, presence_penalty=2),
    "repetition-penalty-ignored": p(temperature=0, max_tokens=16, repetition_penalty=2),
    "frequency-penalty-backwards": p(temperature=0, max_tokens=16, frequency_penalty=1.9),
    "presence-penalty-backwards": p(temperature=0, max_tokens=16, presence_penalty=1.9),
    "repetition-penalty-backwards": p(temperature=0, max_tokens=16, repetition_penalty=1.9),
    "logit-bias-ignored": p(**GREEDY, logit_bias={"100": 100}),
    "logit-bias-ban-ignored": p(**GREEDY, logit_bias={str(FIRST_GREEDY): -100}),
    "logprobs-count-wrong": p(**GREEDY, logprobs=True),
    "logprob-bytes-replacement": p(messages=[{"role": "user", "content": "Zoë, crème brûlée, 東京"}],
                                   max_tokens=24, temperature=0, logprobs=True),
    "logprobs-positive": p(**GREEDY, logprobs=True),
    "logprobs-tokens-wrong": p(**GREEDY, logprobs=True, top_logprobs=2),
    "top-logprobs-count-wrong": p(**GREEDY, logprobs=True, top_logprobs=3),
    "top-logprobs-fewer": p(**GREEDY, logprobs=True, top_logprobs=3),
    "top-logprobs-unsorted": p(**GREEDY, logprobs=True, top_logprobs=3),
    "logprobs-greedy-inconsistent": p(**GREEDY, logprobs=True, top_logprobs=1),
    "logprobs-by-default": p(**GREEDY),
    "top-logprobs-without-logprobs-accepted": p(**GREEDY, top_logprobs=2),
    "logprobs-stream-missing": p(**STREAM, logprobs=True),
    "tool-call-no-type": p(messages=WEATHER, tools=TOOLS, seed=1),
    "tool-args-object": p(messages=WEATHER, tools=TOOLS, seed=1),
    "tool-args-not-json": p(messages=WEATHER, tools=TOOLS, seed=1),
    "tool-args-invalid-schema": p(messages=WEATHER, tools=TOOLS, seed=1),
    "tool-finish-stop": p(messages=WEATHER, tools=TOOLS, seed=1),
    "tool-call-cut-finish-tool-calls": p(
        messages=WEATHER, tools=TOOLS, temperature=0, max_tokens=3,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ),
    "tool-choice-none-ignored": p(messages=WEATHER, tools=TOOLS, tool_choice="none", **GREEDY),
    "tool-auto-rejected": p(messages=WEATHER, tools=TOOLS, tool_choice="auto", seed=1),
    "tool-required-ignored": p(tools=TOOLS, tool_choice="required", seed=1),
    "tool-required-as-auto": p(tools=TOOLS, tool_choice="required", seed=1),
    "tool-call-id-reused": p(messages=WEATHER, tools=TOOLS, seed=1),
    "tool-named-wrong": p(
        messages=WEATHER,
        tools=TOOLS,
        seed=1,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ),
    "tool-result-rejected": p(messages=TOOL_TURN, tools=TOOLS, **GREEDY),
    "tool-stream-no-id": p(messages=WEATHER, tools=TOOLS, seed=1, stream=True),
    "tool-unknown-choice-accepted": p(
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}}
    ),
    "format-text-rejected": p(**GREEDY, response_format={"type": "text"}),
    "json-object-prose": p(response_format={"type": "json_object"}, seed=1, max_tokens=32),
    "json-schema-invalid": p(response_format=SCHEMA_RF, seed=1, max_tokens=32),
    "json-schema-stream-invalid": p(response_format=SCHEMA_RF, seed=1, max_tokens=32, stream=True),
    "reasoning-in-content": p(**GREEDY, separate_reasoning=True),
    "reasoning-stream-in-content": p(**STREAM, separate_reasoning=True),
    "reasoning-when-not-separated": p(**GREEDY, separate_reasoning=False, enable_thinking=True),
    "thinking-not-disabled": p(**GREEDY, enable_thinking=False),
    "thinking-enable-ignored": p(**GREEDY, enable_thinking=True),
    "error-shape-wrong": p(temperature=5),
    "error-no-type": p(temperature=5),
    "error-content-type-text": p(temperature=5),
    "error-with-200": p(temperature=5),
    "bad-input-500": p(temperature="hot"),
    # run-wide faults: each shows on some exchanges only (conformance/checks/_runwide.py judges them)
    "max-tokens-overshoot": p(**GREEDY),
    "stream-created-changes-late": p(temperature=0, max_tokens=30, stream=True),
    "logprobs-null-without-top": p(**GREEDY, logprobs=True),
    "range-error-500-text": p(n=0),
    "stream-drops-multibyte": p(messages=[{"role": "user", "content": "Zoë, crème brûlée"}], **STREAM),
    "bad-input-500-text": p(temperature="hot"),
    "stream-error-event": p(stream=True, n=2, **GREEDY),
    "stream-id-reused": p(**STREAM),
    "finish-reason-invalid-later-choices": p(**GREEDY, n=2),
    "stream-usage-total-wrong": p(**STREAM_USAGE),
    "tool-call-id-empty-named": p(messages=WEATHER, tools=TOOLS, seed=1, tool_choice=NAMED),
    "tool-args-not-json-named": p(messages=WEATHER, tools=TOOLS, seed=1, tool_choice=NAMED),
    "tool-args-invalid-schema-stream": p(messages=WEATHER, tools=TOOLS, seed=1, tool_choice="required",
                                         stream=True),
    "tool-required-stream-wrong-name": p(messages=WEATHER, tools=TOOLS, seed=1, tool_choice="required",
                                         stream=True),
    "finish-tool-calls-without-call": p(messages=TOOL_TURN, tools=TOOLS, **GREEDY),
    "stop-kept-with-several": Probe(
        body={"temperature": 0, "max_tokens": 32, "stop": ["\u00a7zq\u00a7", " mat"]}, profile="openai"
    ),
    "json-schema-loose-prose": p(response_format=SCHEMA_RF, seed=1, max_tokens=32),
    # the SDK family (conformance/checks/_sdk.py)
    "stream-chunk-error-member": p(stream=True, **GREEDY),
    "stream-tool-call-index-from-1": p(messages=WEATHER, tools=TOOLS, seed=1, tool_choice="required",
                                       stream=True),
    "json-schema-refusal-with-answer": p(response_format={**SCHEMA_RF, "json_schema": {
        **SCHEMA_RF["json_schema"], "strict": True}}, seed=1, max_tokens=32),
    "malformed-json-500": Probe(raw=b'{"model": '),
    "missing-messages-accepted": p(messages=None, **GREEDY),
    "empty-messages-accepted": p(messages=[], **GREEDY),
    "missing-model-accepted": p(model=None, **GREEDY),
    "unknown-model-accepted": p(model="not-a-model", **GREEDY),
    "wrong-type-accepted": p(max_tokens="5", temperature=0),
    "unknown-role-accepted": p(messages=[{"role": "wizard", "content": "hi"}], **GREEDY),
    "stream-error-as-events": p(stream=True, temperature=5),
    "stream-range-error-in-band": p(stream=True, logprobs=True, top_logprobs=21, max_tokens=2),
    "auth-not-checked": Probe(body=GREEDY, headers=NO_AUTH),
    "wrong-key-accepted": Probe(body=GREEDY, headers={"Authorization": "Bearer wrong"}),
    "auth-error-completion": Probe(body=GREEDY, headers=NO_AUTH),
    "auth-status-403": Probe(body=GREEDY, headers={"Authorization": "Bearer wrong"}),
    "temperature-out-of-range-accepted": p(temperature=2.5, max_tokens=2),
    "top-p-out-of-range-accepted": p(top_p=1.5, max_tokens=2),
    "top-p-zero-rejected": p(top_p=0, max_tokens=2),
    "top-k-out-of-range-accepted": p(top_k=200, max_tokens=2),
    "top-k-fraction-accepted": p(top_k=3.5, max_tokens=2),
    "top-k-rejected-inside": p(top_k=40, max_tokens=2),
    "min-p-out-of-range-accepted": p(min_p=1.5, max_tokens=2),
    "n-out-of-range-accepted": p(n=0, max_tokens=2),
    "n-128-rejected": p(n=128, max_tokens=1),
    "penalty-out-of-range-accepted": p(frequency_penalty=-2.5, max_tokens=2),
    "presence-penalty-out-of-range-accepted": p(presence_penalty=2.5, max_tokens=2),
    "repetition-penalty-out-of-range-accepted": p(repetition_penalty=2.5, max_tokens=2),
    "repetition-penalty-zero-rejected": p(repetition_penalty=0, max_tokens=2),
    "top-logprobs-out-of-range-accepted": p(logprobs=True, top_logprobs=21, max_tokens=2),
    "logit-bias-out-of-range-accepted": p(logit_bias={"100": 150}, max_tokens=2),
    "five-stops-accepted": p(stop=["a", "b", "c", "d", "e"], max_tokens=2),
    "temperature-rejected-inside": p(temperature=0.7, seed=1, max_tokens=2),
    "temperature-bound-rejected": p(temperature=2.0, seed=1, max_tokens=2),
    "top-p-rejected-inside": p(top_p=0.5, max_tokens=2),
    "top-k-bound-rejected": p(top_k=128, max_tokens=2),
    "min-p-rejected-inside": p(min_p=0.5, max_tokens=2),
    "n-one-rejected": p(n=1, max_tokens=2),
    "frequency-penalty-rejected-inside": p(frequency_penalty=-1.0, max_tokens=2),
    "frequency-penalty-bound-rejected": p(frequency_penalty=-2.0, max_tokens=2),
    "presence-penalty-rejected-inside": p(presence_penalty=-1.0, max_tokens=2),
    "presence-penalty-bound-rejected": p(presence_penalty=-2.0, max_tokens=2),
    "repetition-penalty-rejected-inside": p(repetition_penalty=0.5, max_tokens=2),
    "top-logprobs-zero-rejected": p(logprobs=True, top_logprobs=0, max_tokens=2),
    "logit-bias-rejected-inside": p(logit_bias={"100": 50}, max_tokens=2),
    "four-stops-rejected": p(stop=["a", "b", "c", "d"], max_tokens=2),
    "message-name-rejected": p(
        messages=[{"role": "user", "content": "Tell me a story", "name": "ann"}], **GREEDY
    ),
    "tool-type-any-accepted": p(tools=[{**TOOLS[0], "type": "bogus"}], **GREEDY),
}

_ID = re.compile(r"(chatcmpl|call)[-_][0-9a-f]{24,32}")
_CREATED = re.compile(r'"created": (\d+)')


def observe(client: TestClient, probe: Probe) -> tuple[int, str, str]:
    """Status, content type and body with random ids and the clock normalised (equal structure kept)."""
    if probe.method == "GET":
        r = client.get(probe.path, headers=probe.headers)
    elif probe.raw is not None:
        r = client.post(
            probe.path, content=probe.raw, headers={**probe.headers, "content-type": "application/json"}
        )
    else:
        body: dict[str, Any] = {"model": MODEL, "messages": STORY, "temperature": 0, **(probe.body or {})}
        body = {k: v for k, v in body.items() if v is not None}
        r = client.post(probe.path, json=body, headers=probe.headers)
    text = r.text
    ids: dict[str, str] = {}
    text = _ID.sub(lambda m: ids.setdefault(m.group(0), f"<{m.group(1)}{len(ids)}>"), text)
    stamps = [int(x) for x in _CREATED.findall(text)]
    now = time.time()

    def stamp(m: re.Match[str]) -> str:
        v = int(m.group(1))
        return f'"created": "{"sec" if abs(v - now) < 600 else "other"}+{v - stamps[0]}"'

    text = _CREATED.sub(stamp, text)
    return r.status_code, r.headers.get("content-type", ""), text


def test_at_least_45_faults_with_probes() -> None:
    assert len(FAULTS) >= 45
    assert set(PROBES) == set(FAULTS)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_names_a_catalog_requirement(name: str) -> None:
    fault = FAULTS[name]
    assert fault.name == name and fault.description
    assert fault.requirement in catalog(), f"{name} breaks unknown requirement {fault.requirement}"


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_changes_behaviour(name: str) -> None:
    probe = PROBES[name]
    clean = TestClient(create_app(api_key=KEY, profile=probe.profile))
    faulty = TestClient(create_app(api_key=KEY, profile=probe.profile, faults=[name]))
    before = observe(clean, probe)
    assert before == observe(clean, probe), "the probe must be deterministic on the clean server"
    assert observe(faulty, probe) != before
