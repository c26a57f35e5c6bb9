"""Judging rules about tool calls, stop sequences and JSON output, shared by the checks built for them and the
run-wide judge (``_runwide``), which applies them to every exchange of the run that shows the thing.

Each rule is a pure function over one answer (a choice, or a stream's choice reassembled): it records what it
judges on the given :class:`~conformance.violations.Judge` and never raises. Where the answer gives nothing to
judge (cut by max_tokens, no logprobs that tell), a rule says why in its return value; a check turns that into
``Inconclusive``, the run-wide judge leaves the exchange unjudged.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from conformance.evidence import Exchange
from conformance.violations import Judge

__all__ = [
    "ToolCall",
    "calls_of",
    "stream_calls",
    "stops_of",
    "first_stop",
    "judge_call_shape",
    "judge_args_json",
    "judge_args_schema",
    "judge_call_names",
    "judge_tool_finish",
    "tool_call_cut",
    "judge_stop_answer",
    "json_prefix_error",
    "judge_json_answer",
]

ToolCall = dict[str, Any]  # {"id", "type", "function": {"name", "arguments"}} as the answer gave it


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ---- tool calls -------------------------------------------------------------------------------------------


def calls_of(message: Any) -> list[Any]:
    """The tool calls of a non-streamed message ([] when absent or not a list)."""
    calls = _obj(message).get("tool_calls")
    return calls if isinstance(calls, list) else []


def stream_calls(chunks: list[dict[str, Any]], index: int = 0) -> list[ToolCall]:
    """The tool calls of choice ``index`` reassembled from a stream's deltas: per call index, the first
    non-null id, type and function.name, and the string argument fragments concatenated (a fragment that is
    not a string is TOOLS-STREAM-FRAGMENTS' to judge and is left out here)."""
    calls: dict[int, ToolCall] = {}
    for c in chunks:
        for ch in c.get("choices") or []:
            if not isinstance(ch, dict) or ch.get("index", 0) != index:
                continue
            for tc in _obj(ch.get("delta")).get("tool_calls") or []:
                idx = tc.get("index") if isinstance(tc, dict) else None
                if not isinstance(idx, int) or isinstance(idx, bool):
                    continue
                call = calls.setdefault(idx, {"id": None, "type": None, "function": {"name": None,
                                                                                       "arguments": ""}})
                fn = _obj(tc.get("function"))
                for key in ("id", "type"):
                    if call[key] is None and tc.get(key) is not None:
                        call[key] = tc[key]
                if call["function"]["name"] is None and fn.get("name") is not None:
                    call["function"]["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    call["function"]["arguments"] += fn["arguments"]
    return [calls[i] for i in sorted(calls)]


def _name(call: Any) -> Any:
    return _obj(_obj(call).get("function")).get("name")


def _arguments(call: Any) -> Any:
    return _obj(_obj(call).get("function")).get("arguments")


def judge_call_shape(
    judge: Judge, requirement: str, calls: list[Any], ex: Exchange | None, where: str
) -> None:
    """Each call has a non-empty id string, type "function", a non-empty function.name and arguments as a
    string (TOOLS-CALL-SHAPE)."""
    for i, call in enumerate(calls):
        path = f"{where}.tool_calls[{i}]"
        c = _obj(call)
        fn = _obj(c.get("function"))
        problems = []
        if not (isinstance(c.get("id"), str) and c["id"]):
            problems.append(("id", "non-empty string", c.get("id")))
        if c.get("type") != "function":
            problems.append(("type", "function", c.get("type")))
        if not (isinstance(fn.get("name"), str) and fn["name"]):
            problems.append(("function.name", "non-empty string", fn.get("name")))
        if not isinstance(fn.get("arguments"), str):
            problems.append(("function.arguments", "string", fn.get("arguments")))
        for field, expected, received in problems:
            judge.check(False, requirement, f"tool call {field} is malformed", path=f"{path}.{field}",
                        expected=expected, received=received, exchange=ex)
        if not problems:
            judge.check(True, requirement, "")


def judge_args_json(
    judge: Judge, requirement: str, calls: list[Any], finish: Any, ex: Exchange | None, where: str
) -> str | None:
    """Each call's arguments (a string) parse as a JSON object, unless the answer was cut by max_tokens
    (finish_reason length: the arguments may be incomplete). None when judged, else why not."""
    truncated = []
    strings = 0
    for i, call in enumerate(calls):
        args = _arguments(call)
        path = f"{where}.tool_calls[{i}].function.arguments"
        if not isinstance(args, str):
            continue  # arguments must be a string: TOOLS-CALL-SHAPE judges that
        strings += 1
        try:
            parsed = json.loads(args)
        except ValueError as exc:
            if finish == "length":
                truncated.append(i)
                continue
            judge.check(False, requirement, "arguments do not parse as JSON", path=path,
                        expected="a JSON object", received=f"{args[:200]!r} ({exc})", exchange=ex)
            continue
        judge.check(isinstance(parsed, dict), requirement, "arguments are JSON but not an object", path=path,
                    expected="a JSON object", received=args, exchange=ex)
    if truncated and not any(v.requirement == requirement for v in judge.violations):
        return f"tool call(s) {truncated} were cut by max_tokens before their arguments ended"
    if not strings:
        return "no tool call carried its arguments as a string (judged by TOOLS-CALL-SHAPE)"
    return None


def judge_args_schema(
    judge: Judge, requirement: str, calls: list[Any], schemas: dict[str, Any], ex: Exchange | None, where: str
) -> int:
    """The arguments of each call to a function in ``schemas`` (name -> parameters schema) that parse as a
    JSON object validate against its schema. Returns how many calls were judged (unparsable arguments are
    TOOLS-ARGS-JSON's, or were cut by max_tokens)."""
    judged = 0
    for i, call in enumerate(calls):
        name = _name(call)
        try:
            parsed = json.loads(_arguments(call))
        except (TypeError, ValueError):
            continue
        schema = schemas.get(name) if isinstance(name, str) else None
        if not isinstance(schema, dict) or not isinstance(parsed, dict):
            continue
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(parsed), key=lambda e: list(e.path))
        for err in errors[:3]:
            where_err = "".join(f"[{p!r}]" for p in err.path)
            judge.check(False, requirement, f"arguments do not validate against {name}'s parameters",
                        path=f"{where}.tool_calls[{i}].function.arguments{where_err}",
                        expected=f"parameters schema of {name}", received=err.message, exchange=ex)
        judged += 1
    if judged:
        judge.check(True, requirement, "")
    return judged


def judge_call_names(
    judge: Judge, requirement: str, calls: list[Any], allowed: list[str], ex: Exchange | None, where: str,
    why: str,
) -> None:
    """Each call names one of ``allowed`` (``why`` says which rule gives the list)."""
    for i, call in enumerate(calls):
        name = _name(call)
        if name is None:
            continue  # no name at all: TOOLS-CALL-SHAPE / TOOLS-STREAM-FRAGMENTS judge it
        judge.check(name in allowed, requirement, f"the call is not to {why}",
                    path=f"{where}.tool_calls[{i}].function.name",
                    expected=" or ".join(allowed) if allowed else "no call", received=name, exchange=ex)


def tool_call_cut(calls: list[Any], completion_tokens: Any, max_tokens: Any) -> bool:
    """Whether max_tokens cut a call short: the answer used its whole budget (``completion_tokens`` at least
    ``max_tokens``, both integers) and a call's arguments (a string) are not a complete JSON value."""
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (completion_tokens, max_tokens))
    if not calls or not ints or completion_tokens < max_tokens:
        return False
    for call in calls:
        args = _arguments(call)
        if not isinstance(args, str):
            continue
        try:
            json.loads(args)
        except ValueError:
            return True
    return False


