"""SAMPLING-TEMPERATURE-SAMPLES, SAMPLING-TOP-P-KEEPS, SAMPLING-MIN-P-KEEPS (issue 24: the other side of the
sampling filters; spec/DECISIONS.md#not-greedy): the chance bound that decides between greedy decoding and a
confident model. The faults are proven by the kill matrix; the legitimate variants by the variant matrix."""

from __future__ import annotations

import math

import pytest

from conformance.checks._support import TokenLogprob
from conformance.checks.test_sampling import CHANCE, KEEP_SECOND, TOP_UNDER, sample_bound


def _t(p: float, *others: float) -> TokenLogprob:
    return TokenLogprob("a", math.log(p), (("a", math.log(p)), *((f"b{i}", math.log(q))
                                                              for i, q in enumerate(others))))


@pytest.mark.parametrize(("token", "bound"), [
    (_t(0.5, 0.3, 0.1), 0.5 / 0.8),  # unsure: both tokens kept by any sane default
    (_t(0.4, 0.5), 0.4 / 0.9),  # the chosen one is not the top: the top is always kept
    (_t(TOP_UNDER, 0.15), 1.0),  # confident: a top_p default of 0.8 may keep it alone
    (_t(0.5, KEEP_SECOND * 0.5 * 0.99), 1.0),  # a far second: a min_p default may drop it
    (TokenLogprob("a", None, ()), 1.0),  # no logprob: no bound
    (TokenLogprob("a", math.log(0.5), ()), 1.0),  # no alternatives listed: no bound
])
def test_sample_bound(token: TokenLogprob, bound: float) -> None:
    assert sample_bound(token) == pytest.approx(bound)


def test_a_confident_model_is_never_called_greedy() -> None:
    """Positions at 0.8 or more bound nothing; four unsure ones (0.5, a second at 0.3) among twenty confident
    ones bound four equal answers at (0.5/0.8)^12 = 0.0036: far above CHANCE, Inconclusive, not a failure.
    Twenty-four unsure ones: 4e-8, greedy."""
    confident = [sample_bound(_t(0.85, 0.1)) for _ in range(20)]
    assert confident == [1.0] * 20
    mixed = math.prod([*confident, *(sample_bound(_t(0.5, 0.3)) for _ in range(4))]) ** 3
    assert mixed == pytest.approx((0.5 / 0.8) ** 12) and mixed > CHANCE
    unsure = math.prod(sample_bound(_t(0.5, 0.3)) for _ in range(24)) ** 3
    assert unsure < CHANCE
