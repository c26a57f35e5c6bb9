"""Tool calling: tool-call shape and arguments, tool_choice, the tool-result turn, streamed fragments.

Tools are an optional capability: the ``judge`` fixture skips these checks when discovery finds the target
rejects tools cleanly. A target that accepts tools but does not honour them fails here.
"""

from __future__ import annotations

import json
from typing import Any

from conformance.checks._rules import (
    judge_args_json,
    judge_args_schema,
    judge_call_names,
    judge_call_shape,
    judge_tool_finish,
    tool_call_cut,
)
from conformance.checks._support import (
    ERROR_SHAPE_REQS,
    ask,
    body,
    first_choice,
    judge_error_response,
    not_cut,
    obj,
    ok_json,
    ok_stream,
    require_completion,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive

PROMPT = "What is the weather in Paris today?"
# The question a forced call is asked on: one that invites no tool (no weather, no city, no tool's name), so
# that only tool_choice "required" (or a named function) can bring the call; a server that reads "required"
# as "auto" answers it in prose (the fault tool-required-as-auto; on the weather question it passed).
UNINVITED = "Write a short story about a cat."
# A call's budget: room for a grammar-constrained call (vLLM's took 52 tokens for get_weather); the tokens are
# spent only if the model needs them. An answer cut (finish_reason length) before any call is asked again with
# RETRY_MAX_TOKENS before it is judged (spec/DECISIONS.md#protocol-details).
MAX_TOKENS = 200
RETRY_MAX_TOKENS = 1024

WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "the city name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": WEATHER_PARAMS,
    },
}
TIME_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a city",
        "parameters": TIME_PARAMS,
    },
}
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
REQUIRED_KEY = "tools-required"
AUTO_KEY = "tools-auto"
NAMED_CHOICE = {"type": "function", "function": {"name": "get_time"}}


def _tool_body(
    target: Any,
    profile: Any,
    tool_choice: Any,
    *,
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int = MAX_TOKENS,
    prompt: str = PROMPT,
    **fields: Any,
) -> dict[str, Any]:
    return body(
        target,
        messages=[{"role": "user", "content": prompt}],
        tools=tools or [WEATHER],
        tool_choice=tool_choice,
        max_tokens=max_tokens,
        **dict(profile.deterministic, **fields),
    )


