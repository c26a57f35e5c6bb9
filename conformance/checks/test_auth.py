"""Bearer authentication: missing and wrong keys are refused with a 4xx (SHOULD 401); nothing is generated."""

from __future__ import annotations

from conformance.checks._support import body, is_4xx, judge_error_shape
from conformance.engine.registry import check
from conformance.violations import Inconclusive

WRONG_KEY = "sk-chat-conformance-wrong-key"


def _judge_refusal(judge, ex, requirement, what):
    if ex.status in (429, 503):
        raise Inconclusive(f"{what} was answered {ex.status} (rate limit or overload), not judged on its key")
    refused = is_4xx(ex)
    judge.check(
        refused,
        requirement,
        f"{what} was not refused with a 4xx error",
        path="status",
        expected="4xx (401)",
        received=ex.status,
        exchange=ex,
    )
    data = ex.json()
    generated = isinstance(data, dict) and bool(data.get("choices")) or bool(ex.events)
    judge.check(
        not generated,
        "AUTH-NOTHING-GENERATED",
        f"{what}: a completion was returned",
        path="$.choices",
        expected="an error body",
        received=(ex.body_text or "")[:200],
        exchange=ex,
    )
    if refused:
        judge.check(
            ex.status == 401,
            "AUTH-STATUS-401",
            f"{what} was refused with {ex.status}, not 401",
            path="status",
            expected=401,
            received=ex.status,
            exchange=ex,
        )
        judge_error_shape(judge, ex)


@check("AUTH-MISSING-KEY", "AUTH-NOTHING-GENERATED", "AUTH-STATUS-401", "ERROR-SHAPE")
def test_missing_key_refused(client, judge, conformance_target):
    if not conformance_target.api_key:
        raise Inconclusive("no API key configured, so the target cannot be expected to require one")
    ex = client.chat(body(conformance_target, max_tokens=2), auth=False, label="no Authorization header")
    _judge_refusal(judge, ex, "AUTH-MISSING-KEY", "a request without a key")


@check("AUTH-WRONG-KEY", "AUTH-NOTHING-GENERATED", "AUTH-STATUS-401", "ERROR-SHAPE")
def test_wrong_key_refused(client, judge, conformance_target):
    if not conformance_target.api_key:
        raise Inconclusive("no API key configured, so the target cannot be expected to require one")
    ex = client.chat(body(conformance_target, max_tokens=2), auth=WRONG_KEY, label="wrong bearer key")
    _judge_refusal(judge, ex, "AUTH-WRONG-KEY", "a request with a wrong key")
