"""Documented parameter ranges: inside accepted, outside rejected with a 4xx, exclusive bounds reported.

One pytest case per probe value, built from the tables below; the values are the ones each requirement's
statement in spec/requirements.yaml names. See spec/DECISIONS.md#ranges (and #n-range for n = 1).
"""

from __future__ import annotations

from typing import Any

from conformance.checks._support import ERROR_SHAPE_REQS, body, judge_error_response
from conformance.engine.registry import case, check

MAX_TOKENS = 2
STOPS = ["\n\n\n", "###", "<END>", "STOP!", "@@@"]  # stop=k sends the first k of these

# (requirement, parameter, values)
ACCEPT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("RANGE-TEMPERATURE-ACCEPT", "temperature", (0.7, 1.5)),
    ("RANGE-TOP-P-ACCEPT", "top_p", (0.5, 1.0)),
    ("RANGE-TOP-K-ACCEPT", "top_k", (2, 40)),
    ("RANGE-MIN-P-ACCEPT", "min_p", (0.0, 0.5, 1.0)),
    ("RANGE-N-ACCEPT", "n", (1, 2)),  # n = 1 is the documented default (DECISIONS.md#n-range)
    ("RANGE-FREQUENCY-PENALTY-ACCEPT", "frequency_penalty", (-1.0, 0.5)),
    ("RANGE-PRESENCE-PENALTY-ACCEPT", "presence_penalty", (-1.0, 0.5)),
    ("RANGE-REPETITION-PENALTY-ACCEPT", "repetition_penalty", (0.5, 1.2)),
    ("RANGE-TOP-LOGPROBS-ACCEPT", "top_logprobs", (0, 5, 20)),
    ("RANGE-LOGIT-BIAS-ACCEPT", "logit_bias", (-100, 50, 100)),
    ("RANGE-STOP-ACCEPT", "stop", (1, 4)),  # number of sequences
]

REJECT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("RANGE-TEMPERATURE-REJECT", "temperature", (-0.5, 2.5)),
    ("RANGE-TOP-P-REJECT", "top_p", (-0.1, 1.5)),
    ("RANGE-TOP-K-REJECT", "top_k", (0, 200)),
    ("RANGE-MIN-P-REJECT", "min_p", (-0.1, 1.5)),
    ("RANGE-N-REJECT", "n", (0, 129)),
    ("RANGE-FREQUENCY-PENALTY-REJECT", "frequency_penalty", (-2.5, 2.5)),
    ("RANGE-PRESENCE-PENALTY-REJECT", "presence_penalty", (-2.5, 2.5)),
    ("RANGE-REPETITION-PENALTY-REJECT", "repetition_penalty", (-0.5, 2.5)),
    ("RANGE-TOP-LOGPROBS-REJECT", "top_logprobs", (-1, 21)),
    ("RANGE-LOGIT-BIAS-REJECT", "logit_bias", (-150, 150)),
    ("RANGE-STOP-REJECT", "stop", (5,)),
]

# Values exactly on an exclusive bound of the seed's range: MAY under seed, MUST under openai where the
# catalog's profile_levels say so. The check judges "accepted"; the results layer rates the verdict.
BOUNDARY: list[tuple[str, str, tuple[Any, ...]]] = [
    ("RANGE-TEMPERATURE-BOUNDARY", "temperature", (0.0, 2.0)),
    ("RANGE-TOP-P-BOUNDARY", "top_p", (0.0,)),
    ("RANGE-TOP-K-BOUNDARY", "top_k", (1, 128)),
    ("RANGE-N-BOUNDARY", "n", (128,)),
    ("RANGE-FREQUENCY-PENALTY-BOUNDARY", "frequency_penalty", (-2.0, 2.0)),
    ("RANGE-PRESENCE-PENALTY-BOUNDARY", "presence_penalty", (-2.0, 2.0)),
    ("RANGE-REPETITION-PENALTY-BOUNDARY", "repetition_penalty", (0.0, 2.0)),
]


def _case_id(param: str, value: Any) -> str:
    return f"stop={value}-sequences" if param == "stop" else f"{param}={value}"


def _params(rows: list[tuple[str, str, tuple[Any, ...]]], *extra_marks: str) -> list[Any]:
    return [case(rid, param, value, id=_case_id(param, value), requirements=(rid, *extra_marks))
            for rid, param, values in rows for value in values]


def _fields(param: str, value: Any, profile: Any) -> dict[str, Any]:
    """The request fields that carry ``value`` for ``param`` (with what the parameter depends on)."""
    if param == "top_logprobs":
        return {"logprobs": True, "top_logprobs": value}
    if param == "logit_bias":
        return {"logit_bias": {str(profile.any_token_id): value}}
    if param == "stop":
        return {"stop": STOPS[:value]}
    return {param: value}


def _what(param: str, value: Any, profile: Any) -> str:
    if param == "stop":
        return f"stop with {value} sequence{'s' if value != 1 else ''}"
    if param == "logit_bias":
        return f"logit_bias {{\"{profile.any_token_id}\": {value}}}"
    return f"{param} {value}"


def _judge_accepted(judge: Any, ex: Any, requirement: str, what: str) -> None:
    if ex.status is None:
        judge.fail(requirement, f"{what}: no answer", expected="a 2xx completion",
                   received=ex.transport_error, exchange=ex)
        return
    data = ex.json()
    ok = 200 <= ex.status < 300 and isinstance(data, dict) and isinstance(data.get("choices"), list)
    judge.check(ok, requirement, f"{what} was not accepted", path="status", expected="2xx with choices",
                received=f"{ex.status} {(ex.body_text or '')[:160]}", exchange=ex)


@check(argnames="requirement, param, value", cases=_params(ACCEPT))
def test_value_inside_range_accepted(client, judge, conformance_target, profile, requirement, param, value):
    what = _what(param, value, profile)
    ex = client.chat(body(conformance_target, max_tokens=MAX_TOKENS, **_fields(param, value, profile)),
                     label=what)
    _judge_accepted(judge, ex, requirement, what)


@check(argnames="requirement, param, value", cases=_params(REJECT, *ERROR_SHAPE_REQS))
def test_value_outside_range_rejected(client, judge, conformance_target, profile, requirement, param, value):
    what = _what(param, value, profile) + " (outside the documented range)"
    ex = client.chat(body(conformance_target, max_tokens=MAX_TOKENS, **_fields(param, value, profile)),
                     label=what)
    judge_error_response(judge, ex, requirement, what)


@check(argnames="requirement, param, value", cases=_params(BOUNDARY))
def test_value_on_exclusive_bound(client, judge, conformance_target, profile, requirement, param, value):
    what = _what(param, value, profile) + " (on the bound)"
    ex = client.chat(body(conformance_target, max_tokens=MAX_TOKENS, **_fields(param, value, profile)),
                     label=what)
    _judge_accepted(judge, ex, requirement, what)