def _choice(data: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    ch = first_choice(data)
    msg = obj(ch.get("message"))
    return msg, ch.get("finish_reason")


def _calls(msg: dict[str, Any]) -> list[Any]:
    calls = msg.get("tool_calls")
    return calls if isinstance(calls, list) else []


def _cut_before_call(ex: Any) -> bool:
    """A 2xx completion without tool calls that the suite's own max_tokens ended (finish_reason length)."""
    if ex.status is None or not 200 <= ex.status < 300:
        return False
    msg, fr = _choice(obj(ex.json()))
    return fr == "length" and not _calls(msg)


def _with_retry(
    shared: Any, key: str, target: Any, profile: Any, tool_choice: Any, label: str, **fields: Any
) -> Any:
    """The shared answer to a request expecting a call, asked again with RETRY_MAX_TOKENS when the first was
    cut by the suite's max_tokens before any call (a reasoning segment or a long grammar-constrained call).
    A retry that is not answered 2xx (a budget beyond a small context) leaves the first answer."""
    first = _tool_body(target, profile, tool_choice, **fields)
    ex = shared(key, first, label=f"{label}, max_tokens {MAX_TOKENS}")
    if _cut_before_call(ex):
        retry = shared(
            f"{key}-retry",
            _tool_body(target, profile, tool_choice, max_tokens=RETRY_MAX_TOKENS, **fields),
            label=f"{label}, max_tokens {RETRY_MAX_TOKENS} (the first answer was cut before any call)",
        )
        if retry.status is not None and 200 <= retry.status < 300:
            return retry
    return ex


def _budget(ex: Any) -> Any:
    return obj(ex.request_json).get("max_tokens")


def _no_call_verdict(ex: Any, what: str) -> None:
    """No tool call in ``ex``: Inconclusive when the suite's max_tokens cut the answer (after the retry)."""
    if _cut_before_call(ex):
        raise Inconclusive(f"{what}: the answer was cut by the suite's own max_tokens ({_budget(ex)}, "
                           "finish_reason length) before any tool call; raise the budget to judge it")


def _required(shared: Any, target: Any, profile: Any) -> Any:
    """The shared forced call: tool_choice "required" with the weather tool, on a question that invites no
    tool (UNINVITED)."""
    return _with_retry(shared, REQUIRED_KEY, target, profile, "required",
                       'tool_choice "required", a question that invites no tool', prompt=UNINVITED)


def _auto(shared: Any, target: Any, profile: Any) -> Any:
    """The shared unforced call: tool_choice "auto", the weather tool and a question about the weather."""
    return _with_retry(shared, AUTO_KEY, target, profile, "auto", 'tool_choice "auto"')


def _forced_call(shared: Any, target: Any, profile: Any) -> tuple[Any, dict[str, Any], list[Any], Any]:
    ex = _required(shared, target, profile)
    data = ok_json(ex, 'tool_choice "required"')
    msg, fr = _choice(data)
    calls = _calls(msg)
    if not calls:
        raise Inconclusive("the forced call carried no tool_calls (judged by TOOLS-CHOICE-REQUIRED)")
    return ex, msg, calls, fr


@check("TOOLS-CHOICE-REQUIRED", neighbours=("tool-required-as-auto", "tool-required-ignored"))
def test_choice_required_calls_a_tool(shared, judge, conformance_target, profile):
    ex = _required(shared, conformance_target, profile)
    data = require_completion(judge, ex, "TOOLS-CHOICE-REQUIRED", 'a request with tool_choice "required"')
    msg, _ = _choice(data)
    calls = _calls(msg)
    if not calls:
        _no_call_verdict(ex, 'tool_choice "required"')
    judge.check(
        len(calls) >= 1,
        "TOOLS-CHOICE-REQUIRED",
        'tool_choice "required" produced no tool call',
        path="$.choices[0].message.tool_calls",
        expected="at least one tool call",
        received=msg.get("tool_calls", "absent")
        if msg.get("tool_calls") is not None
        else {"content": msg.get("content")},
        exchange=ex,
    )


@check("TOOLS-CALL-SHAPE")
def test_tool_call_shape(shared, judge, conformance_target, profile):
    ex, _, calls, _ = _forced_call(shared, conformance_target, profile)
    judge_call_shape(judge, "TOOLS-CALL-SHAPE", calls, ex, "$.choices[0].message")


@check("TOOLS-ARGS-JSON")
def test_tool_arguments_are_json(shared, judge, conformance_target, profile):
    ex, _, calls, fr = _forced_call(shared, conformance_target, profile)
    why = judge_args_json(judge, "TOOLS-ARGS-JSON", calls, fr, ex, "$.choices[0].message")
    if why is not None:
        raise Inconclusive(why)


@check("TOOLS-ARGS-SCHEMA")
def test_tool_arguments_match_schema(shared, judge, conformance_target, profile):
    ex, _, calls, fr = _forced_call(shared, conformance_target, profile)
    if not judge_args_schema(judge, "TOOLS-ARGS-SCHEMA", calls, SCHEMAS, ex, "$.choices[0].message"):
        why = "cut by max_tokens" if fr == "length" else "no call to a known function with object arguments"
        raise Inconclusive(f"no tool-call arguments to validate ({why})")


@check("TOOLS-FINISH-REASON")
def test_tool_call_finish_reason(shared, judge, conformance_target, profile):
    # Judged on a call the model chose (tool_choice "auto"): a call forced by tool_choice "required" or a
    # named function may end with "stop", as the OpenAI API's own do (spec/DECISIONS.md#protocol-details).
    ex = _auto(shared, conformance_target, profile)
    msg, fr = _choice(ok_json(ex, 'tool_choice "auto"'))
    if not _calls(msg):
        raise Inconclusive('with tool_choice "auto" the model answered without a tool call: no unforced call '
                           "to judge (a forced call may end with stop)")
    if fr == "length":
        raise Inconclusive(f"the tool call was cut by the suite's own max_tokens ({_budget(ex)}, "
                           "finish_reason length)")
    judge_tool_finish(judge, "TOOLS-FINISH-REASON", _calls(msg), fr, False, ex, "$.choices[0].finish_reason")


CUT_MAX_TOKENS = 3  # too few for any call's arguments: {"city": ... does not end within them


@check("TOOLS-FINISH-REASON")
def test_cut_tool_call_finish_reason(client, judge, conformance_target, profile):
    # A call forced by a named tool_choice, with a max_tokens too small for its arguments: a call cut short
    # ends with finish_reason "length", never "tool_calls" (a client would run an unfinished call).
    ex = client.chat(_tool_body(conformance_target, profile, NAMED_CHOICE, tools=[WEATHER, TIME],
                                max_tokens=CUT_MAX_TOKENS),
                     label=f"named tool_choice, max_tokens {CUT_MAX_TOKENS} (too few for the arguments)")
    data = ok_json(ex, f"a forced call with max_tokens {CUT_MAX_TOKENS}")
    msg, fr = _choice(data)
    calls = _calls(msg)
    if not calls:
        raise Inconclusive(f"the answer cut at max_tokens {CUT_MAX_TOKENS} carries no tool call "
                           f"(finish_reason {fr!r}): no cut call to judge")
    used = obj(data.get("usage")).get("completion_tokens")
    if not tool_call_cut(calls, used, CUT_MAX_TOKENS):
        raise Inconclusive(f"the call was not cut short (completion_tokens {used!r}, arguments "
                           f"{[obj(obj(c).get('function')).get('arguments') for c in calls]!r}): "
                           f"it fit in max_tokens {CUT_MAX_TOKENS}, or no usage tells")
    judge_tool_finish(judge, "TOOLS-FINISH-REASON", calls, fr, True, ex, "$.choices[0].finish_reason",
                      cut=True)


@check("TOOLS-CHOICE-NONE")
def test_choice_none_calls_no_tool(client, judge, conformance_target, profile):
    ex = ask(client, _tool_body(conformance_target, profile, "none", max_tokens=8),
             label='tool_choice "none"')
    data = require_completion(judge, ex, "TOOLS-CHOICE-NONE", 'a request with tool_choice "none"')
    not_cut(ex, 'tool_choice "none"')  # an answer still in its reasoning has not chosen yet
    msg, fr = _choice(data)
    calls = msg.get("tool_calls")
    judge.check(
        not calls,
        "TOOLS-CHOICE-NONE",
        'tool_choice "none" produced tool calls',
        path="$.choices[0].message.tool_calls",
        expected="null, absent or []",
        received=calls,
        exchange=ex,
    )
    judge.check(
        fr != "tool_calls",
        "TOOLS-CHOICE-NONE",
        'tool_choice "none" ended with finish_reason tool_calls',
        path="$.choices[0].finish_reason",
        expected="stop or length",
        received=fr,
        exchange=ex,
    )


@check("TOOLS-CHOICE-AUTO")
def test_choice_auto(shared, judge, conformance_target, profile):
    ex = _auto(shared, conformance_target, profile)
    data = require_completion(judge, ex, "TOOLS-CHOICE-AUTO", 'a request with tool_choice "auto"')
    not_cut(ex, 'tool_choice "auto"')
    msg, _ = _choice(data)
    calls = msg.get("tool_calls")
    if calls:
        judge.check(
            isinstance(calls, list),
            "TOOLS-CHOICE-AUTO",
            "tool_calls is not an array",
            path="$.choices[0].message.tool_calls",
            expected="array",
            received=calls,
            exchange=ex,
        )
        judge_call_shape(judge, "TOOLS-CHOICE-AUTO", _calls(msg), ex, "$.choices[0].message")
    else:
        judge.check(
            isinstance(msg.get("content"), str),
            "TOOLS-CHOICE-AUTO",
            "the answer holds neither content nor tool calls",
            path="$.choices[0].message.content",
            expected="string content or tool_calls",
            received=msg,
            exchange=ex,
        )


@check("TOOLS-CHOICE-NAMED")
def test_choice_named_calls_that_function(shared, judge, conformance_target, profile):
    ex = _with_retry(shared, "tools-named", conformance_target, profile, NAMED_CHOICE,
                     "tool_choice naming get_time (the second of two tools)", tools=[WEATHER, TIME])
    data = require_completion(judge, ex, "TOOLS-CHOICE-NAMED", "a request with a named tool_choice")
    msg, _ = _choice(data)
    calls = _calls(msg)
    if not calls:
        _no_call_verdict(ex, "a named tool_choice")
    judge.require(
        len(calls) >= 1,
        "TOOLS-CHOICE-NAMED",
        "a named tool_choice produced no tool call",
        path="$.choices[0].message.tool_calls",
        expected="a call to get_time",
        received=msg.get("tool_calls")
        if msg.get("tool_calls") is not None
        else {"content": msg.get("content")},
        exchange=ex,
    )
    judge_call_names(judge, "TOOLS-CHOICE-NAMED", calls, ["get_time"], ex, "$.choices[0].message",
                     "the named function")


@check("TOOLS-CALL-ID-UNIQUE", neighbours=("tool-call-id-reused",))
def test_tool_call_ids_unique(shared, judge, conformance_target, profile):
    # The calls of three responses the run asks anyway (tool_choice "required", "auto" and a named function):
    # a tool message's tool_call_id names one call only if no two calls share an id. A server that numbers
    # its calls per response ("call_0" in every response) passed every shape check.
    answers = [("required", _required(shared, conformance_target, profile)),
               ("auto", _auto(shared, conformance_target, profile)),
               ("named", _with_retry(shared, "tools-named", conformance_target, profile, NAMED_CHOICE,
                                     "tool_choice naming get_time (the second of two tools)",
                                     tools=[WEATHER, TIME]))]
    seen: dict[str, tuple[str, Any]] = {}
    for what, ex in answers:
        if ex.status is None or not 200 <= ex.status < 300:
            continue
        msg, _ = _choice(obj(ex.json()))
        for i, call in enumerate(_calls(msg)):
            cid = obj(call).get("id")
            if not isinstance(cid, str) or not cid:
                continue  # no id: TOOLS-CALL-SHAPE judges it
            if cid in seen:
                first, _ = seen[cid]
                judge.check(False, "TOOLS-CALL-ID-UNIQUE",
                            f"two tool calls share the id {cid!r} (tool_choice {first} and {what})",
                            path=f"$.choices[0].message.tool_calls[{i}].id",
                            expected=f"an id other than {cid!r}", received=cid, exchange=ex)
                return
            seen[cid] = (what, ex)
    if len(seen) < 2:
        raise Inconclusive(f"fewer than two tool calls with an id among the run's tool answers "
                           f"({len(seen)}): no ids to compare")
    judge.check(True, "TOOLS-CALL-ID-UNIQUE", "")


@check("TOOLS-RESULT-TURN")
def test_tool_result_turn_accepted(client, judge, conformance_target, profile):
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": PROMPT},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 20}'},
    ]
    ex = client.chat(
        body(conformance_target, messages=msgs, tools=[WEATHER], max_tokens=8),
        label="follow-up turn with a tool result",
    )
    require_completion(judge, ex, "TOOLS-RESULT-TURN", "a conversation holding tool_calls and a tool result")


