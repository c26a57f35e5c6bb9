"""stop: generation ends at the first stop sequence, with finish_reason stop, streamed or not.

Every check starts from one deterministic 16-token answer (when that holds no usable stop sequence, a longer
or penalty-spread deterministic answer: spec/DECISIONS.md#opportunistic), picks a few characters in its middle
that occur there once, and sends the same deterministic request with that stop sequence: the new answer must
be the old one cut at the stop sequence (kept or cut off as the profile says: spec/DECISIONS.md#stop), or,
from a server that matches stops on whole tokens, cut at the end of the token that completed the sequence: the
text holds the sequence and the rest of that token (confirmed by the answer's logprobs, else by a max_tokens
probe, else inconclusive: spec/DECISIONS.md#protocol-details).

Both requests carry logprobs: an answer with stop that diverged from the stop-less one before the stop, only
where two candidate tokens nearly tie, is numerics, not the stop; it is asked again, then Inconclusive
(spec/DECISIONS.md#near-ties).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.checks._support import (
    NEAR_TIE,
    REASKS,
    UNKNOWN,
    Answer,
    answer_of,
    compare_answers,
    deterministic_body,
    deterministic_logprobs,
    is_4xx,
    obj,
    ok_json,
    ok_stream,
    room,
    stream_answer,
    thinking_off,
    usage_of,
    with_logprobs,
)
from conformance.engine.registry import check
from conformance.records import SkipKind
from conformance.violations import Inconclusive, ServerError, Skipped

MAX = 16
LONG = 32
# Penalties spread a deterministic answer over many tokens (as for the logit-bias ban's second baseline): the
# last source of a stop sequence when the short answer holds none (a very short or periodic answer).
SPREAD = {"presence_penalty": 1.9, "frequency_penalty": 1.9}
# stop sequences no answer is expected to hold
FILLER = ["\u00a7zq\u00a7", "\u00a7qz\u00a7", "\u00a7zz\u00a7"]


@dataclass(frozen=True)
class Source:
    """A stop-less deterministic request whose answer a stop sequence is taken from: every request of the
    stop checks is this one (``fields``), with the stop sequence added."""

    key: str  # suffix of the shared keys ("" for the default 16-token request)
    label: str
    fields: dict[str, Any] = field(default_factory=lambda: {"max_tokens": MAX})


DEFAULT = Source("", "deterministic, 16 tokens")


def sources(capabilities: Any) -> list[Source]:
    """Where a stop sequence is looked for, in order: the shared deterministic 16-token answer; the same with
    room for a reasoning segment where the model reasons unasked (shared with the logprobs, core and
    logit-bias checks); a 32-token answer spread by presence and frequency penalties (one more request, only
    when needed)."""
    quiet = thinking_off(capabilities)
    out = [DEFAULT]
    mt = room(capabilities, MAX)
    if mt != MAX or quiet:
        out.append(Source("-room", f"deterministic, {mt} tokens", {"max_tokens": mt, **quiet}))
    long = room(capabilities, LONG)
    out.append(Source("-spread", f"deterministic, {long} tokens, penalties 1.9",
                      {"max_tokens": long, **SPREAD, **quiet}))
    return out


def _base(shared: Any, target: Any, profile: Any, src: Source = DEFAULT, capabilities: Any = None) -> Answer:
    if src.key == "":
        ex = deterministic_logprobs(shared, target, profile)  # 16 tokens, with logprobs to judge divergences
    elif src.key == "-room":
        ex = deterministic_logprobs(shared, target, profile, capabilities)
    else:
        ex = with_logprobs(lambda b: shared("stop-base" + src.key + ("" if "logprobs" in b else "-plain"), b,
                                            label=f"{src.label}, no stop"),
                           deterministic_body(target, profile, **src.fields))
    if is_4xx(ex):
        ex = shared("stop-base" + src.key, deterministic_body(target, profile, **src.fields),
                    label=f"{src.label}, no stop")
    return answer_of(ok_json(ex, "deterministic request without stop"))


def pick_stop(text: str) -> tuple[str, int] | None:
    """A stop sequence taken from ``text`` and its offset, or None when there is none.

    3-6 printable characters without edge whitespace, whose first occurrence in ``text`` is at that offset,
    never at offset 0 (so something comes before it) and ending at least 3 characters before the end (so the
    cut answer is not the whole answer). Preferred: one that ends inside a word (so that a server matching
    stops on whole tokens shows it: the rest of the word follows), then the earliest such sequence from a
    third of the way in; a periodic answer (" cat cat cat ...") has none there, and then the latest one before
    that is taken."""
    cands = []
    for length in (6, 5, 4, 3):
        for i in range(1, len(text) - length - 2):
            s = text[i:i + length]
            if s == s.strip() and s.isprintable() and "\ufffd" not in s and text.find(s) == i:
                inside = s[-1].isalnum() and text[i + length].isalnum()
                cands.append((i, length, s, inside))
    if not cands:
        return None
    mid = [c for c in cands if c[0] >= len(text) // 3]
    i, _, s, _ = (min(mid, key=lambda c: (not c[3], c[0], -c[1])) if mid
                  else max(cands, key=lambda c: (c[3], c[0], c[1])))
    return s, i


def _stop(
    shared: Any, target: Any, profile: Any, capabilities: Any = None
) -> tuple[Answer, str, int, Source]:
    """The stop-less answer, the stop sequence taken from it, its offset and the request (:func:`sources`):
    the first source whose answer holds a usable sequence."""
    seen = []
    for src in sources(capabilities):
        try:
            base = _base(shared, target, profile, src, capabilities)
        except ServerError:
            raise  # a server error is asked again (the check is run again), not a source to skip
        except Inconclusive:
            if src is DEFAULT:
                raise  # the plain deterministic request went unanswered: other checks judge that
            continue  # a source the target does not answer (penalties refused): the next one
        picked = pick_stop(base.content)
        if picked is not None:
            return base, *picked, src
        seen.append((src.label, base.content))
    raise Inconclusive("no deterministic answer holds a usable stop sequence (3-6 characters first occurring "
                       "after its start and before its end): "
                       + "; ".join(f"{label}: {content!r}" for label, content in seen))


def _allowed(text: str, stop: str, at: int) -> dict[str, str]:
    return {"excluded": text[:at], "included": text[:at + len(stop)]}


def _is_tail_candidate(text: str, stop: str, at: int, got: str) -> bool:
    """``got`` is the stop-less answer ``text`` cut somewhere after the end of the stop sequence."""
    return len(got) > at + len(stop) and text.startswith(got)


def _token_end(got: Answer, end: int) -> tuple[bool | None, str]:
    """From the answer's own logprobs: does its last token start before ``end`` (the end of the stop sequence,
    so that token completed it)? None when the logprobs do not spell the answer."""
    if not got.tokens or "".join(t.token for t in got.tokens) != got.content:
        return None, "no logprobs that spell the answer"
    last_start = len(got.content) - len(got.tokens[-1].token)
    if last_start < end:
        return True, "the text ends with the token that completed the stop sequence (logprobs)"
    return False, (f"its last token {got.tokens[-1].token!r} starts after the end of the stop sequence: the "
                   "text goes on for at least one whole token past it (logprobs)")


def tail_verdict(shared: Any, target: Any, profile: Any, ex: Any, got: Answer, stop: str,
                 at: int, src: Source = DEFAULT) -> tuple[bool | None, str]:
    """Whether the answer ``got`` to ``ex`` (the stop-less answer cut past the end of the stop sequence) ends
    with the token that completed the sequence: True, False (it goes at least one whole token further), or
    None (it cannot be told), with the reason. Without logprobs, a max_tokens probe (shared) can confirm it,
    never deny it: a different token count is no proof."""
    end = at + len(stop)
    verdict, why = _token_end(got, end)
    if verdict is not None:
        return verdict, why
    ct = usage_of(obj(ex.json())) if ex.body_text else None
    if ct is None or ct < 1:
        return None, ("without logprobs or usage.completion_tokens it cannot be told whether what follows "
                      "the stop sequence is the rest of the token that completed it")
    if ct == 1:
        return True, "the text is one token, the one that completed the stop sequence (usage)"
    probe = shared(f"stop-probe{src.key}-{ct - 1}",
                   deterministic_body(target, profile, **{**src.fields, "max_tokens": ct - 1}),
                   label=f"deterministic, no stop, max_tokens {ct - 1} (the stop answer's tokens but one)")
    if probe.status is not None and 200 <= probe.status < 300:
        before = answer_of(probe.json()).content
        if got.content.startswith(before) and len(before) < end:
            return True, (f"its first {ct - 1} tokens end before the stop sequence does: the last token "
                          "completed it (max_tokens probe)")
    return None, ("neither logprobs nor a max_tokens probe show whether what follows the stop sequence is "
                  "the rest of the token that completed it")


def _honoured(shared: Any, target: Any, profile: Any, ex: Any, got: Answer, base: Answer, stop: str,
              at: int, src: Source = DEFAULT) -> tuple[bool | None, str]:
    """Whether ``got`` honours the stop: cut before it, after it, or (confirmed) at the end of its token."""
    if got.content in _allowed(base.content, stop, at).values():
        return True, ""
    if not _is_tail_candidate(base.content, stop, at, got.content) or got.finish != "stop":
        return False, ""
    return tail_verdict(shared, target, profile, ex, got, stop, at, src)


def _cut_body(target: Any, profile: Any, stop: Any, src: Source = DEFAULT, **fields: Any) -> dict[str, Any]:
    return deterministic_body(target, profile, **src.fields, stop=stop, **fields)


# the exchange with stop, its answer, the stop-less answer it is judged against, the stop's offset there
Cut = tuple[Any, Answer, Answer, int]


def _pair(base: Answer, got: Answer, stop: str) -> str:
    """ok: ``got`` is ``base`` cut at the stop; again: they diverged before the end of the stop only at a
    near-tie (or without logprobs that tell), or ``base`` lacks the stop; judge: anything else."""
    at = base.content.find(stop)
    if at < 0:
        return "again"
    if got.content in _allowed(base.content, stop, at).values():
        return "ok"
    if _is_tail_candidate(base.content, stop, at, got.content) and _token_end(got, at + len(stop))[0]:
        return "ok"  # ended with the token that completed the stop (spec/DECISIONS.md#protocol-details)
    cmp = compare_answers(base, got)
    if cmp.kind in (NEAR_TIE, UNKNOWN) and cmp.offset is not None \
            and cmp.offset < len(base.reasoning) + at + len(stop):
        return "again"
    return "judge"


def _settle_cut(ask_cut: Callable[[int], tuple[Any, Answer]], ask_base: Callable[[int], Answer],
                stop: str) -> Cut:
    """The first answer with stop that is a stop-less answer cut at the stop, or else one that differs from it
    other than by a near-tie before the stop (the caller judges it), with that stop-less answer. An answer
    that diverged from the stop-less one before the end of the stop sequence, at a near-tie (or without
    logprobs that tell), cannot be judged against it: the answer with stop is asked again, then the one
    without (it may be the one that took the rare branch), then the one with, at most REASKS more requests
    (spec/DECISIONS.md#near-ties); still only near-ties: Inconclusive."""
    bases = [ask_base(0)]
    cuts: list[tuple[Any, Answer]] = []
    for step in (["cut"] + ["cut", "base"] * REASKS)[:1 + REASKS]:
        if step == "cut":
            cuts.append(ask_cut(len(cuts)))
            pairs = [(cuts[-1], b) for b in bases]
        else:
            bases.append(ask_base(len(bases)))
            pairs = [(c, bases[-1]) for c in cuts]
        verdicts = [(_pair(b, c[1], stop), c, b) for c, b in pairs]
        for wanted in ("ok", "judge"):
            hit = next(((c, b) for v, c, b in verdicts if v == wanted), None)
            if hit is not None:
                (ex, got), base = hit
                return ex, got, base, base.content.find(stop)
    why = compare_answers(bases[0], cuts[0][1]).detail
    raise Inconclusive(f"{len(cuts)} answers with stop {stop!r} and {len(bases)} without diverged before the "
                       f"stop sequence only where the model nearly ties (numerics, not the stop): {why}")


def _plain(send: Callable[[dict[str, Any]], Any], request: dict[str, Any], what: str) -> tuple[Any, Answer]:
    ex = with_logprobs(send, request)
    return ex, answer_of(ok_json(ex, what))


def _bases(shared: Any, target: Any, profile: Any, src: Source = DEFAULT,
           capabilities: Any = None) -> Callable[[int], Answer]:
    """The stop-less answer and, when a near-tie asks for it, the same request again (shared)."""
    def ask(i: int) -> Answer:
        if i == 0:
            return _base(shared, target, profile, src, capabilities)
        return _plain(lambda b: shared(f"stop-base{src.key}-{i}" + ("" if "logprobs" in b else "-plain"), b,
                                       label=f"{src.label}, no stop, asked again ({i})"),
                      deterministic_body(target, profile, **src.fields), "deterministic request")[1]
    return ask


def _cut(shared: Any, target: Any, profile: Any, stop: str, src: Source = DEFAULT,
         capabilities: Any = None) -> Cut:
    """The shared answer with stop (its re-asks shared too, so every stop check judges the same one)."""
    def ask(i: int) -> tuple[Any, Answer]:
        key = "stop-cut" + src.key + (f"-{i}" if i else "")
        label = f", asked again ({i})" if i else ""
        return _plain(lambda b: shared(key + ("" if "logprobs" in b else "-plain"), b,
                                       label=f"{src.label}, stop [{stop!r}]{label}"),
                      _cut_body(target, profile, [stop], src), "request with stop")
    return _settle_cut(ask, _bases(shared, target, profile, src, capabilities), stop)


@check("STOP-HONOURED")
def test_stop_honoured(shared, judge, conformance_target, profile, capabilities):
    _, stop, _, src = _stop(shared, conformance_target, profile, capabilities)
    ex, got, base, at = _cut(shared, conformance_target, profile, stop, src, capabilities)
    allowed = _allowed(base.content, stop, at)
    ok, why = _honoured(shared, conformance_target, profile, ex, got, base, stop, at, src)
    if ok is None:
        raise Inconclusive(f"the answer holds the stop sequence {stop!r} and goes on with "
                           f"{got.content[at + len(stop):]!r}: {why}")
    judge.check(ok, "STOP-HONOURED",
                "the answer is not the stop-less answer cut at the first occurrence of the stop sequence"
                + (f" ({why})" if why else ""), path="$.choices[0].message.content",
                expected=f"{allowed['excluded']!r} or {allowed['included']!r} (or that plus the rest of the "
                "token that completed the stop sequence)", received=got.content, exchange=ex)
    judge.check(got.finish == "stop", "STOP-HONOURED",
                "an answer ended by a stop sequence did not say stop",
                path="$.choices[0].finish_reason", expected="stop", received=got.finish, exchange=ex)


def _judge_inclusion(shared: Any, judge: Any, target: Any, profile: Any, requirement: str, mode: str,
                     capabilities: Any = None) -> None:
    _, stop, _, src = _stop(shared, target, profile, capabilities)
    ex, got, base, at = _cut(shared, target, profile, stop, src, capabilities)
    allowed = _allowed(base.content, stop, at)
    if got.content in allowed.values():
        judge.check(got.content == allowed[mode], requirement,
                    f"the returned text has the stop sequence {stop!r} "
                    + ("cut off" if mode == "included" else "kept"), path="$.choices[0].message.content",
                    expected=allowed[mode], received=got.content, exchange=ex)
        return
    if not _is_tail_candidate(base.content, stop, at, got.content):
        raise Inconclusive("the stop sequence was not honoured (judged by STOP-HONOURED)")
    if mode == "excluded":  # it holds the stop sequence, whatever follows it
        judge.check(False, requirement, f"the returned text has the stop sequence {stop!r} kept",
                    path="$.choices[0].message.content", expected=allowed[mode], received=got.content,
                    exchange=ex)
        return
    ok, why = _honoured(shared, target, profile, ex, got, base, stop, at, src)
    if not ok:
        raise Inconclusive(f"the text holds the stop sequence and goes on with "
                           f"{got.content[at + len(stop):]!r}: {why or 'not ended by the stop'} "
                           "(judged by STOP-HONOURED)")
    judge.check(True, requirement, "")


@check("STOP-SEQUENCE-INCLUDED")
def test_stop_sequence_included(shared, judge, conformance_target, profile, capabilities):
    if profile.stop_sequence != "included":
        raise Skipped("the profile judges STOP-SEQUENCE-EXCLUDED", SkipKind.NOT_APPLICABLE)
    _judge_inclusion(shared, judge, conformance_target, profile, "STOP-SEQUENCE-INCLUDED", "included",
                     capabilities)


@check("STOP-SEQUENCE-EXCLUDED")
def test_stop_sequence_excluded(shared, judge, conformance_target, profile, capabilities):
    if profile.stop_sequence != "excluded":
        raise Skipped("the profile judges STOP-SEQUENCE-INCLUDED", SkipKind.NOT_APPLICABLE)
    _judge_inclusion(shared, judge, conformance_target, profile, "STOP-SEQUENCE-EXCLUDED", "excluded",
                     capabilities)


@check("STOP-STRING-OR-ARRAY")
def test_stop_string_or_array(shared, client, judge, conformance_target, profile, capabilities):
    _, stop, _, src = _stop(shared, conformance_target, profile, capabilities)
    for form, value in (("a single string", stop), ("an array of 4 strings", [*FILLER, stop])):
        request = _cut_body(conformance_target, profile, value, src)

        def ask(i: int, request: dict[str, Any] = request, form: str = form) -> tuple[Any, Answer]:
            label = f"deterministic, stop as {form}" + (f", asked again ({i})" if i else "")
            ex = with_logprobs(lambda b: client.chat(b, label=label), request)
            return ex, answer_of(ex.json())

        ex, got = ask(0)
        if not judge.check(ex.status == 200, "STOP-STRING-OR-ARRAY", f"stop given as {form} was not accepted",
                           path="status", expected=200, received=f"{ex.status} {(ex.body_text or '')[:160]}",
                           exchange=ex):
            continue
        ex, got, base, at = _settle_cut(lambda i, first=(ex, got), ask=ask: first if i == 0 else ask(i),
                                        _bases(shared, conformance_target, profile, src, capabilities), stop)
        allowed = _allowed(base.content, stop, at)
        ok, why = _honoured(shared, conformance_target, profile, ex, got, base, stop, at, src)
        if ok is None:
            raise Inconclusive(f"stop given as {form}: the answer holds the stop sequence and goes on with "
                               f"{got.content[at + len(stop):]!r}: {why}")
        judge.check(ok and got.finish == "stop", "STOP-STRING-OR-ARRAY",
                    f"stop given as {form} was accepted but not honoured", path="$.choices[0]",
                    expected={"content": f"{allowed['excluded']!r} or {allowed['included']!r} (or that plus "
                              "the rest of the token that completed the stop sequence)",
                              "finish_reason": "stop"},
                    received={"content": got.content, "finish_reason": got.finish}, exchange=ex)


@check("STOP-STREAM")
def test_stop_stream(shared, client, judge, conformance_target, profile, capabilities):
    _, stop, _, src = _stop(shared, conformance_target, profile, capabilities)
    plain_ex, plain_got, plain_base, plain_at = _cut(shared, conformance_target, profile, stop, src,
                                                     capabilities)
    plain = plain_got.content
    plain_ok = _honoured(shared, conformance_target, profile, plain_ex, plain_got, plain_base, stop,
                         plain_at, src)[0]
    request = _cut_body(conformance_target, profile, [stop], src, stream=True)

    def ask(i: int) -> tuple[Any, Answer]:
        label = f"{src.label}, stop [{stop!r}], streamed" + (f", asked again ({i})" if i else "")
        ex = with_logprobs(lambda b: client.chat(b, label=label), request)
        return ex, stream_answer(ok_stream(ex, "streamed request with stop"))

    ex, got, base, at = _settle_cut(ask, _bases(shared, conformance_target, profile, src, capabilities), stop)
    allowed = _allowed(base.content, stop, at)
    # As without streaming: the non-streamed answer when that one honoured the stop, else either cut (or the
    # streamed answer's own confirmed token end).
    want = [plain] if plain_ok else list(allowed.values())
    if not plain_ok and _is_tail_candidate(base.content, stop, at, got.content) \
            and _token_end(got, at + len(stop))[0]:
        want.append(got.content)
    judge.check(got.content in want, "STOP-STREAM", "the streamed answer is not cut at the stop sequence",
                path="choices[0].delta.content", expected=" or ".join(repr(w) for w in want),
                received=got.content, exchange=ex)
    judge.check(got.finish == "stop", "STOP-STREAM",
                "a stream ended by a stop sequence did not say stop",
                path="choices[0].finish_reason", expected="stop", received=got.finish, exchange=ex)
