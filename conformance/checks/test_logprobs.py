"""logprobs: one entry per output token, well-formed values, top alternatives, streamed and absent by default.

Most checks judge one shared deterministic 16-token answer with ``logprobs: true, top_logprobs: 5``
(``deterministic_logprobs``).
"""

from __future__ import annotations

import math
from typing import Any

from conformance.checks._support import (
    NEUTRAL_PENALTIES,
    ask,
    ask_neutral,
    body,
    content_of,
    deterministic_body,
    deterministic_logprobs,
    first_choice,
    judge_error_response,
    logprob_entries,
    not_cut,
    obj,
    ok_json,
    ok_stream,
    reasoning_text,
    room,
    split_think,
    thinking_off,
    usage_of,
)
from conformance.checks.test_core import _basic
from conformance.engine.registry import check
from conformance.violations import Inconclusive, Judge

TOP = 5


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _entries(shared: Any, judge: Any, target: Any, profile: Any, requirement: str,
             capabilities: Any = None) -> tuple[Any, dict, list]:
    ex = deterministic_logprobs(shared, target, profile, capabilities)
    data = ok_json(ex, "request with logprobs")
    entries = logprob_entries(data)
    if requirement == "LOGPROBS-PRESENT":
        judge.require(entries is not None, requirement,
                      "logprobs true but choices[0].logprobs.content is not an array",
                      path="$.choices[0].logprobs", expected="{\"content\": [...]}",
                      received=first_choice(data).get("logprobs"), exchange=ex)
    elif entries is None:
        raise Inconclusive("no logprobs.content to judge (judged by LOGPROBS-PRESENT)")
    if not entries:
        raise Inconclusive("the answer has no tokens, so no logprob entries to judge")
    return ex, data, entries


@check("LOGPROBS-PRESENT")
def test_logprobs_present(shared, judge, conformance_target, profile, capabilities):
    ex, data, entries = _entries(shared, judge, conformance_target, profile, "LOGPROBS-PRESENT",
                                 capabilities)
    ct = usage_of(data)
    if ct is None:
        raise Inconclusive("usage.completion_tokens is missing: the number of output tokens is unknown")
    # completion_tokens counts the reasoning too: a server may give logprobs for the reasoning tokens
    # (vLLM) or only for the content's (spec/DECISIONS.md#reasoning-models)
    separate = reasoning_text(data).strip() != "" and not split_think(content_of(data))[0]
    judge.check(len(entries) == ct or (separate and len(entries) < ct), "LOGPROBS-PRESENT",
                "logprobs.content does not have one entry per output token",
                path="$.choices[0].logprobs.content",
                expected=f"{ct} entries (usage.completion_tokens)"
                + (", or fewer: the content's tokens without the reasoning's" if separate else ""),
                received=len(entries), exchange=ex)


@check("LOGPROBS-VALUES")
def test_logprobs_values(shared, judge, conformance_target, profile, capabilities):
    ex, _, entries = _entries(shared, judge, conformance_target, profile, "LOGPROBS-VALUES",
                              capabilities)
    for i, e in enumerate(entries):
        where = f"$.choices[0].logprobs.content[{i}]"
        if not judge.check(isinstance(e, dict), "LOGPROBS-VALUES", "a logprob entry is not an object",
                           path=where, expected="object", received=e, exchange=ex):
            continue
        judge.check(isinstance(e.get("token"), str), "LOGPROBS-VALUES", "token is not a string",
                    path=where + ".token", expected="string", received=e.get("token"), exchange=ex)
        lp = e.get("logprob")
        judge.check(_number(lp) and lp <= 0, "LOGPROBS-VALUES", "logprob is not a number <= 0",
                    path=where + ".logprob", expected="number <= 0", received=lp, exchange=ex)
        b = e.get("bytes", "absent")
        ok_bytes = b is None or (isinstance(b, list) and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in b))
        judge.check(ok_bytes, "LOGPROBS-VALUES", "bytes is neither an array of byte values nor null",
                    path=where + ".bytes", expected="array of integers 0..255, or null", received=b,
                    exchange=ex)


