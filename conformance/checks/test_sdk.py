"""The official openai SDK reads the answers (spec/DECISIONS.md#sdk).

These checks judge answers other checks ask for anyway (the shared basic completion and stream): they cost
no request of their own. The family is judged on every answer of the run by ``_sdk`` (run-wide); without the
openai package it is unsupported, never a failure.
"""

from __future__ import annotations

from conformance.checks._sdk import ACCUMULATE, NOT_INSTALLED, PARSE, STRUCTURED, judge_exchange, sdk_version
from conformance.checks._support import body, ok_json, ok_stream
from conformance.checks.test_core import _basic
from conformance.checks.test_streaming import MAX
from conformance.engine.registry import check
from conformance.records import SkipKind
from conformance.violations import Inconclusive, Skipped


def _require_sdk() -> None:
    if sdk_version() is None:
        raise Skipped(f"unsupported: {NOT_INSTALLED}", SkipKind.UNSUPPORTED)


@check(PARSE)
def test_sdk_reads_the_basic_completion(shared, judge, conformance_target):
    _require_sdk()
    ex = _basic(shared, conformance_target)
    ok_json(ex, "basic completion")
    judge_exchange(judge, ex)


@check(ACCUMULATE)
def test_sdk_accumulates_the_stream(shared, judge, conformance_target):
    _require_sdk()
    ex = shared(
        "stream-usage",
        body(conformance_target, max_tokens=MAX, stream=True, stream_options={"include_usage": True}),
        label="stream with include_usage",
    )
    ok_stream(ex, "stream with include_usage")
    judge_exchange(judge, ex)
    if ACCUMULATE not in judge.judged:
        raise Inconclusive("the SDK could not read the stream's chunks (SDK-PARSE): nothing to accumulate")


@check(STRUCTURED)
def test_sdk_parses_structured_outputs(judge):
    _require_sdk()
    # no request of its own: the json_schema answers the run asks for (test_json, the generated requests) are
    # parsed run-wide, after the run
    raise Inconclusive("judged run-wide on every answer to a strict json_schema request of the run")
