"""Run-wide invariants: rules that hold for every exchange, judged on every exchange of the run.

A check judges its requirement on the exchanges it asked for; a deviation that shows only on some answers
(``completion_tokens > max_tokens`` once max_tokens reaches 8, ``created`` changing in long streams, a
5xx text body to one bad input) hides from it. After the run, :func:`judge_run` walks every exchange the
run made (hand-written and generated checks, stream and non-stream, each exchange once) and judges the
invariants below on each. It sends nothing: it costs no request. The rules about tool calls, stop sequences
and JSON output (``_rules``, shared with the checks built for them) are judged the same way on every answer
that shows the thing: a call, a stop sequence in the text, a JSON response format
(spec/DECISIONS.md#opportunistic).

Each requirement judged here gives one record (``nodeid`` ``run-wide::ID``) shaped like a check's: it
passes when no exchange breaks the rule, fails naming the first offending exchanges as evidence. Only
exchanges that were answered (a status line, no transport error) are judged, and only requirements the run
selected whose own capability the target was not found without (:func:`run_wide_selection`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from conformance.catalog import catalog
from conformance.checks._rules import (
    calls_of,
    judge_args_json,
    judge_args_schema,
    judge_call_names,
    judge_call_shape,
    judge_json_answer,
    judge_stop_answer,
    judge_tool_finish,
    stops_of,
    stream_calls,
    tool_call_cut,
)
from conformance.checks._sdk import SDK, judge_sdk
from conformance.checks._stream import judge_stream
from conformance.checks._support import (
    judge_answer_fields,
    judge_error_shape,
    judge_schema,
    obj,
    refusal_of,
    split_think,
    stream_finish,
    stream_text,
)
from conformance.evidence import Exchange, exchange_key
from conformance.records import SkipKind, skip_kind_of
from conformance.schemas import schema_errors
from conformance.violations import SERVER_ERROR_STANDS, Judge, run_wide_record

__all__ = ["RUN_WIDE", "judge_run", "run_wide_selection"]

_STREAM = (
    "STREAM-CONTENT-TYPE",
    "STREAM-DATA-ONLY",
    "STREAM-CHUNK-JSON",
    "STREAM-CHUNK-SCHEMA",
    "STREAM-CHUNK-OBJECT",
    "STREAM-DONE-TERMINATES",
    "STREAM-NOTHING-AFTER-DONE",
    "STREAM-ID-CONSTANT",
    "STREAM-CREATED-CONSTANT",
    "STREAM-MODEL-CONSTANT",
    "STREAM-FINISH-ONCE",
    "STREAM-CHOICE-INDEX",
)
_COMPLETION = (
    "CORE-SCHEMA-VALID",
    "CORE-OBJECT",
    "CORE-ID-PRESENT",
    "CORE-FINISH-REASON",
    "CORE-MESSAGE-ROLE",
    "CORE-MESSAGE-CONTENT",
    "USAGE-INTEGERS",
    "USAGE-TOTAL-SUM",
    "MAXTOK-BOUND",
    "LOGPROBS-PRESENT",
    "LOGPROBS-TOP-ORDER",
)
_ERROR = ("ERROR-SHAPE", "ERROR-CONTENT-TYPE")
# judged on every request asked a second time because its first answer was a server error (the check was run
# once more: engine.run.run_check): a valid request answered 5xx twice (spec/DECISIONS.md, "A server error is
# asked twice")
_ASKED_AGAIN = "CORE-REQUEST-JSON"
_USAGE_STREAM = ("USAGE-TOTAL-SUM", "MAXTOK-STREAM-BOUND")
# judged on every answer that shows the thing: a tool call, a stop sequence, a JSON response format
# (spec/DECISIONS.md#opportunistic)
_TOOLS = (
    "TOOLS-CALL-SHAPE",
    "TOOLS-ARGS-JSON",
    "TOOLS-ARGS-SCHEMA",
    "TOOLS-FINISH-REASON",
    "TOOLS-CHOICE-NONE",
    "TOOLS-CHOICE-REQUIRED",
    "TOOLS-CHOICE-NAMED",
)
_STOPS = ("STOP-HONOURED", "STOP-SEQUENCE-EXCLUDED", "STOP-STREAM")
_JSON = ("JSON-OBJECT-VALID", "JSON-SCHEMA-VALID", "JSON-SCHEMA-STREAM")
# every requirement this module can judge
RUN_WIDE: tuple[str, ...] = tuple(
    dict.fromkeys(
        (*_STREAM, *_COMPLETION, *_ERROR, *_USAGE_STREAM, "CORE-ID-UNIQUE", *_TOOLS, *_STOPS, *_JSON,
         _ASKED_AGAIN, *SDK)
    )
)  # SDK: the official openai SDK's reading of every answer, judged by _sdk (spec/DECISIONS.md#sdk)
# statuses that are not the endpoint's own answer (rate limiter, gateway, overload): never judged here
_NOT_THE_ENDPOINT = frozenset({429, 502, 503, 504})
_REQUEST_SCHEMA = "CreateChatCompletionRequest"
_SHOWN = 3  # offending exchanges kept as evidence per requirement


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _max_tokens(request: dict[str, Any]) -> int | None:
    for key in ("max_tokens", "max_completion_tokens"):
        v = request.get(key)
        if _is_int(v) and v > 0:
            return int(v)
    return None


def _choices_wanted(request: dict[str, Any]) -> int:
    n = request.get("n")
    return int(n) if _is_int(n) and n > 0 else 1


def _judge_usage(
    judge: Judge, ex: Exchange, usage: dict[str, Any], request: dict[str, Any], where: str, bound_req: str
) -> None:
    counts = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    ints = all(_is_int(v) and v >= 0 for v in counts.values())
    if judge.wants("USAGE-INTEGERS"):
        judge.check(
            ints,
            "USAGE-INTEGERS",
            "usage counts are not non-negative integers",
            path=f"{where}.usage",
            expected="integers >= 0",
            received=counts,
            exchange=ex,
        )
    if not ints:
        return
    if judge.wants("USAGE-TOTAL-SUM"):
        total = counts["prompt_tokens"] + counts["completion_tokens"]  # type: ignore[operator]
        judge.check(
            counts["total_tokens"] == total,
            "USAGE-TOTAL-SUM",
            "total_tokens is not prompt + completion",
            path=f"{where}.usage.total_tokens",
            expected=total,
            received=counts["total_tokens"],
            exchange=ex,
        )
    limit = _max_tokens(request)
    if limit is not None and judge.wants(bound_req):
        n = _choices_wanted(request)
        judge.check(
            counts["completion_tokens"] <= n * limit,  # type: ignore[operator]
            bound_req,
            f"completion_tokens exceeds max_tokens ({limit}" + (f" x n={n}" if n > 1 else "") + ")",
            path=f"{where}.usage.completion_tokens",
            expected=f"<= {n * limit}",
            received=counts["completion_tokens"],
            exchange=ex,
        )


def _judge_completion(judge: Judge, ex: Exchange, request: dict[str, Any]) -> None:
    data = ex.json()
    if not isinstance(data, dict):
        return  # not JSON: the checks that asked for it judge that (CORE-REQUEST-JSON)
    w = judge.wants
    if w("CORE-SCHEMA-VALID"):
        judge_schema(judge, "CORE-SCHEMA-VALID", "ChatCompletion", data, ex)
    judge_answer_fields(judge, ex, data)
    raw_choices = data.get("choices")
    choices: list[Any] = raw_choices if isinstance(raw_choices, list) else []
    for i, c in enumerate(choices):
        choice = obj(c)
        fr = choice.get("finish_reason")
        content = obj(choice.get("message")).get("content")
        answered = isinstance(content, str) and content != "" and fr in ("stop", "length")
        if request.get("logprobs") is True and answered and w("LOGPROBS-PRESENT"):
            entries = obj(choice.get("logprobs")).get("content")
            judge.check(
                isinstance(entries, list) and len(entries) > 0,
                "LOGPROBS-PRESENT",
                "logprobs were asked for"
                + ("" if "top_logprobs" in request else " (without top_logprobs)")
                + " but the choice carries none",
                path=f"$.choices[{i}].logprobs",
                expected="logprobs.content: one entry per token",
                received=choice.get("logprobs"),
                exchange=ex,
            )
        if w("LOGPROBS-TOP-ORDER"):
            _judge_top_order(judge, ex, choice, i)
    usage = data.get("usage")
    if isinstance(usage, dict):
        _judge_usage(judge, ex, usage, request, "$", "MAXTOK-BOUND")


def _judge_top_order(judge: Judge, ex: Exchange, choice: dict[str, Any], i: int) -> None:
    entries = obj(choice.get("logprobs")).get("content")
    if not isinstance(entries, list):
        return
    for j, entry in enumerate(entries):
        tops = obj(entry).get("top_logprobs")
        if not isinstance(tops, list) or len(tops) < 2:
            continue
        raw_values = [obj(t).get("logprob") for t in tops]
        values: list[float] = [
            v for v in raw_values if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if len(values) != len(raw_values):
            continue  # LOGPROBS-VALUES judges the types
        ordered = all(a >= b - 1e-6 for a, b in zip(values, values[1:], strict=False))
        if not ordered:
            judge.check(
                False,
                "LOGPROBS-TOP-ORDER",
                "top_logprobs are not sorted from most to least likely",
                path=f"$.choices[{i}].logprobs.content[{j}].top_logprobs",
                expected="non-increasing logprobs",
                received=values,
                exchange=ex,
            )
            return
    judge.check(True, "LOGPROBS-TOP-ORDER", "")


def _judge_stream(judge: Judge, ex: Exchange, request: dict[str, Any]) -> None:
    judge_stream(judge, ex, n=_choices_wanted(request))
    chunks = [c for c in ex.chunks if isinstance(c, dict)]
    usage = next((c["usage"] for c in reversed(chunks) if isinstance(c.get("usage"), dict)), None)
    if usage is not None:
        _judge_usage(judge, ex, usage, request, "events[usage]", "MAXTOK-STREAM-BOUND")


def _judge_one(judge: Judge, ex: Exchange, stop_sequence: str | None = None) -> None:
    request = obj(ex.request_json)
    if ex.status is not None and ex.status >= 400:
        if ex.status not in _NOT_THE_ENDPOINT:
            judge_error_shape(judge, ex)
        return
    if ex.status != 200:
        return
    if schema_errors(_REQUEST_SCHEMA, request):
        return  # an answer to an invalid request (accepted where it should not be) promises nothing
    if ex.stream and (ex.events or ex.content_type == "text/event-stream"):
        _judge_stream(judge, ex, request)
    elif not ex.stream:
        _judge_completion(judge, ex, request)
    else:
        return
    if any(judge.wants(r) for r in (*_TOOLS, *_STOPS, *_JSON)):
        for choice in _choices(ex):
            _judge_opportunistic(judge, ex, request, choice, stop_sequence)


@dataclass
class _Choice:
    """One choice of an answer, streamed (reassembled from its deltas) or not."""

    index: int
    content: Any
    refusal: str | None
    finish: Any
    calls: list[Any]
    tokens: list[str] | None  # the logprob tokens, when every entry names one
    where: str  # JSON path of the message (or the stream's deltas)
    stream: bool
    raw_calls: bool = False  # the answer holds tool_calls in any form (a malformed one is judged elsewhere)


def _tokens(entries: Any) -> list[str] | None:
    if not isinstance(entries, list) or not entries:
        return None
    tokens = [obj(e).get("token") for e in entries]
    return [t for t in tokens if isinstance(t, str)] if all(isinstance(t, str) for t in tokens) else None


def _choices(ex: Exchange) -> list[_Choice]:
    if not ex.stream:
        raw = obj(ex.json()).get("choices")
        out = []
        for i, c in enumerate(raw if isinstance(raw, list) else []):
            ch = obj(c)
            msg = obj(ch.get("message"))
            tokens = _tokens(obj(ch.get("logprobs")).get("content"))
            out.append(_Choice(i, msg.get("content"), refusal_of(msg), ch.get("finish_reason"), calls_of(msg),
                               tokens, f"$.choices[{i}].message", False, bool(msg.get("tool_calls"))))
        return out
    chunks = [c for c in ex.chunks if isinstance(c, dict)]
    indices: list[int] = sorted({int(ch["index"]) for c in chunks for ch in c.get("choices") or []
                                 if isinstance(ch, dict) and _is_int(ch.get("index"))})
    out = []
    for i in indices:
        entries = [e for c in chunks for ch in c.get("choices") or []
                   if isinstance(ch, dict) and ch.get("index") == i
                   for e in (obj(ch.get("logprobs")).get("content") or [])]
        raw = any(obj(ch.get("delta")).get("tool_calls") for c in chunks for ch in c.get("choices") or []
                  if isinstance(ch, dict) and ch.get("index") == i)
        out.append(_Choice(i, stream_text(chunks, i), stream_text(chunks, i, "refusal") or None,
                           stream_finish(chunks, i), stream_calls(chunks, i), _tokens(entries),
                           f"choices[index={i}].delta", True, raw))
    return out


def _merge(judge: Judge, scratch: Judge, *, count: bool = True) -> None:
    """Carry what ``scratch`` judged into ``judge``, for the requirements ``judge`` wants (``count`` False:
    its violations only, what it passed does not count as judged)."""
    judge.violations.extend(v for v in scratch.violations if judge.wants(v.requirement))
    if count:
        judge.judged.update(r for r in scratch.judged if judge.wants(r))


def _judge_opportunistic(
    judge: Judge, ex: Exchange, request: dict[str, Any], c: _Choice, stop_sequence: str | None
) -> None:
    """The tool-call, stop and JSON rules (``_rules``) on one choice of an answer that shows the thing."""

    def scratch() -> Judge:
        return Judge(exchanges=judge.exchanges)  # the same evidence list: violations keep their index

    tools = [obj(t) for t in request.get("tools") or [] if isinstance(t, dict)]
    if tools:
        j = scratch()
        _judge_tools(j, ex, request, tools, c)
        _merge(judge, j)
    stops = stops_of(request)
    if stops and isinstance(c.content, str):
        j = scratch()
        mode = stop_sequence if stop_sequence in ("included", "excluded") else "included"
        answer_start = len(c.content) - len(split_think(c.content)[1])  # after any inline <think> segment
        judge_stop_answer(j, c.content, c.finish, stops, c.tokens, mode, ex, c.where + ".content",
                          honoured="STOP-STREAM" if c.stream else "STOP-HONOURED",
                          excluded="STOP-STREAM" if c.stream else "STOP-SEQUENCE-EXCLUDED",
                          start=answer_start)
        _merge(judge, j)
    rf = obj(request.get("response_format"))
    if rf.get("type") in ("json_object", "json_schema") and isinstance(c.content, str) and not c.calls:
        text = split_think(c.content)[1]  # an inline <think> segment is reasoning, not the answer
        if not text.strip() and (c.refusal is not None or c.finish == "length"):
            return  # a refusal stands in for the answer; or nothing but reasoning before the cut
        schema: dict[str, Any] | None = None
        object_only = True
        requirement = "JSON-OBJECT-VALID"
        if rf["type"] == "json_schema":
            spec = obj(rf.get("json_schema"))
            given = obj(spec.get("schema"))
            object_only = given.get("type") == "object"
            schema = given if spec.get("strict") is True else None  # without strict: JSON, not the schema
            requirement = "JSON-SCHEMA-STREAM" if c.stream else "JSON-SCHEMA-VALID"
        # a stop sequence may end the JSON early (finish_reason stop): then it is judged as a cut answer, a
        # prefix of a JSON object, and counts only when complete
        finish = "length" if stops and c.finish == "stop" else c.finish
        j = scratch()
        why = judge_json_answer(j, requirement, text, finish, ex, c.where + ".content", schema,
                                object_only=object_only)
        _merge(judge, j, count=why is None)


def _judge_tools(judge: Judge, ex: Exchange, request: dict[str, Any], tools: list[dict[str, Any]],
                 c: _Choice) -> None:
    fns = [obj(t.get("function")) for t in tools]
    names = [f["name"] for f in fns if isinstance(f.get("name"), str)]
    choice = request.get("tool_choice")
    named = obj(obj(choice).get("function")).get("name") if isinstance(choice, dict) else None
    forced = named is not None or choice == "required"
    finish_path = (f"choices[index={c.index}]" if c.stream else f"$.choices[{c.index}]") + ".finish_reason"
    if c.calls and not c.stream:
        judge_call_shape(judge, "TOOLS-CALL-SHAPE", c.calls, ex, c.where)
        judge_args_json(judge, "TOOLS-ARGS-JSON", c.calls, c.finish, ex, c.where)
    if c.calls and forced:
        schemas = {f["name"]: f.get("parameters") for f in fns if isinstance(f.get("name"), str)}
        judge_args_schema(judge, "TOOLS-ARGS-SCHEMA", c.calls, schemas, ex, c.where)
    if c.calls and choice == "required":
        judge_call_names(judge, "TOOLS-CHOICE-REQUIRED", c.calls, names, ex, c.where, "one of the tools")
    if c.calls and named is not None:
        judge_call_names(judge, "TOOLS-CHOICE-NAMED", c.calls, [named], ex, c.where, "the named function")
    if choice == "none":
        if c.calls:
            judge.check(False, "TOOLS-CHOICE-NONE", 'tool_choice "none" produced tool calls',
                        path=f"{c.where}.tool_calls", expected="no tool call", received=c.calls, exchange=ex)
        elif c.finish == "tool_calls":
            judge.check(False, "TOOLS-CHOICE-NONE", 'tool_choice "none" ended with finish_reason tool_calls',
                        path=finish_path, expected="stop or length", received=c.finish, exchange=ex)
        elif c.finish == "stop":
            judge.check(True, "TOOLS-CHOICE-NONE", "")
    if c.calls or not c.raw_calls:  # tool_calls that could not be read: TOOLS-CALL-SHAPE / -STREAM-FRAGMENTS
        cut = _choices_wanted(request) == 1 and tool_call_cut(c.calls, _completion_tokens(ex),
                                                                _max_tokens(request))
        judge_tool_finish(judge, "TOOLS-FINISH-REASON", c.calls, c.finish, forced, ex, finish_path, cut=cut)


def _completion_tokens(ex: Exchange) -> Any:
    """usage.completion_tokens of an answer (a stream's usage chunk), None without one."""
    if not ex.stream:
        return obj(obj(ex.json()).get("usage")).get("completion_tokens")
    chunks = [c for c in ex.chunks if isinstance(c, dict)]
    usage: dict[str, Any] = next(
        (c["usage"] for c in reversed(chunks) if isinstance(c.get("usage"), dict)), {})
    return usage.get("completion_tokens")


def _answer_id(ex: Exchange) -> Any:
    if ex.status != 200:
        return None
    if ex.stream:
        chunks = [c for c in ex.chunks if isinstance(c, dict)]
        return chunks[0].get("id") if chunks else None
    return obj(ex.json()).get("id")


def _judge_asked_again(judged: dict[str, int], found: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]],
                       xid: str, repeats: list[dict[str, Any]], exchanges: dict[str, dict[str, Any]]) -> None:
    """A valid request asked again after a server error (``repeats``: the later asks; ``xid``: the first
    answer's): answered at last (judged, kept), or a server error on every ask, ``SERVER_ERROR_STANDS`` times
    (CORE-REQUEST-JSON's finding: the target fails this request). A gateway's 502 or 504 is not the
    endpoint's answer: a request answered one of those is not judged here."""
    first = exchanges.get(xid)  # keyed by exchange_key: the xid
    asks = [e for e in (first, *repeats) if e is not None]
    statuses = [e.get("status") for e in asks]
    if any(s in _NOT_THE_ENDPOINT for s in statuses):
        return
    judged[_ASKED_AGAIN] += 1
    failing = all(isinstance(s, int) and s >= 500 for s in statuses)
    if not failing or len(asks) < SERVER_ERROR_STANDS or len(found[_ASKED_AGAIN]) >= _SHOWN:
        return
    last = asks[-1]
    found[_ASKED_AGAIN].append(
        (
            last,
            {
                "requirement": _ASKED_AGAIN,
                "message": f"a valid request was answered with a server error each of the {len(asks)} times "
                f"it was asked (HTTP {', '.join(str(s) for s in statuses)}; the check was run again after a "
                "pause each time): the target fails this request, no passing hiccup",
                "path": "status",
                "expected": "2xx and a completion",
                "received": f"{last.get('status')} {str(last.get('body_text') or '')[:160]}",
                "exchange": 0,
            },
        )
    )