@check("LOGPROBS-TOKENS-CONCAT")
def test_logprobs_tokens_concatenate(shared, judge, conformance_target, profile, capabilities):
    ex, data, entries = _entries(shared, judge, conformance_target, profile, "LOGPROBS-TOKENS-CONCAT",
                                 capabilities)
    content = content_of(data)
    tokens = [e.get("token") if isinstance(e, dict) else None for e in entries]
    # with separated reasoning the tokens may spell the reasoning, then the content (vLLM)
    rc = reasoning_text(data) if not split_think(content)[0] else ""
    if all(isinstance(t, str) for t in tokens) and "".join(tokens) in (content, rc + content):
        judge.check(True, "LOGPROBS-TOKENS-CONCAT", "")
        return
    # A token that is part of a multi-byte character cannot be a string by itself (it reads as U+FFFD): then
    # the tokens' bytes must spell the content, and each token must be its own bytes decoded.
    by_bytes = all(isinstance(e, dict) and isinstance(e.get("bytes"), list) for e in entries)
    if by_bytes:
        raw = b"".join(bytes(x for x in e["bytes"] if isinstance(x, int) and 0 <= x <= 255) for e in entries)
        own = all(e.get("token") == bytes(e["bytes"]).decode("utf-8", errors="replace") for e in entries)
        if own and raw.decode("utf-8", errors="replace") == content:
            judge.check(True, "LOGPROBS-TOKENS-CONCAT", "")
            return
    judge.check(False, "LOGPROBS-TOKENS-CONCAT", "the logprob tokens do not concatenate to the content",
                path="$.choices[0].logprobs.content[*].token", expected=content,
                received="".join(t if isinstance(t, str) else "?" for t in tokens), exchange=ex)


# the prompt with multi-byte characters (test_streaming's): a model that copies or answers in kind writes
# characters several tokens long, whose tokens carry only part of a character's bytes
BYTES_PROMPT = "Write a short story about a cat named Zoë who loves crème brûlée — in 東京."


def _spells(raw: bytes, text: str) -> bool:
    """Whether the tokens' bytes ``raw`` spell ``text``: exactly, or with an answer cut inside a character
    (max_tokens) read as U+FFFD or dropped by the server."""
    if raw == text.encode("utf-8") or raw.decode("utf-8", errors="replace") == text:
        return True
    for cut in range(1, 4):  # a trailing partial character the server left out of the content
        if len(raw) > cut and raw[:-cut] == text.encode("utf-8") and raw[-cut:][0] >= 0x80:
            return True
    return False


@check("LOGPROBS-BYTES-CONCAT", neighbours=("logprob-bytes-replacement",))
def test_logprobs_bytes_spell_the_content(client, judge, conformance_target, profile, capabilities):
    """Where every logprob entry carries bytes, they spell the content's UTF-8 (OpenAI: "Useful in instances
    where characters are represented by multiple tokens and their byte representations must be combined to
    generate the correct text representation"). Asked on a prompt with multi-byte characters: a token that
    holds part of a character has only its own bytes to give (the nearest wrong neighbour reports the
    bytes of U+FFFD there, from the decoded token string: the tokens still concatenate to the content)."""
    request = deterministic_body(conformance_target, profile, max_tokens=room(capabilities, 24),
                                 logprobs=True, top_logprobs=1,
                                 messages=[{"role": "user", "content": BYTES_PROMPT}],
                                 **thinking_off(capabilities))
    ex = client.chat(request, label="deterministic, multi-byte prompt, logprobs")
    data = ok_json(ex, "request with logprobs on a multi-byte prompt")
    entries = logprob_entries(data)
    if not entries:
        raise Inconclusive("no logprobs.content to judge (judged by LOGPROBS-PRESENT)")
    lists = [e.get("bytes") if isinstance(e, dict) else None for e in entries]
    if not all(isinstance(b, list) and all(isinstance(x, int) and 0 <= x <= 255 for x in b) for b in lists):
        raise Inconclusive("some entries carry no bytes (null is allowed: 'Can be null if there is no bytes "
                           "representation for the token'; LOGPROBS-VALUES judges their type)")
    raw = b"".join(bytes(b) for b in lists)  # type: ignore[arg-type]
    content = content_of(data)
    rc = reasoning_text(data) if not split_think(content)[0] else ""
    judge.check(_spells(raw, content) or (bool(rc) and _spells(raw, rc + content)), "LOGPROBS-BYTES-CONCAT",
                "the logprob entries' bytes do not spell the content's UTF-8",
                path="$.choices[0].logprobs.content[*].bytes", expected=list(content.encode("utf-8"))[:200],
                received=list(raw)[:200], exchange=ex)


def _tops(e: Any) -> Any:
    return e.get("top_logprobs") if isinstance(e, dict) else None


