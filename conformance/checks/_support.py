"""Helpers shared by the checks: request builders, preconditions and judgements used by several checks."""

from __future__ import annotations

import time
from typing import Any

from conformance.evidence import Exchange
from conformance.schemas import schema_errors
from conformance.violations import Inconclusive, Judge

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
    "stream_text",
    "stream_finish",
    "judge_schema",
    "error_message",
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
        raise Inconclusive(f"{what}: a valid request was answered HTTP {ex.status}, not 2xx")
    data = ex.json()
    if not isinstance(data, dict):
        raise Inconclusive(f"{what}: the 2xx body is not a JSON object")
    return data


def stream_answered(ex: Exchange, what: str = "stream") -> None:
    """A 2xx answer (or none at all) to a streaming request, else Inconclusive. Unlike ``ok_stream`` it
    accepts a stream that delivered nothing, or never got its headers in time: the stream state machine
    judges that (a stream that never ends with [DONE] is a failure, not a skip)."""
    if ex.status is not None and not 200 <= ex.status < 300:
        raise Inconclusive(f"{what}: a valid streaming request was answered HTTP {ex.status}, not 2xx"
                           + (f" ({ex.transport_error})" if ex.transport_error else ""))


def ok_stream(ex: Exchange, what: str = "stream") -> list[dict[str, Any]]:
    """The parsed chunks of a 2xx stream, or Inconclusive."""
    if ex.status is None or not 200 <= ex.status < 300:
        raise Inconclusive(
            f"{what}: a valid streaming request was answered HTTP {ex.status}, not 2xx"
            + (f" ({ex.transport_error})" if ex.transport_error else "")
        )
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


def now() -> float:
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


def deterministic_logprobs(shared: Any, target: Any, profile: Any) -> Exchange:
    """One deterministic 16-token completion with logprobs and 5 top alternatives, shared by the checks that
    judge it (logprobs shape, greedy consistency) or start from it (penalties, logit-bias baseline)."""
    return shared(
        DETERMINISTIC_LOGPROBS,
        deterministic_body(target, profile, max_tokens=16, logprobs=True, top_logprobs=5),
        label="deterministic, 16 tokens, logprobs with top_logprobs 5",
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
