"""Run-wide invariants (conformance/checks/_runwide.py), fed constructed exchanges: no server needed."""

from __future__ import annotations

import json
from typing import Any

from conformance.checks._runwide import RUN_WIDE, judge_run
from conformance.evidence import Exchange, SSEEvent

URL = "http://t/v1/chat/completions"
BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def completion(
    request: dict[str, Any], answer: dict[str, Any], status: int = 200, **kw: Any
) -> dict[str, Any]:
    ex = Exchange(
        label=kw.pop("label", "x"),
        method="POST",
        url=URL,
        request_headers={},
        request_body=json.dumps({**BASE, **request}),
        status=status,
        response_headers={"content-type": kw.pop("content_type", "application/json")},
        body_text=answer if isinstance(answer, str) else json.dumps(answer),
        **kw,
    )
    return ex.to_dict()


def answer(rid: str = "chatcmpl-1", completion_tokens: int = 5, finish: str = "length", **extra: Any) -> dict:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": finish,
                "logprobs": extra.pop("logprobs", None),
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": completion_tokens,
            "total_tokens": 3 + completion_tokens,
        },
        **extra,
    }


def stream(request: dict[str, Any], chunks: list[dict[str, Any]], label: str = "s") -> dict[str, Any]:
    events = [SSEEvent(t=0.1 * i, data=json.dumps(c), json=c) for i, c in enumerate(chunks)]
    events.append(SSEEvent(t=1.0, data="[DONE]", done=True))
    return Exchange(
        label=label,
        method="POST",
        url=URL,
        request_headers={},
        request_body=json.dumps({**BASE, **request}),
        stream=True,
        status=200,
        response_headers={"content-type": "text/event-stream"},
        events=events,
    ).to_dict()


def chunk(created: int = 1, content: str | None = "a", finish: str | None = None, rid: str = "c1") -> dict:
    delta = {"role": "assistant", "content": content} if content is not None else {}
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def records(*exchanges: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"nodeid": "t", "requirements": [], "outcome": "passed", "exchanges": list(exchanges)}]


def verdicts(recs: list[dict[str, Any]], reqs: tuple[str, ...] = RUN_WIDE) -> dict[str, str]:
    return {r["requirements"][0]: r["outcome"] for r in judge_run(recs, reqs)}


def test_a_deviation_on_one_exchange_of_many_fails_naming_that_exchange() -> None:
    ok = completion({"max_tokens": 5}, answer(completion_tokens=5))
    bad = completion({"max_tokens": 8}, answer("chatcmpl-2", completion_tokens=16), label="later request")
    out = {r["requirements"][0]: r for r in judge_run(records(ok, bad), ["MAXTOK-BOUND"])}
    rec = out["MAXTOK-BOUND"]
    assert rec["outcome"] == "failed"
    assert rec["exchanges"] == [bad]  # the evidence is the offending exchange, not a re-request
    v = rec["violations"][0]
    assert v["exchange"] == 0 and v["received"] == "16" and v["expected"] == "<= 8"
    assert v["message"].startswith("run-wide, in exchange 'later request' (one of 2 judged)")


def test_n_choices_share_the_bound_and_a_clean_run_passes() -> None:
    ok = completion({"max_tokens": 8, "n": 2}, answer(completion_tokens=16))
    assert verdicts(records(ok), ("MAXTOK-BOUND", "USAGE-TOTAL-SUM", "CORE-OBJECT")) == {
        "MAXTOK-BOUND": "passed",
        "USAGE-TOTAL-SUM": "passed",
        "CORE-OBJECT": "passed",
    }


def test_only_selected_requirements_are_judged_and_nothing_judged_gives_no_record() -> None:
    ok = completion({"max_tokens": 5}, answer())
    assert set(verdicts(records(ok), ("CORE-OBJECT",))) == {"CORE-OBJECT"}
    # no stream in the run: the stream invariants judged nothing and say nothing (no vacuous pass)
    assert "STREAM-CREATED-CONSTANT" not in verdicts(records(ok))


def test_ids_unique_across_streams_and_completions_and_shared_exchanges_counted_once() -> None:
    a = completion({}, answer("dup"))
    s = stream({"stream": True}, [chunk(rid="dup"), chunk(content=None, finish="stop", rid="dup")])
    assert verdicts(records(a, s), ("CORE-ID-UNIQUE",)) == {"CORE-ID-UNIQUE": "failed"}
    # the same exchange in two checks' evidence is one answer, not two with one id
    assert verdicts(records(a) + records(a), ("CORE-ID-UNIQUE",)) == {"CORE-ID-UNIQUE": "passed"}


