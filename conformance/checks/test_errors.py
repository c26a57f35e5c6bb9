"""Validation and errors: invalid requests are refused with a 4xx in the OpenAI error shape."""

from __future__ import annotations

from typing import Any

from conformance.checks._stream import error_event
from conformance.checks._support import ERROR_SHAPE_REQS, USER, body, is_4xx, judge_error_response
from conformance.engine.registry import case as registry_case
from conformance.engine.registry import check
from conformance.records import SkipKind
from conformance.violations import Inconclusive, Skipped

MSG = [{"role": "user", "content": USER}]


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


@check("ERROR-MALFORMED-JSON", *ERROR_SHAPE_REQS)
def test_malformed_json(client, judge):
    # Any 4xx: OpenAI answers 400, FastAPI/pydantic servers 422 (spec/DECISIONS.md#relevel-13)
    ex = client.post_raw("/chat/completions", b'{"model": "x", "messages": [', label="malformed JSON body")
    judge_error_response(judge, ex, "ERROR-MALFORMED-JSON", "a malformed JSON body")


# (case id, requirement, what, request builder)
INVALID: list[tuple[str, str, str, Any]] = [
    (
        "missing-messages",
        "ERROR-MISSING-MESSAGES",
        "a request without messages",
        lambda t: _without(body(t, max_tokens=2), "messages"),
    ),
    (
        "empty-messages",
        "ERROR-EMPTY-MESSAGES",
        "an empty messages array",
        lambda t: body(t, max_tokens=2) | {"messages": []},
    ),
    (
        "missing-model",
        "ERROR-MISSING-MODEL",
        "a request without model",
        lambda t: _without(body(t, max_tokens=2), "model"),
    ),
    (
        "unknown-model",
        "ERROR-UNKNOWN-MODEL",
        "an unknown model",
        lambda t: body(t, max_tokens=2) | {"model": "no-such-model-chat-conformance"},
    ),
    ("max-tokens-string", "ERROR-WRONG-TYPE", "max_tokens as a string", lambda t: body(t, max_tokens="ten")),
    # top_k counts tokens (the seed: "the k most likely next tokens"; spec/openapi.yaml: integer): a
    # fraction is the wrong type, not a value to round (spec/DECISIONS.md#neighbours)
    ("top-k-fraction", "ERROR-WRONG-TYPE", "top_k 3.5 (a fraction for an integer field)",
     lambda t: body(t, max_tokens=2, top_k=3.5)),
    (
        "messages-object",
        "ERROR-WRONG-TYPE",
        "messages as an object",
        lambda t: body(t, max_tokens=2) | {"messages": {"role": "user", "content": USER}},
    ),
    (
        "invalid-role",
        "ERROR-INVALID-ROLE",
        "a message with role 'wizard'",
        lambda t: body(t, max_tokens=2, messages=[{"role": "wizard", "content": USER}]),
    ),
    ("max-tokens-zero", "MAXTOK-REJECT-NONPOSITIVE", "max_tokens 0", lambda t: body(t, max_tokens=0)),
    ("max-tokens-negative", "MAXTOK-REJECT-NONPOSITIVE", "max_tokens -1", lambda t: body(t, max_tokens=-1)),
    (
        "stream-invalid",
        "ERROR-STREAM-BEFORE-EVENTS",
        "an invalid streaming request (max_tokens as a string)",
        lambda t: body(t, max_tokens="ten", stream=True),
    ),
]


# the fault modes each case was built to tell from a conforming server (spec/DECISIONS.md#neighbours)
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "top-k-fraction": ("top-k-fraction-accepted",),
    "max-tokens-string": ("wrong-type-accepted",),
    "messages-object": ("wrong-type-accepted",),
}


