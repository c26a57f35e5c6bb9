"""Penalties: a strong frequency, presence or repetition penalty changes a deterministic answer that repeats
tokens.

The baseline is the shared deterministic 16-token answer with logprobs (``deterministic_logprobs``); each
check sends the same request with one penalty at 1.9 (inside every documented range) and compares.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from conformance.checks._support import (
    DIVERGED,
    EMPTY,
    EQUAL,
    NEAR_TIE,
    UNKNOWN,
    USER,
    Answer,
    answer_of,
    compare_answers,
    deterministic_body,
    deterministic_logprobs,
    logprob_entries,
    ok_json,
    room,
    thinking_off,
    with_logprobs,
)
from conformance.violations import Inconclusive

MAX = 16
STRENGTH = 1.9


def _baseline(shared: Any, target: Any, profile: Any, capabilities: Any) -> tuple[dict[str, Any], list[Any]]:
    data = ok_json(deterministic_logprobs(shared, target, profile, capabilities),
                   "deterministic request with logprobs")
    entries = logprob_entries(data)
    if not entries or not all(isinstance(e, dict) and isinstance(e.get("token"), str) for e in entries):
        raise Inconclusive("the baseline carries no logprob tokens, so its repeated tokens are unknown")
    tokens = [e["token"] for e in entries]
    repeated = [t for t, n in Counter(tokens).items() if n > 1]
    if not repeated:
        raise Inconclusive(f"the deterministic answer repeats no token ({tokens!r}): nothing to penalise")
    return data, entries


def _penalty_could_not_flip(entries: list[dict[str, Any]], frequency: float, presence: float) -> bool:
    """Whether the unpenalised logprobs show that the penalty, applied as OpenAI documents it
    (``logit -= count * frequency + (count > 0) * presence`` over the generated tokens), leaves every greedy
    choice in place. The logprobs are differences of logits up to one constant per position, so subtracting
    the penalty from them ranks the alternatives as the penalised logits would. Alternatives found in the
    prompt (which some servers penalise too) and replacement characters are left out: only a clear flip
    counts."""
    counts: Counter[str] = Counter()
    for e in entries:
        chosen, lp = e.get("token"), e.get("logprob")
        tops = e.get("top_logprobs")
        if not isinstance(chosen, str) or not isinstance(lp, int | float) or not isinstance(tops, list):
            return False  # no evidence: the check cannot excuse an unchanged answer

        def pen(tok: str) -> float:
            n = counts[tok]
            return n * frequency + (presence if n else 0.0)

        mine = lp - pen(chosen)
        for alt in tops:
            tok, alp = (alt.get("token"), alt.get("logprob")) if isinstance(alt, dict) else (None, None)
            if (not isinstance(tok, str) or tok == chosen or not isinstance(alp, int | float)
                    or "\ufffd" in tok or not tok.strip() or tok.strip() in USER):
                continue
            if alp - pen(tok) > mine + 1e-3:
                return False  # the penalty would have put another token first here
        counts[chosen] += 1
    return True


def _judge_penalty(shared: Any, client: Any, judge: Any, target: Any, profile: Any, requirement: str,
                   param: str, capabilities: Any) -> None:
    base, entries = _baseline(shared, target, profile, capabilities)
    # the same budget as the baseline: room for a reasoning segment where the model reasons unasked
    mt = room(capabilities, MAX)
    request = deterministic_body(target, profile, max_tokens=mt, **{param: STRENGTH},
                                 **thinking_off(capabilities))

    def ask() -> tuple[Any, Answer]:
        ex = with_logprobs(lambda b: client.chat(b, label=f"deterministic, {mt} tokens, {param} {STRENGTH}"),
                           request)
        return ex, answer_of(ok_json(ex, f"request with {param}"))

    ex, got = ask()
    want = answer_of(base)
    cmp = compare_answers(want, got)
    if cmp.kind == EMPTY:
        raise Inconclusive(f"the answers with and without {param} are both empty: {cmp.detail}")
    if cmp.kind in (NEAR_TIE, UNKNOWN):
        # The answers differ only where two candidates nearly tie (or no logprobs say how): numerics may have
        # made that difference, not the penalty (spec/DECISIONS.md#near-ties). Only a second penalised answer
        # that departs from the unpenalised one at a confident position shows the penalty's effect; another
        # near-tie difference (likely on a server whose numerics vary) is no evidence either way.
        again = compare_answers(want, ask()[1])
        if again.kind != DIVERGED:
            raise Inconclusive(f"the answers with {param} {STRENGTH} differ from the answer without it only "
                               f"where the model nearly ties ({cmp.detail}; asked again: {again.kind}, "
                               f"{again.detail}): the penalty's effect cannot be told from numerics")
        cmp = again
    changed = cmp.kind != EQUAL
    if not changed and param in ("frequency_penalty", "presence_penalty") and _penalty_could_not_flip(
            entries, STRENGTH if param == "frequency_penalty" else 0.0,
            STRENGTH if param == "presence_penalty" else 0.0):
        raise Inconclusive(f"{param} {STRENGTH} is too weak against this model's margins to change any token "
                           "of the answer (per its logprobs), so an unchanged answer proves nothing")
    judge.check(changed, requirement,
                f"{param} {STRENGTH} left a deterministic answer that repeats tokens unchanged",
                path="$.choices[0].message.content",
                expected=f"an answer other than {want.reasoning + want.content!r}",
                received=got.reasoning + got.content, exchange=ex)


@pytest.mark.requirement("PENALTY-FREQUENCY-EFFECT")
def test_frequency_penalty_effect(shared, client, judge, conformance_target, profile, capabilities):
    _judge_penalty(shared, client, judge, conformance_target, profile, "PENALTY-FREQUENCY-EFFECT",
                   "frequency_penalty", capabilities)


@pytest.mark.requirement("PENALTY-PRESENCE-EFFECT")
def test_presence_penalty_effect(shared, client, judge, conformance_target, profile, capabilities):
    _judge_penalty(shared, client, judge, conformance_target, profile, "PENALTY-PRESENCE-EFFECT",
                   "presence_penalty", capabilities)


@pytest.mark.requirement("PENALTY-REPETITION-EFFECT")
def test_repetition_penalty_effect(shared, client, judge, conformance_target, profile, capabilities):
    # repetition_penalty scales raw logits (divides the positive ones), which logprobs do not reveal, so an
    # unchanged answer cannot be excused from them: it fails.
    _judge_penalty(shared, client, judge, conformance_target, profile, "PENALTY-REPETITION-EFFECT",
                   "repetition_penalty", capabilities)
