"""Sampling filters: a tiny top_p, min_p = 1 and top_k = 1 leave only the most likely token: different
seeds give the same answer, and (with logprobs) every sampled token is the top one of its top_logprobs. The
other side: temperature 1, top_p 0.9 and min_p 0.05 leave sampling random (different seeds do not all agree
where the logprobs say that would be a long chance)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from conformance.checks._support import (
    DIVERGED,
    EMPTY,
    EQUAL,
    NEAR_TIE,
    NEUTRAL_PENALTIES,
    Answer,
    Comparison,
    TokenLogprob,
    answer_of,
    ask_neutral,
    body,
    is_4xx,
    off_greedy,
    ok_json,
    settle,
    with_logprobs,
)
from conformance.engine.registry import case, check
from conformance.violations import Inconclusive, Unanswered

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
    #
    # Where the target reports logprobs, each answer is also judged token by token against them
    # (spec/DECISIONS.md#oracles): the filter leaves only the most likely token, so every sampled token is
    # the top one of its own top_logprobs; one more than NEAR_TIE_MARGIN below the best listed alternative
    # fails, even when every seed gives that same answer (a filter that keeps the wrong token).
    #
    # The requests state the penalties neutral (spec/DECISIONS.md#health-misses): a server's own default
    # repeat penalty moves the pick off the logprobs it reports; where repetition_penalty 1 is refused, the
    # answers are not judged against their logprobs (the seeds must still agree).
    every: list[tuple[Any, Answer]] = []
    neutral: list[dict[str, Any]] = []  # the neutral fields the target took, found on the first request

    def ask(seed: int) -> tuple[Any, Answer]:
        req = body(target, temperature=HOT, seed=seed, max_tokens=MAX, **fields)
        ex, took = ask_neutral(
            lambda b: with_logprobs(lambda c: client.chat(c, label=f"{what}, temperature {HOT}, seed {seed}"),
                                    b),
            req, tuple(neutral[:1]) or NEUTRAL_PENALTIES)
        neutral[:] = neutral or [took]
        if seed == SEEDS[0] and is_4xx(ex) and requirement == "SAMPLING-TOP-K-EFFECT":
            raise Inconclusive(f"{what} was refused (HTTP {ex.status}); top_k 1 is on the seed's exclusive "
                               "bound 1 < x < 128, so the effect cannot be judged")
        every.append((ex, answer_of(ok_json(ex, what))))
        return every[-1]

    def all_top() -> bool:
        """Judge each answer asked so far against its logprobs; False once one fails."""
        if "repetition_penalty" not in neutral[0]:
            return True  # a default repeat penalty may move the pick: the logprobs do not tell
        for ex, a in every:
            sampled = off_greedy(a)
            if sampled is not None:
                judge.check(False, requirement, f"with {what} at temperature {HOT} a sampled token is not "
                            f"the most likely one its logprobs report: {sampled}",
                            path="$.choices[0].logprobs",
                            expected="the most likely token of top_logprobs at every position",
                            received=a.reasoning + a.content, exchange=ex)
                return False
        return True

    first = ask(SEEDS[0])[1]
    if not all_top():
        return
    unsettled = []
    for seed in SEEDS[1:]:
        asked = [ask(seed)]
        done = settle(first, asked[0][1], lambda: ask(SEEDS[0])[1], _recorder(ask, seed, asked))
        if not all_top():
            return
        cmp = done.comparison
        if cmp.kind == EMPTY:
            raise Inconclusive(f"with {what} the answers are empty: {cmp.detail}")
        if cmp.kind == NEAR_TIE and "repetition_penalty" in neutral[0]:
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


@check("SAMPLING-TOP-P-EFFECT")
def test_tiny_top_p_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-TOP-P-EFFECT", "top_p 1e-06", top_p=1e-06)


@check("SAMPLING-MIN-P-EFFECT")
def test_min_p_one_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-MIN-P-EFFECT", "min_p 1", min_p=1.0)


@check("SAMPLING-TOP-K-EFFECT")
def test_top_k_one_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-TOP-K-EFFECT", "top_k 1", top_k=1)


# ---- the other side: a filter that keeps more than the top token leaves sampling random --------------------
# (spec/DECISIONS.md, "Sampling that is silently greedy"): a server that is greedy at temperature 1, or whose
# top_p 0.9 or min_p 0.05 keeps only the most likely token, passes every check above.

WARM = 1.0  # the model's own distribution: logprobs reported before or after temperature agree
ASKS_N = 4  # requests, each with its own seed: sampling gives four identical answers only by chance
NG_MAX = 24  # tokens: enough positions where the model is unsure to bound the chance of four equal answers
NOT_GREEDY_SEEDS = (11, 22, 33, 44)
CHANCE = 1e-6  # four identical answers fail only where sampling gives them with at most this probability
# a position bounds the chance only where any sane server default keeps its two most likely tokens (top_p of
# 0.8 or more, min_p of 0.25 or less, top_k of 2 or more): the chosen token's probability under TOP_UNDER and
# the other one at least KEEP_SECOND of it
TOP_UNDER = 0.8
KEEP_SECOND = 0.25

NOT_GREEDY = [
    case(rid, what, fields, id=cid, requirements=(rid,), neighbours=(near,))
    for rid, what, fields, cid, near in (
        ("SAMPLING-TEMPERATURE-SAMPLES", "no filter", {}, "temperature-1", "greedy-at-temperature-1"),
        ("SAMPLING-TOP-P-KEEPS", "top_p 0.9", {"top_p": 0.9}, "top-p-0.9", "top-p-keeps-only-the-top"),
        ("SAMPLING-MIN-P-KEEPS", "min_p 0.05", {"min_p": 0.05}, "min-p-0.05", "min-p-keeps-only-the-top"),
    )
]


def sample_bound(t: TokenLogprob) -> float:
    """An upper bound on the probability that sampling at temperature 1 picks ``t.token`` again, under the
    request's filter and any sane server default (they keep the two tokens here): 1 where nothing bounds
    it (no logprobs, a confident position, a far second)."""
    if t.logprob is None or not t.top:
        return 1.0
    p = math.exp(t.logprob)
    other = max((math.exp(v) for tok, v in t.top if tok != t.token), default=0.0)
    if p >= TOP_UNDER or other < KEEP_SECOND * p:
        return 1.0
    return p / (p + other)


@check(argnames="requirement, what, fields", cases=NOT_GREEDY)
def test_sampling_is_not_greedy(client, judge, conformance_target, requirement, what, fields):
    """Four requests at temperature 1 with ``fields``, each with its own seed, must not all give the same
    answer where its own logprobs say sampling repeats it four times with probability at most CHANCE. The
    same answer where the model is confident is no finding (Inconclusive, with the chance)."""
    label = f"{what}, temperature {WARM:g}"

    def ask(req: dict[str, Any], said: str) -> Any:
        return ask_neutral(lambda b: with_logprobs(lambda c: client.chat(c, label=said), b), req)[0]

    req = body(conformance_target, temperature=WARM, max_tokens=NG_MAX, seed=NOT_GREEDY_SEEDS[0], **fields)
    first = ask(req, f"{label}, seed {NOT_GREEDY_SEEDS[0]}")
    if is_4xx(first):  # the seed refused: the requests differ by nothing (fresh draws all the same)
        req.pop("seed")
        first = ask(req, label)
    sent = json.loads(first.request_body or "{}")
    seeded = "seed" in sent
    again = [({**sent, "seed": s} if seeded else sent, f"{label}, seed {s}" if seeded else label)
             for s in NOT_GREEDY_SEEDS[1:ASKS_N]]
    exchanges = [first]
    for got in client.chat_many(again):
        if isinstance(got, Unanswered):
            raise got
        exchanges.append(got)
    answers = [answer_of(ok_json(ex, what)) for ex in exchanges]
    if all(a.empty for a in answers):
        raise Inconclusive(f"every answer with {what} is empty: nothing to compare")
    if len({a.text for a in answers}) > 1:
        judge.check(True, requirement, "")
        return
    bounds = [sample_bound(t) for t in answers[0].tokens or ()]
    if not bounds:
        raise Inconclusive(f"{ASKS_N} requests with {what} at temperature {WARM:g} gave the same answer, and "
                           "no logprobs bound how likely that is by chance")
    chance = math.prod(bounds) ** (ASKS_N - 1)
    if chance > CHANCE:
        raise Inconclusive(f"{ASKS_N} requests with {what} at temperature {WARM:g} gave the same answer, "
                           f"which sampling repeats with probability up to {chance:.2g} by its logprobs (the "
                           f"model is confident there; at most {CHANCE:g} would show greedy decoding)")
    judge.check(False, requirement,
                f"{ASKS_N} requests with {what} at temperature {WARM:g} and different seeds all gave the "
                f"same answer, which sampling repeats with probability at most {chance:.2g} by the answer's "
                f"own logprobs ({sum(b < 1 for b in bounds)} of {len(bounds)} tokens had a likely second): "
                "sampling is greedy", path="$.choices[0].message.content",
                expected="different answers", received=answers[0].text, exchange=exchanges[-1])
