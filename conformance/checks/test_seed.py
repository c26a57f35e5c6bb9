"""seed: the same seed repeats the answer; different seeds at a high temperature do not all agree."""

from __future__ import annotations

from typing import Any

from conformance.checks._support import EMPTY, EQUAL, answer_of, body, compare_answers, content_of, ok_json
from conformance.engine.registry import check
from conformance.violations import Inconclusive

HOT = 1.5  # inside the seed's 0 < x < 2: sampling is far from greedy
MAX = 12
SEEDS = (11, 22, 33, 44)
ASKS = 5  # identical seeded requests at most, until two agree


def _seeded(shared: Any, target: Any, seed: int) -> Any:
    return shared(f"seed-{seed}", body(target, temperature=HOT, seed=seed, max_tokens=MAX),
                  label=f"temperature {HOT}, seed {seed}")


@check("SEED-DETERMINISM")
def test_same_seed_same_content(shared, client, judge, conformance_target):
    # The same seeded request, asked until two answers agree (at most ASKS times). On a conforming target the
    # first two agree whatever the model; a target whose numerics are not batch-invariant may flip a token
    # where the sampler's draw nearly ties, which logprobs cannot show for a sampled token (the draw is not
    # reported), so the suite asks again instead: the seed is "best effort" (spec/DECISIONS.md#near-ties).
    # A target that ignores seed samples 12 tokens at temperature 1.5 each time, and two of ASKS such samples
    # agree only by a long chance. Reasoning and content are compared together; empty answers prove nothing.
    first = answer_of(ok_json(_seeded(shared, conformance_target, SEEDS[0]), "first seeded request"))
    answers, exchanges = [first], []
    while len(answers) < ASKS:
        ex = client.chat(body(conformance_target, temperature=HOT, seed=SEEDS[0], max_tokens=MAX),
                         label=f"temperature {HOT}, seed {SEEDS[0]}, repeated")
        answers.append(answer_of(ok_json(ex, "repeated seeded request")))
        exchanges.append(ex)
        agreeing = [a for a in answers[:-1] if compare_answers(a, answers[-1]).kind in (EQUAL, EMPTY)]
        if agreeing:
            if answers[-1].empty:
                raise Inconclusive("the seeded answers are empty (no content, no reasoning): comparing two "
                                   "empty answers proves nothing")
            judge.check(True, "SEED-DETERMINISM", "")
            return
    judge.check(False, "SEED-DETERMINISM",
                f"{ASKS} requests with the same seed and parameters all gave different answers",
                path="$.choices[0].message", expected=first.reasoning + first.content,
                received=[a.reasoning + a.content for a in answers[1:]], exchange=exchanges[-1])


@check("SEED-VARIES")
def test_different_seeds_vary(shared, judge, conformance_target):
    # Four different seeds at temperature 1.5, 12 tokens each. Sampling that is really sampling gives four
    # identical answers only if every one of the 12 draws agrees in all four runs; the check fails only when
    # all four are identical, so it does not flake on a conforming target.
    exchanges = [_seeded(shared, conformance_target, s) for s in SEEDS]
    contents = [content_of(ok_json(ex, f"seed {s}")) for ex, s in zip(exchanges, SEEDS, strict=True)]
    if not any(contents):
        raise Inconclusive("every seeded answer is empty: the model gave nothing to compare")
    judge.check(len(set(contents)) > 1, "SEED-VARIES",
                f"{len(SEEDS)} different seeds at temperature {HOT} all gave the same content "
                "(sampling looks greedy)", path="$.choices[0].message.content",
                expected="at least two different contents", received=contents[0], exchange=exchanges[-1])
