"""The official ``openai`` Python SDK reads every answer of the run (spec/DECISIONS.md#sdk), at no request.

Each recorded answer is handed to the installed SDK as if the endpoint had just sent it: a client whose
transport answers from the recording (nothing leaves the machine) runs the SDK's own path of
``client.chat.completions.create()`` (its JSON decoding, ``_process_response_data`` / ``construct_type``, its
SSE decoding and ``Stream``), then the attributes its documentation reads (``completion.choices[0].message
.content``, ``chunk.choices[0].delta.content``). A stream's chunks are then fed to the SDK's accumulator
(``ChatCompletionStreamState``: what ``client.chat.completions.stream()`` runs) and its final completion is
built; an answer to a strict ``json_schema`` request is parsed as ``client.chat.completions.parse()`` and
``.stream()`` parse it (``parse_chat_completion``, with the pydantic model a user would have written for the
schema).

Three requirements, each judged only where the one before it held, so that one deviation fails one of them:

* ``SDK-PARSE``: the SDK reads the answer (non-stream: a ``ChatCompletion``; stream: every chunk);
* ``SDK-STREAM-ACCUMULATE``: the accumulator merges the chunks into a final completion;
* ``SDK-STRUCTURED-PARSE``: parse() gives ``message.parsed`` for an answer with content.

Without the ``openai`` package (``pip install "chat-conformance[sdk]"``) nothing here is judged and the checks
of the family say "unsupported". The SDK's version is named in every record (``run-wide::SDK-PARSE[openai
X.Y.Z]``) and every failure.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import Any, Literal, Optional, Union

from conformance.checks._support import obj
from conformance.evidence import Exchange, SSEEvent, exchange_key
from conformance.schemas import schema_errors
from conformance.violations import Judge, run_wide_record

__all__ = ["SDK", "PARSE", "ACCUMULATE", "STRUCTURED", "NOT_INSTALLED", "sdk_version", "judge_exchange",
           "judge_sdk", "model_of"]

PARSE, ACCUMULATE, STRUCTURED = "SDK-PARSE", "SDK-STREAM-ACCUMULATE", "SDK-STRUCTURED-PARSE"
SDK: tuple[str, ...] = (PARSE, ACCUMULATE, STRUCTURED)
NOT_INSTALLED = 'the openai package is not installed (pip install "chat-conformance[sdk]")'
_SHOWN = 3  # offending exchanges kept as evidence per requirement
_NOT_THE_BODY = frozenset({"content-length", "content-encoding", "transfer-encoding"})  # the body is decoded
_EARLY = ("length", "content_filter")  # finish reasons for which the SDK's parse raises by design
_DEPTH = 12  # nesting of a json_schema turned into a model, beyond which it is Any


def sdk_version() -> str | None:
    """The installed openai package's version, or None when it cannot be imported."""
    try:
        import openai
    except ImportError:
        return None
    return str(getattr(openai, "__version__", "unknown"))


# ---- the SDK's client, answered from the recording ---------------------------------------------------------


def _client(ex: Exchange, content: bytes) -> Any:
    """An ``openai.OpenAI`` whose transport answers every request with ``ex``'s recorded answer."""
    import openai
    import openai._base_client as base

    http: Any = getattr(base, "httpx2", None) or getattr(base, "httpx")  # noqa: B009 (the SDK's HTTP library)
    headers = {k: v for k, v in ex.response_headers.items() if k.lower() not in _NOT_THE_BODY}

    def answer(request: Any) -> Any:
        return http.Response(ex.status or 200, headers=headers, content=content)

    return openai.OpenAI(api_key="recorded", base_url="http://recorded.invalid/v1", max_retries=0,
                         http_client=http.Client(transport=http.MockTransport(answer)))


def _sse(events: list[SSEEvent]) -> bytes:
    """The recorded events written back as an event stream (each as decoded: its event name, id, data)."""
    out = []
    for ev in events:
        lines = [] if not ev.event or ev.event == "message" else [f"event: {ev.event}"]
        if ev.id is not None:
            lines.append(f"id: {ev.id}")
        lines += [f"data: {line}" for line in ev.data.split("\n")]
        out.append("\n".join(lines) + "\n\n")
    return "".join(out).encode("utf-8")


_MESSAGES = [{"role": "user", "content": "recorded"}]  # never sent: the transport answers from the recording


