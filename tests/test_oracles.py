"""The direction oracles' counting helpers (spec/DECISIONS.md#oracles)."""

from __future__ import annotations

from conformance.checks._support import Answer, TokenLogprob, off_greedy
from conformance.checks.test_penalties import margin, repeats, units_of


def _tokens(*toks: str) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(t, -0.1) for t in toks)


def test_repeats_counts_units_that_repeat_an_earlier_one() -> None:
    assert repeats([]) == 0
    assert repeats(["a", "b", "c"]) == 0
    assert repeats(["a", "a", "a", "b"]) == 2
    assert repeats(["a", "b", "a", "b"]) == 2


def test_margin_is_a_clear_excess() -> None:
    assert margin(8) == 2
    assert margin(24) == 4
    assert margin(37) == 6


def test_units_are_logprob_tokens_when_both_answers_carry_them_cut_to_the_common_length() -> None:
    a = Answer(" cat cat cat", tokens=_tokens(" cat", " cat", " cat"))
    b = Answer(" cat dog", tokens=_tokens(" cat", " dog"))
    assert units_of(a, b) == ([" cat", " cat"], [" cat", " dog"], "tokens")


def test_units_are_words_when_one_answer_has_no_logprobs() -> None:
    a = Answer("cat cat sat on the mat", reasoning="think ")
    b = Answer("dog", tokens=_tokens("dog"))
    assert units_of(a, b) == (["think"], ["dog"], "words")


def test_off_greedy_names_a_token_clearly_below_the_best_listed() -> None:
    ok = Answer(" cat", tokens=(TokenLogprob(" cat", -0.5, ((" cat", -0.5), (" dog", -0.7))),))
    near = Answer(" dog", tokens=(TokenLogprob(" dog", -0.7, ((" cat", -0.5), (" dog", -0.7))),))
    far = Answer(" sat", tokens=(TokenLogprob(" sat", -2.0, ((" cat", -0.5), (" sat", -2.0))),))
    assert off_greedy(ok) is None
    assert off_greedy(near) is None  # within the near-tie margin
    assert off_greedy(far) is not None and "' sat'" in off_greedy(far)  # type: ignore[operator]


def test_a_penalty_explains_a_near_tie_flip_on_a_token_already_generated() -> None:
    from conformance.checks.test_penalties import _penalty_explains

    top = (("],", -1.58), ("o", -2.05))
    want = Answer("x],at],", tokens=(TokenLogprob("x", -1.0), TokenLogprob("],", -1.5),
                                     TokenLogprob("at", -1.9), TokenLogprob("],", -1.58, top)))
    got = Answer("x],ato", tokens=(*(want.tokens or ())[:3], TokenLogprob("o", -2.05)))
    assert _penalty_explains(want, got, 3, "frequency_penalty", 1.9)
    assert _penalty_explains(want, got, 3, "presence_penalty", 1.9)
    assert not _penalty_explains(want, got, 3, "frequency_penalty", 0.3)  # too weak to flip it
    assert not _penalty_explains(want, got, 3, "repetition_penalty", 1.9)  # not readable from logprobs
    fresh_top = (("?", -1.58), ("o", -2.05))
    fresh = Answer("x],at?", tokens=(*(want.tokens or ())[:3], TokenLogprob("?", -1.58, fresh_top)))
    assert not _penalty_explains(fresh, got, 3, "frequency_penalty", 1.9)  # '?' was never generated before


def test_distribution_shift_is_the_largest_logprob_change_over_the_common_prefix() -> None:
    from conformance.checks.test_core import distribution_shift

    top_a = ((" cat", -0.2), (" dog", -1.9))
    sat = TokenLogprob(" sat", -0.1, ((" sat", -0.1),))
    a = Answer(" cat sat", tokens=(TokenLogprob(" cat", -0.2, top_a), sat))
    assert distribution_shift(a, a) == (0.0, 2, True)  # the same prompt, an exact server: the same to the bit
    top_b = ((" cat", -0.3), (" sun", -1.5))  # " dog" not listed: below -1.5 on that side
    b = Answer(" cat sat", tokens=(TokenLogprob(" cat", -0.3, top_b), sat))
    shift, n, same = distribution_shift(a, b)
    assert n == 2 and not same and abs(shift - 0.4) < 1e-9  # " sun": -1.5 against below -1.9
    c = Answer(" dog", tokens=(TokenLogprob(" dog", -0.1, ((" dog", -0.1), (" cat", -3.0))),))
    shift, n, same = distribution_shift(a, c)
    assert n == 1 and not same and abs(shift - 2.8) < 1e-9  # compared up to the first divergence only
    assert distribution_shift(Answer("x"), a) == (0.0, 0, False)  # no logprobs: nothing compared


def test_shared_prefix_p_bounds_the_chance_of_a_shared_prefix() -> None:
    from conformance.checks.test_seed import shared_prefix_p

    def tok(t: str, lp: float) -> TokenLogprob:
        return TokenLogprob(t, lp, ((t, lp), ("~", lp - 0.7)))

    a = Answer("abcd", tokens=(tok("a", -1.0), tok("b", -1.0), tok("c", -1.0), tok("d", -1.0)))
    b = Answer("abcx", tokens=(tok("a", -1.0), tok("b", -1.0), tok("c", -1.0), tok("x", -1.0)))
    c = Answer("zzzz", tokens=(tok("z", -1.0),) * 4)
    p_ab, p_ac = shared_prefix_p([a, b]), shared_prefix_p([a, c])
    assert p_ac == [1.0]  # nothing shared: nothing improbable
    # three shared tokens, each at most max(e^-1, e^(-1/1.5) / (e^(-1/1.5) + e^(-1.7/1.5))) likely at 1.5
    assert 0.0 < p_ab[0] < 0.25
    assert shared_prefix_p([a, b, b])[1] <= 2.0 * p_ab[0] + 1e-12  # a union bound over the earlier answers
