"""stop: generation ends at the first stop sequence, with finish_reason stop, streamed or not.

Every check starts from one deterministic 16-token answer, picks a few characters in its middle that occur
there once, and sends the same deterministic request with that stop sequence: the new answer must be the old
one cut at the stop sequence (kept or cut off as the profile says: spec/DECISIONS.md#stop).
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance.checks._support import (
    content_of,
    deterministic_body,
    finish_of,
    obj,
    ok_json,
    ok_stream,
    stream_finish,
    stream_text,
)
from conformance.violations import Inconclusive

MAX = 16
# stop sequences no answer is expected to hold
FILLER = ["\u00a7zq\u00a7", "\u00a7qz\u00a7", "\u00a7zz\u00a7"]


def _base(shared: Any, target: Any, profile: Any) -> str:
    ex = shared("stop-base", deterministic_body(target, profile, max_tokens=MAX),
                label="deterministic, 16 tokens, no stop")
    return content_of(ok_json(ex, "deterministic request without stop"))


def pick_stop(text: str) -> tuple[str, int] | None:
    """A stop sequence taken from ``text`` and its offset, or None when there is none.

    3-6 printable characters without edge whitespace, whose first occurrence in ``text`` is at that offset,
    never at offset 0 (so something comes before it) and ending at least 3 characters before the end (so the
    cut answer is not the whole answer). Preferred: the earliest such sequence from a third of the way in;
    a periodic answer (" cat cat cat ...") has none there, and then the latest one before that is taken."""
    cands = []
    for length in (6, 5, 4, 3):
        for i in range(1, len(text) - length - 2):
            s = text[i:i + length]
            if s == s.strip() and s.isprintable() and "\ufffd" not in s and text.find(s) == i:
                cands.append((i, length, s))
    if not cands:
        return None
    mid = [c for c in cands if c[0] >= len(text) // 3]
    i, _, s = min(mid, key=lambda c: (c[0], -c[1])) if mid else max(cands, key=lambda c: (c[0], c[1]))
    return s, i


def _stop(shared: Any, target: Any, profile: Any) -> tuple[str, str, int]:
    text = _base(shared, target, profile)
    picked = pick_stop(text)
    if picked is None:
        raise Inconclusive(f"the deterministic answer {text!r} holds no usable stop sequence (3-6 characters "
                           "first occurring after its start and before its end)")
    return text, *picked


def _cut(shared: Any, target: Any, profile: Any, stop: str) -> Any:
    return shared("stop-cut", deterministic_body(target, profile, max_tokens=MAX, stop=[stop]),
                  label=f"deterministic, 16 tokens, stop [{stop!r}]")


def _allowed(text: str, stop: str, at: int) -> dict[str, str]:
    return {"excluded": text[:at], "included": text[:at + len(stop)]}


@pytest.mark.requirement("STOP-HONOURED")
def test_stop_honoured(shared, judge, conformance_target, profile):
    text, stop, at = _stop(shared, conformance_target, profile)
    ex = _cut(shared, conformance_target, profile, stop)
    data = ok_json(ex, "request with stop")
    got = content_of(data)
    allowed = _allowed(text, stop, at)
    judge.check(got in allowed.values(), "STOP-HONOURED",
                "the answer is not the stop-less answer cut at the first occurrence of the stop sequence",
                path="$.choices[0].message.content",
                expected=f"{allowed['excluded']!r} or {allowed['included']!r}", received=got, exchange=ex)
    judge.check(finish_of(data) == "stop", "STOP-HONOURED",
                "an answer ended by a stop sequence did not say stop",
                path="$.choices[0].finish_reason", expected="stop", received=finish_of(data), exchange=ex)


def _judge_inclusion(shared: Any, judge: Any, target: Any, profile: Any, requirement: str, mode: str) -> None:
    text, stop, at = _stop(shared, target, profile)
    ex = _cut(shared, target, profile, stop)
    data = ok_json(ex, "request with stop")
    got = content_of(data)
    allowed = _allowed(text, stop, at)
    if got not in allowed.values():
        raise Inconclusive("the stop sequence was not honoured (judged by STOP-HONOURED)")
    judge.check(got == allowed[mode], requirement, f"the returned text has the stop sequence {stop!r} "
                + ("cut off" if mode == "included" else "kept"), path="$.choices[0].message.content",
                expected=allowed[mode], received=got, exchange=ex)


@pytest.mark.requirement("STOP-SEQUENCE-INCLUDED")
def test_stop_sequence_included(shared, judge, conformance_target, profile):
    if profile.stop_sequence != "included":
        pytest.skip("the profile judges STOP-SEQUENCE-EXCLUDED")
    _judge_inclusion(shared, judge, conformance_target, profile, "STOP-SEQUENCE-INCLUDED", "included")


@pytest.mark.requirement("STOP-SEQUENCE-EXCLUDED")
def test_stop_sequence_excluded(shared, judge, conformance_target, profile):
    if profile.stop_sequence != "excluded":
        pytest.skip("the profile judges STOP-SEQUENCE-INCLUDED")
    _judge_inclusion(shared, judge, conformance_target, profile, "STOP-SEQUENCE-EXCLUDED", "excluded")


@pytest.mark.requirement("STOP-STRING-OR-ARRAY")
def test_stop_string_or_array(shared, client, judge, conformance_target, profile):
    text, stop, at = _stop(shared, conformance_target, profile)
    allowed = _allowed(text, stop, at)
    for form, value in (("a single string", stop), ("an array of 4 strings", [*FILLER, stop])):
        ex = client.chat(deterministic_body(conformance_target, profile, max_tokens=MAX, stop=value),
                         label=f"deterministic, stop as {form}")
        if not judge.check(ex.status == 200, "STOP-STRING-OR-ARRAY", f"stop given as {form} was not accepted",
                           path="status", expected=200, received=f"{ex.status} {(ex.body_text or '')[:160]}",
                           exchange=ex):
            continue
        data = obj(ex.json())
        got = content_of(data)
        judge.check(got in allowed.values() and finish_of(data) == "stop", "STOP-STRING-OR-ARRAY",
                    f"stop given as {form} was accepted but not honoured", path="$.choices[0]",
                    expected={"content": f"{allowed['excluded']!r} or {allowed['included']!r}",
                              "finish_reason": "stop"},
                    received={"content": got, "finish_reason": finish_of(data)}, exchange=ex)


@pytest.mark.requirement("STOP-STREAM")
def test_stop_stream(shared, client, judge, conformance_target, profile):
    text, stop, at = _stop(shared, conformance_target, profile)
    allowed = _allowed(text, stop, at)
    plain = content_of(ok_json(_cut(shared, conformance_target, profile, stop), "request with stop"))
    ex = client.chat(deterministic_body(conformance_target, profile, max_tokens=MAX, stop=[stop],
                                        stream=True),
                     label=f"deterministic, 16 tokens, stop [{stop!r}], streamed")
    chunks = ok_stream(ex, "streamed request with stop")
    got = stream_text(chunks)
    # As without streaming: the non-streamed answer when that one honoured the stop, else either cut.
    want = [plain] if plain in allowed.values() else list(allowed.values())
    judge.check(got in want, "STOP-STREAM", "the streamed answer is not cut at the stop sequence",
                path="choices[0].delta.content", expected=" or ".join(repr(w) for w in want), received=got,
                exchange=ex)
    judge.check(stream_finish(chunks) == "stop", "STOP-STREAM",
                "a stream ended by a stop sequence did not say stop",
                path="choices[0].finish_reason", expected="stop", received=stream_finish(chunks), exchange=ex)
