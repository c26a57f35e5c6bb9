"""Reasoning (separate_reasoning) and thinking (enable_thinking): where reasoning goes, whether it is made.

Both are optional capabilities, judged by effect (conformance/discovery.py): the ``judge`` fixture skips these
checks when the target rejects the field cleanly, or accepts it and shows no effect at all (a model without
that mode, or one that always reasons: "unsupported (ignored)", spec/DECISIONS.md#reasoning-models). A target
whose field has an effect but not the documented one, or one whose profile or ``--require`` declares the
capability, is judged here and fails.
"""

from __future__ import annotations

from typing import Any

from conformance.checks._support import (
    USER,
    ask,
    body,
    first_choice,
    ok_stream,
    require_completion,
    stream_text,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive, Judge

MAX_TOKENS = 24
MARKUP = ("<think>", "</think>")


def _markup_in(text: Any) -> list[str]:
    return [m for m in MARKUP if isinstance(text, str) and m in text]


def _reasoning_body(target: Any, profile: Any, **fields: Any) -> dict[str, Any]:
    return body(
        target,
        messages=[{"role": "user", "content": USER}],
        max_tokens=MAX_TOKENS,
        **dict(profile.deterministic, **fields),
    )


def _message(judge: Judge, ex: Any, requirement: str, what: str) -> dict[str, Any]:
    """The first choice's message of a request the capability promises to serve (else ``requirement``
    fails)."""
    data = require_completion(judge, ex, requirement, what)
    msg = first_choice(data).get("message")
    judge.require(
        isinstance(msg, dict),
        requirement,
        f"{what}: the answer has no message",
        path="$.choices[0].message",
        expected="object",
        received=(ex.body_text or "")[:200],
        exchange=ex,
    )
    return msg  # type: ignore[return-value]


def _supported(capabilities: dict[str, Any], cap: str) -> bool:
    return bool((capabilities.get(cap) or {}).get("supported", True))


@check("REASONING-SEPARATE", "USAGE-COMPLETION-EXACT", neighbours=("reasoning-tokens-uncounted",))
def test_reasoning_separated(client, judge, conformance_target, profile):
    ex = ask(
        client,
        _reasoning_body(conformance_target, profile, separate_reasoning=True),
        label="separate_reasoning true",
    )
    msg = _message(judge, ex, "REASONING-SEPARATE", "a request with separate_reasoning true")
    rc = msg.get("reasoning_content")
    judge.check(
        isinstance(rc, str) and rc.strip() != "",
        "REASONING-SEPARATE",
        "the reasoning is not returned in reasoning_content",
        path="$.choices[0].message.reasoning_content",
        expected="a non-empty string",
        received=rc if "reasoning_content" in msg else "absent",
        exchange=ex,
    )
    content = msg.get("content")
    found = _markup_in(content)
    judge.check(
        not found,
        "REASONING-SEPARATE",
        "content holds reasoning markup",
        path="$.choices[0].message.content",
        expected="no <think>/</think>",
        received=f"{found}: {str(content)[:200]!r}",
        exchange=ex,
    )
    judge_cut_counts_reasoning(judge, ex)


def judge_cut_counts_reasoning(judge: Judge, ex: Any) -> None:
    """USAGE-COMPLETION-EXACT on an answer that reasoned: one that max_tokens cut (finish_reason length) has
    generated exactly max_tokens tokens, reasoning included (the prompt is far too short for the context to
    cut it first). A server that leaves the reasoning tokens out of completion_tokens passed every usage check
    on answers without reasoning (spec/DECISIONS.md#neighbours)."""
    data = ex.json() if ex.status is not None and 200 <= ex.status < 300 else None
    ch = first_choice(data) if isinstance(data, dict) else {}
    msg = ch.get("message") if isinstance(ch.get("message"), dict) else {}
    usage = data.get("usage") if isinstance(data, dict) else None
    ct = usage.get("completion_tokens") if isinstance(usage, dict) else None
    rc = msg.get("reasoning_content") if isinstance(msg, dict) else None
    if ch.get("finish_reason") != "length" or not isinstance(ct, int) or not (isinstance(rc, str) and rc):
        return  # not cut, no count, or no reasoning: the plain answers of test_usage judge the rest
    judge.check(
        ct == MAX_TOKENS,
        "USAGE-COMPLETION-EXACT",
        "an answer with reasoning_content cut by max_tokens (finish_reason length) does not count max_tokens "
        "completion tokens: the reasoning tokens are generated tokens too",
        path="$.usage.completion_tokens",
        expected=MAX_TOKENS,
        received=ct,
        exchange=ex,
    )


@check("REASONING-STREAM")
def test_reasoning_streamed(client, judge, conformance_target, profile):
    ex = client.chat(
        _reasoning_body(conformance_target, profile, separate_reasoning=True, stream=True),
        label="streamed separate_reasoning true",
    )
    judge.require(
        ex.status is not None and 200 <= ex.status < 300,
        "REASONING-STREAM",
        "a streamed request with separate_reasoning true was not answered",
        path="status",
        expected="2xx",
        received=f"{ex.status} {(ex.body_text or ex.transport_error or '')[:160]}",
        exchange=ex,
    )
    chunks = ok_stream(ex, "streamed separate_reasoning")
    reasoning = stream_text(chunks, field="reasoning_content")
    content = stream_text(chunks)
    judge.check(
        reasoning.strip() != "",
        "REASONING-STREAM",
        "no reasoning arrived in delta.reasoning_content",
        path="choices[0].delta.reasoning_content",
        expected="reasoning text",
        received={"reasoning_content": reasoning, "content": content[:200]},
        exchange=ex,
    )
    found = _markup_in(content)
    judge.check(
        not found,
        "REASONING-STREAM",
        "delta.content holds reasoning markup",
        path="choices[0].delta.content (reassembled)",
        expected="no <think>/</think>",
        received=f"{found}: {content[:200]!r}",
        exchange=ex,
    )


@check("REASONING-NOT-SEPARATED")
def test_reasoning_not_separated(client, judge, conformance_target, profile):
    ex = client.chat(
        _reasoning_body(conformance_target, profile, separate_reasoning=False),
        label="separate_reasoning false",
    )
    msg = _message(judge, ex, "REASONING-NOT-SEPARATED", "a request with separate_reasoning false")
    rc = msg.get("reasoning_content")
    judge.check(
        rc is None,
        "REASONING-NOT-SEPARATED",
        "reasoning_content is set although separate_reasoning is false",
        path="$.choices[0].message.reasoning_content",
        expected="null or absent",
        received=rc,
        exchange=ex,
    )


@check("THINKING-DISABLE")
def test_thinking_disabled(client, judge, conformance_target, profile, capabilities):
    fields: dict[str, Any] = {"enable_thinking": False}
    if _supported(capabilities, "reasoning"):
        fields["separate_reasoning"] = True  # any reasoning would then show in reasoning_content
    ex = client.chat(_reasoning_body(conformance_target, profile, **fields), label="enable_thinking false")
    msg = _message(judge, ex, "THINKING-DISABLE", "a request with enable_thinking false")
    rc = msg.get("reasoning_content")
    if not rc and not (isinstance(msg.get("content"), str) and msg["content"].strip()):
        raise Inconclusive("the answer with enable_thinking false is empty: no text to look for reasoning in")
    judge.check(
        rc is None or rc == "",
        "THINKING-DISABLE",
        "reasoning was produced with enable_thinking false",
        path="$.choices[0].message.reasoning_content",
        expected="null, absent or empty",
        received=rc,
        exchange=ex,
    )
    content = msg.get("content")
    found = _markup_in(content)
    judge.check(
        not found,
        "THINKING-DISABLE",
        "content holds reasoning markup with enable_thinking false",
        path="$.choices[0].message.content",
        expected="no <think>/</think>",
        received=f"{found}: {str(content)[:200]!r}",
        exchange=ex,
    )


@check("THINKING-ENABLE")
def test_thinking_enabled(client, judge, conformance_target, profile, capabilities):
    separate = _supported(capabilities, "reasoning")
    fields: dict[str, Any] = {"enable_thinking": True}
    if separate:
        fields["separate_reasoning"] = True
    ex = client.chat(
        _reasoning_body(conformance_target, profile, **fields),
        label="enable_thinking true" + (" with separate_reasoning true" if separate else ""),
    )
    msg = _message(judge, ex, "THINKING-ENABLE", "a request with enable_thinking true")
    rc = msg.get("reasoning_content")
    content = msg.get("content")
    produced = (isinstance(rc, str) and rc.strip() != "") or bool(_markup_in(content))
    if not produced and not separate and not isinstance(content, str):
        raise Inconclusive("no content to look for reasoning in")
    judge.check(
        produced,
        "THINKING-ENABLE",
        "no reasoning was produced with enable_thinking true",
        path="$.choices[0].message.reasoning_content",
        expected="a non-empty reasoning_content" + ("" if separate else " or <think> markup in content"),
        received={"reasoning_content": rc, "content": str(content)[:200]},
        exchange=ex,
    )