def judge_tool_finish(
    judge: Judge, requirement: str, calls: list[Any], finish: Any, forced: bool, ex: Exchange | None,
    path: str, *, cut: bool = False,
) -> bool:
    """The finish_reason of an answer with tool calls that max_tokens did not cut: "tool_calls" for a call
    the model chose, "tool_calls" or "stop" for one forced by tool_choice "required" or a named function
    (spec/DECISIONS.md#protocol-details); and "tool_calls" only on an answer that carries a call
    (spec/DECISIONS.md#opportunistic). ``cut``: max_tokens cut a call short (:func:`tool_call_cut`), and the
    answer must end with "length", never "tool_calls" or "stop" (a client would run an unfinished call).
    Returns whether anything was judged."""
    if calls and cut:
        judge.check(finish == "length", requirement,
                    "a tool call cut short by max_tokens (its arguments unfinished) did not end with "
                    "finish_reason length", path=path, expected="length", received=finish, exchange=ex)
        return True
    if not calls:
        if finish == "tool_calls":
            judge.check(False, requirement, "finish_reason is tool_calls but the answer carries no tool call",
                        path=path, expected="stop or length (no tool call)", received=finish, exchange=ex)
            return True
        return False
    if finish == "length":
        return False
    allowed = ("tool_calls", "stop") if forced else ("tool_calls",)
    judge.check(finish in allowed, requirement,
                "a forced tool call ended with neither tool_calls nor stop" if forced
                else "a tool call the model chose to make did not end with finish_reason tool_calls",
                path=path, expected=" or ".join(allowed), received=finish, exchange=ex)
    return True


