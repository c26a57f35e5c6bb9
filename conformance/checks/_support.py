"""Helpers shared by the checks: request builders, preconditions and judgements used by several checks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conformance.evidence import Exchange
from conformance.har import RECORDED_AT_HEADER
from conformance.schemas import schema_errors
from conformance.violations import Inconclusive, Judge, ask_again_on_server_error

__all__ = [
    "USER",
    "body",
    "ok_json",
    "ok_stream",
    "obj",
    "first_choice",
    "stream_answered",
    "require_completion",
    "is_4xx",
    "content_of",
    "content_may_be_null",
    "refusal_of",
    "stream_text",
    "stream_finish",
    "judge_schema",
    "error_message",
    "NEAR_TIE_MARGIN",
    "COMPARE_LOGPROBS",
    "REASKS",
    "TokenLogprob",
    "Answer",
    "Comparison",
    "answer_of",
    "stream_answer",
    "compare_answers",
    "off_greedy",
    "Settled",
    "settle",
    "with_logprobs",
    "NEUTRAL_PENALTIES",
    "ask_neutral",
    "EQUAL",
    "NEAR_TIE",
    "DIVERGED",
    "UNKNOWN",
    "EMPTY",
]

USER = "Write a short story about a cat."


def body(target: Any, *, messages: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """A minimal valid request for the target's model, with extra fields."""
    out: dict[str, Any] = {"model": target.model, "messages": messages or [{"role": "user", "content": USER}]}
    out.update(fields)
    return out


def ok_json(ex: Exchange, what: str = "request") -> dict[str, Any]:
    """The JSON body of a 2xx answer, or Inconclusive (another check judges why the request failed)."""
    if ex.transport_error:
        raise Inconclusive(f"{what}: exchange did not complete: {ex.transport_error}")
    if ex.status is None or not 200 <= ex.status < 300:
        ask_again_on_server_error(ex, f"{what}: a valid request was answered HTTP {ex.status}, not 2xx")
        raise Inconclusive(f"{what}: a valid request was answered HTTP {ex.status}, not 2xx")
    data = ex.json()
    if not isinstance(data, dict):
        raise Inconclusive(f"{what}: the 2xx body is not a JSON object")
    return data


def stream_answered(ex: Exchange, what: str = "stream") -> None:
    """A 2xx answer (or none at all) to a streaming request, else Inconclusive. Unlike ``ok_stream`` it
    accepts a stream that delivered nothing, or never got its headers: the stream state machine judges that
    (a stream that never ends with [DONE] is a failure, not a skip; one that never got its status line is
    judged only on its end, see ``_stream._judge_no_status_line``)."""
    if ex.status is not None and not 200 <= ex.status < 300:
        said = (f"{what}: a valid streaming request was answered HTTP {ex.status}, not 2xx"
                + (f" ({ex.transport_error})" if ex.transport_error else ""))
        ask_again_on_server_error(ex, said)
        raise Inconclusive(said)


def ok_stream(ex: Exchange, what: str = "stream") -> list[dict[str, Any]]:
    """The parsed chunks of a 2xx stream, or Inconclusive."""
    if ex.status is None or not 200 <= ex.status < 300:
        said = (f"{what}: a valid streaming request was answered HTTP {ex.status}, not 2xx"
                + (f" ({ex.transport_error})" if ex.transport_error else ""))
        ask_again_on_server_error(ex, said)
        raise Inconclusive(said)
    chunks = [c for c in ex.chunks if isinstance(c, dict)]
    if not chunks:
        raise Inconclusive(
            f"{what}: no JSON chunk arrived" + (f" ({ex.transport_error})" if ex.transport_error else "")
        )
    return chunks


def is_4xx(ex: Exchange) -> bool:
    return ex.status is not None and 400 <= ex.status < 500


def error_message(ex: Exchange) -> str:
    data = ex.json()
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", ""))
    return (ex.body_text or "")[:200]


def content_of(data: dict[str, Any], index: int = 0) -> str:
    try:
        c = data["choices"][index]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return c if isinstance(c, str) else ""


def refusal_of(message: Any) -> str | None:
    """The refusal a message carries (OpenAI structured outputs: content null, message.refusal a string), or
    None. An empty string is no refusal."""
    r = obj(message).get("refusal")
    return r if isinstance(r, str) and r != "" else None


FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")