def run_wide_selection(
    records: list[dict[str, Any]], capabilities: dict[str, dict[str, Any]] | None = None
) -> set[str]:
    """The requirements the run-wide judge takes up: every requirement a check of the run carries, less those
    whose **own** capability the target does not offer (``capabilities``: the run's, ``supported`` False).

    A check skipped as unsupported still selects its requirements: it was skipped for one capability (the
    generated invalid ``separate_reasoning`` request, for reasoning), and the contract requirements it also
    carries (ERROR-SHAPE on every error answer) owe nothing to that capability. A requirement of no optional
    capability is never unsupported. Without ``capabilities``, an optional requirement that a check skipped
    as unsupported carries counts as unsupported. A replay's check whose requests the recording lacks
    ("not recorded") selects nothing."""
    cat = catalog()
    off = {c for c, info in (capabilities or {}).items() if not obj(info).get("supported", True)}
    selected: set[str] = set()
    skipped_unsupported: set[str] = set()
    for r in records:
        kind = skip_kind_of(r)
        if kind is SkipKind.NOT_RECORDED:
            continue
        selected.update(r.get("requirements", []))
        if kind is SkipKind.UNSUPPORTED:
            skipped_unsupported.update(r.get("requirements", []))

    def unsupported(rid: str) -> bool:
        req = cat.get(rid)
        if req is None or not req.optional:
            return False
        return req.capability in off if capabilities is not None else rid in skipped_unsupported

    return {rid for rid in selected if not unsupported(rid)}


