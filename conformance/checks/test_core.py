"""Core response shape and fields of a non-streaming completion."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.checks._support import (
    USER,
    ask,
    body,
    content_of,
    cut_in_reasoning,
    judge_answer_fields,
    judge_schema,
    now,
    obj,
    ok_json,
    published_context_length,
)

BASIC = "basic"  # the shared basic completion, judged by several checks


def _basic(shared: Any, target: Any) -> Any:
    return shared(BASIC, body(target, max_tokens=8), label="basic completion")


@pytest.mark.requirement("CORE-REQUEST-JSON", "CORE-CONTENT-TYPE", "CORE-SCHEMA-VALID")
def test_basic_completion_is_json_and_valid(shared, judge, conformance_target):
    ex = _basic(shared, conformance_target)
    judge.require(
        ex.transport_error is None,
        "CORE-REQUEST-JSON",
        "the exchange did not complete",
        expected="a complete answer",
        received=ex.transport_error,
        exchange=ex,
    )
    judge.require(
        ex.status == 200,
        "CORE-REQUEST-JSON",
        "a valid request was not answered 200",
        path="status",
        expected=200,
        received=ex.status,
        exchange=ex,
    )
    judge.check(
        ex.content_type == "application/json",
        "CORE-CONTENT-TYPE",
        "wrong Content-Type",
        path="headers.content-type",
        expected="application/json",
        received=ex.content_type,
        exchange=ex,
    )
    data = ex.json()
    judge.require(
        isinstance(data, dict),
        "CORE-REQUEST-JSON",
        "the body is not a JSON object",
        expected="JSON object",
        received=(ex.body_text or "")[:200],
        exchange=ex,
    )
    judge_schema(judge, "CORE-SCHEMA-VALID", "ChatCompletion", data, ex)


@pytest.mark.requirement(
    "CORE-OBJECT",
    "CORE-ID-PRESENT",
    "CORE-CREATED-SECONDS",
    "CORE-MODEL-PRESENT",
    "CORE-MODEL-MATCHES",
    "CORE-CHOICES-PRESENT",
    "CORE-CHOICE-INDEX",
    "CORE-MESSAGE-ROLE",
    "CORE-MESSAGE-CONTENT",
    "CORE-FINISH-REASON",
    "N-DEFAULT-ONE",
)
def test_completion_fields(shared, judge, conformance_target):
    ex = _basic(shared, conformance_target)
    data = ok_json(ex)
    judge_answer_fields(judge, ex, data)
    created = data.get("created")
    ok_created = isinstance(created, int) and not isinstance(created, bool) and abs(created - now()) < 600
    judge.check(
        ok_created,
        "CORE-CREATED-SECONDS",
        "created is not Unix seconds near now",
        path="$.created",
        expected=f"integer within 600 s of {int(now())}",
        received=created,
        exchange=ex,
    )
    model = data.get("model")
    judge.check(
        isinstance(model, str) and model != "",
        "CORE-MODEL-PRESENT",
        "model missing or empty",
        path="$.model",
        expected="non-empty string",
        received=model,
        exchange=ex,
    )
    want = conformance_target.model
    judge.check(
        isinstance(model, str)
        and (model == want or model.startswith(want + "-") or model.startswith(want + ":")),
        "CORE-MODEL-MATCHES",
        "model does not name the requested model",
        path="$.model",
        expected=want,
        received=model,
        exchange=ex,
    )
    choices = data.get("choices")
    judge.require(
        isinstance(choices, list) and len(choices) > 0,
        "CORE-CHOICES-PRESENT",
        "choices missing or empty",
        path="$.choices",
        expected="non-empty array",
        received=choices,
        exchange=ex,
    )
    judge.check(
        len(choices) == 1,
        "N-DEFAULT-ONE",
        "without n, the number of choices is not 1",
        path="$.choices",
        expected=1,
        received=len(choices),
        exchange=ex,
    )
    indices = [c.get("index") if isinstance(c, dict) else None for c in choices]
    judge.check(
        sorted(i for i in indices if isinstance(i, int)) == list(range(len(choices)))
        and all(isinstance(i, int) for i in indices),
        "CORE-CHOICE-INDEX",
        "choices are not indexed 0..n-1",
        path="$.choices[*].index",
        expected=list(range(len(choices))),
        received=indices,
        exchange=ex,
    )
    if any(cut_in_reasoning(data, i) for i in range(len(choices))):
        # a null content cut inside the reasoning is legitimate, and it hides a server that answers null
        # everywhere: ask again with room, so that an answer past the reasoning shows its content
        again = ask(None, body(conformance_target, max_tokens=8), label="basic completion", shared=shared,
                    key=BASIC)
        adata = obj(again.json()) if again is not ex and again.status == 200 else {}
        if adata:
            judge_answer_fields(judge, again, adata, note=" (asked again with room for the reasoning)")


@pytest.mark.requirement("CORE-ID-UNIQUE")
def test_ids_unique(shared, client, judge, conformance_target):
    first = ok_json(_basic(shared, conformance_target))
    ex = client.chat(body(conformance_target, max_tokens=2), label="second completion")
    second = ok_json(ex)
    judge.check(
        first.get("id") != second.get("id"),
        "CORE-ID-UNIQUE",
        "two responses share an id",
        path="$.id",
        expected=f"an id other than {first.get('id')!r}",
        received=second.get("id"),
        exchange=ex,
    )


@pytest.mark.requirement("CORE-MULTI-TURN")
def test_multi_turn_conversation(client, judge, conformance_target):
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": USER},
    ]
    ex = client.chat(body(conformance_target, messages=msgs, max_tokens=4), label="multi-turn")
    judge.check(
        ex.status == 200 and bool(content_of(obj(ex.json())) or obj(ex.json()).get("choices")),
        "CORE-MULTI-TURN",
        "a system/user/assistant conversation was not answered",
        path="status",
        expected="200 with choices",
        received=ex.status,
        exchange=ex,
    )


@pytest.mark.requirement("CORE-CONTENT-PARTS")
def test_content_parts(client, judge, conformance_target):
    msgs = [{"role": "user", "content": [{"type": "text", "text": USER}]}]
    ex = client.chat(body(conformance_target, messages=msgs, max_tokens=4), label="content parts")
    judge.check(
        ex.status == 200 and isinstance(obj(ex.json()).get("choices"), list),
        "CORE-CONTENT-PARTS",
        "content given as an array of text parts was not accepted",
        path="status",
        expected="200 with choices",
        received=ex.status,
        exchange=ex,
    )


@pytest.mark.requirement("CORE-MODELS-LIST", "CORE-CONTEXT-SIZE-PUBLISHED")
def test_models_list(client, judge, conformance_target):
    ex = client.get("/models", label="list models")
    data = ex.json()
    judge.require(
        ex.status == 200 and isinstance(data, dict),
        "CORE-MODELS-LIST",
        "GET /models failed",
        path="status",
        expected="200 with a JSON object",
        received=ex.status,
        exchange=ex,
    )
    items = data.get("data")
    judge.require(
        isinstance(items, list),
        "CORE-MODELS-LIST",
        "data is not a list",
        path="$.data",
        expected="array of models",
        received=items,
        exchange=ex,
    )
    ids = [m.get("id") for m in items if isinstance(m, dict)]
    judge.check(
        data.get("object") == "list",
        "CORE-MODELS-LIST",
        "object is not list",
        path="$.object",
        expected="list",
        received=data.get("object"),
        exchange=ex,
    )
    judge.check(
        conformance_target.model in ids,
        "CORE-MODELS-LIST",
        "the model under test is not listed",
        path="$.data[*].id",
        expected=conformance_target.model,
        received=ids,
        exchange=ex,
    )
    mine = next((m for m in items if isinstance(m, dict) and m.get("id") == conformance_target.model), {})
    ctx, _ = published_context_length(mine)
    judge.check(
        ctx is not None,
        "CORE-CONTEXT-SIZE-PUBLISHED",
        "the model's context length is not published (context_size, max_model_len or meta.n_ctx)",
        path="$.data[*].context_size",
        expected="a positive integer in context_size, max_model_len or meta.n_ctx",
        received={k: mine.get(k) for k in ("context_size", "max_model_len", "meta") if k in mine}
        or "none of these fields",
        exchange=ex,
    )