# ---- stop sequences ---------------------------------------------------------------------------------------


def stops_of(request: dict[str, Any]) -> list[str]:
    """The stop sequences of a request (a string or an array of strings; empty ones left out)."""
    raw = request.get("stop")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [s for s in items if isinstance(s, str) and s]


def first_stop(text: str, stops: list[str]) -> tuple[str, int, int] | None:
    """The stop sequence that completes first in ``text``: (sequence, start, end), or None."""
    best: tuple[int, int, str] | None = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or (i + len(s), i) < best[:2]):
            best = (i + len(s), i, s)
    return None if best is None else (best[2], best[1], best[0])


def _last_token_starts_before(text: str, tokens: list[str] | None, end: int) -> bool | None:
    """Whether the last token of ``text`` starts before offset ``end`` (so it is the token that reached
    ``end``); None when ``tokens`` (the answer's logprob tokens) do not spell ``text``."""
    if not tokens or "".join(tokens) != text:
        return None
    return len(text) - len(tokens[-1]) < end


def judge_stop_answer(
    judge: Judge,
    content: str,
    finish: Any,
    stops: list[str],
    tokens: list[str] | None,
    mode: str,
    ex: Exchange | None,
    path: str,
    *,
    honoured: str,
    excluded: str | None,
    start: int = 0,
) -> bool:
    """One answer to a request with ``stops``, judged where it shows a stop sequence (a hit); an answer that
    holds none says nothing (it may have ended before reaching one). ``mode`` is the profile's
    stop_sequence ("included" or "excluded"); ``tokens`` the answer's logprob tokens, if any.

    * The text goes on for at least one whole token past the first completed stop sequence (the answer's
      logprobs show it): ``honoured`` fails (generation did not stop there).
    * Profile "excluded": any stop sequence left in the text fails ``excluded`` (``honoured`` when that is
      None).
    * Profile "included": the text ending with the stop sequence, or within the token that completed it
      (the logprobs show it), with finish_reason stop, is a pass of ``honoured``.

    Only sequences from offset ``start`` on count (the answer after an inline reasoning segment: whether a
    server matches stop sequences inside the reasoning it returns as content is left open).

    Returns whether anything was judged (spec/DECISIONS.md#opportunistic)."""
    hit = first_stop(content[start:], stops)
    if hit is None:
        return False
    s, start, end = hit[0], hit[1] + start, hit[2] + start
    at_token_end = _last_token_starts_before(content, tokens, end) if len(content) > end else True
    if at_token_end is False:
        judge.check(False, honoured,
                    f"the text goes on for at least one whole token past the stop sequence {s!r} (logprobs)",
                    path=path, expected=repr(content[:start] if mode == "excluded" else content[:end]),
                    received=content[:300], exchange=ex)
        return True
    if mode == "excluded":
        judge.check(False, excluded or honoured, f"the returned text holds the stop sequence {s!r}",
                    path=path, expected=repr(content[:start]), received=content[:300], exchange=ex)
        return True
    if at_token_end and finish == "stop":
        judge.check(True, honoured, "")
        return True
    return False  # no logprobs that tell where the token ends, or a length cut at the stop: undecided