@check("LOGPROBS-TOP-COUNT")
def test_top_logprobs_count(shared, judge, conformance_target, profile, capabilities):
    ex, _, entries = _entries(shared, judge, conformance_target, profile, "LOGPROBS-TOP-COUNT",
                              capabilities)
    for i, e in enumerate(entries):
        tops = _tops(e)
        n = len(tops) if isinstance(tops, list) else None
        judge.check(n == TOP, "LOGPROBS-TOP-COUNT", f"top_logprobs {TOP} did not give {TOP} alternatives",
                    path=f"$.choices[0].logprobs.content[{i}].top_logprobs", expected=f"{TOP} entries",
                    received=n if n is not None else tops, exchange=ex)


@check("LOGPROBS-TOP-AT-MOST")
def test_top_logprobs_at_most(shared, judge, conformance_target, profile):
    ex, _, entries = _entries(shared, judge, conformance_target, profile, "LOGPROBS-TOP-AT-MOST")
    counted = 0
    for i, e in enumerate(entries):
        tops = _tops(e)
        if not isinstance(tops, list):
            continue  # a missing list is LOGPROBS-TOP-COUNT's and LOGPROBS-VALUES' to judge
        counted += 1
        judge.check(len(tops) <= TOP, "LOGPROBS-TOP-AT-MOST", f"top_logprobs {TOP} gave more than {TOP} "
                    "alternatives", path=f"$.choices[0].logprobs.content[{i}].top_logprobs",
                    expected=f"at most {TOP} entries", received=len(tops), exchange=ex)
    if not counted:
        raise Inconclusive("no entry carries a top_logprobs list (judged by LOGPROBS-TOP-COUNT)")


@check("LOGPROBS-TOP-ORDER")
def test_top_logprobs_order(shared, judge, conformance_target, profile, capabilities):
    ex, _, entries = _entries(shared, judge, conformance_target, profile, "LOGPROBS-TOP-ORDER",
                              capabilities)
    judged = False
    for i, e in enumerate(entries):
        tops = _tops(e)
        if not isinstance(tops, list) or not tops:
            continue
        judged = True
        values = [t.get("logprob") if isinstance(t, dict) else None for t in tops]
        where = f"$.choices[0].logprobs.content[{i}].top_logprobs[*].logprob"
        if not judge.check(all(_number(v) and v <= 0 for v in values), "LOGPROBS-TOP-ORDER",
                           "a top_logprobs value is not a number <= 0", path=where, expected="numbers <= 0",
                           received=values, exchange=ex):
            continue
        judge.check(all(a >= b for a, b in zip(values, values[1:], strict=False)), "LOGPROBS-TOP-ORDER",
                    "top_logprobs are not sorted from most to least likely", path=where,
                    expected=sorted(values, reverse=True), received=values, exchange=ex)
    if not judged:
        raise Inconclusive("no entry carries top_logprobs (judged by LOGPROBS-TOP-COUNT)")


def _greedy_answer(client: Any, target: Any, profile: Any, capabilities: Any) -> tuple[Any, dict[str, Any]]:
    """The deterministic 16-token answer with logprobs, asked with the penalties stated neutral (the fields
    the target accepts, :func:`ask_neutral`): (exchange, the neutral fields it carried)."""
    mt = room(capabilities, 16)
    request = deterministic_body(target, profile, max_tokens=mt, logprobs=True, top_logprobs=TOP,
                                 **thinking_off(capabilities))

    def send(b: dict[str, Any]) -> Any:
        said = ", ".join(f"{k} {b[k]:g}" for k in NEUTRAL_PENALTIES[0] if k in b) or "penalties unstated"
        return client.chat(b, label=f"deterministic, {mt} tokens, logprobs ({said})")

    return ask_neutral(send, request)