def judge_answer_fields(judge: Judge, ex: Exchange, data: dict[str, Any], note: str = "") -> None:
    """The rules every completion keeps, judged alike by the basic completion's check and by the run-wide
    invariants: CORE-OBJECT, CORE-ID-PRESENT and, per choice, CORE-MESSAGE-ROLE, CORE-MESSAGE-CONTENT and
    CORE-FINISH-REASON (only those the judge wants). ``note`` is added to each message."""
    w = judge.wants
    if w("CORE-OBJECT"):
        judge.check(data.get("object") == "chat.completion", "CORE-OBJECT", "wrong object" + note,
                    path="$.object", expected="chat.completion", received=data.get("object"), exchange=ex)
    if w("CORE-ID-PRESENT"):
        rid = data.get("id")
        judge.check(isinstance(rid, str) and rid != "", "CORE-ID-PRESENT", "id missing or empty" + note,
                    path="$.id", expected="non-empty string", received=rid, exchange=ex)
    choices = data.get("choices")
    for i, c in enumerate(choices if isinstance(choices, list) else []):
        msg = obj(obj(c).get("message"))
        if w("CORE-MESSAGE-ROLE"):
            judge.check(
                msg.get("role") == "assistant",
                "CORE-MESSAGE-ROLE",
                "message role is not assistant" + note,
                path=f"$.choices[{i}].message.role",
                expected="assistant",
                received=msg.get("role"),
                exchange=ex,
            )
        content = msg.get("content")
        if w("CORE-MESSAGE-CONTENT"):
            # null is also what a reasoning parser returns when max_tokens ends the answer inside the
            # reasoning (vLLM): no answer text was produced (spec/DECISIONS.md#reasoning-models)
            judge.check(
                isinstance(content, str)
                or (content is None and (content_may_be_null(msg) or cut_in_reasoning(data, i))),
                "CORE-MESSAGE-CONTENT",
                "content is neither a string nor null with tool_calls, a refusal or an answer cut inside the "
                "reasoning" + note,
                path=f"$.choices[{i}].message.content",
                expected="string (null only with tool_calls, a refusal string or an answer cut inside the "
                "reasoning)",
                received=content,
                exchange=ex,
            )
        fr = obj(c).get("finish_reason")
        if w("CORE-FINISH-REASON"):
            judge.check(
                fr in FINISH_REASONS,
                "CORE-FINISH-REASON",
                "finish_reason is not a documented value" + note,
                path=f"$.choices[{i}].finish_reason",
                expected="|".join(FINISH_REASONS),
                received=fr,
                exchange=ex,
            )


def content_may_be_null(message: Any) -> bool:
    """Whether a message's content may be null: it carries tool_calls, or a refusal string (OpenAI's
    ChatCompletionMessage: content Optional[str]; refusal "The refusal message generated by the model")."""
    return bool(obj(message).get("tool_calls")) or refusal_of(message) is not None


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else {} (target data is never trusted to have a shape)."""
    return value if isinstance(value, dict) else {}


def first_choice(data: Any) -> dict[str, Any]:
    """The first choice of a completion or chunk when it is an object, else {}."""
    choices = obj(data).get("choices")
    return obj(choices[0]) if isinstance(choices, list) and choices else {}


def stream_text(chunks: list[dict[str, Any]], index: int = 0, field: str = "content") -> str:
    out = []
    for c in chunks:
        for ch in c.get("choices") or []:
            if isinstance(ch, dict) and ch.get("index") == index:
                piece = obj(ch.get("delta")).get(field)
                if isinstance(piece, str):
                    out.append(piece)
    return "".join(out)


def stream_finish(chunks: list[dict[str, Any]], index: int = 0) -> str | None:
    for c in chunks:
        for ch in c.get("choices") or []:
            if isinstance(ch, dict) and ch.get("index") == index and ch.get("finish_reason"):
                return str(ch["finish_reason"])
    return None


def stream_usage(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    for c in reversed(chunks):
        if isinstance(c.get("usage"), dict):
            return c["usage"]
    return None


def judge_schema(
    judge: Judge, requirement: str, schema: str, instance: Any, ex: Exchange, where: str = "$"
) -> bool:
    errors = schema_errors(schema, instance)
    for path, msg in errors[:5]:
        judge.check(
            False,
            requirement,
            f"does not validate against {schema}",
            path=where + path.removeprefix("$"),
            expected=f"schema {schema}",
            received=msg,
            exchange=ex,
        )
    if not errors:
        judge.check(True, requirement, "")
    return not errors


def now(ex: Exchange | None = None) -> float:
    """The time an answer is judged against: now; for an answer replayed from a recording (``chat-conformance
    replay``), the time it was recorded."""
    if ex is not None:
        for k, v in ex.response_headers.items():
            if k.lower() == RECORDED_AT_HEADER.lower():
                try:
                    return float(v)
                except ValueError:
                    break
    return time.time()


ERROR_SHAPE_REQS = (
    "ERROR-NO-5XX",
    "ERROR-NOT-200",
    "ERROR-SHAPE",
    "ERROR-SHAPE-FIELDS",
    "ERROR-CONTENT-TYPE",
)


def judge_error_response(judge: Judge, ex: Exchange, requirement: str, what: str) -> bool:
    """An invalid request ``what`` must be refused with a 4xx in the error shape. Judges ``requirement``
    (the refusal itself) and, where the check is marked with them, ERROR-NO-5XX, ERROR-NOT-200 and the
    error-shape requirements. Returns whether the request was refused with a 4xx."""
    w = judge.wants
    ex.refusal_expected = True  # a 5xx here is ERROR-NO-5XX's finding, not the target's health
    if ex.status is None:
        judge.check(
            False,
            requirement,
            f"{what}: no answer",
            expected="a 4xx error",
            received=ex.transport_error,
            exchange=ex,
        )
        return False
    data = ex.json()
    has_error = isinstance(data, dict) and "error" in data
    if w("ERROR-NO-5XX"):
        judge.check(
            ex.status < 500,
            "ERROR-NO-5XX",
            f"{what} caused a server error",
            path="status",
            expected="4xx",
            received=ex.status,
            exchange=ex,
        )
    if w("ERROR-NOT-200"):
        judge.check(
            not (200 <= ex.status < 300 and has_error),
            "ERROR-NOT-200",
            f"{what}: an error body was sent with a 2xx status",
            path="status",
            expected="4xx",
            received=ex.status,
            exchange=ex,
        )
    refused = is_4xx(ex)
    if not (200 <= ex.status < 300 and has_error and w("ERROR-NOT-200")):
        judge.check(
            refused,
            requirement,
            f"{what} was not rejected with a 4xx error",
            path="status",
            expected="4xx",
            received=f"{ex.status} {(ex.body_text or '')[:160]}",
            exchange=ex,
        )
    if refused:
        judge_error_shape(judge, ex)
    return refused


def judge_error_shape(judge: Judge, ex: Exchange) -> None:
    w = judge.wants
    data = ex.json()
    err = data.get("error") if isinstance(data, dict) else None
    if w("ERROR-SHAPE"):
        judge.check(
            isinstance(err, dict) and isinstance(err.get("message"), str),
            "ERROR-SHAPE",
            'the error body is not {"error": {"message": ...}}',
            path="$.error.message",
            expected="string",
            received=(ex.body_text or "")[:200],
            exchange=ex,
        )
    if w("ERROR-SHAPE-FIELDS") and isinstance(err, dict):
        missing = [k for k in ("type", "param", "code") if k not in err]
        judge.check(
            not missing and isinstance(err.get("type"), str),
            "ERROR-SHAPE-FIELDS",
            "the error object lacks type/param/code",
            path="$.error",
            expected="type, param, code",
            received=sorted(err),
            exchange=ex,
        )
    if w("ERROR-CONTENT-TYPE"):
        judge.check(
            ex.content_type == "application/json",
            "ERROR-CONTENT-TYPE",
            "error not sent as JSON",
            path="headers.content-type",
            expected="application/json",
            received=ex.content_type,
            exchange=ex,
        )


# ---- deterministic requests and logprobs (sampling, stop, penalties, logit-bias, logprobs checks) ----------

DETERMINISTIC_LOGPROBS = "deterministic-logprobs-16"  # shared key of deterministic_logprobs()


def deterministic_body(target: Any, profile: Any, **fields: Any) -> dict[str, Any]:
    """A request with the profile's deterministic sampling parameters (spec/DECISIONS.md#determinism)."""
    return body(target, **{**profile.deterministic, **fields})