def judge_run(
    records: list[dict[str, Any]], requirements: Iterable[str], *, stop_sequence: str | None = None
) -> list[dict[str, Any]]:
    """Records of the run-wide invariants in ``requirements`` over every exchange in ``records``.
    ``stop_sequence`` is the profile's ("included" or "excluded"; None: included, and STOP-SEQUENCE-EXCLUDED
    is not judged)."""
    requirements = set(requirements)
    sdk = judge_sdk(records, requirements)
    wanted = tuple(r for r in RUN_WIDE if r in requirements and r not in SDK)
    if not wanted:
        return sdk
    exchanges: dict[str, dict[str, Any]] = {}
    for rec in records:
        for ex in rec.get("exchanges", []):
            exchanges.setdefault(exchange_key(ex), ex)
    judged: dict[str, int] = dict.fromkeys(wanted, 0)
    found: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {r: [] for r in wanted}
    ids: dict[str, dict[str, Any]] = {}
    chains: dict[str, list[dict[str, Any]]] = {}  # a request asked again after a 5xx: its first answer's xid
    for raw in exchanges.values():
        if not str(raw.get("url", "")).rstrip("/").endswith("/chat/completions"):
            continue
        if raw.get("status") is None or raw.get("transport_error"):
            continue
        ex = Exchange.from_dict(raw)
        judge = Judge(requirements=wanted)
        judge.exchanges.append(ex)
        _judge_one(judge, ex, stop_sequence)
        for rid in judge.judged:
            judged[rid] += 1
        for v in judge.violations:
            if len(found[v.requirement]) < _SHOWN and all(e is not raw for e, _ in found[v.requirement]):
                found[v.requirement].append((raw, vars(v)))
        if _ASKED_AGAIN in wanted and raw.get("asked_again") and not raw.get("refusal_expected"):
            chains.setdefault(str(raw["asked_again"]), []).append(raw)
        if "CORE-ID-UNIQUE" in wanted:
            rid = _answer_id(ex)
            if isinstance(rid, str) and rid:
                judged["CORE-ID-UNIQUE"] += 1
                first = ids.setdefault(rid, raw)
                if first is not raw and len(found["CORE-ID-UNIQUE"]) < _SHOWN:
                    found["CORE-ID-UNIQUE"].append(
                        (
                            raw,
                            {
                                "requirement": "CORE-ID-UNIQUE",
                                "message": f"two answers share the id {rid!r} "
                                f"(the other: {first.get('label')!r})",
                                "path": "$.id",
                                "expected": "an id no other answer of the run carries",
                                "received": rid,
                                "exchange": 0,
                            },
                        )
                    )
    for xid, repeats in chains.items():
        _judge_asked_again(judged, found, xid, repeats, exchanges)
    out = []
    for rid in wanted:
        if not judged[rid]:
            continue
        offenders = found[rid]
        violations = []
        for k, (raw, found_v) in enumerate(offenders):
            violations.append(
                {
                    **found_v,
                    "exchange": k,
                    "message": f"run-wide, in exchange {raw.get('label')!r} (one of {judged[rid]} judged): "
                    + found_v["message"],
                }
            )
        out.append(run_wide_record(rid, violations, [raw for raw, _ in offenders]))
    return out + sdk
