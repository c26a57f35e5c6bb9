"""Streaming: the whole event stream judged as a state machine."""

from __future__ import annotations

import pytest

from conformance.checks._stream import judge_stream
from conformance.checks._support import (
    body,
    content_of,
    first_choice,
    is_4xx,
    obj,
    ok_json,
    ok_stream,
    stream_answered,
    stream_finish,
    stream_text,
    stream_usage,
)

MAX = 8


@pytest.mark.requirement(
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
    "USAGE-STREAM-NULL-ELSEWHERE",
    "CORE-REQUEST-JSON",
)
def test_stream_with_usage(shared, judge, conformance_target):
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
    judge_stream(judge, ex, n=1, include_usage=True)


@pytest.mark.requirement("STREAM-INCREMENTAL", "MAXTOK-STREAM-BOUND")
def test_stream_incremental_and_bounded(shared, judge, conformance_target):
    ex = shared(
        "stream-usage",
        body(conformance_target, max_tokens=MAX, stream=True, stream_options={"include_usage": True}),
        label="stream with include_usage",
    )
    chunks = ok_stream(ex)
    usage = stream_usage(chunks) or {}
    completion = usage.get("completion_tokens")
    pieces = sum(
        1
        for c in chunks
        for ch in c.get("choices") or []
        if isinstance(ch, dict) and obj(ch.get("delta")).get("content")
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
            expected=">= 2 content chunks",
            received=pieces,
            exchange=ex,
        )


@pytest.mark.requirement(
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


@pytest.mark.requirement("STREAM-MATCHES-NONSTREAM", "USAGE-STREAM-MATCHES")
def test_stream_equals_nonstream(client, judge, conformance_target, profile):
    params = dict(profile.deterministic, max_tokens=MAX)
    plain = client.chat(body(conformance_target, **params), label="deterministic, not streamed")
    data = ok_json(plain)
    ex = client.chat(
        body(conformance_target, stream=True, stream_options={"include_usage": True}, **params),
        label="deterministic, streamed",
    )
    chunks = ok_stream(ex)
    want = content_of(data)
    got = stream_text(chunks)
    judge.check(
        got == want,
        "STREAM-MATCHES-NONSTREAM",
        "the reassembled stream differs from the answer",
        path="choices[0].delta.content",
        expected=want,
        received=got,
        exchange=ex,
    )
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
    u1, u2 = data.get("usage"), stream_usage(chunks)
    if isinstance(u1, dict) and isinstance(u2, dict):
        keys = ("prompt_tokens", "completion_tokens", "total_tokens")
        judge.check(
            all(u1.get(k) == u2.get(k) for k in keys),
            "USAGE-STREAM-MATCHES",
            "streamed usage differs from the non-streamed usage",
            path="usage",
            expected={k: u1.get(k) for k in keys},
            received={k: u2.get(k) for k in keys},
            exchange=ex,
        )


@pytest.mark.requirement("STREAM-OPTIONS-REQUIRES-STREAM")
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