def test_stream_invariants_on_every_stream() -> None:
    good = stream({"stream": True}, [chunk(), chunk(content=None, finish="stop")])
    late = stream({"stream": True}, [chunk(), chunk(created=2, content=None, finish="stop")], label="long")
    out = verdicts(records(good, late), ("STREAM-CREATED-CONSTANT", "STREAM-DONE-TERMINATES"))
    assert out == {"STREAM-CREATED-CONSTANT": "failed", "STREAM-DONE-TERMINATES": "passed"}


def test_streamed_usage_is_bounded_and_summed() -> None:
    usage = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 13},
    }
    s = stream(
        {"stream": True, "max_tokens": 8, "stream_options": {"include_usage": True}},
        [chunk(), chunk(content=None, finish="length"), usage],
    )
    out = verdicts(records(s), ("MAXTOK-STREAM-BOUND", "USAGE-TOTAL-SUM"))
    assert out == {"MAXTOK-STREAM-BOUND": "failed", "USAGE-TOTAL-SUM": "failed"}


def test_error_bodies_judged_on_4xx_and_5xx_but_not_on_gateway_statuses() -> None:
    text500 = completion({"n": 0}, "Internal Server Error", status=500, content_type="text/plain")
    assert verdicts(records(text500), ("ERROR-SHAPE", "ERROR-CONTENT-TYPE")) == {
        "ERROR-SHAPE": "failed",
        "ERROR-CONTENT-TYPE": "failed",
    }
    # a 429/502/503/504 is a limiter's or a gateway's answer, not the endpoint's: never judged here
    for status in (429, 502, 503, 504):
        gateway = completion({}, "<html>busy</html>", status=status, content_type="text/html")
        assert verdicts(records(gateway), ("ERROR-SHAPE",)) == {}


def test_logprobs_asked_without_top_logprobs_must_be_there() -> None:
    none = completion({"logprobs": True}, answer(finish="stop"))
    out = judge_run(records(none), ["LOGPROBS-PRESENT"])
    assert out[0]["outcome"] == "failed"
    assert "(without top_logprobs)" in out[0]["violations"][0]["message"]
    given = {"content": [{"token": "hi", "logprob": -0.1, "bytes": None, "top_logprobs": []}]}
    ok = completion({"logprobs": True}, answer(finish="stop", logprobs=given))
    assert verdicts(records(ok), ("LOGPROBS-PRESENT",)) == {"LOGPROBS-PRESENT": "passed"}


def test_top_logprobs_order() -> None:
    def lp(values: list[float]) -> dict[str, Any]:
        tops = [{"token": str(i), "logprob": v, "bytes": None} for i, v in enumerate(values)]
        return {"content": [{"token": "0", "logprob": values[0], "bytes": None, "top_logprobs": tops}]}

    unsorted = completion({"logprobs": True, "top_logprobs": 2}, answer(logprobs=lp([-2.0, -0.5])))
    assert verdicts(records(unsorted), ("LOGPROBS-TOP-ORDER",)) == {"LOGPROBS-TOP-ORDER": "failed"}
    tie = completion({"logprobs": True, "top_logprobs": 2}, answer(logprobs=lp([-0.5, -0.5])))
    assert verdicts(records(tie), ("LOGPROBS-TOP-ORDER",)) == {"LOGPROBS-TOP-ORDER": "passed"}


def test_answers_to_invalid_requests_promise_nothing() -> None:
    # top_logprobs -1 should have been refused (RANGE-TOP-LOGPROBS-REJECT); what came back is not judged here
    accepted = completion({"logprobs": True, "top_logprobs": -1}, answer(finish="stop"))
    assert verdicts(records(accepted), ("LOGPROBS-PRESENT",)) == {}


def test_unanswered_exchanges_are_not_judged() -> None:
    dropped = completion({}, "", status=200, transport_error="connection reset")
    models = Exchange(
        label="m", method="GET", url="http://t/v1/models", request_headers={}, status=500, body_text="oops"
    ).to_dict()
    assert verdicts(records(dropped, models)) == {}


def test_message_content_null_only_with_calls_refusal_or_a_cut_inside_the_reasoning() -> None:
    null = answer(finish="stop")
    null["choices"][0]["message"]["content"] = None
    req = ("CORE-MESSAGE-CONTENT",)
    assert verdicts(records(completion({}, null)), req) == {"CORE-MESSAGE-CONTENT": "failed"}
    cut = answer(finish="length")
    cut["choices"][0]["message"].update(content=None, reasoning_content="let me think")
    assert verdicts(records(completion({}, cut)), req) == {"CORE-MESSAGE-CONTENT": "passed"}
