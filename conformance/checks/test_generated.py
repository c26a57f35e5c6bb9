"""Property-based conformance from spec/openapi.yaml (issue 6): schemathesis generates the request bodies,
hypothesis runs them (conformance/checks/_generated.py says what comes from schemathesis and what is
hand-written, and why).

* Valid phase: requests generated inside every documented range (schemathesis's positive mode over the
  contract narrowed to the target; optional fields in combination, streaming and not) must be answered 2xx
  with a body that validates against ChatCompletion, or a stream whose every chunk validates against
  ChatCompletionChunk; never 5xx.
* Invalid phase, one check per request field: the field alone is broken (schemathesis's negative mode over
  that one field, classified as outside its closed range, a wrong JSON type, outside its enum or item
  count, or removed when required) and must be rejected with a 4xx in the error shape, never accepted,
  never 5xx.

Cost: the valid phase sends at most 4 + N requests (N = --conformance-examples, default 15: 4 explicit
examples, then the distinct requests among N generated); each field of the invalid phase at most
k + ceil(N / 10) (k explicit examples, one per mutation of the field). Every request is drawn before any
is sent, so the same hypothesis seed (--conformance-hypothesis-seed, default 0) sends the same requests
whatever the target answers; the seed is in every exchange label and every finding, and each finding
shows the smallest request that showed it, its exchange being the evidence. schemathesis is imported on
the first generated check, not when conformance.checks is imported.
"""

from __future__ import annotations

from typing import Any

from conformance.checks._generated import (
    CAPABILITY_FIELDS,
    VALID_LABEL,
    draw_ahead,
    drawn_property,
    invalid_label,
    mutation_fields,
    mutation_requirements,
    mutations,
    run_property,
)
from conformance.checks._support import ERROR_SHAPE_REQS, judge_error_response, judge_schema
from conformance.engine.registry import case, check, prepare
from conformance.evidence import Exchange
from conformance.records import SkipKind
from conformance.violations import Judge, Skipped


def _options(options: Any) -> tuple[int, int]:
    examples = options.examples
    seed = options.hypothesis_seed
    return max(1, int(25 if examples is None else examples)), int(0 if seed is None else seed)


def _send(client: Any):
    def send(req: dict[str, Any], label: str) -> Exchange:
        return client.chat(req, label=label)

    send.many = client.chat_many  # type: ignore[attr-defined]  # drawn requests go together
    return send


def _draws(options: Any) -> dict[Any, Any]:
    """This run's drawn requests (a property's draws depend on its label, seed, examples and the run's
    target, profile and capabilities, which one run never changes)."""
    return options.scratch.setdefault("generated-draws", {})


def _judge_valid(scratch: Judge, ex: Exchange, req: dict[str, Any], what: str) -> None:
    if ex.status in (429, 503):
        return  # the checks' client raises Unanswered on these; any other client: still nothing to judge
    if ex.status is None:
        scratch.check(
            False,
            "GEN-VALID-ACCEPTED",
            "a valid generated request got no answer",
            expected="2xx",
            received=ex.transport_error,
            exchange=ex,
        )
        return
    shown = f"{ex.status} {(ex.body_text or '')[:200]}"
    if not scratch.check(
        ex.status < 500,
        "ERROR-NO-5XX",
        "a valid generated request caused a server error",
        path="status",
        expected="2xx",
        received=shown,
        exchange=ex,
    ):
        return
    if not scratch.check(
        200 <= ex.status < 300,
        "GEN-VALID-ACCEPTED",
        "a valid generated request was refused",
        path="status",
        expected="2xx",
        received=shown,
        exchange=ex,
    ):
        return
    if req.get("stream") is True:
        end = ex.done_index if ex.done_index is not None else len(ex.events)
        for i, ev in enumerate(ex.events[:end]):
            if isinstance(ev.json, dict) and not judge_schema(
                scratch, "STREAM-CHUNK-SCHEMA", "ChatCompletionChunk", ev.json, ex, where=f"events[{i}]"
            ):
                break
        return
    data = ex.json()
    if not isinstance(data, dict):
        scratch.check(
            False,
            "CORE-SCHEMA-VALID",
            "the 2xx body of a valid generated request is not a JSON object",
            expected="schema ChatCompletion",
            received=(ex.body_text or "")[:200],
            exchange=ex,
        )
        return
    judge_schema(scratch, "CORE-SCHEMA-VALID", "ChatCompletion", data, ex)


@prepare
def draw_generated_ahead(
    checks: list[Any], options: Any, conformance_target: Any, profile: Any, capabilities: dict[str, Any]
) -> Any:
    """Called by the engine once before the checks run (with this module's selected checks): the generated
    requests of the run are drawn ahead, in a helper process (``_generated.draw_ahead``), while the other
    checks send theirs. The helper's cleanup when it did, else None."""
    fields = [
        c.params["field_name"]
        for c in checks
        if c.name == "test_generated_invalid_request_rejected" and _supported_field(
            c.params["field_name"], capabilities
        )
    ]
    if not fields and not any(c.name == "test_generated_valid_requests_accepted" for c in checks):
        return None
    examples, seed = _options(options)
    model = conformance_target.model
    return draw_ahead(_draws(options), model, profile, capabilities, fields, examples, seed)


def _supported_field(name: str, capabilities: dict[str, Any]) -> bool:
    caps = CAPABILITY_FIELDS.get(name)
    return not caps or any((capabilities.get(c) or {}).get("supported", True) for c in caps)


@check("GEN-VALID-ACCEPTED", "CORE-SCHEMA-VALID", "STREAM-CHUNK-SCHEMA", "ERROR-NO-5XX")
def test_generated_valid_requests_accepted(
    client, judge, conformance_target, profile, capabilities, options
):
    examples, seed = _options(options)
    model = conformance_target.model
    run_property(
        judge,
        _send(client),
        drawn_property(_draws(options), model, profile, capabilities, None, examples, seed),
        _judge_valid,
        seed=seed,
        label=VALID_LABEL,
    )


def _judge_invalid(requirement_of: dict[str, str]):
    def evaluate(scratch: Judge, ex: Exchange, req: dict[str, Any], what: str) -> None:
        if ex.status in (429, 503):  # a "not now" (see _judge_valid)
            return
        judge_error_response(scratch, ex, requirement_of[what], f"generated invalid request ({what})")

    return evaluate


def _field_params() -> list[Any]:
    return [
        case(name, id=name,
             requirements=("GEN-INVALID-REJECTED", *mutation_requirements(name), *ERROR_SHAPE_REQS))
        for name in mutation_fields()
    ]


@check(argnames="field_name", cases=_field_params())
def test_generated_invalid_request_rejected(
    client, judge, conformance_target, profile, capabilities, options, field_name
):
    if not _supported_field(field_name, capabilities):
        caps = CAPABILITY_FIELDS[field_name]
        raise Skipped(f"unsupported: {field_name} needs one of {', '.join(caps)}", SkipKind.UNSUPPORTED)
    examples, seed = _options(options)
    model = conformance_target.model
    muts = mutations(model, profile.any_token_id)[field_name]
    requirement_of = {m.what: m.requirement for m in muts}
    run_property(
        judge,
        _send(client),
        drawn_property(_draws(options), model, profile, capabilities, field_name, examples, seed),
        _judge_invalid(requirement_of),
        seed=seed,
        label=invalid_label(field_name),
    )
