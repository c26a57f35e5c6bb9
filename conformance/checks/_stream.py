"""The stream state machine: one pass over a whole SSE exchange, judging every streaming rule asked of it."""

from __future__ import annotations

from typing import Any

from conformance.checks._support import judge_schema, obj
from conformance.evidence import Exchange
from conformance.violations import Inconclusive, Judge

__all__ = ["error_event", "judge_stream"]


def judge_stream(
    judge: Judge,
    ex: Exchange,
    *,
    n: int = 1,
    include_usage: bool | None = None,
    forbid_usage: bool = False,
    usage_empty_choices: bool = False,
) -> None:
    """Judge the requirements the check is marked with (``judge.wants``) over the exchange ``ex``.

    ``usage_empty_choices``: the profile wants the usage on an additional chunk with choices [] (OpenAI's
    layout, USAGE-STREAM-EMPTY-CHOICES); else usage on the finish chunk is as good."""
    w = judge.wants
    if ex.status is None:
        _judge_no_status_line(judge, ex)
        return
    if w("STREAM-CONTENT-TYPE"):
        judge.check(
            ex.content_type == "text/event-stream",
            "STREAM-CONTENT-TYPE",
            "wrong Content-Type",
            path="headers.content-type",
            expected="text/event-stream",
            received=ex.content_type,
            exchange=ex,
        )
    if w("STREAM-DATA-ONLY"):
        # an `event:` field renames the event (an EventSource's message handler never sees it); `id:` and
        # `retry:` change nothing a client delivers (spec/DECISIONS.md#data-only)
        extra = [(i, e.event) for i, e in enumerate(ex.events) if e.event != "message"]
        judge.check(
            not extra,
            "STREAM-DATA-ONLY",
            "events carry an event field",
            path=f"events[{extra[0][0]}]" if extra else "events",
            expected="data-only events (no event field)",
            received=f"event={extra[0][1]!r}" if extra else "",
            exchange=ex,
        )
    done = ex.done_index
    before = ex.events[:done] if done is not None else ex.events
    if w("STREAM-DONE-TERMINATES"):
        judge.check(
            done is not None,
            "STREAM-DONE-TERMINATES",
            "the stream did not end with data: [DONE]",
            path="events[-1]",
            expected="data: [DONE]",
            received=(ex.events[-1].data[:200] if ex.events else "no events")
            + (f" ({ex.transport_error})" if ex.transport_error else ""),
            exchange=ex,
        )
    if w("STREAM-NOTHING-AFTER-DONE") and done is not None:
        after = ex.events[done + 1 :]
        judge.check(
            not after,
            "STREAM-NOTHING-AFTER-DONE",
            "events follow data: [DONE]",
            path=f"events[{done + 1}]",
            expected="nothing",
            received=after[0].data[:200] if after else "",
            exchange=ex,
        )
    bad_json = [(i, e) for i, e in enumerate(before) if e.json is None and not e.done]
    if w("STREAM-CHUNK-JSON"):
        judge.check(
            not bad_json,
            "STREAM-CHUNK-JSON",
            "an event's data is not JSON",
            path=f"events[{bad_json[0][0]}].data" if bad_json else "events",
            expected="one JSON object",
            received=bad_json[0][1].data[:200] if bad_json else "",
            exchange=ex,
        )
    chunks = [(i, e.json) for i, e in enumerate(before) if isinstance(e.json, dict)]
    # an error event inside the 200 stream ({"error": {...}} mid-stream, vLLM): the answer failed after its
    # status line. Named once, as what it is (STREAM-CHUNK-SCHEMA: every event before [DONE] is a chunk); the
    # rules about a whole stream (one finish per choice, every choice, the usage chunk) are not judged on
    # what it cut short, nor the other chunk rules on it.
    errors = [(i, c) for i, c in chunks if error_event(c)]
    chunks = [(i, c) for i, c in chunks if not error_event(c)]
    if errors and w("STREAM-CHUNK-SCHEMA"):
        i, c = errors[0]
        judge.check(
            False,
            "STREAM-CHUNK-SCHEMA",
            f"an error event inside a 200 stream, after {len([k for k, _ in chunks if k < i])} chunk(s): the "
            "answer failed after its 200 status line, and an error object stands where chunks belong",
            path=f"events[{i}]",
            expected="chat.completion.chunk objects until data: [DONE]",
            received=before[i].data[:300],
            exchange=ex,
        )
    if w("STREAM-CHUNK-SCHEMA"):
        bad = 0
        for i, c in chunks:
            if not judge_schema(
                judge, "STREAM-CHUNK-SCHEMA", "ChatCompletionChunk", c, ex, where=f"events[{i}]"
            ):
                bad += 1
                if bad >= 3:
                    break
    if w("STREAM-CHUNK-OBJECT"):
        wrong = [(i, c.get("object")) for i, c in chunks if c.get("object") != "chat.completion.chunk"]
        judge.check(
            not wrong,
            "STREAM-CHUNK-OBJECT",
            "a chunk's object is wrong",
            path=f"events[{wrong[0][0]}].object" if wrong else "",
            expected="chat.completion.chunk",
            received=wrong[0][1] if wrong else "",
            exchange=ex,
        )
    for field, rid in (
        ("id", "STREAM-ID-CONSTANT"),
        ("created", "STREAM-CREATED-CONSTANT"),
        ("model", "STREAM-MODEL-CONSTANT"),
    ):
        if w(rid) and chunks:
            first = chunks[0][1].get(field)
            diff = [(i, c.get(field)) for i, c in chunks if c.get(field) != first]
            judge.check(
                not diff,
                rid,
                f"{field} changes between chunks",
                path=f"events[{diff[0][0]}].{field}" if diff else "",
                expected=first,
                received=diff[0][1] if diff else "",
                exchange=ex,
            )
    _judge_choices(judge, ex, chunks, n, whole=not errors)
    if not errors:
        _judge_usage(judge, ex, chunks, include_usage, forbid_usage, usage_empty_choices)


