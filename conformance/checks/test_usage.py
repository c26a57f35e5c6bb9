"""Usage statistics and max_tokens bounds."""

from __future__ import annotations

from typing import Any

from conformance.checks._support import (
    REASKS,
    USER,
    answer_of,
    body,
    compare_answers,
    deterministic_body,
    finish_of,
    first_choice,
    is_4xx,
    obj,
    ok_json,
    ok_stream,
    stream_finish,
    stream_usage,
    with_logprobs,
)
from conformance.checks.test_core import HISTORY, _basic
from conformance.engine.registry import check
from conformance.violations import Inconclusive

LONG_PROMPT = " ".join(["Tell me everything you know about cats, dogs, birds and fish."] * 3)


@check("USAGE-PRESENT", "USAGE-INTEGERS", "USAGE-TOTAL-SUM")
def test_usage_fields(shared, judge, conformance_target):
    ex = _basic(shared, conformance_target)
    data = ok_json(ex)
    usage = data.get("usage")
    judge.require(
        isinstance(usage, dict),
        "USAGE-PRESENT",
        "usage is missing",
        path="$.usage",
        expected="usage object",
        received=usage,
        exchange=ex,
    )
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    bad = {
        k: usage.get(k)
        for k in keys
        if not (isinstance(usage.get(k), int) and not isinstance(usage.get(k), bool) and usage[k] >= 0)
    }
    judge.check(
        not bad,
        "USAGE-INTEGERS",
        "usage counts are not non-negative integers",
        path="$.usage." + (next(iter(bad)) if bad else ""),
        expected="integer >= 0",
        received=bad,
        exchange=ex,
    )
    if not bad:
        judge.check(
            usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"],
            "USAGE-TOTAL-SUM",
            "total_tokens is not prompt + completion",
            path="$.usage.total_tokens",
            expected=usage["prompt_tokens"] + usage["completion_tokens"],
            received=usage["total_tokens"],
            exchange=ex,
        )


@check("MAXTOK-BOUND", "MAXTOK-LENGTH-FINISH", "USAGE-COMPLETION-EXACT")
def test_max_tokens_bounds_and_length(client, judge, conformance_target, profile):
    limit = 5
    # deterministic, so that an ambiguous answer can be asked again (see below); with logprobs, so that a
    # second answer that took another branch at a near-tie is told apart (spec/DECISIONS.md#near-ties)
    ex = with_logprobs(lambda b: client.chat(b, label="max_tokens 5"),
                       deterministic_body(conformance_target, profile, max_tokens=limit))
    data = ok_json(ex)
    usage = obj(data.get("usage"))
    ct = usage.get("completion_tokens")
    fr = first_choice(data).get("finish_reason")
    judge.require(
        isinstance(ct, int),
        "MAXTOK-BOUND",
        "completion_tokens unavailable to judge max_tokens",
        path="$.usage.completion_tokens",
        expected="integer",
        received=ct,
        exchange=ex,
    )
    judge.check(
        ct <= limit,
        "MAXTOK-BOUND",
        "more tokens generated than max_tokens",
        path="$.usage.completion_tokens",
        expected=f"<= {limit}",
        received=ct,
        exchange=ex,
    )
    ended_by_itself = False
    if ct >= limit and fr != "length":
        # exactly max_tokens tokens and "stop": either the model ended on its last allowed token (fine, if the
        # target counts the end token) or the cut was mislabelled; the same request with room to spare tells,
        # unless it went another way where two candidates nearly tie (then it is asked again, at most REASKS)
        first = answer_of(data)
        for i in range(1 + REASKS):
            label = "max_tokens 9 (was the answer cut?)" + (f", asked again ({i})" if i else "")
            again = with_logprobs(lambda b, label=label: client.chat(b, label=label),
                                  deterministic_body(conformance_target, profile, max_tokens=limit + 4))
            data2 = ok_json(again, "the same request with max_tokens 9")
            more = obj(data2.get("usage")).get("completion_tokens")
            if not isinstance(more, int):
                raise Inconclusive("no usage on the second request: whether the first was cut cannot be told")
            cmp = compare_answers(first, answer_of(data2))
            if more <= limit or cmp.settled:
                break
        else:
            raise Inconclusive("the answer with room to spare went on where the first one ended, but only "
                               f"where the model nearly ties: whether the first was cut cannot be told "
                               f"({cmp.detail})")
        ended_by_itself = more <= limit
    if ct >= limit:
        judge.check(
            fr == "length" or ended_by_itself,
            "MAXTOK-LENGTH-FINISH",
            "a completion cut by max_tokens did not say length",
            path="$.choices[0].finish_reason",
            expected="length",
            received=fr,
            exchange=ex,
        )
    else:
        judge.check(
            fr != "length",
            "MAXTOK-LENGTH-FINISH",
            "finish_reason length before max_tokens was reached",
            path="$.choices[0].finish_reason",
            expected="stop",
            received=fr,
            exchange=ex,
        )
    if fr == "length":
        judge.check(
            ct == limit,
            "USAGE-COMPLETION-EXACT",
            "finish_reason length but completion_tokens differs from max_tokens",
            path="$.usage.completion_tokens",
            expected=limit,
            received=ct,
            exchange=ex,
        )


