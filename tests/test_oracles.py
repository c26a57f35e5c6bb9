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