def error_event(chunk: dict[str, Any]) -> bool:
    """An event that is an error object, not a chunk: ``{"error": ...}`` (or vLLM's older ``{"object":
    "error", ...}``) with no choices."""
    return "choices" not in chunk and ("error" in chunk or chunk.get("object") == "error")


def _judge_no_status_line(judge: Judge, ex: Exchange) -> None:
    """A stream that never got its status line (spec/DECISIONS.md#rate-limits) has no headers, events or
    choices to judge. Only its end is: a stream that did not complete within the run's total deadline
    fails STREAM-DONE-TERMINATES, as one stalled or trickled after its headers does (bounded time, a clear
    failure). A connection refused, reset or closed before the status line, or a silence before it longer
    than the idle timeout (a queue), is no answer: inconclusive."""
    error = ex.transport_error or "no answer"
    if error.startswith("total deadline") and judge.wants("STREAM-DONE-TERMINATES"):
        judge.check(
            False,
            "STREAM-DONE-TERMINATES",
            "the stream did not end with data: [DONE] within the total deadline (--timeout): not even its "
            "status line arrived",
            path="status",
            expected="data: [DONE] within the deadline",
            received=error,
            exchange=ex,
        )
        return
    raise Inconclusive(f"the stream never got a status line ({error}): no answer, nothing to judge")


