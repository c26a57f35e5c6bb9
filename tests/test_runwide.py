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


# ---- tool calls, stop sequences and JSON output, judged on every answer that shows them --------------------

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
NAMED = {"type": "function", "function": {"name": "get_time"}}


def with_message(finish: str = "stop", **message: Any) -> dict[str, Any]:
    out = answer(finish=finish)
    out["choices"][0]["message"] = {"role": "assistant", **message}
    return out


def call(name: str = "get_time", arguments: str = '{"city": "Paris"}', cid: str = "call_1") -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def run_wide(recs: list[dict[str, Any]], reqs: tuple[str, ...], **kw: Any) -> dict[str, dict[str, Any]]:
    return {r["requirements"][0]: r for r in judge_run(recs, reqs, **kw)}


def test_a_named_call_is_judged_for_shape_arguments_and_name_not_only_the_forced_one() -> None:
    req = {"tools": TOOLS, "tool_choice": NAMED}
    good = completion(req, with_message("tool_calls", content=None, tool_calls=[call()]), label="ok")
    wrong = [call("get_weather", "city=Paris", "")]
    bad = completion(req, with_message("stop", content=None, tool_calls=wrong), label="named call")
    reqs = ("TOOLS-CALL-SHAPE", "TOOLS-ARGS-JSON", "TOOLS-CHOICE-NAMED", "TOOLS-FINISH-REASON")
    out = run_wide(records(good, bad), reqs)
    assert {k: v["outcome"] for k, v in out.items()} == {
        "TOOLS-CALL-SHAPE": "failed", "TOOLS-ARGS-JSON": "failed", "TOOLS-CHOICE-NAMED": "failed",
        "TOOLS-FINISH-REASON": "passed",  # a forced call may end with stop
    }
    assert out["TOOLS-CALL-SHAPE"]["exchanges"] == [bad]
    assert out["TOOLS-ARGS-JSON"]["violations"][0]["message"] == (
        "run-wide, in exchange 'named call' (one of 2 judged): arguments do not parse as JSON")
    assert out["TOOLS-CHOICE-NAMED"]["violations"][0]["received"] == "get_weather"


def test_arguments_cut_by_length_are_not_judged_and_an_unforced_call_must_say_tool_calls() -> None:
    cut_call = [call(arguments='{"ci')]
    cut = completion({"tools": TOOLS}, with_message("length", content=None, tool_calls=cut_call))
    assert run_wide(records(cut), ("TOOLS-ARGS-JSON", "TOOLS-FINISH-REASON")) == {}
    stop = completion({"tools": TOOLS, "tool_choice": "auto"}, with_message("stop", content=None,
                                                                           tool_calls=[call()]))
    out = run_wide(records(stop), ("TOOLS-FINISH-REASON",))
    assert out["TOOLS-FINISH-REASON"]["outcome"] == "failed"


def test_finish_reason_tool_calls_without_a_call_fails() -> None:
    turn = completion({"tools": TOOLS}, with_message("tool_calls", content="It is sunny."), label="tool turn")
    out = run_wide(records(turn), ("TOOLS-FINISH-REASON",))
    assert out["TOOLS-FINISH-REASON"]["violations"][0]["message"].endswith(
        "finish_reason is tool_calls but the answer carries no tool call")


def tool_stream(request: dict[str, Any], frags: list[dict[str, Any]], finish: str = "tool_calls") -> dict:
    chunks = [
        {**chunk(content=None), "choices": [{"index": 0, "delta": {"tool_calls": [f]},
                                             "finish_reason": None}]}
        for f in frags
    ]
    return stream({"stream": True, **request}, [*chunks, chunk(content=None, finish=finish)])