def deterministic_logprobs(shared: Any, target: Any, profile: Any, capabilities: Any = None) -> Exchange:
    """One deterministic 16-token completion with logprobs and 5 top alternatives, shared by the checks that
    judge it (logprobs shape, greedy consistency) or start from it (penalties, logit-bias baseline). Given the
    run's ``capabilities``, the budget leaves room for a reasoning segment where the model reasons unasked
    (:func:`room`, :func:`thinking_off`)."""
    fields = thinking_off(capabilities)
    mt = room(capabilities, 16)
    key = DETERMINISTIC_LOGPROBS + ("" if mt == 16 and not fields else f"-room-{mt}-{sorted(fields)}")
    return shared(
        key,
        deterministic_body(target, profile, max_tokens=mt, logprobs=True, top_logprobs=5, **fields),
        label=f"deterministic, {mt} tokens, logprobs with top_logprobs 5"
        + (", thinking off" if fields else ""),
    )


def logprob_entries(data: dict[str, Any], index: int = 0) -> list[Any] | None:
    """choices[index].logprobs.content, or None when it is not a list."""
    try:
        lp = data["choices"][index].get("logprobs")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    entries = lp.get("content") if isinstance(lp, dict) else None
    return entries if isinstance(entries, list) else None


def usage_of(data: dict[str, Any], key: str = "completion_tokens") -> int | None:
    usage = data.get("usage")
    v = usage.get(key) if isinstance(usage, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def finish_of(data: dict[str, Any], index: int = 0) -> Any:
    try:
        return data["choices"][index].get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def require_completion(judge: Judge, ex: Exchange, requirement: str, what: str) -> dict[str, Any]:
    """The completion answering a request the target promises to serve (a capability it supports, a value in
    range): anything but a 2xx with a non-empty choices array breaks ``requirement`` and stops the check."""
    judge.require(ex.status is not None and 200 <= ex.status < 300, requirement, f"{what} was not answered",
                  path="status", expected="2xx",
                  received=f"{ex.status} {(ex.body_text or ex.transport_error or '')[:160]}", exchange=ex)
    data = ex.json()
    judge.require(isinstance(data, dict) and isinstance(data.get("choices"), list) and bool(data["choices"]),
                  requirement, f"{what}: the answer is not a completion", path="$.choices",
                  expected="non-empty choices", received=(ex.body_text or "")[:200], exchange=ex)
    return data  # type: ignore[no-any-return]


# ---- comparing two answers that should be equal (spec/DECISIONS.md#near-ties) -----------------------------
#
# GPU numerics are not batch-invariant: two identical greedy or seeded requests can pick different tokens
# where two candidates nearly tie. Checks that compare two answers compare them token by token with logprobs:
# equal answers agree; a first divergence whose two candidate tokens are within NEAR_TIE_MARGIN (nats) of each
# other is a near-tie (re-asked, then Inconclusive); a divergence at a confident position is a real
# difference.

NEAR_TIE_MARGIN = 0.5
COMPARE_LOGPROBS: dict[str, Any] = {"logprobs": True, "top_logprobs": 5}
REASKS = 3  # extra requests a near-tie may cost one comparison: the second side, the first, the second again

EQUAL, NEAR_TIE, DIVERGED, UNKNOWN, EMPTY = "equal", "near-tie", "diverged", "unknown", "empty"


@dataclass(frozen=True)
class TokenLogprob:
    """One logprob entry as the target sent it: the chosen token, its logprob, the listed alternatives."""

    token: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()
    raw: bytes | None = None  # the entry's bytes (UTF-8 of the token, or the one byte of a partial token)

    def alternative(self, token: str) -> float | None:
        return next((lp for t, lp in self.top if t == token), None)


@dataclass(frozen=True)
class Answer:
    """What two answers are compared on: reasoning and content together, with the content's logprobs."""

    content: str = ""
    reasoning: str = ""
    tokens: tuple[TokenLogprob, ...] | None = None  # None: the target sent no usable logprobs
    finish: str | None = None

    @property
    def text(self) -> str:
        return self.reasoning + self.content

    @property
    def empty(self) -> bool:
        return not self.content and not self.reasoning


@dataclass(frozen=True)
class Comparison:
    """The verdict on two answers: ``kind`` is equal, near-tie, diverged (a confident position), unknown
    (they differ and no logprobs tell how) or empty (both answers empty: nothing to compare)."""

    kind: str
    offset: int | None = None  # first differing character of reasoning + content
    token: int | None = None  # index of the logprob entry where they diverge
    detail: str = ""

    @property
    def settled(self) -> bool:
        return self.kind in (EQUAL, DIVERGED, EMPTY)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _token_logprobs(entries: Any) -> tuple[TokenLogprob, ...] | None:
    if not isinstance(entries, list) or not entries:
        return None
    out = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("token"), str):
            return None
        top = tuple((t["token"], float(t["logprob"])) for t in e.get("top_logprobs") or []
                    if isinstance(t, dict) and isinstance(t.get("token"), str) and _number(t.get("logprob")))
        lp: Any = e.get("logprob")
        b = e.get("bytes")
        raw = bytes(b) if isinstance(b, list) and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in b) else None
        out.append(TokenLogprob(e["token"], float(lp) if _number(lp) else None, top, raw))
    return tuple(out)