def _judge_choices(
    judge: Judge, ex: Exchange, chunks: list[tuple[int, dict[str, Any]]], n: int, *, whole: bool = True
) -> None:
    """``whole`` False: an error event cut the stream short; what it never sent (a choice, a finish) is not
    judged."""
    w = judge.wants
    seen: dict[int, dict[str, Any]] = {}
    bad_index: list[tuple[int, Any]] = []
    for i, c in chunks:
        for ch in c.get("choices") or []:
            if not isinstance(ch, dict):
                continue
            idx = ch.get("index")
            if not isinstance(idx, int) or not 0 <= idx < n:
                bad_index.append((i, idx))
                continue
            st = seen.setdefault(idx, {"first": True, "finishes": [], "empty_fr": None, "after": None})
            delta = obj(ch.get("delta"))
            if st["first"]:
                st["first"] = False
                if w("STREAM-ROLE-FIRST"):
                    judge.check(
                        delta.get("role") == "assistant",
                        "STREAM-ROLE-FIRST",
                        "the first delta of a choice has no role assistant",
                        path=f"events[{i}].choices[index={idx}].delta.role",
                        expected="assistant",
                        received=delta.get("role"),
                        exchange=ex,
                    )
            fr = ch.get("finish_reason")
            has_payload = (
                bool(delta.get("content"))
                or bool(delta.get("tool_calls"))
                or bool(delta.get("reasoning_content"))
            )
            if st["finishes"] and has_payload and st["after"] is None:
                st["after"] = i
            if fr is not None and fr != "":
                st["finishes"].append((i, fr))
            elif fr == "" and st["empty_fr"] is None:
                st["empty_fr"] = i
    if w("STREAM-CHOICE-INDEX"):
        judge.check(
            not bad_index,
            "STREAM-CHOICE-INDEX",
            "a chunk choice index is outside 0..n-1",
            path=f"events[{bad_index[0][0]}].choices[].index" if bad_index else "",
            expected=f"0..{n - 1}",
            received=bad_index[0][1] if bad_index else "",
            exchange=ex,
        )
        judge.check(
            sorted(seen) == list(range(n)) or not whole,
            "STREAM-CHOICE-INDEX",
            "not every choice index appears",
            path="choices[].index",
            expected=list(range(n)),
            received=sorted(seen),
            exchange=ex,
        )
    for idx, st in sorted(seen.items()):
        if w("STREAM-FINISH-ONCE"):
            judge.check(
                len(st["finishes"]) == 1 or (not whole and not st["finishes"]),
                "STREAM-FINISH-ONCE",
                f"choice {idx} got {len(st['finishes'])} non-null finish_reasons",
                path=f"choices[index={idx}].finish_reason",
                expected="exactly one",
                received=[fr for _, fr in st["finishes"]],
                exchange=ex,
            )
            judge.check(
                st["empty_fr"] is None,
                "STREAM-FINISH-ONCE",
                f'choice {idx} has finish_reason "" instead of null',
                path=f"events[{st['empty_fr']}].choices[index={idx}].finish_reason",
                expected="null",
                received='""',
                exchange=ex,
            )
        if w("STREAM-FINISH-LAST"):
            judge.check(
                st["after"] is None,
                "STREAM-FINISH-LAST",
                f"choice {idx} has deltas after its finish_reason",
                path=f"events[{st['after']}].choices[index={idx}].delta",
                expected="no delta",
                received="content after finish",
                exchange=ex,
            )


def _judge_usage(
    judge: Judge,
    ex: Exchange,
    chunks: list[tuple[int, dict[str, Any]]],
    include_usage: bool | None,
    forbid_usage: bool,
    usage_empty_choices: bool,
) -> None:
    w = judge.wants
    with_usage = [(i, c) for i, c in chunks if c.get("usage") is not None]
    last = chunks[-1] if chunks else None
    if include_usage and w("USAGE-STREAM-LAST-CHUNK"):
        # the seed: "included in the last response chunk returned"; whether that chunk is an extra one with
        # empty choices (OpenAI's layout) or the finish chunk is USAGE-STREAM-EMPTY-CHOICES (openai profile)
        judge.check(
            last is not None and isinstance(last[1].get("usage"), dict),
            "USAGE-STREAM-LAST-CHUNK",
            "the last chunk before [DONE] carries no usage",
            path=f"events[{last[0]}].usage" if last else "events",
            expected="a usage object",
            received={"choices": last[1].get("choices"), "usage": last[1].get("usage")} if last else None,
            exchange=ex,
        )
    if include_usage and usage_empty_choices and w("USAGE-STREAM-EMPTY-CHOICES") and last is not None:
        if isinstance(last[1].get("usage"), dict):  # no usage at all is USAGE-STREAM-LAST-CHUNK's to judge
            judge.check(
                last[1].get("choices") == [],
                "USAGE-STREAM-EMPTY-CHOICES",
                "the usage came on a chunk that carries choices, not on an additional chunk with choices []",
                path=f"events[{last[0]}].choices",
                expected="[]",
                received=last[1].get("choices"),
                exchange=ex,
            )
    if include_usage and w("USAGE-STREAM-NULL-ELSEWHERE"):
        others = [(i, c) for i, c in with_usage if chunks and i != chunks[-1][0]]
        judge.check(
            not others,
            "USAGE-STREAM-NULL-ELSEWHERE",
            "usage is set on a chunk that is not the last",
            path=f"events[{others[0][0]}].usage" if others else "",
            expected="null or absent",
            received=others[0][1].get("usage") if others else "",
            exchange=ex,
        )
    if forbid_usage and w("USAGE-STREAM-ABSENT"):
        judge.check(
            not with_usage,
            "USAGE-STREAM-ABSENT",
            "usage sent without stream_options.include_usage",
            path=f"events[{with_usage[0][0]}].usage" if with_usage else "",
            expected="no usage",
            received=with_usage[0][1].get("usage") if with_usage else "",
            exchange=ex,
        )
