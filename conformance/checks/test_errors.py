"""Validation and errors: invalid requests are refused with a 4xx in the OpenAI error shape."""

from __future__ import annotations

from typing import Any

from conformance.checks._support import ERROR_SHAPE_REQS, USER, body, judge_error_response
from conformance.engine.registry import case as registry_case
from conformance.engine.registry import check

MSG = [{"role": "user", "content": USER}]


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


@check("ERROR-MALFORMED-JSON", *ERROR_SHAPE_REQS)
def test_malformed_json(client, judge):
    # Any 4xx: OpenAI answers 400, FastAPI/pydantic servers 422 (spec/DECISIONS.md#relevel-13)
    ex = client.post_raw("/chat/completions", b'{"model": "x", "messages": [', label="malformed JSON body")
    judge_error_response(judge, ex, "ERROR-MALFORMED-JSON", "a malformed JSON body")


# (case id, requirement, what, request builder)
INVALID: list[tuple[str, str, str, Any]] = [
    (
        "missing-messages",
        "ERROR-MISSING-MESSAGES",
        "a request without messages",
        lambda t: _without(body(t, max_tokens=2), "messages"),
    ),
    (
        "empty-messages",
        "ERROR-EMPTY-MESSAGES",
        "an empty messages array",
        lambda t: body(t, max_tokens=2) | {"messages": []},
    ),
    (
        "missing-model",
        "ERROR-MISSING-MODEL",
        "a request without model",
        lambda t: _without(body(t, max_tokens=2), "model"),
    ),
    (
        "unknown-model",
        "ERROR-UNKNOWN-MODEL",
        "an unknown model",
        lambda t: body(t, max_tokens=2) | {"model": "no-such-model-chat-conformance"},
    ),
    ("max-tokens-string", "ERROR-WRONG-TYPE", "max_tokens as a string", lambda t: body(t, max_tokens="ten")),
    # top_k counts tokens (the seed: "the k most likely next tokens"; spec/openapi.yaml: integer): a
    # fraction is the wrong type, not a value to round (spec/DECISIONS.md#neighbours)
    ("top-k-fraction", "ERROR-WRONG-TYPE", "top_k 3.5 (a fraction for an integer field)",
     lambda t: body(t, max_tokens=2, top_k=3.5)),
    (
        "messages-object",
        "ERROR-WRONG-TYPE",
        "messages as an object",
        lambda t: body(t, max_tokens=2) | {"messages": {"role": "user", "content": USER}},
    ),
    (
        "invalid-role",
        "ERROR-INVALID-ROLE",
        "a message with role 'wizard'",
        lambda t: body(t, max_tokens=2, messages=[{"role": "wizard", "content": USER}]),
    ),
    ("max-tokens-zero", "MAXTOK-REJECT-NONPOSITIVE", "max_tokens 0", lambda t: body(t, max_tokens=0)),
    ("max-tokens-negative", "MAXTOK-REJECT-NONPOSITIVE", "max_tokens -1", lambda t: body(t, max_tokens=-1)),
    (
        "stream-invalid",
        "ERROR-STREAM-BEFORE-EVENTS",
        "an invalid streaming request (max_tokens as a string)",
        lambda t: body(t, max_tokens="ten", stream=True),
    ),
]


# the fault modes each case was built to tell from a conforming server (spec/DECISIONS.md#neighbours)
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "top-k-fraction": ("top-k-fraction-accepted",),
    "max-tokens-string": ("wrong-type-accepted",),
    "messages-object": ("wrong-type-accepted",),
}


@check(
    argnames="case, requirement, what, build",
    cases=[registry_case(*row, id=row[0], requirements=(row[1], *ERROR_SHAPE_REQS),
                         neighbours=NEIGHBOURS.get(row[0], ())) for row in INVALID],
)
def test_invalid_request_refused(client, judge, conformance_target, case, requirement, what, build):
    ex = client.chat(build(conformance_target), label=what)
    refused = judge_error_response(judge, ex, requirement, what)
    if case == "stream-invalid" and refused:
        judge.check(
            ex.content_type == "application/json" and not ex.events,
            "ERROR-STREAM-BEFORE-EVENTS",
            "the refusal was sent as an event stream",
            path="headers.content-type",
            expected="application/json",
            received=ex.content_type,
            exchange=ex,
        )
