"""logit_bias: +100 on one token id forces it, -100 keeps it out.

The token id is the profile's ``logit_bias_token_id`` when it names one; else the suite finds an ordinary word
token itself (``bias_token``: a few one-token probes with +100 on candidate ids, the text read back from the
answer; spec/DECISIONS.md#logit-bias-token), once per run, and both checks use it.
"""

from __future__ import annotations

from typing import Any

from conformance.checks._support import (
    THINK_CLOSE,
    answer_text,
    ask,
    body,
    content_of,
    deterministic_body,
    deterministic_logprobs,
    exchange_cut_in_reasoning,
    finish_of,
    logprob_entries,
    not_cut,
    obj,
    ok_json,
    reasoning_text,
    room,
    split_think,
    thinking_off,
    usage_of,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive

FORCE_MAX = 8
# The +100 request samples at a high temperature on purpose: a greedy answer often repeats one token by itself
# (" cat cat cat ..."), which would hide a bias that is ignored. With the bias, the token is ahead by 100/1.5
# in scaled logits and nothing else can be drawn; without it, 8 draws at temperature 1.5 are all the same
# token only by a long chance.
HOT = 1.5
FORCE_SEED = 4321
MAX = 16
# Penalties spread a deterministic answer over many tokens: a second baseline for the ban, when the plain
# deterministic answer does not hold the token.
SPREAD = {"presence_penalty": 1.9, "frequency_penalty": 1.9}
# The ids probed for an ordinary word token when the profile names none (spec/DECISIONS.md#logit-bias-token),
# in order: 100 (" the" of the reference vocabulary, but a byte token in byte-level BPE and SentencePiece
# vocabularies), then " the" of common vocabularies: 279 (Llama-3, Qwen2, cl100k), 262 (GPT-2), 278 (Llama-2,
# Mistral), then 700 (a merge in any vocabulary of more than 512 tokens).
CANDIDATES = (100, 279, 262, 278, 700)
PROBE_KEY = "logit-bias-probe-"


def word_token(text: Any) -> bool:
    """An ordinary word token's text: printable, at least two characters (a lone character is a byte or
    character fallback token), a letter in it, no U+FFFD (a partial UTF-8 byte), not whitespace only, not
    markup (``<0x41>``, ``<|im_end|>``, ``[PAD]``: special or byte tokens shown by name)."""
    if not isinstance(text, str) or len(text) < 2 or "\ufffd" in text or not text.isprintable():
        return False
    core = text.strip()
    if not core or not any(c.isalpha() for c in core):
        return False
    return (core[0], core[-1]) not in (("<", ">"), ("[", "]"))


def _probe_text(ex: Any) -> tuple[str | None, str]:
    """The text of the token a probe's answer repeats (its answer part: an inline reasoning segment is the
    template's), or None, and what the answer showed."""
    if ex.status is None or not 200 <= ex.status < 300:
        return None, f"HTTP {ex.status}" if ex.status is not None else "no answer"
    data = ex.json()
    if not isinstance(data, dict):
        return None, "the 2xx body is not a JSON object"
    if exchange_cut_in_reasoning(ex):
        return None, "cut inside the reasoning"
    tokens = _tokens(data, answer=True)
    if tokens:
        return tokens[0], ascii(tokens[0])  # ascii: U+FFFD and control characters shown as escapes
    content, ct = answer_text(data), usage_of(data)
    if not content:
        return None, f"empty answer (finish_reason {finish_of(data)!r}): an end or special token"
    unit = content[:len(content) // ct] if ct and len(content) % ct == 0 else ""
    if unit and ct and not reasoning_text(data) and content == unit * ct:
        return unit, ascii(unit)
    return None, f"{ascii(content)}: neither logprobs nor usage tell the token apart"


def bias_token(shared: Any, target: Any, profile: Any, capabilities: Any) -> int:
    """The token id the logit-bias checks put their bias on: the profile's ``logit_bias_token_id``, else the
    first of :data:`CANDIDATES` whose probe (one token, deterministic parameters, logit_bias +100, logprobs;
    with room for a reasoning segment where the model reasons unasked, as :func:`_force`) answers an ordinary
    word token (:func:`word_token`). The probes go through ``shared``: sent once per run, every check that
    asks replays the same answers and so keeps the same id; each check's evidence holds them. Inconclusive,
    naming the fix, when no candidate gives one."""
    if profile.logit_bias_token_id is not None:
        return int(profile.logit_bias_token_id)
    seen = []
    for tid in CANDIDATES:
        mt = room(capabilities, 1)
        req = deterministic_body(target, profile, max_tokens=mt, logprobs=True, logit_bias={str(tid): 100},
                                 **thinking_off(capabilities))
        label = (f"logit-bias token probe: deterministic, {mt} token{'s' if mt > 1 else ''}, "
                 f"logit_bias {{{tid}: 100}}, logprobs")
        ex = ask(None, req, shared=shared, key=PROBE_KEY + str(tid), label=label)
        text, shown = _probe_text(ex)
        if word_token(text):
            return tid
        seen.append(f"{tid}: {shown}")
    raise Inconclusive(f"no ordinary word token among the ids probed with logit_bias +100 "
                       f"({'; '.join(seen)}): set logit_bias_token_id in a profile (--profile) to the id "
                       "of a word token of the target's vocabulary (README, 'The logit-bias token')")


def _force(shared: Any, client: Any, target: Any, capabilities: Any, token_id: int) -> Any:
    """The +100 answer on ``token_id``; with room for a reasoning segment where the model reasons unasked,
    re-asked when it was cut inside the reasoning (spec/DECISIONS.md#reasoning-models)."""
    tid = str(token_id)
    req = body(target, temperature=HOT, seed=FORCE_SEED, max_tokens=room(capabilities, FORCE_MAX),
               logprobs=True, logit_bias={tid: 100}, **thinking_off(capabilities))
    ex = ask(client, req, shared=shared, key="logit-bias-force",
             label=f"temperature {HOT}, logit_bias {{{tid}: 100}}, logprobs")
    not_cut(ex, "request with logit_bias +100")
    return ex


def _tokens(data: dict[str, Any], *, answer: bool = False) -> list[str] | None:
    """The logprob tokens; with ``answer``, only those after an inline reasoning segment (template-forced
    <think>...</think> tokens are the template's, not the sampler's)."""
    entries = logprob_entries(data)
    if entries and all(isinstance(e, dict) and isinstance(e.get("token"), str) for e in entries):
        tokens = [e["token"] for e in entries]
        if answer and split_think(content_of(data))[0]:
            ends = [i for i, t in enumerate(tokens) if THINK_CLOSE in t]
            tokens = tokens[ends[-1] + 1:] if ends else []
        return tokens
    return None


def _forced_token(data: dict[str, Any], tid: int) -> str:
    """The text of the forced token, read from a +100 answer, or Inconclusive."""
    content = answer_text(data)
    if not content:
        raise Inconclusive(f"with logit_bias +100 on token {tid} the answer is empty (finish_reason "
                           f"{finish_of(data)!r}): the token looks like an end or special token; set "
                           "logit_bias_token_id in a profile to an ordinary token of the target's vocabulary")
    tokens = _tokens(data, answer=True)
    if tokens:
        return tokens[0]
    ct = usage_of(data)
    if ct and len(content) % ct == 0 and not reasoning_text(data):
        return content[:len(content) // ct]
    raise Inconclusive("neither logprobs nor usage tell the forced token apart")


@check("LOGIT-BIAS-FORCE")
def test_logit_bias_forces_token(shared, client, judge, conformance_target, profile, capabilities):
    tid = bias_token(shared, conformance_target, profile, capabilities)
    ex = _force(shared, client, conformance_target, capabilities, tid)
    data = ok_json(ex, "request with logit_bias +100")
    unit = _forced_token(data, tid)
    content, ct, fr = answer_text(data), usage_of(data), finish_of(data)
    sent = obj(ex.request_json).get("max_tokens", FORCE_MAX)
    tokens = _tokens(data, answer=True)
    if tokens is not None:
        others = [(i, t) for i, t in enumerate(tokens) if t != unit]
        judge.check(not others, "LOGIT-BIAS-FORCE", f"with logit_bias +100 on token {tid} another token was "
                    "generated", path=f"$.choices[0].logprobs.content[{others[0][0] if others else 0}].token",
                    expected=unit, received=others[0][1] if others else "", exchange=ex)
    elif reasoning_text(data):
        raise Inconclusive("without logprobs the answer's tokens cannot be told from the reasoning's")
    else:
        n = ct or 0
        judge.check(n > 0 and content == unit * n, "LOGIT-BIAS-FORCE",
                    f"with logit_bias +100 on token {tid} the answer is not one token repeated",
                    path="$.choices[0].message.content", expected=f"{unit!r} x {n}", received=content,
                    exchange=ex)
    # the forced token is never an end of text, so generation runs to max_tokens
    judge.check(ct == sent and fr == "length", "LOGIT-BIAS-FORCE",
                f"with logit_bias +100 on token {tid} generation did not run to max_tokens",
                path="$.choices[0]", expected={"completion_tokens": sent, "finish_reason": "length"},
                received={"completion_tokens": ct, "finish_reason": fr}, exchange=ex)


@check("LOGIT-BIAS-BAN")
def test_logit_bias_bans_token(shared, client, judge, conformance_target, profile, capabilities):
    # The ban only shows when the token would otherwise be generated: find a deterministic answer that holds
    # it (the plain one, else one spread by penalties), then send the same request with -100 on the token.
    tid = bias_token(shared, conformance_target, profile, capabilities)
    forced = ok_json(_force(shared, client, conformance_target, capabilities, tid),
                     "request with logit_bias +100")
    banned = _forced_token(forced, tid)
    if len(set(_tokens(forced, answer=True) or [banned])) != 1:
        raise Inconclusive(f"the answer with logit_bias +100 is not one token repeated, so the text of token "
                           f"{tid} is unknown (judged by LOGIT-BIAS-FORCE)")
    if not banned or "\ufffd" in banned:
        # a partial UTF-8 byte token has no text of its own: another partial byte would look the same
        raise Inconclusive(f"token {tid} has no distinct text ({banned!r}): set logit_bias_token_id in a "
                           "profile to an ordinary word token")
    plain = ok_json(deterministic_logprobs(shared, conformance_target, profile, capabilities),
                    "deterministic request")
    mt = room(capabilities, MAX)
    quiet = thinking_off(capabilities)
    extra: dict[str, Any] = {}
    tokens = _tokens(plain)
    if tokens is None:
        raise Inconclusive("the deterministic answer carries no logprob tokens to look for the token in")
    # Where numerics are not batch-invariant a deterministic answer may take another branch at a near-tie
    # (spec/DECISIONS.md#near-ties): an answer without the token is asked once more before giving up.
    tries = [(dict(SPREAD), "penalties 1.9"), ({}, "asked again"),
             (dict(SPREAD), "penalties 1.9, asked again")]
    while banned not in tokens:
        if not tries:
            raise Inconclusive(f"token {tid} ({banned!r}) appears in no deterministic answer, so banning it "
                               "shows nothing")
        extra, what = tries.pop(0)
        ex = client.chat(deterministic_body(conformance_target, profile, max_tokens=mt, logprobs=True,
                                            **extra, **quiet),
                         label=f"deterministic, {mt} tokens, {what}, logprobs")
        tokens = _tokens(ok_json(ex, f"deterministic request ({what})")) or []
    ex = client.chat(deterministic_body(conformance_target, profile, max_tokens=mt, logprobs=True,
                                        logit_bias={str(tid): -100}, **extra, **quiet),
                     label=f"deterministic, {mt} tokens, logit_bias {{{tid}: -100}}, logprobs")
    data = ok_json(ex, "request with logit_bias -100")
    got = _tokens(data)
    if got is None:
        raise Inconclusive("the answer with logit_bias -100 carries no logprob tokens")
    at = next((i for i, t in enumerate(got) if t == banned), None)
    judge.check(at is None, "LOGIT-BIAS-BAN",
                f"token {tid} ({banned!r}) was generated despite logit_bias -100",
                path=f"$.choices[0].logprobs.content[{at}].token", expected=f"no {banned!r}", received=banned,
                exchange=ex)
