"""Sampling filters: a tiny top_p, min_p = 1 and top_k = 1 leave only the most likely token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conformance.checks._support import (
    DIVERGED,
    EMPTY,
    EQUAL,
    NEAR_TIE,
    Answer,
    Comparison,
    answer_of,
    body,
    is_4xx,
    off_greedy,
    ok_json,
    settle,
    with_logprobs,
)
from conformance.violations import Inconclusive

HOT = 1.5  # a high temperature: without the filter, different seeds give different samples
MAX = 12
SEEDS = (101, 202, 303)


def _recorder(ask: Callable[[int], tuple[Any, Answer]], seed: int,
              asked: list[tuple[Any, Answer]]) -> Callable[[], Answer]:
    """Asks with ``seed`` again and keeps the exchange beside its answer."""
    def again() -> Answer:
        asked.append(ask(seed))
        return asked[-1][1]
    return again


def _judge_filter(client: Any, judge: Any, target: Any, requirement: str, what: str, **fields: Any) -> None:
    # The filter keeps only the top token, so the answer is the greedy one whatever the seed: three different
    # seeds must give the same answer. Different seeds are sent on purpose: a target that ignores the filter
    # then samples at temperature 1.5, and three 12-token samples agree only by a long chance. Each answer is
    # compared with the first token by token, with logprobs (spec/DECISIONS.md#near-ties): a divergence where
    # the two candidates nearly tie is numerics, not sampling, and is asked again (settle); a confident one
    # fails. At a near-tie an answer that chose a token far below its own most likely one shows sampling.
    def ask(seed: int) -> tuple[Any, Answer]:
        req = body(target, temperature=HOT, seed=seed, max_tokens=MAX, **fields)
        ex = with_logprobs(lambda b: client.chat(b, label=f"{what}, temperature {HOT}, seed {seed}"), req)
        if seed == SEEDS[0] and is_4xx(ex) and requirement == "SAMPLING-TOP-K-EFFECT":
            raise Inconclusive(f"{what} was refused (HTTP {ex.status}); top_k 1 is on the seed's exclusive "
                               "bound 1 < x < 128, so the effect cannot be judged")
        return ex, answer_of(ok_json(ex, what))

    first = ask(SEEDS[0])[1]
    unsettled = []
    for seed in SEEDS[1:]:
        asked = [ask(seed)]
        done = settle(first, asked[0][1], lambda: ask(SEEDS[0])[1], _recorder(ask, seed, asked))
        cmp = done.comparison
        if cmp.kind == EMPTY:
            raise Inconclusive(f"with {what} the answers are empty: {cmp.detail}")
        if cmp.kind == NEAR_TIE:
            sampled = next((w for a in done.answers_a + done.answers_b if (w := off_greedy(a))), None)
            if sampled is not None:
                cmp = Comparison(DIVERGED, cmp.offset, cmp.token,
                                 f"{cmp.detail}; an answer is not the most likely one: {sampled}")
        if not cmp.settled:
            unsettled.append(f"seed {seed}: {done.reason}")
            continue
        ex, shown = asked[min(done.b, len(asked) - 1)]
        if not judge.check(cmp.kind == EQUAL, requirement,
                           f"with {what} at temperature {HOT}, different seeds gave different answers "
                           f"({cmp.detail})", path="$.choices[0].message.content",
                           expected=first.reasoning + first.content, received=shown.reasoning + shown.content,
                           exchange=ex):
            return
    if unsettled:
        raise Inconclusive(f"with {what} the answers differ only where the model nearly ties: "
                           + "; ".join(unsettled))


@pytest.mark.requirement("SAMPLING-TOP-P-EFFECT")
def test_tiny_top_p_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-TOP-P-EFFECT", "top_p 1e-06", top_p=1e-06)


@pytest.mark.requirement("SAMPLING-MIN-P-EFFECT")
def test_min_p_one_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-MIN-P-EFFECT", "min_p 1", min_p=1.0)


@pytest.mark.requirement("SAMPLING-TOP-K-EFFECT")
def test_top_k_one_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-TOP-K-EFFECT", "top_k 1", top_k=1)
