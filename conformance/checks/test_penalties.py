"""Penalties: a strong frequency, presence or repetition penalty moves a deterministic answer the documented
way: fewer repeated tokens (spec/DECISIONS.md#oracles).

One deterministic baseline on a prompt that invites repeats (``REPEAT``), with logprobs, is shared by the
three checks; each check sends the very same request with one penalty added (the same fields, logprobs
included, so only the penalty differs) and compares. "Repeats" are counted over the two answers' common
length: the logprob tokens when both answers carry them, else the words. A strong penalty (1.9) must leave
fewer repeats (an unchanged answer fails unless the logprobs show the penalty too weak to flip a token);
clearly more (``margin``) is a penalty applied backwards when the opposite value (-1.9, repetition_penalty
0.5) confirms it with clearly fewer repeats, and fails; any other change is Inconclusive.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from conformance.checks._support import (
    COMPARE_LOGPROBS,
    DIVERGED,
    EMPTY,
    EQUAL,
    NEAR_TIE,
    UNKNOWN,
    Answer,
    answer_of,
    compare_answers,
    deterministic_body,
    is_4xx,
    logprob_entries,
    ok_json,
    room,
    thinking_off,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive

MAX = 24
STRENGTH = 1.9
# where STRENGTH over MAX tokens is too weak against the model's margins to flip any token (per the
# baseline's logprobs): the strongest value inside the seed's open range (-2 < x < 2), over an answer long
# enough for repeats to build up (spec/DECISIONS.md#neighbours)
STRONGEST = 1.99
LONG = 64
# the value of the opposite direction, inside the seed's ranges (-2 < x < 2; repetition_penalty 0 < x < 2,
# where below 1 "encourage[s]" repetition)
OPPOSITE = {"frequency_penalty": -STRENGTH, "presence_penalty": -STRENGTH, "repetition_penalty": 0.5}
MIN_UNITS = 8  # the fewest compared tokens (or words) a repeat count is judged on
REPEAT = "Repeat the word cat over and over: cat cat cat cat cat cat"
BASELINE = "penalty-baseline"  # shared key of the unpenalised request


def repeats(units: list[str]) -> int:
    """How many of ``units`` repeat an earlier one (a count any model's output has: tokens or words)."""
    return len(units) - len(set(units))


def margin(n: int) -> int:
    """How many more repeats (over ``n`` compared units) show a penalty applied backwards: a clear excess,
    never one or two tokens that a changed trajectory may bring."""
    return max(2, n // 6)


def units_of(a: Answer, b: Answer) -> tuple[list[str], list[str], str]:
    """The two answers as comparable units, cut to their common length: the logprob tokens when both carry
    them, else the words of reasoning + content; and what the units are."""
    if a.tokens and b.tokens:
        ua, ub, what = [t.token for t in a.tokens], [t.token for t in b.tokens], "tokens"
    else:
        ua, ub, what = a.text.split(), b.text.split(), "words"
    n = min(len(ua), len(ub))
    return ua[:n], ub[:n], what


def _request(target: Any, profile: Any, capabilities: Any, logprobs: bool, max_tokens: int = MAX,
             **penalty: Any) -> dict[str, Any]:
    """The one request shape both sides use: only ``penalty`` differs."""
    fields: dict[str, Any] = dict(COMPARE_LOGPROBS) if logprobs else {}
    return deterministic_body(target, profile, messages=[{"role": "user", "content": REPEAT}],
                              max_tokens=room(capabilities, max_tokens), **thinking_off(capabilities),
                              **fields, **penalty)


def _baseline(shared: Any, target: Any, profile: Any, capabilities: Any) -> tuple[Any, bool]:
    """The unpenalised answer and whether it was asked with logprobs (it is sent again without them when
    the target refuses them; the penalised requests then go without them too)."""
    ex = shared(BASELINE, _request(target, profile, capabilities, True),
                label=f"deterministic, repeat prompt, {MAX} tokens, logprobs (penalty baseline)")
    if is_4xx(ex):
        ex = shared(BASELINE + "-plain", _request(target, profile, capabilities, False),
                    label=f"deterministic, repeat prompt, {MAX} tokens (penalty baseline)")
        return ex, False
    return ex, True


def _penalty_could_not_flip(entries: list[Any] | None, frequency: float, presence: float) -> bool:
    """Whether the unpenalised logprobs show that the penalty, applied as OpenAI documents it
    (``logit -= count * frequency + (count > 0) * presence`` over the generated tokens), leaves every greedy
    choice in place. The logprobs are differences of logits up to one constant per position, so subtracting
    the penalty from them ranks the alternatives as the penalised logits would. Alternatives found in the
    prompt (which some servers penalise too) and replacement characters are left out: only a clear flip
    counts."""
    if not entries:
        return False
    counts: Counter[str] = Counter()
    for e in entries:
        chosen, lp = (e.get("token"), e.get("logprob")) if isinstance(e, dict) else (None, None)
        tops = e.get("top_logprobs") if isinstance(e, dict) else None
        if not isinstance(chosen, str) or not isinstance(lp, int | float) or not isinstance(tops, list):
            return False  # no evidence: the check cannot excuse an unchanged answer

        def pen(tok: str) -> float:
            n = counts[tok]
            return n * frequency + (presence if n else 0.0)

        mine = lp - pen(chosen)
        for alt in tops:
            tok, alp = (alt.get("token"), alt.get("logprob")) if isinstance(alt, dict) else (None, None)
            if (not isinstance(tok, str) or tok == chosen or not isinstance(alp, int | float)
                    or "\ufffd" in tok or not tok.strip() or tok.strip() in REPEAT):
                continue
            if alp - pen(tok) > mine + 1e-3:
                return False  # the penalty would have put another token first here
        counts[chosen] += 1
    return True


def _penalty_explains(want: Answer, got: Answer, j: int | None, param: str, value: float) -> bool:
    """Whether the penalty, applied as OpenAI documents it over the generated tokens, accounts for the first
    divergence (token ``j``) on its own: the unpenalised answer's token there had already been generated and
    the penalty on it exceeds its lead over the penalised answer's token, read from the unpenalised
    answer's top_logprobs. A near-tie flip is then the penalty's doing, not numerics' (a penalty flips a
    token exactly where the lead is small). frequency/presence only: repetition_penalty scales raw logits,
    which logprobs do not reveal."""
    if param not in ("frequency_penalty", "presence_penalty") or j is None:
        return False
    if not want.tokens or not got.tokens:
        return False
    if j >= len(want.tokens) or j >= len(got.tokens):
        return False
    here, theirs = want.tokens[j], got.tokens[j].token
    alt = here.alternative(theirs)
    if here.logprob is None or alt is None:
        return False
    counts = Counter(t.token for t in want.tokens[:j])

    def pen(tok: str) -> float:
        n = counts[tok]
        return n * value if param == "frequency_penalty" else (value if n else 0.0)

    return pen(here.token) - pen(theirs) > (here.logprob - alt) + 1e-3


def _ask(client: Any, target: Any, profile: Any, capabilities: Any, logprobs: bool, param: str,
         value: float, max_tokens: int = MAX) -> tuple[Any, Answer]:
    req = _request(target, profile, capabilities, logprobs, max_tokens, **{param: value})
    ex = client.chat(req, label=f"deterministic, repeat prompt, {max_tokens} tokens, {param} {value}"
                     + (", logprobs" if logprobs else ""))
    return ex, answer_of(ok_json(ex, f"request with {param} {value}"))


def _changed(client: Any, target: Any, profile: Any, capabilities: Any, logprobs: bool, param: str,
             value: float, want: Answer, max_tokens: int = MAX) -> tuple[Any, Answer, str]:
    """The penalised answer and how it compares with ``want``: equal or diverged (a near-tie difference is
    asked once more; still no confident divergence is Inconclusive, spec/DECISIONS.md#near-ties)."""
    ex, got = _ask(client, target, profile, capabilities, logprobs, param, value, max_tokens)
    cmp = compare_answers(want, got)
    if cmp.kind == EMPTY:
        raise Inconclusive(f"the answers with and without {param} are both empty: {cmp.detail}")
    if cmp.kind == NEAR_TIE and _penalty_explains(want, got, cmp.token, param, value):
        return ex, got, DIVERGED
    if cmp.kind in (NEAR_TIE, UNKNOWN):
        ex2, got2 = _ask(client, target, profile, capabilities, logprobs, param, value, max_tokens)
        again = compare_answers(want, got2)
        if cmp.kind == UNKNOWN and again.kind == UNKNOWN and got2.text == got.text:
            # no logprobs say where they differ, but the penalised answer reproduces itself exactly: a
            # near-tie flip lands at random, not every time (as settle() reads it)
            return ex2, got2, DIVERGED
        if again.kind != DIVERGED:
            raise Inconclusive(f"the answers with {param} {value} differ from the answer without it only "
                               f"where the model nearly ties ({cmp.detail}; asked again: {again.kind}, "
                               f"{again.detail}): the penalty's effect cannot be told from numerics")
        return ex2, got2, DIVERGED
    return ex, got, cmp.kind


def _could_not_flip(entries: list[Any] | None, param: str, value: float) -> bool:
    """Whether ``param`` at ``value`` is too weak to flip any token of the answer whose logprobs are
    ``entries`` (frequency/presence only: repetition_penalty scales raw logits, which logprobs hide)."""
    if param == "repetition_penalty":
        return False
    return _penalty_could_not_flip(entries, value if param == "frequency_penalty" else 0.0,
                                   value if param == "presence_penalty" else 0.0)


def _judge_penalty(shared: Any, client: Any, judge: Any, target: Any, profile: Any, requirement: str,
                   param: str, capabilities: Any) -> None:
    base_ex, logprobs = _baseline(shared, target, profile, capabilities)
    base = ok_json(base_ex, "the unpenalised request")
    want = answer_of(base)
    if want.empty:
        raise Inconclusive("the unpenalised answer is empty: nothing to penalise")
    ex, got, kind = _changed(client, target, profile, capabilities, logprobs, param, STRENGTH, want)
    strength = STRENGTH
    if kind == EQUAL and logprobs and _could_not_flip(logprob_entries(base), param, STRENGTH):
        # too weak against this model's margins over MAX tokens: the strongest value, over a longer answer,
        # where repeats build up and more positions may have a narrow lead; only if even that cannot flip a
        # token is an unchanged answer excused (a server that ignores the penalty on a confident model
        # passed as Inconclusive here, spec/DECISIONS.md#neighbours)
        long_ex = shared(BASELINE + "-long", _request(target, profile, capabilities, True, LONG),
                         label=f"deterministic, repeat prompt, {LONG} tokens, logprobs (penalty baseline, "
                         "longer)")
        long_base = ok_json(long_ex, f"the unpenalised request, {LONG} tokens")
        if _could_not_flip(logprob_entries(long_base), param, STRONGEST):
            raise Inconclusive(f"{param} is too weak against this model's margins to change any token of "
                               f"the answer (per its logprobs), at {STRENGTH} over {MAX} tokens and at "
                               f"{STRONGEST} over {LONG}, so an unchanged answer proves nothing")
        want = answer_of(long_base)
        ex, got, kind = _changed(client, target, profile, capabilities, logprobs, param, STRONGEST, want,
                                 LONG)
        strength = STRONGEST
    if kind == EQUAL:
        # repetition_penalty scales raw logits (divides the positive ones), which logprobs do not reveal, so
        # an unchanged answer cannot be excused from them; frequency/presence were shown strong enough above
        # (or the target sent no logprobs to excuse it)
        judge.check(False, requirement, f"{param} {strength} left a deterministic answer unchanged",
                    path="$.choices[0].message.content", expected=f"an answer other than {want.text!r}",
                    received=got.text, exchange=ex)
        return
    ua, ub, what = units_of(want, got)
    if len(ua) < MIN_UNITS:
        raise Inconclusive(f"the answers share only {len(ua)} {what}: too few to count repeats on")
    before, after = repeats(ua), repeats(ub)
    if before == 0:
        raise Inconclusive(f"the unpenalised answer repeats none of its first {len(ua)} {what}: nothing to "
                           "reduce")
    n = len(ua)
    if after >= before + margin(n):
        _confirm_backwards(client, judge, target, profile, capabilities, logprobs, requirement, param, want,
                           got, ex, before, after, what)
        return
    if after >= before:
        raise Inconclusive(f"{param} {strength} changed the answer but not the repeats the documented way "
                           f"({before} -> {after} repeated {what} among the first {n}, fewer expected; "
                           f"clearly more, {before + margin(n)} or over, with the opposite value clearly "
                           "fewer, would fail)")
    judge.check(True, requirement, "")


def _confirm_backwards(client: Any, judge: Any, target: Any, profile: Any, capabilities: Any, logprobs: bool,
                       requirement: str, param: str, want: Answer, got: Answer, ex: Any, before: int,
                       after: int, what: str) -> None:
    """The penalty brought clearly more repeats. One greedy trajectory may do that by chance (a penalty moves
    the answer elsewhere, where the model may loop: a multiplicative repetition_penalty cannot stop a loop
    once every candidate has been seen), so the value of the opposite direction (-1.9, or repetition_penalty
    0.5, which the seed says encourages repetition) is asked too: only when it brings clearly fewer repeats
    than the penalty does the target have the two directions swapped."""
    value = OPPOSITE[param]
    ex2 = client.chat(_request(target, profile, capabilities, logprobs, MAX, **{param: value}),
                      label=f"deterministic, repeat prompt, {MAX} tokens, {param} {value} (the opposite "
                      "direction)" + (", logprobs" if logprobs else ""))
    seen = (f"{param} {STRENGTH}: {before} -> {after} repeated {what} among the first "
            f"{len(units_of(want, got)[0])}")
    if ex2.status is None or not 200 <= ex2.status < 300:
        raise Inconclusive(f"{seen}, clearly more; {param} {value} (the opposite direction) was answered "
                           f"HTTP {ex2.status}, so whether the directions are swapped cannot be confirmed")
    opp = answer_of(ex2.json())
    ua, ub, _ = units_of(got, opp)
    if len(ua) < MIN_UNITS:
        raise Inconclusive(f"{seen}, clearly more; the answer with {param} {value} is too short to compare")
    pos, neg = repeats(ua), repeats(ub)
    if neg > pos - margin(len(ua)):
        raise Inconclusive(f"{seen}, clearly more; but {param} {value} (the opposite direction) does not "
                           f"repeat clearly less ({neg} vs {pos} among the first {len(ua)}): a change of "
                           "trajectory, not a penalty shown to work backwards")
    judge.check(False, requirement,
                f"{param} works backwards: {seen} (the penalty brought more repeats), and {param} {value} "
                f"brought fewer ({neg} vs {pos} repeated {what} among the first {len(ua)})",
                path="$.choices[0].message.content",
                expected=f"fewer than {before} repeated {what} (unpenalised: {want.text!r})",
                received=got.text, exchange=ex)


@check("PENALTY-FREQUENCY-EFFECT", neighbours=("penalties-ignored", "frequency-penalty-backwards"))
def test_frequency_penalty_effect(shared, client, judge, conformance_target, profile, capabilities):
    _judge_penalty(shared, client, judge, conformance_target, profile, "PENALTY-FREQUENCY-EFFECT",
                   "frequency_penalty", capabilities)


@check("PENALTY-PRESENCE-EFFECT", neighbours=("presence-penalty-ignored", "presence-penalty-backwards",
                                              "presence-penalty-ignored-confident"))
def test_presence_penalty_effect(shared, client, judge, conformance_target, profile, capabilities):
    _judge_penalty(shared, client, judge, conformance_target, profile, "PENALTY-PRESENCE-EFFECT",
                   "presence_penalty", capabilities)


@check("PENALTY-REPETITION-EFFECT", neighbours=("repetition-penalty-ignored", "repetition-penalty-backwards"))
def test_repetition_penalty_effect(shared, client, judge, conformance_target, profile, capabilities):
    _judge_penalty(shared, client, judge, conformance_target, profile, "PENALTY-REPETITION-EFFECT",
                   "repetition_penalty", capabilities)