def _bytes_text(answer: Answer) -> str | None:
    """What the answer's tokens spell by their bytes (UTF-8, a broken sequence read as U+FFFD); None when
    an entry carries no bytes."""
    if not answer.tokens or any(t.raw is None for t in answer.tokens):
        return None
    return b"".join(t.raw or b"" for t in answer.tokens).decode("utf-8", errors="replace")


def _reasoning_of(holder: dict[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        if isinstance(holder.get(key), str):
            return str(holder[key])
    return ""


def answer_of(data: Any, index: int = 0) -> Answer:
    """The Answer of choices[index] of a completion (never raises: a missing part is empty)."""
    choices = obj(data).get("choices")
    ch = obj(choices[index]) if isinstance(choices, list) and len(choices) > index else {}
    msg = obj(ch.get("message"))
    content = msg.get("content")
    finish = ch.get("finish_reason")
    return Answer(content if isinstance(content, str) else "", _reasoning_of(msg),
                  _token_logprobs(obj(ch.get("logprobs")).get("content")),
                  finish if isinstance(finish, str) else None)


def stream_answer(chunks: list[dict[str, Any]], index: int = 0) -> Answer:
    """The Answer of choice ``index`` reassembled from a stream's chunks."""
    reasoning = stream_text(chunks, index, "reasoning_content") or stream_text(chunks, index, "reasoning")
    entries: list[Any] = []
    for c in chunks:
        for ch in c.get("choices") or []:
            if isinstance(ch, dict) and ch.get("index") == index:
                got = obj(ch.get("logprobs")).get("content")
                if isinstance(got, list):
                    entries.extend(got)
    return Answer(stream_text(chunks, index), reasoning, _token_logprobs(entries),
                  stream_finish(chunks, index))


def _lists_chosen(tokens: tuple[TokenLogprob, ...]) -> bool:
    """Whether this target lists the chosen token among its own top_logprobs (most positions do)."""
    listed = [t for t in tokens if t.top]
    return bool(listed) and sum(t.alternative(t.token) is not None for t in listed) * 2 >= len(listed)


def _side(chosen: TokenLogprob, other: str, consistent: bool, margin: float) -> tuple[str, str]:
    """How far apart one answer's distribution puts its chosen token and the other answer's token:
    (near-tie | diverged | unknown, why)."""
    lp = chosen.logprob
    if lp is None:
        return UNKNOWN, f"no logprob for {chosen.token!r}"
    values = [v for _, v in chosen.top]
    if consistent and values and chosen.alternative(chosen.token) is None and lp > min(values) + 1e-3:
        return DIVERGED, (f"the chosen token {chosen.token!r} ({lp:.3f}) is missing from its own "
                          "top_logprobs though its logprob ranks it among them")
    alt = chosen.alternative(other)
    if alt is not None:
        gap = abs(lp - alt)
        return (NEAR_TIE if gap <= margin else DIVERGED), f"{chosen.token!r} {lp:.3f} vs {other!r} {alt:.3f}"
    if values and lp - min(values) > margin:  # the other token is not listed: it is below every listed one
        return DIVERGED, f"{chosen.token!r} {lp:.3f} vs {other!r} below {min(values):.3f} (not listed)"
    return UNKNOWN, f"{other!r} is not listed next to {chosen.token!r}"


def _judge_tokens(ea: TokenLogprob, eb: TokenLogprob, cons_a: bool, cons_b: bool,
                  margin: float) -> tuple[str, str]:
    sides = [_side(ea, eb.token, cons_a, margin), _side(eb, ea.token, cons_b, margin)]
    why = "; ".join(w for _, w in sides)
    kinds = [k for k, _ in sides]
    if DIVERGED in kinds:
        return DIVERGED, why
    return (NEAR_TIE if NEAR_TIE in kinds else UNKNOWN), why


def _could_end(token: str) -> bool:
    """An alternative that may be the end of the text (an empty, blank or special-looking token)."""
    return not token.strip() or (token.startswith("<") and token.endswith(">"))


def _judge_end(longer: TokenLogprob, margin: float) -> tuple[str, str]:
    """The shorter answer ended by itself where the longer went on with ``longer.token``: was the end of the
    text a near-tie there? Only an end-like alternative can be the end; one that is not listed is below every
    listed alternative."""
    lp = longer.logprob
    values = [v for t, v in longer.top if t != longer.token]
    if lp is None or not values:
        return UNKNOWN, f"no alternatives listed next to {longer.token!r}"
    ends = [v for t, v in longer.top if t != longer.token and _could_end(t)]
    bound = max(ends) if ends else min(values)
    if lp - bound > margin:
        return DIVERGED, f"{longer.token!r} {lp:.3f}, the end of the text at most {bound:.3f}"
    return NEAR_TIE, f"{longer.token!r} {lp:.3f}, the end of the text possibly {bound:.3f}"


def _covered(answer: Answer) -> int | None:
    """Where in reasoning + content the logprob tokens start (0 or len(reasoning)), None when they do not
    spell the text."""
    if answer.tokens is None:
        return None
    for spelled in ("".join(t.token for t in answer.tokens), _bytes_text(answer)):
        if spelled == answer.content:
            return len(answer.reasoning)
        if spelled == answer.text:
            return 0
    return None


def _garbled(a: Answer, b: Answer, d: int, where: str, names: tuple[str, str]) -> Comparison | None:
    """Two answers whose tokens are the same bytes but whose texts differ: not a pick at a near-tie, a
    character missing or garbled in a text that is not what its own tokens spell (compare bytes, not only
    tokens). None when the bytes do not tell that."""
    xa, xb = _bytes_text(a), _bytes_text(b)
    if xa is None or xa != xb:
        return None
    wrong = [name for name, ans in zip(names, (a, b), strict=True) if xa not in (ans.content, ans.text)]
    if len(wrong) != 1:  # neither text is what the bytes spell: the bytes themselves say nothing sure
        return None
    ta, tb = a.text, b.text
    ch = (ta[d:d + 1] or tb[d:d + 1])
    what = f"{ch!r} (UTF-8 {ch.encode().hex(' ')})" if ch else "the end"
    return Comparison(DIVERGED, d, None, f"a character is missing or garbled in the {wrong[0]} "
                      f"text: the {where} differs at character {d} ({ta[d:d + 20]!r} vs {tb[d:d + 20]!r}, "
                      f"at {what}) though both answers are the same tokens with the same UTF-8 bytes, so the "
                      "text is not what its tokens spell (not a near-tie)")


def compare_answers(a: Answer, b: Answer, margin: float = NEAR_TIE_MARGIN,
                    names: tuple[str, str] = ("first", "second")) -> Comparison:
    """Compare two answers to the same request token by token (a pure function).

    Both empty: ``empty`` (never a pass). The same reasoning and content: ``equal``. Otherwise the first
    divergence is judged with the logprobs of both answers: the two candidate tokens within ``margin`` of each
    other in the distributions that show them is a ``near-tie``; further apart in either one (or a chosen
    token missing from its own top_logprobs although its logprob ranks it there) is ``diverged``; without
    logprobs that say, ``unknown``. When one text is a prefix of the other and the shorter ended by itself,
    the end of the text is the candidate: a near-tie when an end-like alternative (or an unlisted one) is
    within ``margin`` of the token the longer answer went on with. Two answers made of the same tokens (the
    same bytes) whose texts differ are ``diverged``: a character missing or garbled in one of them (``names``
    say which), never a near-tie."""
    if a.empty and b.empty:
        return Comparison(EMPTY, detail="both answers are empty (no content, no reasoning): nothing to "
                          "compare")
    ta, tb = a.text, b.text
    if a.reasoning == b.reasoning and a.content == b.content:
        return Comparison(EQUAL)
    n = min(len(ta), len(tb))
    d = next((i for i in range(n) if ta[i] != tb[i]), n)
    where = "reasoning" if d < max(len(a.reasoning), len(b.reasoning)) and a.reasoning != b.reasoning \
        else "content"
    garbled = _garbled(a, b, d, where, names)
    if garbled is not None:
        return garbled
    base_a, base_b = _covered(a), _covered(b)
    if a.tokens is None or b.tokens is None or base_a is None or base_b is None or base_a != base_b \
            or d < base_a:
        return Comparison(UNKNOWN, d, None, f"the {where} differs at character {d}: {ta[d:d + 20]!r} vs "
                          f"{tb[d:d + 20]!r}, and no logprobs cover it")
    toks_a, toks_b = a.tokens, b.tokens
    j = next((i for i in range(min(len(toks_a), len(toks_b))) if toks_a[i].token != toks_b[i].token), None)
    if d == n:  # one text is a prefix of the other
        short, long_ = (a, b) if len(ta) < len(tb) else (b, a)
        k = len(short.tokens or ())
        if short.finish == "length" or j is not None or k >= len(long_.tokens or ()):
            return Comparison(DIVERGED, d, j, f"one answer is a prefix of the other ({len(ta)} vs {len(tb)} "
                              f"characters), the shorter ending with {short.finish!r}")
        kind, why = _judge_end((long_.tokens or ())[k], margin)
        return Comparison(kind, d, k, f"one answer ended at character {d} (finish {short.finish!r}) where "
                          f"the other went on: {why}")
    if j is None:
        return Comparison(UNKNOWN, d, None, f"the texts differ at character {d} but the logprob tokens agree")
    kind, why = _judge_tokens(toks_a[j], toks_b[j], _lists_chosen(toks_a), _lists_chosen(toks_b), margin)
    return Comparison(kind, d, j, f"first divergence at token {j} (character {d}): {why}")


def off_greedy(answer: Answer, margin: float = NEAR_TIE_MARGIN) -> str | None:
    """Where an answer that should hold only the most likely tokens chose one more than ``margin`` below the
    best alternative its own logprobs list (None when nowhere, or without logprobs)."""
    for i, t in enumerate(answer.tokens or ()):
        if t.logprob is None or not t.top:
            continue
        best_tok, best = max(t.top, key=lambda x: x[1])
        if best - t.logprob > margin:
            return (f"token {i} {t.token!r} ({t.logprob:.3f}) is {best - t.logprob:.2f} below the most "
                    f"likely alternative {best_tok!r} ({best:.3f})")
    return None


@dataclass
class Settled:
    """The outcome of :func:`settle`: the comparison judged and the indices of the answers it compared."""

    comparison: Comparison
    a: int
    b: int
    answers_a: list[Answer]
    answers_b: list[Answer]

    @property
    def reason(self) -> str:
        c = self.comparison
        asked = len(self.answers_a) + len(self.answers_b)
        if c.kind == NEAR_TIE:
            return (f"after {asked} requests the answers still diverge only at near-ties (candidates within "
                    f"{NEAR_TIE_MARGIN} nats): {c.detail}")
        if c.kind == UNKNOWN:
            return f"after {asked} requests the answers still differ and no logprobs tell how: {c.detail}"
        return c.detail


def settle(first_a: Answer, first_b: Answer, ask_a: Callable[[], Answer], ask_b: Callable[[], Answer], *,
           reasks: int = REASKS,
           compare: Callable[[Answer, Answer], Comparison] = compare_answers) -> Settled:
    """Compare two answers that should be equal; while every pair diverges only at a near-tie (or without
    logprobs that tell), ask again, alternately the second side and the first, up to ``reasks`` times.

    The first pair that is equal, empty or diverged at a confident position settles it (an equal pair wins
    over a diverged one among the pairs a new answer makes). Without logprobs (every comparison ``unknown``)
    a difference that both sides reproduce exactly (each side asked twice or more, every answer of a side
    the same) is ``diverged``: a near-tie flip lands at random, not every time."""
    answers_a, answers_b = [first_a], [first_b]
    pending = Settled(compare(first_a, first_b), 0, 0, answers_a, answers_b)
    if pending.comparison.settled:
        return pending
    near_tie = pending.comparison.kind == NEAR_TIE
    for r in range(reasks):
        side_b = r % 2 == 0
        new = ask_b() if side_b else ask_a()
        (answers_b if side_b else answers_a).append(new)
        others = answers_a if side_b else answers_b
        found = []
        for i, other in enumerate(others):
            c = compare(other, new) if side_b else compare(new, other)
            near_tie = near_tie or c.kind == NEAR_TIE
            found.append(Settled(c, i if side_b else len(answers_a) - 1,
                                 len(answers_b) - 1 if side_b else i, answers_a, answers_b))
        for kind in (EQUAL, EMPTY, DIVERGED):
            hit = next((f for f in found if f.comparison.kind == kind), None)
            if hit is not None:
                return hit
    if (not near_tie and len(answers_a) > 1 and len(answers_b) > 1 and len({x.text for x in answers_a}) == 1
            and len({x.text for x in answers_b}) == 1):
        c = pending.comparison
        return Settled(Comparison(DIVERGED, c.offset, c.token,
                                  f"both sides reproduce their own answer ({len(answers_a)} and "
                                  f"{len(answers_b)} requests), without logprobs to show a near-tie: "
                                  f"{c.detail}"),
                       0, 0, answers_a, answers_b)
    return pending


def with_logprobs(send: Callable[[dict[str, Any]], Exchange], request: dict[str, Any]) -> Exchange:
    """``request`` sent with COMPARE_LOGPROBS, so that a divergence can be judged; sent again without them
    when the target refuses them with a 4xx (the comparison then falls back to re-asking)."""
    ex = send({**request, **COMPARE_LOGPROBS})
    if is_4xx(ex):
        ex = send(request)
    return ex


# ---- GET /models: the published context length (core and context checks) ---------------------------------

# The penalties stated neutral: a server's own default penalty (llama.cpp: repeat_penalty 1.1) changes the
# pick after the probabilities it reports, so a check that reads "the most likely token" off the logprobs
# states "no penalty" (spec/DECISIONS.md#health-misses). Fields a target refuses are dropped, in this order;
# repeat_penalty is llama.cpp's (and llama-cpp-python's, default 1.1) name for repetition_penalty.
NEUTRAL_PENALTIES: tuple[dict[str, Any], ...] = (
    {"repetition_penalty": 1.0, "repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0},
    {"repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0},
    {"frequency_penalty": 0.0, "presence_penalty": 0.0},
)


def ask_neutral(send: Callable[[dict[str, Any]], Exchange], request: dict[str, Any],
                sets: tuple[dict[str, Any], ...] = NEUTRAL_PENALTIES) -> tuple[Exchange, dict[str, Any]]:
    """``request`` sent with the first set of neutral penalties the target does not refuse with a 4xx (then
    as it is): (exchange, the neutral fields it carried). Only a request that carried repetition_penalty 1
    rules out a server's default repeat penalty."""
    for neutral in sets:
        ex = send({**request, **neutral})
        if not is_4xx(ex):
            return ex, neutral
    return send(request), {}


# Where servers publish a model's context length in its GET /models entry
# (spec/DECISIONS.md#protocol-details): context_size (the seed's providers), max_model_len (vLLM's ModelCard),
# meta.n_ctx (llama.cpp's server: the context of one slot; meta.n_ctx_train is the model's training length,
# not what the server accepts).
CONTEXT_FIELDS = (("context_size",), ("max_model_len",), ("meta", "n_ctx"))


def published_context_length(entry: Any) -> tuple[int | None, str]:
    """The context length a GET /models entry publishes and the field it came from ("" when none)."""
    for path in CONTEXT_FIELDS:
        value: Any = entry
        for key in path:
            value = obj(value).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, ".".join(path)
    return None, ""

# ---- reasoning models (spec/DECISIONS.md#reasoning-models) ------------------------------------------------

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Tokens added to a check's budget when discovery saw the model reason unasked (the reasoning counts toward
# max_tokens), and the budgets of the re-asks when an answer is still cut inside its reasoning.
REASONING_ROOM = 64
REASK_ROOM = (256, 1024)


def message_of(data: Any, index: int = 0) -> dict[str, Any]:
    choices = obj(data).get("choices")
    choice = obj(choices[index]) if isinstance(choices, list) and len(choices) > index else {}
    return obj(choice.get("message"))


def split_think(text: str) -> tuple[str, str]:
    """(inline reasoning, answer) of a content string: the reasoning is what precedes the last </think>
    (template-forced thinking may open without <think>), or an unclosed <think> segment; else ("", text)."""
    if THINK_CLOSE in text:
        head, _, tail = text.rpartition(THINK_CLOSE)
        return head.replace(THINK_OPEN, "", 1), tail
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN):], ""
    return "", text


def reasoning_text(data: Any, index: int = 0) -> str:
    """The reasoning of a completion: message.reasoning_content (or message.reasoning) and any inline
    <think> segment of its content."""
    msg = message_of(data, index)
    parts = [v for k in ("reasoning_content", "reasoning") if isinstance(v := msg.get(k), str)]
    content = msg.get("content")
    if isinstance(content, str):
        parts.append(split_think(content)[0])
    return "".join(parts)


def answer_text(data: Any, index: int = 0) -> str:
    """The answer of a completion: its content without any inline <think> segment."""
    return split_think(content_of(obj(data), index))[1]


def cut_in_reasoning(data: Any, index: int = 0) -> bool:
    """Did max_tokens end this choice inside its reasoning (finish_reason length, reasoning present, no
    answer text and no tool call)?"""
    msg = message_of(data, index)
    return (finish_of(obj(data), index) == "length" and reasoning_text(data, index).strip() != ""
            and answer_text(data, index).strip() == "" and not msg.get("tool_calls"))


def stream_cut_in_reasoning(chunks: list[dict[str, Any]], index: int = 0) -> bool:
    """The streamed counterpart of :func:`cut_in_reasoning`."""
    content = stream_text(chunks, index)
    reasoning = (stream_text(chunks, index, "reasoning_content") + stream_text(chunks, index, "reasoning")
                 + split_think(content)[0])
    calls = any(obj(ch.get("delta")).get("tool_calls") for c in chunks for ch in c.get("choices") or []
                if isinstance(ch, dict))
    return (stream_finish(chunks, index) == "length" and reasoning.strip() != ""
            and split_think(content)[1].strip() == "" and not calls)


def exchange_cut_in_reasoning(ex: Exchange) -> bool:
    """Was a 2xx answer (streamed or not) cut inside its reasoning?"""
    if ex.status is None or not 200 <= ex.status < 300:
        return False
    if ex.stream:
        return stream_cut_in_reasoning([c for c in ex.chunks if isinstance(c, dict)])
    return cut_in_reasoning(ex.json())


def reasons_unasked(capabilities: Any) -> bool:
    """Did discovery see the model reason on a request that asked for no reasoning?"""
    from conformance.discovery import reasons_unasked as seen

    return seen(obj(capabilities))


def thinking_off(capabilities: Any) -> dict[str, Any]:
    """``{"enable_thinking": False}`` when the model reasons unasked and the switch was shown (or declared)
    to work; else {} (the field is sent only where it does something)."""
    from conformance.discovery import switch_works

    caps = obj(capabilities)
    return {"enable_thinking": False} if reasons_unasked(caps) and switch_works(caps) else {}


def room(capabilities: Any, max_tokens: int) -> int:
    """A budget for ``max_tokens`` tokens of answer: with room for a reasoning segment when the model reasons
    unasked and cannot be told not to."""
    if reasons_unasked(capabilities) and not thinking_off(capabilities):
        return max_tokens + REASONING_ROOM
    return max_tokens


def reasoning_aware(target: Any, capabilities: Any, max_tokens: int, **fields: Any) -> dict[str, Any]:
    """:func:`body` with a budget that leaves room for reasoning, and thinking switched off where it can."""
    mt = room(capabilities, max_tokens)
    return body(target, **{**thinking_off(capabilities), **fields, "max_tokens": mt})


def ask(client: Any, request: dict[str, Any], *, label: str, shared: Any = None, key: str = "") -> Exchange:
    """Send ``request`` (through ``shared`` under ``key`` when given, else ``client``); while its answer is
    cut inside the reasoning, re-ask with a larger max_tokens (:data:`REASK_ROOM` more). The last exchange is
    returned: the caller says Inconclusive if it is still cut (:func:`not_cut`)."""

    def send(req: dict[str, Any], lab: str, suffix: str) -> Exchange:
        if shared is not None:
            return shared(key + suffix, req, label=lab)  # type: ignore[no-any-return]
        return client.chat(req, label=lab)  # type: ignore[no-any-return]

    ex = send(request, label, "")
    base = request.get("max_tokens")
    for extra in REASK_ROOM:
        if not isinstance(base, int) or not exchange_cut_in_reasoning(ex):
            break
        mt = base + extra
        why = f"re-asked with max_tokens {mt}: the answer was cut inside the reasoning"
        ex = send({**request, "max_tokens": mt}, f"{label} ({why})", f"@{mt}")
    return ex


def not_cut(ex: Exchange, what: str) -> None:
    """Inconclusive when a 2xx answer was cut inside its reasoning: nothing of the answer to judge."""
    if exchange_cut_in_reasoning(ex):
        raise Inconclusive(f"{what}: max_tokens ended the answer inside its reasoning (finish_reason length, "
                           "no answer text), even after re-asking with a larger budget")