def test_streamed_calls_are_reassembled_and_judged_for_schema_and_names() -> None:
    frags = [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather_v2", "arguments": ""}},
        {"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": '{"town": '}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
    s = tool_stream({"tools": TOOLS, "tool_choice": "required"}, frags)
    out = run_wide(records(s), ("TOOLS-CHOICE-REQUIRED", "TOOLS-ARGS-SCHEMA"))
    assert out["TOOLS-CHOICE-REQUIRED"]["outcome"] == "failed"
    path = out["TOOLS-CHOICE-REQUIRED"]["violations"][0]["path"]
    assert path == "choices[index=0].delta.tool_calls[0].function.name"
    assert "TOOLS-ARGS-SCHEMA" not in out  # get_weather_v2 has no schema to validate against
    frags[0]["function"]["name"] = "get_weather"
    out = run_wide(records(tool_stream({"tools": TOOLS, "tool_choice": "required"}, frags)),
                   ("TOOLS-CHOICE-REQUIRED", "TOOLS-ARGS-SCHEMA"))
    assert {k: v["outcome"] for k, v in out.items()} == {
        "TOOLS-CHOICE-REQUIRED": "passed", "TOOLS-ARGS-SCHEMA": "failed"}


def with_logprobs(text_tokens: list[str], finish: str = "stop") -> dict[str, Any]:
    lp = {"content": [{"token": t, "logprob": -0.1, "bytes": None, "top_logprobs": []} for t in text_tokens]}
    out = answer(finish=finish, logprobs=lp)
    out["choices"][0]["message"]["content"] = "".join(text_tokens)
    return out


STOP_REQS = ("STOP-HONOURED", "STOP-SEQUENCE-EXCLUDED", "STOP-STREAM")


def test_stop_sequence_kept_fails_under_the_excluded_profile_only() -> None:
    kept = completion({"stop": ["zz", " mat"]}, with_logprobs([" the", " mat"]), label="several stops")
    out = run_wide(records(kept), STOP_REQS, stop_sequence="excluded")
    assert set(out) == {"STOP-SEQUENCE-EXCLUDED"} and out["STOP-SEQUENCE-EXCLUDED"]["outcome"] == "failed"
    assert out["STOP-SEQUENCE-EXCLUDED"]["violations"][0]["expected"] == "' the'"
    # the seed profile keeps it: the text ends with the stop sequence and says stop, a pass
    assert verdicts(records(kept), STOP_REQS) == {"STOP-HONOURED": "passed"}


def test_stop_honoured_needs_logprobs_to_judge_what_follows_the_stop() -> None:
    # stop-at-token-end: the rest of the token that completed the sequence may follow it
    token_end = completion({"stop": "ma"}, with_logprobs([" the", " mat"]))
    assert verdicts(records(token_end), STOP_REQS) == {"STOP-HONOURED": "passed"}
    past = completion({"stop": "ma"}, with_logprobs([" the", " mat", " sat"]), label="past")
    out = run_wide(records(past), STOP_REQS)
    assert out["STOP-HONOURED"]["outcome"] == "failed"
    message = out["STOP-HONOURED"]["violations"][0]["message"]
    assert "at least one whole token past the stop sequence 'ma'" in message
    # without logprobs what follows the stop cannot be told from the rest of a token: not judged
    plain = answer(finish="stop")
    plain["choices"][0]["message"]["content"] = " the mat sat"
    assert verdicts(records(completion({"stop": "ma"}, plain)), STOP_REQS) == {}
    # an answer that holds no stop sequence says nothing (it may have ended before reaching one)
    assert verdicts(records(completion({"stop": "zz"}, with_logprobs([" the"]))), STOP_REQS) == {}


def test_streamed_stop_is_judged_as_stop_stream() -> None:
    s = stream({"stop": [" b"]}, [chunk(content=" a b"), chunk(content=" c", finish="stop")])
    out = run_wide(records(s), STOP_REQS, stop_sequence="excluded")
    assert set(out) == {"STOP-STREAM"} and out["STOP-STREAM"]["outcome"] == "failed"


JSON_REQS = ("JSON-OBJECT-VALID", "JSON-SCHEMA-VALID", "JSON-SCHEMA-STREAM")
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def json_answer(content: str | None, finish: str = "stop", **message: Any) -> dict[str, Any]:
    return with_message(finish, content=content, **message)


def test_json_formats_judged_on_every_answer() -> None:
    prose = completion({"response_format": {"type": "json_object"}}, json_answer("Yes, it is."))
    assert verdicts(records(prose), JSON_REQS) == {"JSON-OBJECT-VALID": "failed"}
    loose = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    strict = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
    # without strict the answer must be JSON but need not follow the schema; with strict it must
    assert verdicts(records(completion({"response_format": loose}, json_answer('{"x": 1}'))), JSON_REQS) == {
        "JSON-SCHEMA-VALID": "passed"}
    assert verdicts(records(completion({"response_format": strict}, json_answer('{"x": 1}'))), JSON_REQS) == {
        "JSON-SCHEMA-VALID": "failed"}
    # cut by max_tokens: a prefix of a JSON object is not a complete answer (not judged), prose is wrong
    cut = completion({"response_format": loose}, json_answer('{"ok": tr', "length"))
    assert verdicts(records(cut), JSON_REQS) == {}
    cut_prose = completion({"response_format": loose}, json_answer(" the cat sat", "length"))
    assert verdicts(records(cut_prose), JSON_REQS) == {"JSON-SCHEMA-VALID": "failed"}


def test_json_refusals_and_inline_reasoning_are_not_the_answer() -> None:
    refusal = completion({"response_format": {"type": "json_object"}}, json_answer(None, refusal="I can't."))
    assert verdicts(records(refusal), JSON_REQS) == {}
    think = completion({"response_format": {"type": "json_object"}},
                       json_answer('<think>hmm</think>{"ok": true}'))
    assert verdicts(records(think), JSON_REQS) == {"JSON-OBJECT-VALID": "passed"}
    s = stream({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
               [chunk(content="//"), chunk(content='{"ok": true}', finish="stop")])
    assert verdicts(records(s), JSON_REQS) == {"JSON-SCHEMA-STREAM": "failed"}


def test_json_cut_by_a_stop_sequence_is_judged_as_a_prefix() -> None:
    req = {"response_format": {"type": "json_object"}, "stop": "@"}
    cut = completion(req, json_answer('{"mail": "a', "stop"))
    assert verdicts(records(cut), JSON_REQS) == {}
    whole = completion(req, json_answer('{"ok": true}', "stop"))
    assert verdicts(records(whole), JSON_REQS) == {"JSON-OBJECT-VALID": "passed"}


def test_unreadable_streamed_calls_are_left_to_the_fragment_rules() -> None:
    no_index = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    frags = [no_index]
    s = tool_stream({"tools": TOOLS}, frags)
    assert verdicts(records(s), ("TOOLS-FINISH-REASON",)) == {}


def test_stop_sequences_inside_inline_reasoning_are_left_open() -> None:
    thought = completion({"stop": " mat"}, with_logprobs(["<think>", " the", " mat", "</think>", " ok"]))
    assert verdicts(records(thought), STOP_REQS) == {}
    tokens = ["<think>", " hm", "</think>", " the", " mat", " sat"]
    after = completion({"stop": " mat"}, with_logprobs(tokens))
    assert verdicts(records(after), STOP_REQS) == {"STOP-HONOURED": "failed"}
