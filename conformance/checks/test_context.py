"""Context length: prompt + max_tokens beyond it is truncated by default, refused with behaviour "error";
a prompt alone beyond it is refused; context_length_exceeded_behavior is an enum
(spec/DECISIONS.md#context-length).

The context length comes from the profile (``context_length``) or from ``GET /models`` (``context_size``,
vLLM's ``max_model_len`` or llama.cpp's ``meta.n_ctx``: spec/DECISIONS.md#protocol-details).
"""

from __future__ import annotations

import math
from typing import Any

from conformance.checks._support import (
    body,
    judge_error_response,
    obj,
    ok_json,
    published_context_length,
    usage_of,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive

WORD = "hello"


def _context_length(shared: Any, target: Any, profile: Any) -> int:
    if profile.context_length:
        return int(profile.context_length)
    ex = shared("models-list", None, path="/models", label="list models (context length)")
    items = obj(ex.json()).get("data")
    mine = next((m for m in items if isinstance(m, dict) and m.get("id") == target.model), {}) \
        if isinstance(items, list) else {}
    ctx, _ = published_context_length(mine)
    if ctx is None:
        raise Inconclusive("context length unknown: GET /models publishes no context_size, max_model_len or "
                           "meta.n_ctx for the model; declare context_length in a profile")
    return ctx


def _words(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join([WORD] * n)}]


def _prompt_cost(shared: Any, target: Any) -> tuple[float, float]:
    """(tokens per word, tokens of the rest of the prompt), measured from two probes' usage.prompt_tokens."""
    counts = []
    for n in (8, 40):
        ex = shared(f"context-probe-{n}", body(target, messages=_words(n), max_tokens=1),
                    label=f"prompt of {n} words (token count probe)")
        p = usage_of(ok_json(ex, "token count probe"), "prompt_tokens")
        if p is None:
            raise Inconclusive("usage.prompt_tokens is missing: the prompt size cannot be estimated")
        counts.append(p)
    per_word = (counts[1] - counts[0]) / 32
    if per_word <= 0:
        raise Inconclusive("prompt_tokens does not grow with the prompt: the prompt size cannot be estimated")
    return per_word, counts[0] - 8 * per_word


