"""A deterministic, hand-made results dict that exercises every section of the reports (tests, docs).

Built with :func:`conformance.results.build_results` from plain records, so it has the exact shape of a real
run: a passing core, a stream without ``[DONE]``, a wrong ``object`` (with a huge body and markup in it), a
500 after a dropped connection, a waived failure, an informational MAY, an unsupported capability and an
internal error of the suite. The target text deliberately carries ``<script>`` and ANSI escapes.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

__all__ = ["sample_results", "SAMPLE_STARTED"]

SAMPLE_STARTED = 1767225600.0  # 2026-01-01T00:00:00Z
URL = "http://127.0.0.1:8080/v1/chat/completions"
HOSTILE = "<script>alert(1)</script> \x1b[31mred\x1b[0m"


def _headers(stream: bool = False) -> dict[str, str]:
    h = {"Authorization": "Bearer ***", "Content-Type": "application/json"}
    if stream:
        h["Accept"] = "text/event-stream"
    return h


def _exchange(label: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    ex: dict[str, Any] = {
        "label": label, "method": "POST", "url": URL, "request_headers": _headers(bool(body.get("stream"))),
        "request_body": json.dumps(body), "stream": bool(body.get("stream")), "status": 200,
        "response_headers": {"content-type": "application/json"}, "body_text": None, "body_truncated": False,
        "events": [], "comments": 0, "ttfb": 0.0123, "elapsed": 0.0456, "transport_error": None, "retries": 0,
    }
    ex.update(kw)
    return ex


def _event(t: float, payload: Any) -> dict[str, Any]:
    if payload == "[DONE]":
        return {"t": t, "data": "[DONE]", "event": "message", "id": None, "done": True, "json": None,
                "json_error": None}
    return {"t": t, "data": json.dumps(payload, ensure_ascii=False), "event": "message", "id": None,
            "done": False, "json": payload, "json_error": None}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1767225600,
            "model": "tiny-chat", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _completion(obj: str = "chat.completion", content: str = "Hello!", **extra: Any) -> str:
    body = {"id": "chatcmpl-1", "object": obj, "created": 1767225600, "model": "tiny-chat",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}
    body.update(extra)
    return json.dumps(body, ensure_ascii=False)


def _record(nodeid: str, requirements: list[str], outcome: str = "passed", **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"nodeid": "conformance/checks/" + nodeid, "requirements": requirements,
                           "outcome": outcome, "skip_reason": "", "error": "", "duration": 0.05,
                           "judged": list(requirements) if outcome == "passed" else [], "violations": [],
                           "exchanges": []}
    rec.update(kw)
    return rec


def _violation(req: str, message: str, path: str, expected: str, received: str,
               exchange: int | None = 0) -> dict[str, Any]:
    return {"requirement": req, "message": message, "path": path, "expected": expected, "received": received,
            "exchange": exchange}


def sample_records(*, include_error: bool = False) -> list[dict[str, Any]]:
    """The records of the sample run; ``include_error`` adds an internal error of the suite (exit code 4)."""
    hello = {"model": "tiny-chat", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello"}]}
    stream_req = dict(hello, stream=True)
    core = _record("test_core.py::test_basic_completion",
                   ["CORE-SCHEMA-VALID", "CORE-CONTENT-TYPE", "CORE-REQUEST-JSON", "CORE-ID-PRESENT"],
                   exchanges=[_exchange("basic", hello, body_text=_completion())])
    padding = "x" * 30000
    wrong_object = _record(
        "test_core.py::test_object_field", ["CORE-OBJECT"], "failed",
        violations=[_violation("CORE-OBJECT", 'object is not "chat.completion"', "$.object",
                               '"chat.completion"', json.dumps("chat.completion.chunk" + HOSTILE))],
        exchanges=[_exchange("basic", hello, body_text=_completion("chat.completion.chunk" + HOSTILE,
                                                                   content=HOSTILE, padding=padding))])
    events = [_event(0.0131, _chunk({"role": "assistant", "content": ""})),
              _event(0.0152, _chunk({"content": HOSTILE})),
              _event(0.0174, _chunk({}, "stop"))]
    no_done = _record(
        "test_streaming.py::test_done_terminates", ["STREAM-DONE-TERMINATES", "STREAM-CHUNK-JSON"], "failed",
        judged=["STREAM-CHUNK-JSON"],
        violations=[_violation("STREAM-DONE-TERMINATES", "the stream ended without a data: [DONE] event",
                               "$.events[-1]", "data: [DONE]", f"end of stream after {len(events)} events")],
        exchanges=[_exchange("stream", stream_req, response_headers={"content-type": "text/event-stream"},
                             events=events, elapsed=0.0175)])
    malformed = _record(
        "test_errors.py::test_malformed_json", ["ERROR-MALFORMED-JSON"], "failed",
        violations=[_violation("ERROR-MALFORMED-JSON",
                               "a malformed JSON body was not rejected with a 4xx error", "status", "4xx",
                               "500", exchange=1)],
        exchanges=[
            _exchange("malformed", {}, request_body='{"model": "tiny-chat", "messages": [', status=None,
                      response_headers={}, ttfb=None, elapsed=0.0021, retries=1,
                      transport_error="RemoteProtocolError: server disconnected without sending a response"),
            _exchange("malformed", {}, request_body='{"model": "tiny-chat", "messages": [', status=500,
                      response_headers={"content-type": "text/html", "x-request-id": "req-" + HOSTILE},
                      body_text="<html><body><h1>Internal Server Error</h1>" + HOSTILE + "</body></html>"),
        ])
    seed = _record(
        "test_seed.py::test_seed_determinism", ["SEED-DETERMINISM"], "failed",
        violations=[_violation("SEED-DETERMINISM", "two requests with the same seed differ",
                               "$.choices[0].message.content", '"Hello!"', '"Hi there"', exchange=1)],
        exchanges=[_exchange("seed-a", dict(hello, seed=1234), body_text=_completion()),
                   _exchange("seed-b", dict(hello, seed=1234), body_text=_completion(content="Hi there"))])
    boundary = _record(
        "test_sampling.py::test_temperature_boundary", ["RANGE-TEMPERATURE-BOUNDARY"], "failed",
        violations=[_violation("RANGE-TEMPERATURE-BOUNDARY",
                               "temperature 2 (the exclusive bound) was accepted", "$.status", "400", "200")],
        exchanges=[_exchange("temperature=2", dict(hello, temperature=2), body_text=_completion())])
    tools = _record("test_tools.py::test_tool_call_shape", ["TOOLS-CALL-SHAPE"], "skipped",
                    skip_reason="unsupported: tools: target rejected the probe with HTTP 400: tools are not "
                                "supported by this model")
    crash = _record("test_usage.py::test_usage_integers", ["USAGE-INTEGERS"], "error",
                    error="KeyError: 'usage'\nconformance/checks/test_usage.py:42: in test_usage_integers\n"
                          "    usage = body['usage']")
    records = [core, wrong_object, no_done, malformed, seed, boundary, tools]
    if include_error:
        records.append(crash)
    return records + _filler(records)


def _filler(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A passing check for every other requirement (skipped when unsupported; none for logprobs)."""
    from conformance.catalog import catalog

    seen = {rid for r in records for rid in r["requirements"]}
    out = []
    for req in catalog().values():
        if req.id in seen or not req.applies_to("seed") or req.capability == "logprobs":
            continue
        nodeid = f"test_{req.capability.replace('-', '_')}.py::test_{req.id.lower().replace('-', '_')}"
        if req.capability in ("tools", "reasoning"):
            reason = "tools are not supported by this model" if req.capability == "tools" else \
                "declared by the profile"
            out.append(_record(nodeid, [req.id], "skipped",
                               skip_reason=f"unsupported: {req.capability}: {reason}"))
        else:
            out.append(_record(nodeid, [req.id]))
    return out