@check("TOOLS-STREAM-FRAGMENTS", "TOOLS-CHOICE-REQUIRED", "TOOLS-ARGS-JSON",
       neighbours=("tool-required-as-auto",))
def test_streamed_tool_call_fragments(client, judge, conformance_target, profile):
    ex = client.chat(
        _tool_body(conformance_target, profile, "required", stream=True, prompt=UNINVITED),
        label='streamed tool_choice "required", a question that invites no tool',
    )
    chunks = ok_stream(ex, 'streamed tool_choice "required"')
    frags: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    finish = None
    bad_index: list[tuple[int, Any]] = []
    for n, c in enumerate(chunks):
        for ch in c.get("choices") or []:
            if not isinstance(ch, dict) or ch.get("index", 0) != 0:
                continue
            finish = ch.get("finish_reason") or finish
            delta = obj(ch.get("delta"))
            for tc in delta.get("tool_calls") or []:
                idx = tc.get("index") if isinstance(tc, dict) else None
                if not isinstance(idx, int) or isinstance(idx, bool):
                    bad_index.append((n, idx))
                    continue
                frags.setdefault(idx, []).append((n, tc))
    if not frags and not bad_index and finish == "length":
        raise Inconclusive(f"the streamed answer was cut by the suite's own max_tokens ({MAX_TOKENS}, "
                           "finish_reason length) before any tool-call fragment")
    judge.require(
        bool(frags) or bool(bad_index),
        "TOOLS-CHOICE-REQUIRED",
        'the streamed answer to tool_choice "required" carried no tool-call fragment',
        path="chunks[].choices[0].delta.tool_calls",
        expected="tool-call deltas",
        received=f"{len(chunks)} chunks without tool_calls",
        exchange=ex,
    )
    judge.check(
        not bad_index,
        "TOOLS-STREAM-FRAGMENTS",
        "a tool-call fragment has no integer index",
        path=f"chunks[{bad_index[0][0]}].choices[0].delta.tool_calls[].index" if bad_index else "",
        expected="integer",
        received=bad_index[0][1] if bad_index else "",
        exchange=ex,
    )
    cut: list[int] = []
    for idx, parts in sorted(frags.items()):
        n, first = parts[0]
        fn = obj(first.get("function"))
        where = f"chunks[{n}].choices[0].delta.tool_calls[index={idx}]"
        judge.check(
            isinstance(first.get("id"), str) and bool(first["id"]),
            "TOOLS-STREAM-FRAGMENTS",
            "the first fragment of a tool call has no id",
            path=f"{where}.id",
            expected="non-empty string",
            received=first.get("id"),
            exchange=ex,
        )
        judge.check(
            first.get("type") == "function",
            "TOOLS-STREAM-FRAGMENTS",
            "the first fragment of a tool call has no type function",
            path=f"{where}.type",
            expected="function",
            received=first.get("type"),
            exchange=ex,
        )
        judge.check(
            isinstance(fn.get("name"), str) and bool(fn["name"]),
            "TOOLS-STREAM-FRAGMENTS",
            "the first fragment of a tool call has no function.name",
            path=f"{where}.function.name",
            expected="non-empty string",
            received=fn.get("name"),
            exchange=ex,
        )
        pieces = []
        for m, tc in parts:
            f = obj(tc.get("function"))
            a = f.get("arguments")
            if a is None:
                continue
            if not judge.check(
                isinstance(a, str),
                "TOOLS-STREAM-FRAGMENTS",
                "an arguments fragment is not a string",
                path=f"chunks[{m}].choices[0].delta.tool_calls[index={idx}].function.arguments",
                expected="string",
                received=a,
                exchange=ex,
            ):
                break
            pieces.append(a)
        else:
            args = "".join(pieces)
            try:
                parsed = json.loads(args)
            except ValueError as exc:
                if finish == "length":
                    cut.append(idx)
                    continue
                judge.check(  # the model's JSON, as for a call not streamed (spec/DECISIONS.md#health-misses)
                    False,
                    "TOOLS-ARGS-JSON",
                    "the concatenated streamed arguments do not parse as JSON",
                    path=f"tool_calls[index={idx}].function.arguments",
                    expected="a JSON object",
                    received=f"{args[:200]!r} ({exc})",
                    exchange=ex,
                )
                continue
            judge.check(
                isinstance(parsed, dict),
                "TOOLS-ARGS-JSON",
                "the concatenated streamed arguments are JSON but not an object",
                path=f"tool_calls[index={idx}].function.arguments",
                expected="a JSON object",
                received=args[:200],
                exchange=ex,
            )
    if cut and not judge.violations:
        raise Inconclusive(f"streamed tool call(s) {cut} were cut by max_tokens before their arguments ended")


@check("TOOLS-UNKNOWN-CHOICE", *ERROR_SHAPE_REQS)
def test_unknown_named_choice_rejected(client, judge, conformance_target, profile):
    choice = {"type": "function", "function": {"name": "no_such_function"}}
    ex = client.chat(
        _tool_body(conformance_target, profile, choice, max_tokens=8),
        label="tool_choice naming a function that is not in tools",
    )
    judge_error_response(judge, ex, "TOOLS-UNKNOWN-CHOICE", "a named tool_choice matching no tool")
