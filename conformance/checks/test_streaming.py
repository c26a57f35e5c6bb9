"""Streaming: the whole event stream judged as a state machine."""

from __future__ import annotations

from typing import Any

from conformance.catalog import catalog
from conformance.checks._stream import judge_stream
from conformance.checks._support import (
    EMPTY,
    EQUAL,
    Answer,
    answer_of,
    body,
    compare_answers,
    first_choice,
    is_4xx,
    obj,
    ok_json,
    ok_stream,
    settle,
    stream_answer,
    stream_answered,
    stream_finish,
    stream_usage,
    with_logprobs,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive

MAX = 8
MULTIBYTE_PROMPT = "Write a short story about a cat named Zoë who loves crème brûlée — in 東京."


@check(
    "STREAM-CONTENT-TYPE",
    "STREAM-DATA-ONLY",
    "STREAM-CHUNK-JSON",
    "STREAM-CHUNK-SCHEMA",
    "STREAM-CHUNK-OBJECT",
    "STREAM-DONE-TERMINATES",
    "STREAM-NOTHING-AFTER-DONE",
    "STREAM-ID-CONSTANT",
    "STREAM-CREATED-CONSTANT",
    "STREAM-MODEL-CONSTANT",
    "STREAM-ROLE-FIRST",
    "STREAM-FINISH-ONCE",
    "STREAM-FINISH-LAST",
    "USAGE-STREAM-LAST-CHUNK",
    "USAGE-STREAM-EMPTY-CHOICES",
    "USAGE-STREAM-NULL-ELSEWHERE",
    "CORE-REQUEST-JSON",
)
def test_stream_with_usage(shared, judge, conformance_target, profile):
    ex = shared(
        "stream-usage",
        body(conformance_target, max_tokens=MAX, stream=True, stream_options={"include_usage": True}),
        label="stream with include_usage",
    )
    judge.require(
        ex.status is None or 200 <= ex.status < 300,
        "CORE-REQUEST-JSON",
        "a valid streaming request was not answered 2xx",
        path="status",
        expected="200 with an event stream",
        received=f"{ex.status} {(ex.body_text or '')[:200]}",
        exchange=ex,
    )
    empty_choices = catalog()["USAGE-STREAM-EMPTY-CHOICES"].applies_to(profile.base)
    judge_stream(judge, ex, n=1, include_usage=True, usage_empty_choices=empty_choices)


@check("STREAM-INCREMENTAL", "MAXTOK-STREAM-BOUND")
def test_stream_incremental_and_bounded(shared, judge, conformance_target):
    ex = shared(
        "stream-usage",
        body(conformance_target, max_tokens=MAX, stream=True, stream_options={"include_usage": True}),
        label="stream with include_usage",
    )
    chunks = ok_stream(ex)
    usage = stream_usage(chunks) or {}
    completion = usage.get("completion_tokens")
    # generated text arrives in delta.content, and in delta.reasoning_content (or delta.reasoning) when the
    # model reasons: every such delta is a piece of the completion (spec/DECISIONS.md#reasoning-models)
    pieces = sum(
        1
        for c in chunks
        for ch in c.get("choices") or []
        if isinstance(ch, dict)
        and any(obj(ch.get("delta")).get(k) for k in ("content", "reasoning_content", "reasoning"))
    )
    if isinstance(completion, int):
        judge.check(
            completion <= MAX,
            "MAXTOK-STREAM-BOUND",
            "the stream generated more than max_tokens",
            path="usage.completion_tokens",
            expected=f"<= {MAX}",
            received=completion,
            exchange=ex,
        )
        if completion == MAX:
            judge.check(
                stream_finish(chunks) == "length",
                "MAXTOK-STREAM-BOUND",
                "a stream cut by max_tokens did not finish with length",
                path="finish_reason",
                expected="length",
                received=stream_finish(chunks),
                exchange=ex,
            )
    else:
        judge.check(
            pieces <= MAX,
            "MAXTOK-STREAM-BOUND",
            "more content chunks than max_tokens",
            path="choices[0].delta.content",
            expected=f"<= {MAX} chunks",
            received=pieces,
            exchange=ex,
        )
    # only a completion the target itself counts as several tokens must arrive in several chunks
    # (one long token is one chunk); with nothing to judge the requirement stays unjudged, not passed
    if isinstance(completion, int) and completion >= 2:
        judge.check(
            pieces >= 2,
            "STREAM-INCREMENTAL",
            "a multi-token completion arrived as one chunk",
            path="choices[0].delta.content",
            expected=">= 2 content (or reasoning) chunks",
            received=pieces,
            exchange=ex,
        )


@check(
    "STREAM-CHOICE-INDEX",
    "STREAM-FINISH-ONCE",
    "STREAM-ROLE-FIRST",
    "USAGE-STREAM-ABSENT",
    "STREAM-DONE-TERMINATES",
)
def test_stream_two_choices(client, judge, conformance_target, profile):
    ex = client.chat(body(conformance_target, max_tokens=4, n=2, stream=True), label="stream, n=2")
    stream_answered(ex)
    judge_stream(
        judge, ex, n=2, include_usage=False, forbid_usage=profile.stream_usage_without_option == "forbidden"
    )


@check("STREAM-MATCHES-NONSTREAM", "USAGE-STREAM-MATCHES",
       neighbours=("stream-differs", "stream-drops-multibyte", "stream-usage-differs"))
def test_stream_equals_nonstream(client, judge, conformance_target, profile):
    # The same deterministic request, streamed and not, with logprobs: the two answers are compared token by
    # token (compare_answers); a divergence only at a near-tie is asked again (settle), a confident one fails
    # (spec/DECISIONS.md#near-ties). The usage of the pair that settled it is compared.
    # The prompt holds characters of several UTF-8 bytes, which a model tends to write back: a stream that
    # loses them shows here, and the comparison tells a missing character (the same tokens, the same bytes,
    # another text) from a near-tie (spec/DECISIONS.md#health-misses).
    params = dict(profile.deterministic, max_tokens=MAX)
    messages = [{"role": "user", "content": MULTIBYTE_PROMPT}]
    plain_body = body(conformance_target, messages=messages, **params)
    stream_body = body(conformance_target, messages=messages, stream=True,
                       stream_options={"include_usage": True}, **params)
    plains: list[tuple[Any, dict[str, Any]]] = []
    streams: list[tuple[Any, list[dict[str, Any]]]] = []

    def ask_plain() -> Answer:
        ex = with_logprobs(lambda b: client.chat(b, label="deterministic, not streamed"), plain_body)
        plains.append((ex, ok_json(ex)))
        return answer_of(plains[-1][1])

    def ask_stream() -> Answer:
        ex = with_logprobs(lambda b: client.chat(b, label="deterministic, streamed"), stream_body)
        streams.append((ex, ok_stream(ex)))
        return stream_answer(streams[-1][1])

    first_plain = ask_plain()
    done = settle(first_plain, ask_stream(), ask_plain, ask_stream,
                  compare=lambda a, b: compare_answers(a, b, names=("non-streamed", "streamed")))
    cmp = done.comparison
    if cmp.kind == EMPTY:
        raise Inconclusive(f"the deterministic answers, streamed and not, are both empty: {cmp.detail}")
    (_, data), (ex, chunks) = plains[done.a], streams[done.b]
    want, got = done.answers_a[done.a], done.answers_b[done.b]
    u1, u2 = data.get("usage"), stream_usage(chunks)
    keys = ("prompt_tokens", "completion_tokens", "total_tokens") if cmp.kind == EQUAL else ("prompt_tokens",)
    if isinstance(u1, dict) and isinstance(u2, dict):
        # prompt_tokens never depends on the answer; the other counts only when the two answers are equal
        judge.check(
            all(u1.get(k) == u2.get(k) for k in keys),
            "USAGE-STREAM-MATCHES",
            "streamed usage differs from the non-streamed usage",
            path="usage",
            expected={k: u1.get(k) for k in keys},
            received={k: u2.get(k) for k in keys},
            exchange=ex,
        )
    if not cmp.settled:
        raise Inconclusive(f"the streamed and non-streamed answers differ only where the model nearly ties: "
                           f"{done.reason}")
    judge.check(
        cmp.kind == EQUAL,
        "STREAM-MATCHES-NONSTREAM",
        f"the reassembled stream differs from the answer ({cmp.detail})",
        path="choices[0].delta.content",
        expected=want.reasoning + want.content,
        received=got.reasoning + got.content,
        exchange=ex,
    )
    if cmp.kind == EQUAL:
        fr = first_choice(data).get("finish_reason")
        judge.check(
            stream_finish(chunks) == fr,
            "STREAM-MATCHES-NONSTREAM",
            "finish_reason differs",
            path="choices[0].finish_reason",
            expected=fr,
            received=stream_finish(chunks),
            exchange=ex,
        )


@check("STREAM-OPTIONS-REQUIRES-STREAM")
def test_stream_options_without_stream(client, judge, conformance_target):
    ex = client.chat(
        body(conformance_target, max_tokens=2, stream_options={"include_usage": True}),
        label="stream_options without stream",
    )
    judge.check(
        is_4xx(ex),
        "STREAM-OPTIONS-REQUIRES-STREAM",
        "stream_options without stream was accepted",
        path="status",
        expected="4xx",
        received=ex.status,
        exchange=ex,
    )