def sample_results(*, include_error: bool = False) -> dict[str, Any]:
    """The sample run's results (deterministic except ``spec_hash``, ``suite_version`` and the catalog, which
    follow the checkout)."""
    from conformance.results import build_results

    caps = {
        "tools": {"supported": False, "source": "probe",
                  "reason": "target rejected the probe with HTTP 400: tools are not supported by this model"},
        "json-object": {"supported": True, "source": "probe", "reason": "probe accepted (HTTP 200)"},
        "json-schema": {"supported": True, "source": "profile", "reason": "declared by the profile"},
        "reasoning": {"supported": False, "source": "profile", "reason": "declared by the profile"},
        "thinking": {"supported": True, "source": "probe", "reason": "probe inconclusive (HTTP 500)"},
    }
    waivers = {"SEED-DETERMINISM": {"reason": "batching makes seeded sampling nondeterministic (TICKET-12)",
                                    "expires": dt.date(2999, 12, 31)}}
    return build_results(
        sample_records(include_error=include_error),
        target={"base_url": "http://127.0.0.1:8080/v1", "model": "tiny-chat", "profile": "seed"},
        profile="seed", level="may", started=SAMPLE_STARTED, finished=SAMPLE_STARTED + 12.345,
        cost={"requests": 10, "retries": 1, "prompt_tokens": 72, "completion_tokens": 24},
        capabilities=caps, waivers=waivers, notes=["hand-made sample results (conformance.reports.sample)"])