def _raised(exc: BaseException) -> str:
    """The SDK's exception in words, with the line of the SDK (or pydantic) that raised it."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        f = frames[-1]
        path = f.filename.replace("\\", "/")
        for root in ("/openai/", "/pydantic/", "/pydantic_core/", "/jiter/"):
            if root in path:
                path = root.strip("/") + "/" + path.split(root, 1)[1]
                break
        where = f" (at {path}:{f.lineno})"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}{where}"


# ---- the pydantic model a user would write for a json_schema ----------------------------------------------


class _Unsupported(Exception):
    """A schema construct this translation does not know: the answer is not judged by SDK-STRUCTURED-PARSE."""


def model_of(schema: dict[str, Any], name: str = "Answer") -> Any:
    """The pydantic model a user passes to ``parse(response_format=...)`` for ``schema`` (the strict subset of
    JSON Schema: objects, arrays, the primitive types, enum/const, anyOf, nullable type lists, $ref to
    $defs), with pydantic's defaults (lax, extra keys ignored); None when the schema holds something else."""
    try:
        tp = _type_of(schema, schema, name, 0)
    except (_Unsupported, RecursionError):
        return None
    import pydantic

    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return tp
    return None  # parse() takes a model (or a dataclass-like type): a top-level non-object is not one


def _type_of(s: Any, root: dict[str, Any], name: str, depth: int) -> Any:
    import pydantic

    if depth > _DEPTH or not isinstance(s, dict):
        raise _Unsupported(name)
    if "$ref" in s:
        ref = s["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise _Unsupported(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = obj(target).get(part)
        return _type_of(target, root, name, depth + 1)
    if "const" in s:
        return Literal[s["const"]]
    if "enum" in s:
        values = s["enum"]
        if not isinstance(values, list) or not values:
            raise _Unsupported("enum")
        return Literal[tuple(values)]
    if "anyOf" in s:
        options = s["anyOf"]
        if not isinstance(options, list) or not options:
            raise _Unsupported("anyOf")
        return Union[tuple(_type_of(o, root, f"{name}{i}", depth + 1) for i, o in enumerate(options))]  # noqa: UP007
    kind = s.get("type")
    if isinstance(kind, list):
        types = tuple(_type_of({**s, "type": k}, root, name, depth + 1) for k in kind)
        return Union[types] if len(types) > 1 else types[0]  # noqa: UP007
    if kind == "object":
        props = s.get("properties") or {}
        if not isinstance(props, dict):
            raise _Unsupported("properties")
        required = set(s.get("required") or ())
        fields: dict[str, Any] = {}
        for key, sub in props.items():
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                raise _Unsupported(key)  # a user's model cannot name it as it is
            tp = _type_of(sub, root, f"{name}_{key}", depth + 1)
            fields[key] = (tp, ...) if key in required else (Optional[tp], None)  # noqa: UP045
        return pydantic.create_model(name, **fields)
    simple = {"string": str, "integer": int, "number": float, "boolean": bool, "null": type(None)}
    if kind in simple:
        return simple[kind]
    if kind == "array":
        items = s.get("items")
        if not isinstance(items, dict):
            return list[Any]
        return list[_type_of(items, root, f"{name}_item", depth + 1)]  # type: ignore[misc]
    if kind is None and not set(s) - {"description", "title", "default"}:
        return Any  # {}: any value
    raise _Unsupported(str(kind))


def _structured_model(request: dict[str, Any]) -> Any:
    """The model of a strict json_schema request's schema, or None (no such request, or no model for it)."""
    rf = obj(request.get("response_format"))
    if rf.get("type") != "json_schema":
        return None
    spec = obj(rf.get("json_schema"))
    schema = spec.get("schema")
    if spec.get("strict") is not True or not isinstance(schema, dict):
        return None  # without strict the answer need not keep the schema (JSON-SCHEMA-VALID's rule)
    return model_of(schema)


# ---- judging one exchange ----------------------------------------------------------------------------------


def _check(judge: Judge, ok: bool, rid: str, message: str, **kw: Any) -> None:
    """``judge.check`` for the requirements ``judge`` wants (a check marked with one of the family judges only
    that one, though it reads the answer through the steps before it)."""
    if judge.wants(rid):
        judge.check(ok, rid, message, **kw)


def _read(judge: Judge, ex: Exchange, version: str, rid: str, what: str, path: str, step: Any) -> Any:
    """``step()``, or a violation of ``rid`` naming the SDK's exception (None then)."""
    try:
        return step()
    except Exception as exc:  # whatever the SDK raises is what the user's code gets
        _check(judge, False, rid, f"openai {version}: {what} raised {type(exc).__name__}", path=path,
               expected=f"the openai SDK ({version}) reads the answer", received=_raised(exc), exchange=ex)
        return None


def _read_completion(completion: Any) -> Any:
    """What the SDK's documentation reads of a completion (the user's code), so that a missing or mistyped
    field raises here as it would there."""
    import openai.types.chat as types

    if not isinstance(completion, types.ChatCompletion):
        raise TypeError(f"create() returned {type(completion).__name__}, not a ChatCompletion "
                        f"({str(completion)[:120]!r})")
    _ = completion.id, completion.model
    for choice in completion.choices:
        message = choice.message
        _ = choice.index, choice.finish_reason, message.role, message.content
        for call in message.tool_calls or []:
            _ = (call.id, call.function.name, call.function.arguments) if call.type == "function" else call.id
    if completion.usage is not None:
        _ = completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens
    return completion


def _read_chunks(stream: Any) -> list[Any]:
    chunks = []
    for chunk in stream:  # the SDK's Stream: its SSE decoding, its error events, ChatCompletionChunk
        for choice in chunk.choices:
            _ = choice.index, choice.delta.content, choice.finish_reason
            for call in choice.delta.tool_calls or []:
                _ = call.index
        chunks.append(chunk)
    return chunks


def _accumulate(chunks: list[Any], model: Any = None) -> Any:
    from openai.lib.streaming.chat import ChatCompletionStreamState

    state: Any = ChatCompletionStreamState(response_format=model) if model is not None else (
        ChatCompletionStreamState())
    for chunk in chunks:
        list(state.handle_chunk(chunk))  # the events .stream() yields are built here too
    snapshot = state.current_completion_snapshot
    if any(c.finish_reason in _EARLY for c in snapshot.choices):
        return snapshot  # get_final_completion() raises for these by design (LengthFinishReasonError, ...)
    final = state.get_final_completion()
    for choice in final.choices:
        _ = choice.finish_reason, choice.message.content
    return final


def _parsed(judge: Judge, ex: Exchange, version: str, parsed: Any, where: str) -> None:
    """Every choice with content must come out of parse() with message.parsed set."""
    for choice in parsed.choices:
        message = choice.message
        if isinstance(message.content, str) and message.content and not message.tool_calls:
            _check(
                judge,
                message.parsed is not None,
                STRUCTURED,
                f"openai {version}: parse() read the answer to a json_schema request as no object "
                "(message.parsed is None: the SDK takes an answer with message.refusal set as refused)",
                path=f"{where}[{choice.index}].message.parsed",
                expected="message.parsed: the content parsed into the schema's model",
                received=f"parsed None; refusal {message.refusal!r}; content {message.content[:120]!r}",
                exchange=ex,
            )


def _null_call_type(ex: Exchange) -> bool:
    """A streamed tool-call fragment with ``type`` null (SGLang's continuation fragments): the SDK's chunk
    model declares the field optional, yet its accumulator copies the null over "function" and asserts
    (spec/DECISIONS.md#sdk): a defect of the SDK, not a deviation of the server (spec/DECISIONS.md#nulls)."""
    return any("type" in obj(call) and obj(call)["type"] is None
               for c in ex.chunks if isinstance(c, dict) for ch in c.get("choices") or []
               for call in obj(obj(ch).get("delta")).get("tool_calls") or [])


def _eligible(ex: Exchange) -> bool:
    """An answer the SDK would read as a completion: a 200 to a valid chat request, recorded whole."""
    if ex.status != 200 or ex.transport_error or not ex.url.rstrip("/").endswith("/chat/completions"):
        return False
    if schema_errors("CreateChatCompletionRequest", ex.request_json if isinstance(ex.request_json, dict)
                     else {}):
        return False  # an answer to an invalid request promises nothing (as for the run-wide invariants)
    if ex.stream:
        return bool(ex.events)
    return ex.body_text is not None and not ex.body_truncated


def judge_exchange(judge: Judge, ex: Exchange) -> None:
    """Judge the SDK family (those ``judge`` wants) on one exchange; nothing when the SDK is not installed or
    the exchange is no whole 200 answer to a valid request."""
    version = sdk_version()
    if version is None or not _eligible(ex):
        return
    request = obj(ex.request_json)
    finishes_early = False
    if not ex.stream:
        client = _client(ex, (ex.body_text or "").encode("utf-8"))
        create = client.chat.completions.create
        completion = _read(judge, ex, version, PARSE,
                           "client.chat.completions.create() (and reading completion.choices[i].message)",
                           "$", lambda: _read_completion(create(model="m", messages=_MESSAGES)))
        if completion is None:
            return
        _check(judge, True, PARSE, "")
        finishes_early = any(c.finish_reason in _EARLY for c in completion.choices)
        model = _structured_model(request)
        if model is not None and judge.wants(STRUCTURED) and not finishes_early:
            from openai.lib._parsing._completions import parse_chat_completion

            parsed = _read(judge, ex, version, STRUCTURED, "client.chat.completions.parse()", "$.choices",
                           lambda: parse_chat_completion(response_format=model, input_tools=[],
                                                         chat_completion=completion))
            if parsed is not None:
                _check(judge, True, STRUCTURED, "")
                _parsed(judge, ex, version, parsed, "$.choices")
        return
    client = _client(ex, _sse(ex.events))
    chunks = _read(judge, ex, version, PARSE,
                   "iterating client.chat.completions.create(stream=True) "
                   "(and reading chunk.choices[i].delta)",
                   "events", lambda: _read_chunks(
                       client.chat.completions.create(model="m", messages=_MESSAGES, stream=True)))
    if chunks is None:
        return
    _check(judge, True, PARSE, "")
    if not chunks or not judge.wants(ACCUMULATE) and not judge.wants(STRUCTURED):
        return
    if _null_call_type(ex):
        return  # the SDK's own ChoiceDeltaToolCall allows type null, its accumulator then asserts: its defect
    final = _read(judge, ex, version, ACCUMULATE, "ChatCompletionStreamState (the .stream() helper's "
                  "accumulator): handle_chunk() of every chunk, get_final_completion()", "events",
                  lambda: _accumulate(chunks))
    if final is None:
        return
    _check(judge, True, ACCUMULATE, "")
    finishes_early = any(c.finish_reason in _EARLY for c in final.choices)
    model = _structured_model(request)
    if model is not None and judge.wants(STRUCTURED) and not finishes_early:
        parsed = _read(judge, ex, version, STRUCTURED, "client.chat.completions.stream(response_format=...) "
                       "(its accumulator, then get_final_completion())", "events",
                       lambda: _accumulate(chunks, model))
        if parsed is not None:
            _check(judge, True, STRUCTURED, "")
            _parsed(judge, ex, version, parsed, "choices")


# ---- the run ----------------------------------------------------------------------------------------------


def judge_sdk(records: list[dict[str, Any]], requirements: Iterable[str]) -> list[dict[str, Any]]:
    """Records of the SDK family in ``requirements`` over every exchange in ``records`` (none without the
    openai package: the family's checks say it is unsupported)."""
    wanted = tuple(r for r in SDK if r in set(requirements))
    version = sdk_version()
    if not wanted or version is None:
        return []
    seen: dict[str, dict[str, Any]] = {}
    for rec in records:
        for raw in rec.get("exchanges", []):
            seen.setdefault(exchange_key(raw), raw)
    judged: dict[str, int] = dict.fromkeys(wanted, 0)
    found: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {r: [] for r in wanted}
    for raw in seen.values():
        if raw.get("status") != 200 or raw.get("transport_error"):
            continue
        ex = Exchange.from_dict(raw)
        judge = Judge(requirements=wanted)
        judge.exchanges.append(ex)
        judge_exchange(judge, ex)
        for rid in judge.judged:
            judged[rid] += 1
        for v in judge.violations:
            if len(found[v.requirement]) < _SHOWN and all(e is not raw for e, _ in found[v.requirement]):
                found[v.requirement].append((raw, vars(v)))
    out = []
    for rid in wanted:
        if not judged[rid]:
            continue
        offenders = found[rid]
        violations = [
            {**v, "exchange": k,
             "message": f"run-wide, in exchange {raw.get('label')!r} (one of {judged[rid]} judged): "
             + v["message"]}
            for k, (raw, v) in enumerate(offenders)
        ]
        out.append(run_wide_record(rid, violations, [raw for raw, _ in offenders],
                                   nodeid=f"run-wide::{rid}[openai {version}]"))
    return out
