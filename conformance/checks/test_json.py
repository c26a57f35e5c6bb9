"""response_format: text, json_object and json_schema (non-streamed and streamed).

An answer cut by max_tokens (finish_reason length) cannot be complete JSON: it must then be a valid prefix of
what was asked for, and whether it would have validated stays undecided (Inconclusive).
"""

from __future__ import annotations

from typing import Any

from conformance.checks._rules import json_prefix_error, judge_json_answer
from conformance.checks._support import (
    ask,
    body,
    content_of,
    first_choice,
    not_cut,
    ok_stream,
    reasoning_aware,
    refusal_of,
    require_completion,
    stream_finish,
    stream_text,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive, Judge

__all__ = ["json_prefix_error"]  # kept importable from here (its home is _rules)

MAX_TOKENS = 64
PROMPT = "Is the sky blue? Answer as a JSON object."

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "boolean"}},
    "required": ["answer"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
}


def _judge_json_answer(
    judge: Judge,
    requirement: str,
    text: str,
    finish: Any,
    ex: Any,
    path: str,
    schema: dict[str, Any] | None = None,
) -> None:
    """Judge ``text`` as the JSON object answer of a json_object / json_schema request (the rule the run-wide
    judge applies to every such answer: ``_rules.judge_json_answer``)."""
    why = judge_json_answer(judge, requirement, text, finish, ex, path, schema)
    if why is not None:
        raise Inconclusive(why)


def _finish(data: dict[str, Any]) -> Any:
    ch = first_choice(data)
    return ch.get("finish_reason") if isinstance(ch, dict) else None


def _refusal(data: dict[str, Any]) -> str | None:
    """The refusal that stands in for the answer (OpenAI structured outputs: content null, message.refusal
    a string), or None when there is content to judge."""
    msg = first_choice(data).get("message")
    return refusal_of(msg) if not content_of(data) else None


def _stream_refusal(chunks: list[dict[str, Any]]) -> str | None:
    refusal = stream_text(chunks, field="refusal")
    return refusal if refusal and not stream_text(chunks) else None


REFUSED_TWICE = (
    "{what} was refused twice ({where} {refusal!r}): a refusal carries no content to validate (OpenAI "
    "structured outputs answer a refusal with content null and the refusal in its own field)"
)


def _answer(client: Any, judge: Judge, req: dict[str, Any], label: str, requirement: str, what: str) -> Any:
    """(exchange, completion) of a JSON-format request; a refusal is asked once more, and a second refusal
    leaves the requirement undecided (spec/DECISIONS.md#nulls)."""
    ex = client.chat(req, label=label)
    data = require_completion(judge, ex, requirement, what)
    if _refusal(data) is None:
        return ex, data
    ex = client.chat(req, label=label + ", asked again after a refusal")
    data = require_completion(judge, ex, requirement, what + " (asked again after a refusal)")
    refusal = _refusal(data)
    if refusal is not None:
        raise Inconclusive(REFUSED_TWICE.format(what=what, where="message.refusal", refusal=refusal[:120]))
    return ex, data


def _json_body(target: Any, profile: Any, response_format: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return body(
        target,
        messages=[{"role": "user", "content": PROMPT}],
        response_format=response_format,
        max_tokens=MAX_TOKENS,
        **dict(profile.deterministic, **fields),
    )


@check("FORMAT-TEXT")
def test_format_text_accepted(client, judge, conformance_target, capabilities):
    ex = ask(
        client,
        reasoning_aware(conformance_target, capabilities, 4, response_format={"type": "text"}),
        label='response_format {"type": "text"}',
    )
    data = require_completion(judge, ex, "FORMAT-TEXT", 'a request with response_format {"type": "text"}')
    msg = first_choice(data).get("message") or {}
    if not isinstance(msg.get("content"), str):
        not_cut(ex, 'response_format {"type": "text"}')  # content null: no answer text was produced yet
    judge.check(
        isinstance(msg.get("content"), str),
        "FORMAT-TEXT",
        "the text answer carries no content",
        path="$.choices[0].message.content",
        expected="string",
        received=msg.get("content"),
        exchange=ex,
    )


@check("JSON-OBJECT-VALID")
def test_json_object_answer(client, judge, conformance_target, profile):
    ex, data = _answer(
        client,
        judge,
        _json_body(conformance_target, profile, {"type": "json_object"}),
        'response_format {"type": "json_object"}',
        "JSON-OBJECT-VALID",
        "a json_object request",
    )
    _judge_json_answer(
        judge, "JSON-OBJECT-VALID", content_of(data), _finish(data), ex, "$.choices[0].message.content"
    )


@check("JSON-SCHEMA-VALID")
def test_json_schema_answer(client, judge, conformance_target, profile):
    ex, data = _answer(
        client,
        judge,
        _json_body(conformance_target, profile, JSON_SCHEMA_FORMAT),
        "response_format json_schema {answer: boolean}",
        "JSON-SCHEMA-VALID",
        "a json_schema request",
    )
    _judge_json_answer(
        judge,
        "JSON-SCHEMA-VALID",
        content_of(data),
        _finish(data),
        ex,
        "$.choices[0].message.content",
        schema=ANSWER_SCHEMA,
    )


@check("JSON-SCHEMA-STREAM")
def test_json_schema_streamed(client, judge, conformance_target, profile):
    req = _json_body(conformance_target, profile, JSON_SCHEMA_FORMAT, stream=True)
    label = "streamed response_format json_schema {answer: boolean}"
    for attempt in range(2):
        ex = client.chat(req, label=label if attempt == 0 else label + ", asked again after a refusal")
        judge.require(
            ex.status is not None and 200 <= ex.status < 300,
            "JSON-SCHEMA-STREAM",
            "a streamed json_schema request was not answered",
            path="status",
            expected="2xx",
            received=f"{ex.status} {(ex.body_text or ex.transport_error or '')[:160]}",
            exchange=ex,
        )
        chunks = ok_stream(ex, "streamed json_schema request")
        refusal = _stream_refusal(chunks)
        if refusal is None:
            break
    else:
        raise Inconclusive(
            REFUSED_TWICE.format(
                what="a streamed json_schema request", where="delta.refusal", refusal=refusal[:120]
            )
        )
    _judge_json_answer(
        judge,
        "JSON-SCHEMA-STREAM",
        stream_text(chunks),
        stream_finish(chunks),
        ex,
        "choices[0].delta.content (reassembled)",
        schema=ANSWER_SCHEMA,
    )