# ---- JSON output ------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_ESCAPES = frozenset('"\\/bfnrtu')
_HEX = frozenset("0123456789abcdefABCDEF")
_WS = frozenset(" \t\n\r")
_LITERALS = ("true", "false", "null")


def _number_prefix_ok(tok: str) -> bool:
    """Whether ``tok`` can still grow into a JSON number."""
    return bool(_NUMBER.fullmatch(tok) or _NUMBER.fullmatch(tok + "0"))


def json_prefix_error(text: str, *, top: str = "{") -> str | None:
    """None when ``text`` is a prefix of some JSON text whose top-level value opens with ``top`` (``{`` for an
    object), else why not (with the character offset). A complete value is a prefix of itself."""
    stack: list[str] = []  # open containers: "{" or "["
    # expecting: "value", "key" (after ","), "key_or_close" (after "{"), "colon", "comma_or_close",
    # "value_or_close" (after "["), "end" (top-level value done)
    state = "start"
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if (
            state
            in ("start", "value", "value_or_close", "key", "key_or_close", "colon", "comma_or_close", "end")
            and c in _WS
        ):
            i += 1
            continue
        if state == "start":
            if c != top:
                return f"offset {i}: the value does not start with {top!r} (got {c!r})"
            state = "value"  # handled below as the container opening
        if state == "end":
            return f"offset {i}: text after the complete JSON value ({c!r})"
        if state == "colon":
            if c != ":":
                return f"offset {i}: expected ':' after an object key, got {c!r}"
            state, i = "value", i + 1
            continue
        if state == "comma_or_close":
            if c == ",":
                state = "key" if stack[-1] == "{" else "value"
            elif (c == "}" and stack[-1] == "{") or (c == "]" and stack[-1] == "["):
                stack.pop()
                state = "comma_or_close" if stack else "end"
            else:
                return f"offset {i}: expected ',' or a closing bracket, got {c!r}"
            i += 1
            continue
        if state in ("key", "key_or_close"):
            if c == "}" and state == "key_or_close":
                stack.pop()
                state, i = ("comma_or_close" if stack else "end"), i + 1
                continue
            if c != '"':
                return f"offset {i}: expected an object key (a string), got {c!r}"
            end, err = _scan_string(text, i)
            if err:
                return err
            if end is None:
                return None  # the text ends inside the key
            state, i = "colon", end
            continue
        # a value is expected ("value" or "value_or_close")
        if c == "]" and state == "value_or_close":
            stack.pop()
            state, i = ("comma_or_close" if stack else "end"), i + 1
            continue
        if c == "{":
            stack.append("{")
            state, i = "key_or_close", i + 1
        elif c == "[":
            stack.append("[")
            state, i = "value_or_close", i + 1
        elif c == '"':
            end, err = _scan_string(text, i)
            if err:
                return err
            if end is None:
                return None
            state, i = ("comma_or_close" if stack else "end"), end
        elif c in "-0123456789":
            j = i
            while j < n and text[j] in _NUMBER_CHARS:
                j += 1
            tok = text[i:j]
            if j == n:
                return None if _number_prefix_ok(tok) else f"offset {i}: {tok!r} is not the start of a number"
            if not _NUMBER.fullmatch(tok):
                return f"offset {i}: {tok!r} is not a number"
            state, i = ("comma_or_close" if stack else "end"), j
        elif c.isalpha():
            j = i
            while j < n and text[j].isalpha():
                j += 1
            tok = text[i:j]
            if j == n:
                if any(lit.startswith(tok) for lit in _LITERALS):
                    return None
                return f"offset {i}: {tok!r} is not the start of true, false or null"
            if tok not in _LITERALS:
                return f"offset {i}: {tok!r} is not a JSON value"
            state, i = ("comma_or_close" if stack else "end"), j
        else:
            return f"offset {i}: {c!r} cannot start a JSON value"
    return None