@check("USAGE-PROMPT-GROWS")
def test_prompt_tokens_grow(shared, client, judge, conformance_target):
    short = ok_json(_basic(shared, conformance_target)).get("usage") or {}
    ex = client.chat(
        body(conformance_target, max_tokens=1, messages=[{"role": "user", "content": LONG_PROMPT}]),
        label="long prompt",
    )
    long_ = ok_json(ex).get("usage") or {}
    a, b = short.get("prompt_tokens"), long_.get("prompt_tokens")
    judge.check(
        isinstance(a, int) and isinstance(b, int) and b > a,
        "USAGE-PROMPT-GROWS",
        "a longer prompt was not counted with more prompt_tokens",
        path="$.usage.prompt_tokens",
        expected=f"> {a}",
        received=b,
        exchange=ex,
    )


# ---- streamed usage on a conversation with several choices (spec/DECISIONS.md#neighbours) ----------------
# The streamed-vs-not comparison of test_streaming judges a one-message prompt and one choice: a stream that
# counts only the last message as prompt_tokens, or only choice 0 in completion_tokens, passed it. The same
# conversation (system, user, assistant, user) with n = 2, cut at STREAM_N_MAX tokens, is asked streamed and
# not: prompt_tokens never depends on the answers, and when every choice of both ends with length both count
# exactly n x max_tokens, whatever the tokens were (no comparison of answers, so numerics cannot matter).
STREAM_N = 2
STREAM_N_MAX = 4


@check("USAGE-STREAM-MATCHES", neighbours=("stream-usage-last-message", "stream-usage-first-choice",
                                           "stream-usage-differs"))
def test_stream_usage_conversation_and_choices(client, judge, conformance_target):
    messages: list[dict[str, Any]] = [*HISTORY, {"role": "user", "content": USER}]
    fields: dict[str, Any] = {"messages": messages, "n": STREAM_N, "max_tokens": STREAM_N_MAX}
    what = f"a 4-message conversation, n {STREAM_N}, max_tokens {STREAM_N_MAX}"
    plain = client.chat(body(conformance_target, **fields), label=f"{what}, not streamed")
    if is_4xx(plain):
        raise Inconclusive(f"{what} was refused ({plain.status}): n > 1 is judged by the n checks")
    data = ok_json(plain, what)
    ex = client.chat(body(conformance_target, stream=True, stream_options={"include_usage": True}, **fields),
                     label=f"{what}, streamed with include_usage")
    chunks = ok_stream(ex, f"{what}, streamed")
    u1, u2 = obj(data.get("usage")), stream_usage(chunks)
    if not u1 or u2 is None:
        raise Inconclusive("no usage on one side (judged by USAGE-PRESENT and USAGE-STREAM-LAST-CHUNK)")
    choices = data.get("choices")
    got = len(choices) if isinstance(choices, list) else 0
    finishes = [finish_of(data, i) for i in range(got)] + [stream_finish(chunks, i) for i in range(STREAM_N)]
    keys = ["prompt_tokens"]
    if got == STREAM_N and finishes == ["length"] * (2 * STREAM_N):
        keys += ["completion_tokens", "total_tokens"]  # every choice of both ran to max_tokens
    judge.check(
        all(u1.get(k) == u2.get(k) for k in keys),
        "USAGE-STREAM-MATCHES",
        "streamed usage differs from the non-streamed usage of the same conversation with "
        f"n {STREAM_N}" + ("" if len(keys) > 1 else " (prompt_tokens; a choice ended before max_tokens)"),
        path="usage",
        expected={k: u1.get(k) for k in keys},
        received={k: u2.get(k) for k in keys},
        exchange=ex,
    )
