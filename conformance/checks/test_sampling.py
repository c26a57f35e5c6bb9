"""Sampling filters: a tiny top_p, min_p = 1 and top_k = 1 leave only the most likely token."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.checks._support import body, content_of, is_4xx, ok_json
from conformance.violations import Inconclusive

HOT = 1.5  # a high temperature: without the filter, different seeds give different samples
MAX = 12
SEEDS = (101, 202, 303)


def _judge_filter(client: Any, judge: Any, target: Any, requirement: str, what: str, **fields: Any) -> None:
    # The filter keeps only the top token, so the answer is the greedy one whatever the seed: three different
    # seeds must give identical content. Different seeds are sent on purpose: a target that ignores the filter
    # then samples at temperature 1.5, and three 12-token samples agree only by a long chance. (Exact ties
    # between the two most likely tokens are the only way a conforming target could differ; a trained or
    # random-weight model practically never has them.)
    exchanges, contents = [], []
    for seed in SEEDS:
        ex = client.chat(body(target, temperature=HOT, seed=seed, max_tokens=MAX, **fields),
                         label=f"{what}, temperature {HOT}, seed {seed}")
        if seed == SEEDS[0] and is_4xx(ex) and requirement == "SAMPLING-TOP-K-EFFECT":
            raise Inconclusive(f"{what} was refused (HTTP {ex.status}); top_k 1 is on the seed's exclusive "
                               "bound 1 < x < 128, so the effect cannot be judged")
        contents.append(content_of(ok_json(ex, what)))
        exchanges.append(ex)
    differing = next((i for i, c in enumerate(contents) if c != contents[0]), None)
    judge.check(differing is None, requirement,
                f"with {what} at temperature {HOT}, different seeds gave different content",
                path="$.choices[0].message.content", expected=contents[0],
                received=contents[differing] if differing is not None else "",
                exchange=exchanges[differing] if differing is not None else None)


@pytest.mark.requirement("SAMPLING-TOP-P-EFFECT")
def test_tiny_top_p_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-TOP-P-EFFECT", "top_p 1e-06", top_p=1e-06)


@pytest.mark.requirement("SAMPLING-MIN-P-EFFECT")
def test_min_p_one_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-MIN-P-EFFECT", "min_p 1", min_p=1.0)


@pytest.mark.requirement("SAMPLING-TOP-K-EFFECT")
def test_top_k_one_is_greedy(client, judge, conformance_target):
    _judge_filter(client, judge, conformance_target, "SAMPLING-TOP-K-EFFECT", "top_k 1", top_k=1)