@check(
    argnames="case, requirement, what, build",
    cases=[registry_case(*row, id=row[0], requirements=(row[1], *ERROR_SHAPE_REQS),
                         neighbours=NEIGHBOURS.get(row[0], ())) for row in INVALID],
)
def test_invalid_request_refused(client, judge, conformance_target, case, requirement, what, build):
    ex = client.chat(build(conformance_target), label=what)
    refused = judge_error_response(judge, ex, requirement, what)
    if case == "stream-invalid" and refused:
        judge.check(
            ex.content_type == "application/json" and not ex.events,
            "ERROR-STREAM-BEFORE-EVENTS",
            "the refusal was sent as an event stream",
            path="headers.content-type",
            expected="application/json",
            received=ex.content_type,
            exchange=ex,
        )



# Invalid streamed requests whose invalidity a server finds only after parsing (a range, not a type): one
# that checks them once generation is set up answers 200 and sends the error inside the stream (vLLM 0.32).
# The value is the seed's own range, "Required range: 0 <= x <= 20" for top_logprobs
# (spec/DECISIONS.md#stream-refusal-late).
# (case id, what, request builder, the optional capability of the field, the requirement judging the value,
#  the nearest wrong neighbours)
LATE_INVALID: list[tuple[str, str, Any, str, str, tuple[str, ...]]] = [
    (
        "top-logprobs-21-stream",
        "top_logprobs 21 (logprobs true) on a stream: outside the seed's range 0..20",
        lambda t: body(t, max_tokens=2, logprobs=True, top_logprobs=21, stream=True),
        "logprobs",
        "RANGE-TOP-LOGPROBS-REJECT",
        ("stream-range-error-in-band",),
    ),
]


@check(
    "ERROR-STREAM-BEFORE-EVENTS",
    argnames="what, build, capability, range_req",
    cases=[registry_case(what, build, cap, rng, id=cid, neighbours=near)
           for cid, what, build, cap, rng, near in LATE_INVALID],
)
def test_stream_refused_before_events(client, judge, conformance_target, capabilities, what, build,
                                      capability, range_req):
    """Judges only how a refusal is sent (spec/DECISIONS.md#stream-refusal-late): a JSON 4xx passes; an error
    object inside an event stream fails, whatever the status; an answer (the value accepted) is
    ``range_req``'s finding, and any other status (a 5xx: ERROR-NO-5XX's) decides nothing here."""
    info = capabilities.get(capability) or {}
    if not info.get("supported", True):
        # the field belongs to a capability the target does not offer: it may ignore the field or refuse it
        # whole, and the field's range promises nothing of this target
        raise Skipped(f"unsupported: {capability}: {info.get('reason', 'declared unsupported')}",
                      SkipKind.UNSUPPORTED)
    ex = client.chat(build(conformance_target), label=what)
    ex.refusal_expected = True  # a 5xx here is a finding of the error requirements, not the target's health
    ctype = ex.content_type or "no content type"
    errors = [(i, ev) for i, ev in enumerate(ex.events)
              if ev.event == "error" or (isinstance(ev.json, dict) and error_event(ev.json))]
    if errors:
        i, ev = errors[0]
        judge.check(
            False,
            "ERROR-STREAM-BEFORE-EVENTS",
            f"{what}: refused inside an event stream (HTTP {ex.status}, {ctype}, an error object at "
            f"events[{i}] after {i} other event(s)), not with a JSON 4xx before it",
            path=f"events[{i}]",
            expected="a JSON 4xx error before any event",
            received=f"HTTP {ex.status}: data: {ev.data[:300]}",
            exchange=ex,
        )
        return
    if is_4xx(ex):
        judge.check(
            ex.content_type == "application/json" and not ex.events,
            "ERROR-STREAM-BEFORE-EVENTS",
            f"{what}: the refusal was sent as an event stream",
            path="headers.content-type",
            expected="application/json",
            received=ex.content_type,
            exchange=ex,
        )
        return
    if ex.status is not None and 200 <= ex.status < 300:
        raise Inconclusive(f"{what}: answered HTTP {ex.status} without an error: the value was accepted "
                           f"({range_req} judges that), so there was no refusal to send")
    raise Inconclusive(f"{what}: answered HTTP {ex.status} ({ctype}), neither a 4xx nor an error inside a "
                       "stream: a 5xx is ERROR-NO-5XX's finding, not this one's")