def _scan_string(text: str, i: int) -> tuple[int | None, str | None]:
    """Scan the string opening at ``text[i]``: (offset after its closing quote, None), (None, None) when the
    text ends inside it, or (None, error)."""
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if c == '"':
            return j + 1, None
        if c == "\\":
            if j + 1 >= n:
                return None, None
            e = text[j + 1]
            if e not in _ESCAPES:
                return None, f"offset {j}: invalid escape \\{e}"
            if e == "u":
                hexes = text[j + 2 : j + 6]
                if not all(h in _HEX for h in hexes):
                    return None, f"offset {j}: invalid \\u escape {text[j : j + 6]!r}"
                if len(hexes) < 4:
                    return None, None
                j += 6
            else:
                j += 2
            continue
        if ord(c) < 0x20:
            return None, f"offset {j}: unescaped control character {c!r} in a string"
        j += 1
    return None, None


def judge_json_answer(
    judge: Judge,
    requirement: str,
    text: str,
    finish: Any,
    ex: Exchange | None,
    path: str,
    schema: dict[str, Any] | None = None,
    *,
    object_only: bool = True,
) -> str | None:
    """Judge ``text`` as the JSON answer of a json_object / json_schema request: a JSON object (any JSON value
    when not ``object_only``) that validates against ``schema`` when given; when cut by max_tokens
    (finish_reason length), a prefix of a JSON object. None when a complete answer was judged, else why it
    could not be (cut before any JSON, or a valid prefix that is no complete value to validate)."""
    if finish == "length":
        if not text.strip():
            return "the answer was cut by max_tokens before any JSON was produced"
        if not object_only and not text.lstrip().startswith("{"):
            return "the answer was cut by max_tokens: only a JSON object is checked as a prefix"
        err = json_prefix_error(text)
        judge.check(err is None, requirement, "the answer cut by max_tokens is not a prefix of a JSON object",
                    path=path, expected="a prefix of a JSON object", received=f"{text[:300]!r} ({err})",
                    exchange=ex)
        if err is not None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return "the answer was cut by max_tokens: a valid JSON prefix, not a complete value to validate"
    else:
        try:
            value = json.loads(text)
        except ValueError as exc:
            judge.check(False, requirement, "the content does not parse as JSON", path=path,
                        expected="a JSON object" if object_only else "JSON",
                        received=f"{text[:300]!r} ({exc})", exchange=ex)
            return None
    if object_only:
        judge.check(isinstance(value, dict), requirement, "the content is JSON but not an object", path=path,
                    expected="a JSON object", received=text[:300], exchange=ex)
    else:
        judge.check(True, requirement, "")
    if schema is None or (object_only and not isinstance(value, dict)):
        return None
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    for err in errors[:3]:
        judge.check(False, requirement, "the content does not validate against the requested schema",
                    path=path + "".join(f"[{p!r}]" for p in err.path), expected=json.dumps(schema),
                    received=f"{text[:200]!r}: {err.message}", exchange=ex)
    return None
