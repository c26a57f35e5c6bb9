"""The reference server's variants of issue 13's re-levelled requirements (validation-422, lax-type-coercion,
unknown-role-accepted, auth-403, fewer-top-logprobs): each changes exactly the behaviour it names."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from conformance.reference import create_app
from conformance.reference.app import _lax_coerce

KEY = "sk-reference"
AUTH = {"Authorization": f"Bearer {KEY}"}
MSG = [{"role": "user", "content": "Tell me a story"}]


def _client(*variants: str) -> TestClient:
    return TestClient(create_app(api_key=KEY, variants=list(variants)))


def _post(client: TestClient, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    payload = {"model": "reference-tiny", "messages": MSG, "max_tokens": 4, "temperature": 0, **(body or {})}
    return client.post("/v1/chat/completions", json=payload, headers=kw.get("headers", AUTH))


def test_validation_422_answers_validation_errors_and_malformed_json_422() -> None:
    clean, v = _client(), _client("validation-422")
    assert _post(clean, {"max_tokens": "ten"}).status_code == 400
    r = _post(v, {"max_tokens": "ten"})
    assert r.status_code == 422 and r.json()["error"]["message"]
    raw = v.post("/v1/chat/completions", content=b'{"model": ', headers=AUTH)
    assert raw.status_code == 422 and "error" in raw.json()
    assert _post(v, headers={}).status_code == 401  # auth is not validation
    assert _post(v, {"model": "nope"}).status_code == 404


def test_lax_type_coercion_reads_numeric_strings() -> None:
    clean, v = _client(), _client("lax-type-coercion")
    assert _post(clean, {"max_tokens": "3"}).status_code == 400
    r = _post(v, {"max_tokens": "3"})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert _post(v, {"max_tokens": "ten"}).status_code == 400  # not numeric: pydantic refuses it too
    assert _post(v, {"messages": {"role": "user", "content": "hi"}}).status_code == 400


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"max_tokens": "8", "temperature": "0.5", "stream": "false"}, {"max_tokens": 8, "temperature": 0.5,
                                                                         "stream": False}),
        ({"n": 2.0, "logprobs": 1, "seed": "1.5"}, {"n": 2, "logprobs": True, "seed": "1.5"}),
        ({"logit_bias": {"5": "10"}, "stream_options": {"include_usage": "true"}},
         {"logit_bias": {"5": 10.0}, "stream_options": {"include_usage": True}}),
        ({"top_p": "nan", "stop": 1}, {"top_p": "nan", "stop": 1}),
    ],
)
def test_lax_coerce(given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert _lax_coerce(given) == expected


def test_unknown_role_accepted_variant() -> None:
    wizard = {"messages": [{"role": "wizard", "content": "hi"}]}
    assert _post(_client(), wizard).status_code == 400
    assert _post(_client("unknown-role-accepted"), wizard).status_code == 200


def test_auth_403_refuses_missing_and_wrong_keys_with_403() -> None:
    v = _client("auth-403")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = _post(v, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_api_key"
        assert _post(_client(), headers=headers).status_code == 401
    assert _post(v).status_code == 200


def test_fewer_top_logprobs_gives_k_minus_one() -> None:
    def counts(client: TestClient, k: int) -> set[int]:
        r = _post(client, {"logprobs": True, "top_logprobs": k})
        return {len(e["top_logprobs"]) for e in r.json()["choices"][0]["logprobs"]["content"]}

    assert counts(_client(), 5) == {5}
    assert counts(_client("fewer-top-logprobs"), 5) == {4}
    assert counts(_client("fewer-top-logprobs"), 1) == {1}