def _overflow(shared: Any, target: Any, ctx: int, **extra: Any) -> tuple[dict[str, Any], int]:
    """A request whose prompt fits the context but whose prompt + max_tokens does not, and its max_tokens:
    a prompt of about ctx - margin tokens with max_tokens 2 x margin, so at most ``margin`` tokens are
    generated whatever the context length (asking for a whole context's worth of tokens is slow and costly,
    and a slow answer must not be mistaken for a broken one)."""
    margin = max(16, min(64, ctx // 16))
    per_word, rest = _prompt_cost(shared, target)
    n = max(1, int((ctx - margin - rest) / per_word))
    return body(target, messages=_words(n), max_tokens=2 * margin, **extra), 2 * margin


@check("CONTEXT-TRUNCATE-DEFAULT")
def test_context_truncate_by_default(shared, client, judge, conformance_target, profile):
    ctx = _context_length(shared, conformance_target, profile)
    req, max_tokens = _overflow(shared, conformance_target, ctx)
    ex = client.chat(req, label=f"prompt + max_tokens {max_tokens} beyond the context ({ctx})")
    if ex.status is None and ex.transport_error and ("timeout" in ex.transport_error
                                                     or "deadline" in ex.transport_error):
        # a prompt near the context length can take a slow target longer than the deadline to read
        raise Inconclusive(f"no answer within the deadline ({ex.transport_error}): raise --timeout")
    judge.require(ex.status == 200, "CONTEXT-TRUNCATE-DEFAULT",
                  "prompt + max_tokens beyond the context was not answered (max_tokens should be reduced)",
                  path="status", expected=200, received=f"{ex.status} {(ex.body_text or '')[:200]}",
                  exchange=ex)
    data = ok_json(ex)
    prompt, completion = usage_of(data, "prompt_tokens"), usage_of(data)
    if prompt is None or completion is None:
        raise Inconclusive("usage is missing: whether max_tokens was reduced to fit cannot be told")
    # "max_tokens will be reduced to fit": the prompt is kept whole, so the answer's prompt_tokens is what
    # the same messages take alone (asked with max_tokens 1); fewer is the prompt cut instead of max_tokens
    # (spec/DECISIONS.md#oracles).
    whole = _prompt_tokens(shared, conformance_target, req["messages"])
    if whole is not None and whole + max_tokens > ctx:
        judge.check(prompt >= whole, "CONTEXT-TRUNCATE-DEFAULT",
                    f"the prompt was cut to fit instead of max_tokens: the answer counts {prompt} prompt "
                    f"tokens, the same messages alone take {whole}", path="$.usage.prompt_tokens",
                    expected=f">= {whole} (the whole prompt; max_tokens {max_tokens} reduced to "
                    f"{ctx - whole} or fewer)", received=prompt, exchange=ex)
        prompt = max(prompt, whole)
    if prompt + max_tokens <= ctx:
        raise Inconclusive(f"the prompt took {prompt} tokens, so prompt + max_tokens {max_tokens} did not "
                           f"cross the context length {ctx}")
    judge.check(completion <= ctx - prompt, "CONTEXT-TRUNCATE-DEFAULT",
                "the completion does not fit in the context with the prompt",
                path="$.usage.completion_tokens",
                expected=f"<= {ctx - prompt} (context {ctx} - prompt {prompt})", received=completion,
                exchange=ex)


def _prompt_tokens(shared: Any, target: Any, messages: list[dict[str, Any]]) -> int | None:
    """usage.prompt_tokens of ``messages`` asked with max_tokens 1 (so it fits whatever the context)."""
    ex = shared("context-overflow-prompt", body(target, messages=messages, max_tokens=1),
                label="the overflow prompt with max_tokens 1 (how many tokens is it?)")
    if ex.status is None or not 200 <= ex.status < 300:
        return None
    return usage_of(obj(ex.json()), "prompt_tokens")


@check("CONTEXT-ERROR-BEHAVIOR")
def test_context_error_behavior(shared, client, judge, conformance_target, profile):
    ctx = _context_length(shared, conformance_target, profile)
    req, max_tokens = _overflow(shared, conformance_target, ctx, context_length_exceeded_behavior="error")
    ex = client.chat(req, label=f"behavior error, prompt + max_tokens {max_tokens} beyond context {ctx}")
    # Judge only a request that really crossed the context: its prompt measured by the answer's usage (when it
    # was answered) or by the same prompt asked with max_tokens 1.
    answered = ex.status is not None and 200 <= ex.status < 300
    prompt = usage_of(obj(ex.json()), "prompt_tokens") if answered else None
    if prompt is None:
        prompt = _prompt_tokens(shared, conformance_target, req["messages"])
    if prompt is None:
        raise Inconclusive("the prompt's size could not be measured (no usage.prompt_tokens): whether "
                           f"prompt + max_tokens {max_tokens} crossed the context length {ctx} cannot be "
                           "confirmed")
    if prompt + max_tokens <= ctx:
        raise Inconclusive(f"the prompt took {prompt} tokens, so prompt + max_tokens {max_tokens} did not "
                           f"cross the context length {ctx}: nothing to refuse")
    if prompt >= ctx:
        raise Inconclusive(f"the prompt alone took {prompt} tokens, at least the context length {ctx}: that "
                           "is CONTEXT-PROMPT-TOO-LONG's case, not this one")
    judge_error_response(judge, ex, "CONTEXT-ERROR-BEHAVIOR", "prompt + max_tokens beyond the context with "
                         'context_length_exceeded_behavior "error"')


@check("CONTEXT-PROMPT-TOO-LONG")
def test_prompt_longer_than_context(shared, client, judge, conformance_target, profile):
    ctx = _context_length(shared, conformance_target, profile)
    per_word, rest = _prompt_cost(shared, conformance_target)
    n = math.ceil((1.2 * ctx - rest) / per_word) + 1  # about 1.2 x the context length in tokens
    ex = client.chat(body(conformance_target, messages=_words(n), max_tokens=1),
                     label=f"prompt of {n} words (about {int(rest + n * per_word)} tokens, context {ctx})")
    judge_error_response(judge, ex, "CONTEXT-PROMPT-TOO-LONG", "a prompt longer than the context length")


@check("CONTEXT-BEHAVIOR-ENUM")
def test_context_behavior_enum(client, judge, conformance_target):
    for value in ("truncate", "error"):
        ex = client.chat(body(conformance_target, max_tokens=2, context_length_exceeded_behavior=value),
                         label=f"context_length_exceeded_behavior {value!r}")
        judge.check(ex.status == 200, "CONTEXT-BEHAVIOR-ENUM",
                    f"context_length_exceeded_behavior {value!r} was not accepted", path="status",
                    expected=200, received=f"{ex.status} {(ex.body_text or '')[:200]}", exchange=ex)
    ex = client.chat(body(conformance_target, max_tokens=2, context_length_exceeded_behavior="explode"),
                     label="context_length_exceeded_behavior 'explode'")
    judge_error_response(judge, ex, "CONTEXT-BEHAVIOR-ENUM", 'context_length_exceeded_behavior "explode"')
