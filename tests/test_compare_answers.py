"""compare_answers / settle (conformance/checks/_support.py): two answers that should be equal, judged token
by token with logprobs (spec/DECISIONS.md#near-ties)."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.checks._support import (
    DIVERGED,
    EMPTY,
    EQUAL,
    NEAR_TIE,
    NEAR_TIE_MARGIN,
    UNKNOWN,
    Answer,
    TokenLogprob,
    answer_of,
    compare_answers,
    off_greedy,
    settle,
    stream_answer,
)


def tok(token: str, lp: float, *alts: tuple[str, float]) -> TokenLogprob:
    """A logprob entry whose top list is the chosen token and ``alts``, sorted like a target sends them."""
    top = sorted([(token, lp), *alts], key=lambda x: -x[1])
    return TokenLogprob(token, lp, tuple(top))


def ans(*tokens: TokenLogprob, finish: str = "length", reasoning: str = "") -> Answer:
    return Answer("".join(t.token for t in tokens), reasoning, tuple(tokens), finish)


A = tok(" the", -0.1, (" a", -2.5))
CAT = tok(" cat", -0.3, (" dog", -0.31), (" sun", -3.0))  # a near-tie: 0.01 apart
DOG = tok(" dog", -0.3, (" cat", -0.32), (" sun", -3.0))
SAT = tok(" sat", -0.2, (" ran", -2.0))
RAN_FAR = tok(" ran", -0.2, (" sat", -3.0))  # " sat" far below " ran" here: a confident position


def test_equal_answers_are_equal() -> None:
    assert compare_answers(ans(A, CAT, SAT), ans(A, CAT, SAT)).kind == EQUAL


def test_empty_answers_are_never_equal() -> None:
    c = compare_answers(Answer("", "", None, "length"), Answer("", "", None, "length"))
    assert c.kind == EMPTY and "empty" in c.detail
    assert not compare_answers(Answer(""), Answer("x")).kind == EQUAL


def test_reasoning_is_compared_with_content() -> None:
    same_content = compare_answers(Answer("ok", "think a"), Answer("ok", "think b"))
    assert same_content.kind == UNKNOWN and "reasoning" in same_content.detail
    assert compare_answers(Answer("", "think"), Answer("", "think")).kind == EQUAL


def test_divergence_between_near_tied_candidates_is_a_near_tie() -> None:
    c = compare_answers(ans(A, CAT, SAT), ans(A, DOG, SAT))
    assert c.kind == NEAR_TIE
    assert c.token == 1 and c.offset == len(" the ")
    assert "' cat'" in c.detail and "' dog'" in c.detail


def test_divergence_at_a_confident_position_fails() -> None:
    c = compare_answers(ans(A, CAT, SAT), ans(A, CAT, RAN_FAR))
    assert c.kind == DIVERGED and c.token == 2


def test_margin_is_the_boundary() -> None:
    gap = NEAR_TIE_MARGIN
    inside = compare_answers(ans(tok("x", -1.0, ("y", -1.0 - gap + 1e-3))),
                             ans(tok("y", -1.0, ("x", -1.0 - gap + 1e-3))))
    outside = compare_answers(ans(tok("x", -1.0, ("y", -1.0 - gap - 1e-2))),
                              ans(tok("y", -1.0 - gap - 1e-2, ("x", -1.0))))
    assert inside.kind == NEAR_TIE and outside.kind == DIVERGED


def test_unlisted_candidate_far_below_every_listed_one_is_confident() -> None:
    a = ans(tok("x", -0.1, ("p", -2.0), ("q", -2.5)))
    b = ans(tok("z", -4.0, ("x", -0.1), ("p", -2.0)))  # a sampled, unlikely token
    assert compare_answers(a, b).kind == DIVERGED


def test_unlisted_candidate_among_close_alternatives_is_unknown() -> None:
    a = ans(tok("x", -1.0, ("p", -1.1)))
    b = ans(tok("z", -1.05, ("q", -1.1)))
    assert compare_answers(a, b).kind == UNKNOWN


def test_chosen_token_missing_from_its_own_top_logprobs_is_confident() -> None:
    # a stream that rewrote its first token (" the" -> " THE") but kept the logprobs of " the"
    good = [A, CAT, SAT]
    rewritten = TokenLogprob(" THE", -0.1, ((" the", -0.1), (" a", -2.5)))
    c = compare_answers(ans(*good), ans(rewritten, CAT, SAT))
    assert c.kind == DIVERGED and "missing from its own top_logprobs" in c.detail


def test_without_logprobs_a_difference_is_unknown() -> None:
    c = compare_answers(Answer("the cat"), Answer("the dog"))
    assert c.kind == UNKNOWN and c.offset == 4 and "no logprobs" in c.detail


def test_end_of_text_near_tie_and_confident_continuation() -> None:
    short = ans(A, CAT, finish="stop")
    near_end = ans(A, CAT, tok(" sat", -0.5, ("", -0.6)))  # the end token listed, 0.1 below
    far = ans(A, CAT, tok(" sat", -0.1, (" ran", -4.0), (" on", -4.5)))  # nothing within the margin
    assert compare_answers(short, near_end).kind == NEAR_TIE
    assert compare_answers(short, far).kind == DIVERGED
    cut = ans(A, CAT, finish="length")
    assert compare_answers(cut, far).kind == DIVERGED  # a cut answer is no end of text


def test_answer_of_and_stream_answer_read_the_same_answer() -> None:
    entries: list[dict[str, Any]] = [
        {"token": t.token, "logprob": t.logprob,
         "top_logprobs": [{"token": x, "logprob": v} for x, v in t.top]}
        for t in (A, CAT)]
    data = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " the cat",
                                                 "reasoning_content": "hm"},
                         "logprobs": {"content": entries}, "finish_reason": "length"}]}
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "hm"}}]}] + [
        {"choices": [{"index": 0, "delta": {"content": e["token"]}, "logprobs": {"content": [e]}}]}
        for e in entries] + [{"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}]
    plain, streamed = answer_of(data), stream_answer(chunks)
    assert plain == streamed
    assert plain.reasoning == "hm" and plain.tokens == (A, CAT)
    assert compare_answers(plain, streamed).kind == EQUAL
    assert answer_of({"choices": []}) == Answer()


def test_off_greedy() -> None:
    assert off_greedy(ans(A, CAT, SAT)) is None
    got = off_greedy(ans(A, tok(" sun", -3.0, (" cat", -0.3))))
    assert got is not None and "token 1" in got


def _asker(*answers: Answer) -> Any:
    it = iter(answers)
    return lambda: next(it)


def test_settle_reasks_a_near_tie_until_a_pair_agrees() -> None:
    a, b = ans(A, CAT, SAT), ans(A, DOG, SAT)
    done = settle(a, b, _asker(), _asker(ans(A, CAT, SAT)))
    assert done.comparison.kind == EQUAL and (done.a, done.b) == (0, 1)


def test_settle_reasks_the_first_side_too() -> None:
    # the first answer took the rare branch: the second side keeps its own, the first side's re-ask agrees
    a, b = ans(A, CAT, SAT), ans(A, DOG, SAT)
    done = settle(a, b, _asker(ans(A, DOG, SAT)), _asker(ans(A, DOG, SAT)))
    assert done.comparison.kind == EQUAL
    assert len(done.answers_a) == 2 and len(done.answers_b) == 2


def test_settle_stays_a_near_tie_after_the_reasks() -> None:
    a, b = ans(A, CAT, SAT), ans(A, DOG, SAT)
    done = settle(a, b, _asker(ans(A, CAT, SAT)), _asker(ans(A, DOG, SAT), ans(A, DOG, SAT)), reasks=3)
    assert done.comparison.kind == NEAR_TIE and "near-ties" in done.reason
    assert len(done.answers_a) + len(done.answers_b) == 5


def test_settle_fails_at_once_on_a_confident_divergence() -> None:
    done = settle(ans(A, CAT, SAT), ans(A, CAT, RAN_FAR), _asker(), _asker())
    assert done.comparison.kind == DIVERGED


def test_settle_without_logprobs_fails_a_difference_both_sides_reproduce() -> None:
    done = settle(Answer("a b"), Answer("a c"), _asker(Answer("a b")), _asker(Answer("a c"), Answer("a c")))
    assert done.comparison.kind == DIVERGED and "reproduce" in done.comparison.detail


def test_settle_without_logprobs_stays_unknown_when_answers_wander() -> None:
    done = settle(Answer("a b"), Answer("a c"), _asker(Answer("a d")), _asker(Answer("a c"), Answer("a e")))
    assert done.comparison.kind == UNKNOWN and "no logprobs" in done.reason


@pytest.mark.parametrize("kind", [EQUAL, EMPTY, DIVERGED])
def test_settled_kinds(kind: str) -> None:
    from conformance.checks._support import Comparison
    assert Comparison(kind).settled
    assert not Comparison(NEAR_TIE).settled and not Comparison(UNKNOWN).settled


def test_stop_cut_settles_against_a_second_stopless_answer() -> None:
    # the first stop-less answer took the rare branch (" cat"); the answers with stop keep " dog": the stop
    # checks ask the stop-less request again and judge against the answer that agrees
    from conformance.checks.test_stop import _settle_cut

    rare, common = ans(A, CAT, SAT, tok(" on", -0.1)), ans(A, DOG, SAT, tok(" on", -0.1))
    cut = ans(A, DOG, tok(" sat", -0.2, (" ran", -2.0)), finish="stop")
    bases = iter([rare, common])
    ex, got, base, at = _settle_cut(lambda i: ("ex", cut), lambda i: next(bases), "sat")
    assert got == cut and base == common and at == common.content.find("sat")


def test_stop_cut_past_the_stop_is_judged_not_reasked() -> None:
    from conformance.checks.test_stop import _settle_cut

    base = ans(A, CAT, SAT, tok(" on", -0.1))
    ignored = ans(A, CAT, SAT, tok(" on", -0.1))  # the stop was ignored: the whole answer came back
    calls = []
    _, got, _, _ = _settle_cut(lambda i: (calls.append(i), ("ex", ignored))[1], lambda i: base, "cat")
    assert got == ignored and calls == [0]


def test_stop_cut_near_ties_only_is_inconclusive() -> None:
    from conformance.checks.test_stop import _settle_cut
    from conformance.violations import Inconclusive

    base = ans(A, CAT, SAT, tok(" on", -0.1))
    other = ans(A, DOG, SAT, tok(" on", -0.1))
    with pytest.raises(Inconclusive, match="nearly ties"):
        _settle_cut(lambda i: ("ex", other), lambda i: base, "sat")
