"""response_format: text, json_object and json_schema (non-streamed and streamed).

An answer cut by max_tokens (finish_reason length) cannot be complete JSON: it must then be a valid prefix of
what was asked for, and whether it would have validated stays undecided (Inconclusive).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

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
from conformance.violations import Inconclusive, Judge

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


# ---- incremental JSON prefix validation -------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_ESCAPES = frozenset('"\\/bfnrtu')
_HEX = frozenset("0123456789abcdefABCDEF")
_WS = frozenset(" \t\n\r")
_LITERALS = ("true", "false", "null")


def _number_prefix_ok(tok: str) -> bool:
    """Whether ``tok`` can still grow into a JSON number."""
    return bool(_NUMBER.fullmatch(tok) or _NUMBER.fullmatch(tok + "0"))


def json_prefix_error(text: str, *, top: str = "{") -> str | None:
    """None when ``text`` is a prefix of some JSON text whose top-level value opens with ``top`` (``{`` for an
    object), else why not (with the character offset). A complete value is a prefix of itself."""
    stack: list[str] = []  # open containers: "{" or "["
    # expecting: "value", "key" (after ","), "key_or_close" (after "{"), "colon", "comma_or_close",
    # "value_or_close" (after "["), "end" (top-level value done)
    state = "start"
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if (
            state
            in ("start", "value", "value_or_close", "key", "key_or_close", "colon", "comma_or_close", "end")
            and c in _WS
        ):
            i += 1
            continue
        if state == "start":
            if c != top:
                return f"offset {i}: the value does not start with {top!r} (got {c!r})"
            state = "value"  # handled below as the container opening
        if state == "end":
            return f"offset {i}: text after the complete JSON value ({c!r})"
        if state == "colon":
            if c != ":":
                return f"offset {i}: expected ':' after an object key, got {c!r}"
            state, i = "value", i + 1
            continue
        if state == "comma_or_close":
            if c == ",":
                state = "key" if stack[-1] == "{" else "value"
            elif (c == "}" and stack[-1] == "{") or (c == "]" and stack[-1] == "["):
                stack.pop()
                state = "comma_or_close" if stack else "end"
            else:
                return f"offset {i}: expected ',' or a closing bracket, got {c!r}"
            i += 1
            continue
        if state in ("key", "key_or_close"):
            if c == "}" and state == "key_or_close":
                stack.pop()
                state, i = ("comma_or_close" if stack else "end"), i + 1
                continue
            if c != '"':
                return f"offset {i}: expected an object key (a string), got {c!r}"
            end, err = _scan_string(text, i)
            if err:
                return err
            if end is None:
                return None  # the text ends inside the key
            state, i = "colon", end
            continue
        # a value is expected ("value" or "value_or_close")
        if c == "]" and state == "value_or_close":
            stack.pop()
            state, i = ("comma_or_close" if stack else "end"), i + 1
            continue
        if c == "{":
            stack.append("{")
            state, i = "key_or_close", i + 1
        elif c == "[":
            stack.append("[")
            state, i = "value_or_close", i + 1
        elif c == '"':
            end, err = _scan_string(text, i)
            if err:
                return err
            if end is None:
                return None
            state, i = ("comma_or_close" if stack else "end"), end
        elif c in "-0123456789":
            j = i
            while j < n and text[j] in _NUMBER_CHARS:
                j += 1
            tok = text[i:j]
            if j == n:
                return None if _number_prefix_ok(tok) else f"offset {i}: {tok!r} is not the start of a number"
            if not _NUMBER.fullmatch(tok):
                return f"offset {i}: {tok!r} is not a number"
            state, i = ("comma_or_close" if stack else "end"), j
        elif c.isalpha():
            j = i
            while j < n and text[j].isalpha():
                j += 1
            tok = text[i:j]
            if j == n:
                if any(lit.startswith(tok) for lit in _LITERALS):
                    return None
                return f"offset {i}: {tok!r} is not the start of true, false or null"
            if tok not in _LITERALS:
                return f"offset {i}: {tok!r} is not a JSON value"
            state, i = ("comma_or_close" if stack else "end"), j
        else:
            return f"offset {i}: {c!r} cannot start a JSON value"
    return None


def _scan_string(text: str, i: int) -> tuple[int | None, str | None]:
    """Scan the string opening at ``text[i]``: (offset after its closing quote, None), (None, None) when the
    text ends inside it, or (None, error)."""
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if c == '"':
            return j + 1, None
        if c == "\\":
            if j + 1 >= n:
                return None, None
            e = text[j + 1]
            if e not in _ESCAPES:
                return None, f"offset {j}: invalid escape \\{e}"
            if e == "u":
                hexes = text[j + 2 : j + 6]
                if not all(h in _HEX for h in hexes):
                    return None, f"offset {j}: invalid \\u escape {text[j : j + 6]!r}"
                if len(hexes) < 4:
                    return None, None
                j += 6
            else:
                j += 2
            continue
        if ord(c) < 0x20:
            return None, f"offset {j}: unescaped control character {c!r} in a string"
        j += 1
    return None, None


# ---- judging ----------------------------------------------------------------------------------------------


def _judge_json_answer(
    judge: Judge,
    requirement: str,
    text: str,
    finish: Any,
    ex: Any,
    path: str,
    schema: dict[str, Any] | None = None,
) -> None:
    """Judge ``text`` as the JSON object answer of a json_object / json_schema request."""
    if finish == "length":
        if not text.strip():
            raise Inconclusive("the answer was cut by max_tokens before any JSON was produced")
        err = json_prefix_error(text)
        judge.check(
            err is None,
            requirement,
            "the answer cut by max_tokens is not a prefix of a JSON object",
            path=path,
            expected="a prefix of a JSON object",
            received=f"{text[:300]!r} ({err})",
            exchange=ex,
        )
        if err is not None:
            return
        try:
            value = json.loads(text)
        except ValueError:
            raise Inconclusive(
                "the answer was cut by max_tokens: a valid JSON prefix, not a complete value to validate"
            ) from None
    else:
        try:
            value = json.loads(text)
        except ValueError as exc:
            judge.fail(
                requirement,
                "the content does not parse as JSON",
                path=path,
                expected="a JSON object",
                received=f"{text[:300]!r} ({exc})",
                exchange=ex,
            )
            return
    judge.check(
        isinstance(value, dict),
        requirement,
        "the content is JSON but not an object",
        path=path,
        expected="a JSON object",
        received=text[:300],
        exchange=ex,
    )
    if schema is None or not isinstance(value, dict):
        return
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    for err in errors[:3]:
        judge.check(
            False,
            requirement,
            "the content does not validate against the requested schema",
            path=path + "".join(f"[{p!r}]" for p in err.path),
            expected=json.dumps(schema),
            received=f"{text[:200]!r}: {err.message}",
            exchange=ex,
        )


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


@pytest.mark.requirement("FORMAT-TEXT")
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


@pytest.mark.requirement("JSON-OBJECT-VALID")
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


@pytest.mark.requirement("JSON-SCHEMA-VALID")
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


@pytest.mark.requirement("JSON-SCHEMA-STREAM")
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