@check("LOGPROBS-GREEDY-CONSISTENT")
def test_logprobs_greedy_consistent(client, judge, conformance_target, profile, capabilities):
    # Deterministic settings keep only the most likely token, so each chosen token is the first alternative
    # and carries the same logprob. A position where the two best alternatives tie (within 1e-6) is skipped:
    # either may be chosen. The request states the penalties neutral; where the target refused
    # repetition_penalty 1, a chosen token that is not the most likely may be its default penalty's doing.
    ex, neutral = _greedy_answer(client, conformance_target, profile, capabilities)
    data = ok_json(ex, "request with logprobs and the penalties neutral")
    entries = logprob_entries(data)
    if entries is None:
        raise Inconclusive("no logprobs.content to judge (judged by LOGPROBS-PRESENT)")
    if not entries:
        raise Inconclusive("the answer has no tokens, so no logprob entries to judge")
    if "repetition_penalty" not in neutral:
        scratch = Judge(requirements=("LOGPROBS-GREEDY-CONSISTENT",))
        _judge_greedy(scratch, ex, entries)
        if scratch.violations:
            raise Inconclusive("a chosen token is not the most likely alternative, but the target refused "
                               "repetition_penalty 1, so the request could not say 'no penalty': a default "
                               "repeat penalty of the server (llama.cpp: 1.1) would explain it "
                               f"({scratch.violations[0].message} at {scratch.violations[0].path})")
    _judge_greedy(judge, ex, entries)


def _judge_greedy(judge: Any, ex: Any, entries: list[Any]) -> None:
    judged = 0
    for i, e in enumerate(entries):
        tops = _tops(e)
        if not isinstance(e, dict) or not isinstance(tops, list) or not tops or not all(
                isinstance(t, dict) and _number(t.get("logprob")) for t in tops):
            continue
        if not _number(e.get("logprob")):
            continue
        best = max(tops, key=lambda t: t["logprob"])
        ranked = sorted((t["logprob"] for t in tops), reverse=True)
        if len(ranked) > 1 and ranked[0] - ranked[1] < 1e-6:
            continue
        judged += 1
        where = f"$.choices[0].logprobs.content[{i}]"
        judge.check(e.get("token") == best.get("token"), "LOGPROBS-GREEDY-CONSISTENT",
                    "under greedy settings the chosen token is not the most likely alternative",
                    path=where + ".token", expected=best.get("token"), received=e.get("token"), exchange=ex)
        judge.check(abs(e["logprob"] - best["logprob"]) <= 1e-3, "LOGPROBS-GREEDY-CONSISTENT",
                    "the chosen token's logprob differs from its top_logprobs entry", path=where + ".logprob",
                    expected=best["logprob"], received=e["logprob"], exchange=ex)
    if not judged:
        raise Inconclusive("no position with top_logprobs and a clear most likely token")


@check("LOGPROBS-ABSENT-BY-DEFAULT")
def test_logprobs_absent_by_default(shared, judge, conformance_target):
    ex = _basic(shared, conformance_target)
    data = ok_json(ex, "basic completion")
    for i, c in enumerate(data.get("choices") or []):
        lp = c.get("logprobs") if isinstance(c, dict) else None
        judge.check(lp is None, "LOGPROBS-ABSENT-BY-DEFAULT", "logprobs returned without being asked for",
                    path=f"$.choices[{i}].logprobs", expected="null or absent", received=lp, exchange=ex)


@check("LOGPROBS-TOP-REQUIRES-LOGPROBS")
def test_top_logprobs_requires_logprobs(client, judge, conformance_target):
    ex = client.chat(body(conformance_target, max_tokens=2, top_logprobs=3),
                     label="top_logprobs 3 without logprobs")
    judge_error_response(judge, ex, "LOGPROBS-TOP-REQUIRES-LOGPROBS", "top_logprobs without logprobs")


@check("LOGPROBS-STREAM")
def test_logprobs_stream(client, judge, conformance_target, profile, capabilities):
    ex = ask(client, deterministic_body(conformance_target, profile, max_tokens=room(capabilities, 8),
                                        logprobs=True, stream=True, **thinking_off(capabilities)),
             label="streamed, logprobs")
    chunks = ok_stream(ex, "streamed request with logprobs")
    not_cut(ex, "streamed request with logprobs")
    seen = 0
    for k, c in enumerate(chunks):
        for ch in c.get("choices") or []:
            if not isinstance(ch, dict) or not obj(ch.get("delta")).get("content"):
                continue
            seen += 1
            lp = ch.get("logprobs")
            entries = lp.get("content") if isinstance(lp, dict) else None
            judge.check(isinstance(entries, list) and len(entries) > 0 and all(
                isinstance(e, dict) and isinstance(e.get("token"), str) and _number(e.get("logprob"))
                for e in entries), "LOGPROBS-STREAM", "a content chunk carries no logprobs for its tokens",
                path=f"chunks[{k}].choices[index={ch.get('index')}].logprobs.content",
                expected="non-empty array of {token, logprob, ...}", received=lp, exchange=ex)
    if not seen:
        raise Inconclusive("the stream carried no content, so no logprobs to judge")
