"""The embedded reference server: a conformant ``POST /v1/chat/completions`` over :mod:`.model`.

Behaviour the checks can rely on (clean server):

* ``GET /v1/models`` lists one model (default ``reference-tiny``) with ``context_size`` (default 256);
  ``GET /v1/models/{model}`` answers its object, or 404 (``model_not_found``) for any other name.
* Chat template: ``<|role|>content\\n`` per message, then ``<|assistant|>``; prompt_tokens counts its tokens.
* Default max_tokens: ``min(64, context_length - prompt_tokens)``. Greedy text usually reaches ``<eos>``
  between 55 and 65 tokens, so small max_tokens end with finish_reason "length".
* Tools: tool_choice "required" or named always calls; "auto" (or absent) calls when the last message is a
  user message mentioning "weather" or a tool's name; "none" never calls. Arguments are generated to
  validate against the function's parameters schema.
* Reasoning: ``separate_reasoning: true`` (and enable_thinking not false) -> ``message.reasoning_content``
  (6 tokens); ``enable_thinking: true`` without separate_reasoning -> ``<think>...</think>`` at the start of
  content; otherwise no reasoning. Reasoning tokens count toward max_tokens and completion_tokens. The
  variants reasoning-unsupported, reasoning-always, reasoning-cut-content-null and reasoning-inline-always
  (:mod:`.variants`) imitate models whose reasoning ignores the two fields (12-24 reasoning tokens).
* Stop: profile "seed" keeps the stop sequence at the end of the text, profile "openai" cuts before it.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from conformance.reference import jsongen
from conformance.reference.faults import FAULTS
from conformance.reference.model import (
    END_THINK_ID,
    EOS_ID,
    THINK_ID,
    VALUE_WORD_IDS,
    VOCAB,
    Decoder,
    SamplingParams,
)
from conformance.reference.transport import Traffic
from conformance.reference.variants import VARIANTS

__all__ = ["create_app", "PROFILES", "REASONING_TOKENS", "DEFAULT_MAX_TOKENS"]

PROFILES = ("seed", "openai")
REASONING_TOKENS = 6
DEFAULT_MAX_TOKENS = 64
ROLES = ("system", "developer", "user", "assistant", "tool")
_CREATED_AT = int(time.time())
REFUSAL_TEXT = "I'm sorry, I can't help with that request."
SYSTEM_FINGERPRINT = "fp_reference0"
_SAMPLING_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "n",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "seed",
        "stream",
        "logprobs",
        "top_logprobs",
    }
)


# The "byte-level-vocab" variant numbers token id i as (i + shift) % size: the byte tokens (the last ids of
# VOCAB) come first, so that 100 is one of them, and " the" is 279 (as in Llama-3 and Qwen2).
_BYTES_FIRST_SHIFT = 279 - VOCAB.id_of(" the")

class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        err_type: str = "invalid_request_error",
        field_type_error: bool = False,
        out_of_range: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.err_type = err_type
        self.field_type_error = field_type_error
        self.out_of_range = out_of_range  # a number outside its documented range (found after parsing)


@dataclass
class ChatRequest:
    model: str
    prompt_ids: list[int]
    max_tokens: int
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    seed: int | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0
    tools: list[dict[str, Any]] = field(default_factory=list)
    call_tool: str | None = None
    forced_call: bool = False  # the call was forced by tool_choice "required" or a named function
    tool_choice: str = "none"  # none | auto | required | named
    response_format: dict[str, Any] | None = None
    reasoning: str = "none"  # none | separate | inline
    refuse: bool = False  # variant refusal-json-schema: answer with message.refusal instead of content
    reasoning_tokens: int = 6  # length of the reasoning segment when there is one
    last_message_tokens: int = 0  # the prompt's size had it held the last message alone
    counted_prompt_tokens: int | None = None  # fault history-counted-not-used: what usage counts instead


@dataclass
class Piece:
    token: int
    text: str
    logprobs: list[float] | None = None


@dataclass
class ChoiceOut:
    index: int
    reasoning: list[Piece] = field(default_factory=list)
    content: list[Piece] = field(default_factory=list)
    answer_start: int = 0  # index in content where the answer (after inline reasoning) starts
    tool_call: dict[str, Any] | None = None
    tool_pieces: list[Piece] = field(default_factory=list)
    refusal: list[Piece] | None = None  # variant refusal-json-schema: the refusal text, token by token
    finish_reason: str = "stop"
    completion_tokens: int = 0
    cut_in_reasoning: bool = False  # max_tokens ended the answer inside the reasoning


# --------------------------------------------------------------------------- validation helpers


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


def _type_error(name: str, expected: str) -> ApiError:
    return ApiError(
        400, f"'{name}' must be {expected}", name, "invalid_type", field_type_error=name in _SAMPLING_FIELDS
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _content_text(content: Any, where: str, *, allow_parts: bool) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if not allow_parts:
            raise _bad(f"{where}.content as an array of parts is not supported", f"{where}.content")
        texts = []
        for j, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _bad(
                    f"{where}.content[{j}] must be a text part {{type: 'text', text: string}}",
                    f"{where}.content[{j}]",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise _type_error(f"{where}.content", "a string or an array of text parts")


def _complete_char(prev: list[Piece], piece: Piece) -> int:
    """When the byte token ``piece`` completes a multi-byte UTF-8 character begun by the last byte tokens of
    ``prev``, the text goes where an incremental detokenizer puts it: the character on ``piece``, "" on the
    pieces before (each read U+FFFD alone). Returns how many of ``prev`` were rewritten (0: none)."""
    b = VOCAB.byte_value(piece.token)
    if b is None or not 0x80 <= b < 0xC0:  # only a continuation byte completes a character
        return 0
    for n in (1, 2, 3):
        run = prev[len(prev) - n :] if len(prev) >= n else []
        values = [VOCAB.byte_value(p.token) for p in run]
        if not run or any(v is None for v in values) or any(p.text != "\ufffd" for p in run):
            return 0
        try:
            char = bytes([*(v for v in values if v is not None), b]).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(char) == 1:
            for p in run:
                p.text = ""
            piece.text = char
            return n
    return 0


def obj_content(choice: Any) -> bool:
    """Whether a stream chunk's choice carries a content delta with text."""
    delta = choice.get("delta") if isinstance(choice, dict) else None
    return isinstance(delta, dict) and bool(delta.get("content"))


_FIRST_CHOICE = re.compile(r'"index":\s*0[,}]')


class _Server:
    def __init__(
        self,
        api_key: str | None,
        faults: frozenset[str],
        profile: str,
        model_name: str,
        context_length: int,
        latency_s: float,
        variants: frozenset[str] = frozenset(),
        *,
        ttft_s: float = 0.0,
        tps: float | None = None,
    ) -> None:
        self.api_key = api_key
        self.faults = faults
        self.variants = variants
        self.profile = profile
        self.model_name = model_name
        self.context_length = context_length
        self.latency_s = latency_s
        self.ttft_s = ttft_s  # --ttft: seconds to the first token of every completion (a model's latency)
        self.token_s = 1.0 / tps if tps else 0.0  # --tps: seconds per generated token after the first
        self.traffic = Traffic(variants)  # rate-limit-429, overloaded-503, slow-first-token
        self._seen_json_schema: dict[str, int] = {}  # variant refusal-json-schema: times each body was asked
        self._seen_noise: dict[str, int] = {}  # variant near-tie-noise: times each request was generated
        self._seen_lock = threading.Lock()

    def f(self, name: str) -> bool:
        return name in self.faults

    def v(self, name: str) -> bool:
        """Is the legitimate variant ``name`` (see :mod:`.variants`) switched on?"""
        return name in self.variants

    # ----------------------------------------------------------------------- errors

    def error_response(self, err: ApiError, *, stream: bool = False) -> Response:
        if self.f("range-error-500-text") and err.param == "n":
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        if self.f("bad-input-500-text") and err.field_type_error:
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        status = err.status
        auth_error = err.code == "invalid_api_key"
        if status == 400 and self.v("validation-422"):
            status = 422  # FastAPI's answer to a RequestValidationError, malformed JSON included
        if err.field_type_error and self.f("bad-input-500"):
            status = 500
        if self.f("error-with-200") and 400 <= status < 500 and not auth_error:
            status = 200
        inner: dict[str, Any] = {
            "message": err.message,
            "type": err.err_type,
            "param": err.param,
            "code": err.code,
        }
        if self.f("error-no-type"):
            del inner["type"]
        body: dict[str, Any] = {"error": err.message} if self.f("error-shape-wrong") else {"error": inner}
        if auth_error and self.f("auth-error-completion"):
            body = {
                "id": "chatcmpl-" + uuid.uuid4().hex,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Hello"},
                    }
                ],
            }
        payload = json.dumps(body)
        in_band = err.out_of_range and err.param == "top_logprobs"
        if stream and in_band and self.f("stream-range-error-in-band"):
            # vLLM 0.32: a range it checks only once generation is set up is sent inside a 200 stream, an
            # error event then [DONE] (the same request without stream gets a JSON 400)
            media = "text/event-stream" + ("; charset=utf-8" if self.v("content-type-charset") else "")
            return Response("".join(self.sse([body])), status_code=200, media_type=media,
                            headers={"Cache-Control": "no-cache"})
        if stream and self.f("stream-error-as-events"):
            return Response(
                f"data: {payload}\n\ndata: [DONE]\n\n", status_code=status, media_type="text/event-stream"
            )
        media = "text/plain" if self.f("error-content-type-text") else self.json_media()
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return Response(payload, status_code=status, media_type=media, headers=headers)

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        # 403 for a missing or wrong key: the auth-403 variant (API gateways) and the auth-status-403 fault
        status = 403 if self.v("auth-403") or self.f("auth-status-403") else 401
        header = request.headers.get("authorization")
        if header is None:
            if self.f("auth-not-checked"):
                return
            missing = "Missing bearer authentication (Authorization: Bearer <key>)."
            raise ApiError(status, missing, None, "invalid_api_key")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and (token.strip() == self.api_key or self.f("wrong-key-accepted")):
            return
        raise ApiError(status, "Incorrect API key provided.", None, "invalid_api_key")

    # ----------------------------------------------------------------------- validation

    def _number(
        self,
        body: dict[str, Any],
        name: str,
        lo: float,
        hi: float,
        default: Any,
        *,
        integer: bool = False,
        fault: str | None = None,
    ) -> Any:
        v = body.get(name)
        if v is None:
            return default
        if integer and not _is_int(v):
            if name == "top_k" and _is_num(v) and self.f("top-k-fraction-accepted"):
                v = int(v)
            else:
                raise _type_error(name, "an integer")
        if not _is_num(v):
            raise _type_error(name, "a number")
        if not lo <= v <= hi:
            if fault is not None and self.f(fault):
                return type(v)(min(max(v, lo), hi))
            raise ApiError(400, f"'{name}' must be between {lo} and {hi}, got {v}", name, "invalid_value",
                           out_of_range=True)
        return v

    def _bool(self, body: dict[str, Any], name: str) -> bool | None:
        v = body.get(name)
        if v is None:
            return None
        if not isinstance(v, bool):
            raise _type_error(name, "a boolean")
        return v

    def _messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        messages = body.get("messages")
        default: list[dict[str, Any]] = [{"role": "user", "text": "Hello", "tool_calls": None}]
        if messages is None:
            if self.f("missing-messages-accepted"):
                return default
            raise ApiError(400, "'messages' is a required property", "messages", "missing_required_parameter")
        if isinstance(messages, dict) and self.f("wrong-type-accepted"):
            messages = [messages]
        if not isinstance(messages, list):
            raise ApiError(400, "'messages' must be an array", "messages", "invalid_type")
        if not messages:
            if self.f("empty-messages-accepted"):
                return default
            raise _bad("'messages' must hold at least one message", "messages", "empty_array")
        out = []
        for i, m in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(m, dict):
                raise ApiError(400, f"{where} must be an object", where, "invalid_type")
            role = m.get("role")
            if not isinstance(role, str):
                raise ApiError(
                    400, f"{where}.role is required and must be a string", f"{where}.role", "invalid_type"
                )
            if role not in ROLES:
                if not (self.f("unknown-role-accepted") or self.v("unknown-role-accepted")):
                    raise _bad(
                        f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role"
                    )
                role = "user"
            if m.get("name") is not None and not isinstance(m.get("name"), str):
                raise _type_error(f"{where}.name", "a string")
            if m.get("name") is not None and self.f("message-name-rejected"):
                raise _bad(f"{where}.name is not supported", f"{where}.name")
            parts_ok = not self.f("content-parts-rejected")
            tool_calls = m.get("tool_calls")
            text = ""
            if role == "assistant":
                if tool_calls is not None:
                    if not isinstance(tool_calls, list):
                        raise _type_error(f"{where}.tool_calls", "an array")
                    for j, tc in enumerate(tool_calls):
                        fn = tc.get("function") if isinstance(tc, dict) else None
                        if (
                            not isinstance(tc, dict)
                            or not isinstance(tc.get("id"), str)
                            or tc.get("type", "function") != "function"
                            or not isinstance(fn, dict)
                            or not isinstance(fn.get("name"), str)
                            or not isinstance(fn.get("arguments"), str)
                        ):
                            raise _bad(
                                f"{where}.tool_calls[{j}] must be {{id, type: 'function', function: "
                                "{name, arguments: string}}",
                                f"{where}.tool_calls[{j}]",
                            )
                elif self.f("multi-turn-rejected"):
                    raise _bad(f"{where}: assistant messages are not supported", where)
                if m.get("content") is not None:
                    text = _content_text(m["content"], where, allow_parts=parts_ok)
                elif not tool_calls:
                    raise _bad(f"{where}.content is required unless tool_calls is set", f"{where}.content")
            else:
                if "content" not in m or m["content"] is None:
                    raise ApiError(
                        400, f"{where}.content is required", f"{where}.content", "missing_required_parameter"
                    )
                text = _content_text(m["content"], where, allow_parts=parts_ok)
                if role == "tool":
                    if self.f("tool-result-rejected"):
                        raise _bad(f"{where}: tool messages are not supported", where)
                    if not isinstance(m.get("tool_call_id"), str) or not m["tool_call_id"]:
                        raise ApiError(
                            400,
                            f"{where}.tool_call_id is required for tool messages",
                            f"{where}.tool_call_id",
                            "missing_required_parameter",
                        )
            if isinstance(m.get("content"), list) and self.f("content-parts-text-dropped"):
                text = ""
            out.append({"role": role, "text": text, "tool_calls": tool_calls})
        return out

    def _tools(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
        tools = body.get("tools")
        if tools is None:
            tools = []
        if not isinstance(tools, list):
            raise _type_error("tools", "an array")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            type_ok = t.get("type") == "function" if isinstance(t, dict) else False
            if isinstance(t, dict) and isinstance(t.get("type"), str) and self.f("tool-type-any-accepted"):
                type_ok = True
            if not isinstance(t, dict) or not type_ok or not isinstance(fn, dict):
                raise _bad(
                    f"tools[{i}] must be {{type: 'function', function: {{name, parameters}}}}", f"tools[{i}]"
                )
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise _bad(
                    f"tools[{i}].function.name must be a non-empty string", f"tools[{i}].function.name"
                )
            if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
                raise _type_error(f"tools[{i}].function.parameters", "an object (a JSON schema)")
            if fn.get("description") is not None and not isinstance(fn["description"], str):
                raise _type_error(f"tools[{i}].function.description", "a string")
        names = [t["function"]["name"] for t in tools]
        choice = body.get("tool_choice")
        if choice is None:
            return tools, "auto" if tools else "none"
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise _bad(
                    "tool_choice must be none, auto, required or {type: 'function', function: {name}}",
                    "tool_choice",
                )
            if choice == "auto" and self.f("tool-auto-rejected"):
                raise _bad("tool_choice 'auto' is not supported", "tool_choice")
            if choice == "required" and not tools:
                raise _bad("tool_choice 'required' needs tools", "tool_choice")
            return tools, choice
        if (
            not isinstance(choice, dict)
            or choice.get("type") != "function"
            or not isinstance(choice.get("function"), dict)
            or not isinstance(choice["function"].get("name"), str)
        ):
            raise _bad(
                "tool_choice must be none, auto, required or {type: 'function', function: {name}}",
                "tool_choice",
            )
        name = choice["function"]["name"]
        if name not in names:
            if self.f("tool-unknown-choice-accepted"):
                return tools, "auto" if tools else "none"
            raise _bad(f"tool_choice names function {name!r}, which is not among the tools", "tool_choice")
        return tools, {"name": name}

    def _response_format(self, body: dict[str, Any]) -> dict[str, Any] | None:
        rf = body.get("response_format")
        if rf is None:
            return None
        if not isinstance(rf, dict):
            raise _type_error("response_format", "an object")
        kind = rf.get("type")
        if kind == "text":
            if self.f("format-text-rejected"):
                raise _bad("response_format text is not supported", "response_format")
            return None
        if kind == "json_object":
            return rf
        if kind == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("schema"), dict):
                raise _bad(
                    "response_format json_schema needs json_schema.schema (an object)",
                    "response_format.json_schema",
                )
            if js.get("name") is not None and not isinstance(js["name"], str):
                raise _type_error("response_format.json_schema.name", "a string")
            return rf
        raise _bad("response_format.type must be text, json_object or json_schema", "response_format.type")

    def validate(self, body: Any) -> ChatRequest:
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object", None, "invalid_type")
        if self.v("lax-type-coercion"):
            body = _lax_coerce(body)
        model = body.get("model")
        if model is None:
            if not self.f("missing-model-accepted"):
                raise ApiError(400, "'model' is a required property", "model", "missing_required_parameter")
            model = self.model_name
        if not isinstance(model, str):
            raise ApiError(400, "'model' must be a string", "model", "invalid_type")
        messages = self._messages(body)

        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        mt_name = "max_tokens" if "max_tokens" in body else "max_completion_tokens"
        if isinstance(max_tokens, str) and self.f("wrong-type-accepted") and max_tokens.strip().isdigit():
            max_tokens = int(max_tokens)
        if max_tokens is not None:
            if not _is_int(max_tokens):
                raise ApiError(400, f"'{mt_name}' must be an integer", mt_name, "invalid_type")
            if max_tokens < 1:
                if not self.f("max-tokens-zero-accepted"):
                    raise _bad(f"'{mt_name}' must be at least 1, got {max_tokens}", mt_name)
                max_tokens = None

        stream = bool(self._bool(body, "stream"))
        so = body.get("stream_options")
        include_usage = False
        if so is not None:
            if not isinstance(so, dict):
                raise _type_error("stream_options", "an object")
            if not stream and not self.f("stream-options-without-stream-accepted"):
                raise _bad("stream_options is only allowed when stream is true", "stream_options")
            iu = so.get("include_usage")
            if iu is not None and not isinstance(iu, bool):
                raise _type_error("stream_options.include_usage", "a boolean")
            include_usage = bool(iu) and stream

        n = self._number(body, "n", 1, 128, 1, integer=True, fault="n-out-of-range-accepted")
        if n == 128 and self.f("n-128-rejected"):
            raise _bad("'n' must be below 128", "n")
        if body.get("n") == 1 and self.f("n-one-rejected"):
            raise _bad("'n' must be greater than 1 when given", "n")
        seed = body.get("seed")
        if seed is not None and not _is_int(seed):
            raise _type_error("seed", "an integer")
        temperature = self._number(body, "temperature", 0, 2, 1.0, fault="temperature-out-of-range-accepted")
        if 0 < temperature < 1 and self.f("temperature-rejected-inside"):
            raise _bad("'temperature' between 0 and 1 is not supported", "temperature")
        if body.get("temperature") == 2 and self.f("temperature-bound-rejected"):
            raise _bad("'temperature' must be below 2", "temperature")
        top_p = self._number(body, "top_p", 0, 1, 1.0, fault="top-p-out-of-range-accepted")
        if body.get("top_p") == 0 and self.f("top-p-zero-rejected"):
            raise _bad("'top_p' must be greater than 0", "top_p")
        if 0.1 < top_p < 1 and self.f("top-p-rejected-inside"):
            raise _bad("'top_p' between 0.1 and 1 is not supported", "top_p")
        top_k = self._number(body, "top_k", 1, 128, None, integer=True, fault="top-k-out-of-range-accepted")
        if top_k is not None and 1 < top_k < 128 and self.f("top-k-rejected-inside"):
            raise _bad("'top_k' is not supported", "top_k")
        if top_k == 128 and self.f("top-k-bound-rejected"):
            raise _bad("'top_k' must be below 128", "top_k")
        min_p = self._number(body, "min_p", 0, 1, 0.0, fault="min-p-out-of-range-accepted")
        if 0 < min_p < 1 and self.f("min-p-rejected-inside"):
            raise _bad("'min_p' between 0 and 1 is not supported", "min_p")
        fp = self._number(body, "frequency_penalty", -2, 2, 0.0, fault="penalty-out-of-range-accepted")
        if -2 < fp < 0 and self.f("frequency-penalty-rejected-inside"):
            raise _bad("negative 'frequency_penalty' is not supported", "frequency_penalty")
        if body.get("frequency_penalty") == -2 and self.f("frequency-penalty-bound-rejected"):
            raise _bad("'frequency_penalty' must be above -2", "frequency_penalty")
        pp = self._number(
            body, "presence_penalty", -2, 2, 0.0, fault="presence-penalty-out-of-range-accepted"
        )
        if -2 < pp < 0 and self.f("presence-penalty-rejected-inside"):
            raise _bad("negative 'presence_penalty' is not supported", "presence_penalty")
        if body.get("presence_penalty") == -2 and self.f("presence-penalty-bound-rejected"):
            raise _bad("'presence_penalty' must be above -2", "presence_penalty")
        rp = self._number(
            body, "repetition_penalty", 0, 2, 1.0, fault="repetition-penalty-out-of-range-accepted"
        )
        if body.get("repetition_penalty") == 0 and self.f("repetition-penalty-zero-rejected"):
            raise _bad("'repetition_penalty' must be greater than 0", "repetition_penalty")
        if 0 < rp < 1 and self.f("repetition-penalty-rejected-inside"):
            raise _bad("'repetition_penalty' below 1 is not supported", "repetition_penalty")

        logprobs = bool(self._bool(body, "logprobs"))
        top_logprobs = self._number(
            body, "top_logprobs", 0, 20, None, integer=True, fault="top-logprobs-out-of-range-accepted"
        )
        if top_logprobs is not None and not logprobs and not self.f("top-logprobs-without-logprobs-accepted"):
            raise _bad("'top_logprobs' requires 'logprobs' to be true", "top_logprobs")
        if top_logprobs == 0 and self.f("top-logprobs-zero-rejected"):
            raise _bad("'top_logprobs' must be at least 1", "top_logprobs")

        bias_raw = body.get("logit_bias")
        bias: dict[int, float] = {}
        if bias_raw is not None:
            if not isinstance(bias_raw, dict):
                raise _type_error("logit_bias", "an object mapping token ids to numbers")
            for k, v in bias_raw.items():
                if (
                    not (isinstance(k, str) and k.strip().lstrip("-").isdigit())
                    or not 0 <= int(k) < VOCAB.size
                ):
                    raise _bad(f"logit_bias key {k!r} is not a token id (0..{VOCAB.size - 1})", "logit_bias")
                if not _is_num(v):
                    raise _type_error(f"logit_bias[{k}]", "a number")
                if not -100 <= v <= 100:
                    if not self.f("logit-bias-out-of-range-accepted"):
                        raise _bad(f"logit_bias values must be between -100 and 100, got {v}", "logit_bias")
                    v = min(max(v, -100), 100)
                elif -100 < v < 100 and v != 0 and self.f("logit-bias-rejected-inside"):
                    raise _bad("logit_bias values must be -100, 0 or 100", "logit_bias")
                tid = int(k)
                if self.v("byte-level-vocab"):  # ids numbered with the byte tokens first (variants.py)
                    tid = (tid - _BYTES_FIRST_SHIFT) % VOCAB.size
                bias[tid] = float(v)

        stop_raw = body.get("stop")
        stops: list[str] = []
        if stop_raw is not None:
            if isinstance(stop_raw, str):
                if self.f("stop-string-rejected"):
                    raise _bad("'stop' must be an array", "stop")
                stops = [stop_raw]
            elif isinstance(stop_raw, list):
                if not all(isinstance(s, str) for s in stop_raw):
                    raise _type_error("stop", "a string or an array of strings")
                if len(stop_raw) > 4 and not self.f("five-stops-accepted"):
                    raise _bad(f"'stop' holds at most 4 sequences, got {len(stop_raw)}", "stop")
                if len(stop_raw) == 4 and self.f("four-stops-rejected"):
                    raise _bad("'stop' holds at most 3 sequences, got 4", "stop")
                stops = list(stop_raw)
            else:
                raise _type_error("stop", "a string or an array of strings")
            if any(s == "" for s in stops):
                raise _bad("stop sequences must be non-empty", "stop")

        behavior = body.get("context_length_exceeded_behavior")
        if behavior is None:
            behavior = "truncate"
        if not isinstance(behavior, str):
            raise _type_error("context_length_exceeded_behavior", "a string")
        if behavior not in ("truncate", "error"):
            if not self.f("context-behavior-any-accepted"):
                raise _bad(
                    "context_length_exceeded_behavior must be truncate or error",
                    "context_length_exceeded_behavior",
                )
            behavior = "truncate"

        tools, tool_choice = self._tools(body)
        response_format = self._response_format(body)
        separate = self._bool(body, "separate_reasoning")
        thinking = self._bool(body, "enable_thinking")

        if model != self.model_name and not self.f("unknown-model-accepted"):
            raise ApiError(
                404, f"The model {model!r} does not exist", "model", "model_not_found", field_type_error=True
            )  # bad-input-500 answers this with 500 as well

        # ---- prompt and context
        dropped = self.f("history-ignored") or self.f("history-counted-not-used")
        prompt_ids = VOCAB.encode(_render_prompt(messages[-1:] if dropped else messages))
        last_message_tokens = len(VOCAB.encode(_render_prompt(messages[-1:])))
        counted = len(VOCAB.encode(_render_prompt(messages))) if self.f("history-counted-not-used") else None
        ctx = self.context_length
        if len(prompt_ids) >= ctx:
            if not self.f("prompt-too-long-accepted"):
                raise _bad(
                    f"The prompt has {len(prompt_ids)} tokens; the context length is {ctx}",
                    "messages",
                    "context_length_exceeded",
                )
            prompt_ids = prompt_ids[-(ctx // 2) :]
        remaining = ctx - len(prompt_ids)
        if max_tokens is None:
            max_tokens = min(DEFAULT_MAX_TOKENS, remaining)
        elif len(prompt_ids) + max_tokens > ctx:
            refuse = (behavior == "error" and not self.f("context-error-ignored")) or (
                behavior == "truncate" and self.f("context-truncate-errors")
            )
            if refuse:
                raise _bad(
                    f"prompt ({len(prompt_ids)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                    f"context length {ctx}",
                    "max_tokens",
                    "context_length_exceeded",
                )
            if self.f("context-truncate-prompt") and max_tokens < ctx:
                # cut the prompt's start, keep the whole max_tokens
                prompt_ids = prompt_ids[len(prompt_ids) + max_tokens - ctx :]
            else:
                max_tokens = remaining
        if self.f("max-tokens-overshoot") and not stream and max_tokens >= 8:
            max_tokens = min(max_tokens + 3, remaining)
        if self.f("max-tokens-ignored") or (stream and self.f("stream-max-tokens-ignored")):
            max_tokens = remaining

        # ---- tools and reasoning decisions
        names = [t["function"]["name"] for t in tools]
        call: str | None = None
        if tools:
            last = messages[-1]
            mentions = [nm for nm in names if nm.lower() in last["text"].lower()]
            preferred = mentions[0] if mentions else names[0]
            if isinstance(tool_choice, dict):
                call = tool_choice["name"]
            elif tool_choice == "required" and not self.f("tool-required-as-auto"):
                call = None if self.f("tool-required-ignored") else preferred
            elif tool_choice in ("auto", "required"):  # fault tool-required-as-auto
                if last["role"] == "user" and ("weather" in last["text"].lower() or mentions):
                    call = preferred
            elif tool_choice == "none" and self.f("tool-choice-none-ignored"):
                call = names[0]
        if separate is False and self.f("reasoning-when-not-separated"):
            separate = True
        if thinking is False and self.f("thinking-not-disabled"):
            thinking = True
        if thinking is True and self.f("thinking-enable-ignored"):
            thinking = None
            separate = None
        reasoning = "none"
        if thinking is not False:
            if separate:
                reasoning = "inline" if self.f("reasoning-in-content") else "separate"
            elif thinking:
                reasoning = "inline"
        # variants: models whose reasoning ignores the two switches (spec/DECISIONS.md#reasoning-models)
        always_separate = self.v("reasoning-always") or self.v("reasoning-cut-content-null")
        if self.v("reasoning-cut-content-null"):
            reasoning = "separate"  # vLLM's reasoning parser: separate_reasoning / enable_thinking unknown
        elif self.v("reasoning-always"):
            reasoning = "inline" if separate is False else "separate"  # SGLang: separate_reasoning false
        if self.v("reasoning-inline-always"):
            # llama.cpp without a reasoning parser: the template forces <think> into every free-text answer
            # (a grammar-constrained answer, tool call or response_format, starts at its first token)
            grammar = call is not None or response_format is not None
            reasoning = "none" if grammar else "inline"
        elif self.v("reasoning-unsupported"):
            reasoning = "none"  # a model without a reasoning mode: both fields accepted and ignored
        realistic = always_separate or self.v("reasoning-inline-always")
        reasoning_tokens = 12 + sum(prompt_ids) % 13 if realistic else REASONING_TOKENS

        params = SamplingParams(
            temperature=0.0 if self.f("always-greedy")
            or (self.f("greedy-at-temperature-1") and temperature <= 1) else float(temperature),
            top_p=1.0 if self.f("top-p-ignored")
            else 1e-9 if self.f("top-p-keeps-only-the-top") and top_p < 1 else float(top_p),
            top_k=None if self.f("top-k-ignored") else top_k,
            min_p=0.0 if self.f("min-p-ignored")
            else 1.0 if self.f("min-p-keeps-only-the-top") and min_p > 0 else float(min_p),
            frequency_penalty=0.0 if self.f("penalties-ignored")
            else -float(fp) if self.f("frequency-penalty-backwards") else float(fp),
            presence_penalty=0.0 if self.f("presence-penalty-ignored")
            else -float(pp) if self.f("presence-penalty-backwards") else float(pp),
            skip_top=frozenset(k for k in ("top_k", "top_p", "min_p")
                               if self.f(k.replace("_", "-") + "-skips-top")),
            repetition_penalty=1.0 if self.f("repetition-penalty-ignored")
            else 1.0 / float(rp) if self.f("repetition-penalty-backwards") and rp > 0 else float(rp),
            logit_bias={
                k: v
                for k, v in bias.items()
                if not (v > 0 and self.f("logit-bias-ignored"))
                and not (v < 0 and self.f("logit-bias-ban-ignored"))
            },
        )
        if self.f("presence-penalty-ignored-confident"):
            params.presence_penalty, params.logit_scale = 0.0, 5.5
        # (a server that ignores repetition_penalty keeps its own default whatever the request says)
        if self.v("default-repeat-penalty") and ("repetition_penalty" not in body
                                                 or self.f("repetition-penalty-ignored")):
            # llama.cpp's repeat_penalty 1.1 divides a real model's logits (20-30): on this model's small
            # logits (5-10) the same shift takes 1.3
            params.unreported_repetition_penalty = 1.3
        if self.f("stop-ignored") or (stream and self.f("stop-stream-ignored")):
            stops = []
        if self.f("n-ignored"):
            n = 1
        elif self.f("n-default-two") and body.get("n") is None:
            n = 2
        return ChatRequest(
            model=model,
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            n=n,
            stream=stream,
            include_usage=include_usage,
            seed=None if self.f("seed-ignored") else seed,
            params=params,
            stop=stops,
            logprobs=logprobs or self.f("logprobs-by-default"),
            top_logprobs=top_logprobs or 0,
            tools=tools,
            call_tool=call,
            forced_call=call is not None and (isinstance(tool_choice, dict) or tool_choice == "required"),
            tool_choice="named" if isinstance(tool_choice, dict) else str(tool_choice),
            response_format=response_format,
            reasoning=reasoning,
            refuse=self._refuse(body, response_format, call),
            reasoning_tokens=reasoning_tokens,
            last_message_tokens=last_message_tokens,
            counted_prompt_tokens=counted,
        )

    def _refuse(self, body: dict[str, Any], response_format: dict[str, Any] | None, call: str | None) -> bool:
        """Variant refusal-json-schema: every other time the same json_schema request is asked (the 1st, 3rd,
        ... time), the answer is a refusal, so a client that re-asks once gets an answer to judge."""
        if not self.v("refusal-json-schema") or call is not None:
            return False
        if response_format is None or response_format.get("type") != "json_schema":
            return False
        key = json.dumps(body, sort_keys=True, ensure_ascii=False)
        seen = self._seen_json_schema.get(key, 0)
        self._seen_json_schema[key] = seen + 1
        return seen % 2 == 0

    # ----------------------------------------------------------------------- generation

    def _noise_key(self, req: ChatRequest, index: int) -> str:
        what = repr((req.prompt_ids, req.max_tokens, req.seed, req.params, req.stop, req.logprobs,
                     req.top_logprobs, req.tools, req.tool_choice, req.response_format, index))
        with self._seen_lock:
            n = self._seen_noise.get(what, 0)
            self._seen_noise[what] = n + 1
        return f"{what}/{n}"

    def generate_choice(self, req: ChatRequest, index: int) -> ChoiceOut:
        # the n-th time the same request is generated it gets the n-th draw: identical requests without a seed
        # differ (and, under near-tie-noise, at near-ties whatever the seed: this request's own numerics), but
        # a run repeats exactly, so that no test of the suite hinges on a draw (issue 22)
        key = self._noise_key(req, index)
        rng = random.Random(f"{req.seed}/{index}") if req.seed is not None else random.Random(f"free/{key}")
        jitter = random.Random(f"near-tie-noise/{key}") if self.v("near-tie-noise") else None
        drift = random.Random(f"seeded-draw-drift/{key}") if self.v("seeded-draw-drift") else None
        dec = Decoder(req.prompt_ids, req.params, rng, jitter=jitter, drift=drift)
        want = req.logprobs
        budget = req.max_tokens
        out = ChoiceOut(index=index)
        used = 0

        def take(step_token: int, lps: list[float] | None) -> Piece:
            return Piece(step_token, VOCAB.token_str(step_token), lps)

        # reasoning
        if req.reasoning != "none":
            target = out.reasoning if req.reasoning == "separate" else out.content
            if req.reasoning == "inline" and used < budget:
                st = dec.step(forced=THINK_ID, want_logprobs=want)
                target.append(take(st.token, st.logprobs))
                used += 1
            for _ in range(req.reasoning_tokens):
                if used >= budget:
                    break
                st = dec.step(allowed=VALUE_WORD_IDS, want_logprobs=want)
                target.append(take(st.token, st.logprobs))
                used += 1
            if req.reasoning == "inline" and used < budget:
                st = dec.step(forced=END_THINK_ID, want_logprobs=want)
                target.append(take(st.token, st.logprobs))
                used += 1
            if used >= budget:
                out.finish_reason = "length"
                out.answer_start = len(out.content)
                out.completion_tokens = used
                out.cut_in_reasoning = True
                if self._stop_over_reasoning(req):
                    self._stop_inline(req, out, [], "length")
                return out
        out.answer_start = len(out.content)

        if req.refuse:
            pieces = [Piece(EOS_ID, w) for w in re.findall(r"\s*\S+", REFUSAL_TEXT)]
            out.refusal = pieces[: budget - used]
            used += len(out.refusal)
            out.finish_reason = "stop" if len(out.refusal) == len(pieces) else "length"
            out.completion_tokens = used
            return out

        planner = Decoder(req.prompt_ids + [THINK_ID], req.params, rng, jitter=jitter)

        def words() -> str:
            return VOCAB.token_str(planner.step(allowed=VALUE_WORD_IDS).token)

        forced_text: str | None = None
        if req.call_tool is not None:
            tool = next(t for t in req.tools if t["function"]["name"] == req.call_tool)
            name = req.call_tool
            schema = tool["function"].get("parameters") or {"type": "object", "properties": {}}
            args = jsongen.generate(schema, words)
            if not isinstance(args, dict):
                args = {}
            stream_fault = req.stream and self.f("tool-args-invalid-schema-stream")
            if self.f("tool-args-invalid-schema") or stream_fault:
                args = jsongen.violate(args, schema)
            if self.f("tool-named-wrong"):
                others = [t["function"]["name"] for t in req.tools if t["function"]["name"] != name]
                name = others[0] if others else name + "_other"
            if req.stream and req.tool_choice == "required" and self.f("tool-required-stream-wrong-name"):
                name += "_v2"  # a function that is not among the tools
            text = json.dumps(args, ensure_ascii=False)
            if self.v("tool-args-not-object"):  # the model's JSON passed through unconstrained
                text = "false"
            cut = False
            for tid in VOCAB.encode(text):
                if used >= budget:
                    cut = True
                    break
                st = dec.step(forced=tid, want_logprobs=False)
                out.tool_pieces.append(take(st.token, None))
                used += 1
            arguments = "".join(p.text for p in out.tool_pieces)
            out.tool_call = {
                "id": "call_0" if self.f("tool-call-id-reused") else "call_" + uuid.uuid4().hex[:24],
                "name": name,
                "arguments": arguments,
                "args_value": args if not cut else None,
            }
            cut_reported = cut and not self.f("tool-call-cut-finish-tool-calls")
            out.finish_reason = "length" if cut_reported else "tool_calls"
            forced_stop = req.forced_call and self.v("forced-call-finish-stop")
            if not cut and (self.f("tool-finish-stop") or forced_stop):
                out.finish_reason = "stop"
            out.completion_tokens = used
            return out

        rf = req.response_format
        if rf is not None and rf["type"] == "json_object" and not self.f("json-object-prose"):
            key = words().strip()
            value = (words() + words()).strip()
            forced_text = json.dumps({key: value}, ensure_ascii=False)
        elif rf is not None and rf["type"] == "json_schema" and not (
            self.f("json-schema-loose-prose") and rf["json_schema"].get("strict") is not True
        ):
            schema = rf["json_schema"]["schema"]
            value = jsongen.generate(schema, words)
            if self.f("json-schema-invalid"):
                value = jsongen.violate(value, schema)
            forced_text = json.dumps(value, ensure_ascii=False)

        answer: list[Piece] = []
        finish = "length"
        before_answer = used
        running = ""
        whole = self._stop_over_reasoning(req)
        if whole:  # the stop sequences are matched over the inline reasoning as well
            running = "".join(p.text for p in out.content)
            if any(st in running for st in req.stop):
                budget = used
        max_stop = max((len(s) for s in req.stop), default=0)
        forced_ids = VOCAB.encode(forced_text) if forced_text is not None else None
        while used < budget:
            if forced_ids is not None:
                if len(answer) >= len(forced_ids):
                    finish = "stop"
                    break
                st = dec.step(forced=forced_ids[len(answer)], want_logprobs=want)
            else:
                st = dec.step(want_logprobs=want)
                if st.token == EOS_ID:
                    finish = "stop"
                    break
            piece = take(st.token, st.logprobs)
            joined = _complete_char(answer, piece)  # a multi-byte character's text, once all its bytes came
            answer.append(piece)
            used += 1
            if req.stop:
                running = running[: len(running) - joined] + piece.text
                tail = running[-(max_stop + len(piece.text) + 1) :]
                if any(s in tail for s in req.stop):
                    break
        if forced_ids is not None and len(answer) >= len(forced_ids):
            finish = "stop"
        consumed = len(answer)
        if whole:
            self._stop_inline(req, out, answer, finish)
            return out
        if req.stop:
            include = self.profile == "seed" or self.f("stop-kept")
            if len(req.stop) > 1 and self.f("stop-kept-with-several"):
                include = True
            if self.f("stop-wrong-inclusion"):
                include = False
            answer, hit, consumed = _apply_stop(
                answer, req.stop, include, whole_tokens=self.v("stop-at-token-end")
            )
            if hit:
                finish = "stop"
        out.content.extend(answer)
        out.completion_tokens = before_answer + consumed
        out.finish_reason = finish
        return out

    def _stop_over_reasoning(self, req: ChatRequest) -> bool:
        """llama.cpp without a reasoning parser: the <think> segment is content, and stops match in it."""
        return bool(req.stop) and req.reasoning == "inline" and self.v("reasoning-inline-always")

    def _stop_inline(self, req: ChatRequest, out: ChoiceOut, answer: list[Piece], finish: str) -> None:
        """Apply the stop sequences over the inline reasoning (out.content) and ``answer`` together."""
        keep = self.f("stop-kept") or (len(req.stop) > 1 and self.f("stop-kept-with-several"))
        include = (self.profile == "seed" or keep) and not self.f("stop-wrong-inclusion")
        kept, hit, consumed = _apply_stop(out.content + answer, req.stop, include)
        out.content = kept
        out.answer_start = min(out.answer_start, len(kept))
        out.completion_tokens = consumed
        out.finish_reason = "stop" if hit else finish
        if hit:
            out.cut_in_reasoning = False

    def complete(self, req: ChatRequest) -> list[ChoiceOut]:
        choices = [self.generate_choice(req, i) for i in range(req.n)]
        if req.tools and req.tool_choice == "auto" and self.f("finish-tool-calls-without-call"):
            for c in choices:
                if c.tool_call is None:
                    c.finish_reason = "tool_calls"
        return choices

    # ----------------------------------------------------------------------- rendering

    def usage(self, req: ChatRequest, choices: list[ChoiceOut], *, stream: bool) -> dict[str, Any]:
        counted = req.counted_prompt_tokens
        prompt: float = len(req.prompt_ids) if counted is None else counted
        if self.f("prompt-tokens-constant"):
            prompt = 10
        completion = sum(c.completion_tokens for c in choices)
        if self.f("reasoning-tokens-uncounted"):
            completion -= sum(len(c.reasoning) + c.answer_start for c in choices)
        if self.f("n-usage-one-choice"):
            completion = choices[0].completion_tokens
        if not stream:
            if self.f("completion-tokens-wrong") and completion > 0:
                completion -= 1
            if self.f("usage-float"):
                prompt += 0.5
        elif self.f("stream-usage-differs"):
            prompt += 1
        if stream and self.f("stream-usage-last-message"):
            prompt = req.last_message_tokens
        if stream and self.f("stream-usage-first-choice"):
            completion = choices[0].completion_tokens
        total = prompt + completion
        if stream and self.f("stream-usage-total-wrong"):
            total += 1
        if self.f("usage-total-wrong"):
            total += 1
        out: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
        }
        if self.v("null-optional-fields"):  # SGLang: UsageInfo.prompt_tokens_details None unless cache report
            out["prompt_tokens_details"] = None
            out["completion_tokens_details"] = None
        if self.v("extra-fields"):  # the OpenAI API's token breakdowns
            reasoning = sum(len(c.reasoning) + c.answer_start for c in choices)
            out["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
            out["completion_tokens_details"] = {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        return out

    def lp_entry(self, piece: Piece, k: int) -> dict[str, Any]:
        vec = piece.logprobs
        assert vec is not None
        lp = vec[piece.token]
        count = k + 1 if self.f("top-logprobs-count-wrong") else k
        if k > 1 and (self.f("top-logprobs-fewer") or self.v("fewer-top-logprobs")):
            count = k - 1  # an engine that caps the alternatives (OpenAI: "may be fewer than requested")
        tops = heapq.nsmallest(count, range(len(vec)), key=lambda i: (-vec[i], i))
        suffix = "_" if self.f("logprobs-tokens-wrong") else ""
        top_list = []
        for i in tops:
            tok = VOCAB.token_str(i) + suffix
            raw = VOCAB.token_bytes(i) + suffix.encode() if VOCAB.is_byte(i) else None
            top_list.append({"token": tok, "logprob": vec[i], "bytes": self._bytes(tok, raw)})
        if self.f("top-logprobs-unsorted"):
            top_list.reverse()
        if self.f("logprobs-positive"):
            lp = -lp + 0.5
        elif self.f("logprobs-greedy-inconsistent"):
            lp = lp - 0.25
        # a byte token reads U+FFFD by itself, whatever text its piece carries (the character it completes,
        # or "" before that): its bytes field holds the byte (OpenAI: combine the bytes of such tokens)
        byte = VOCAB.is_byte(piece.token)
        tok = (VOCAB.token_str(piece.token) if byte else piece.text) + suffix
        raw = VOCAB.token_bytes(piece.token) + suffix.encode() if byte else None
        return {"token": tok, "logprob": lp, "bytes": self._bytes(tok, raw), "top_logprobs": top_list}

    def _bytes(self, token: str, raw: bytes | None = None) -> list[int] | None:
        # null-optional-fields: OpenAI documents bytes as "Can be null if there is no bytes representation"
        if self.v("null-optional-fields"):
            return None
        if self.f("logprob-bytes-replacement"):  # the decoded token string's bytes: U+FFFD for a partial one
            return list(token.encode("utf-8"))
        return list(raw if raw is not None else token.encode("utf-8"))

    def choice_logprobs(self, req: ChatRequest, c: ChoiceOut) -> dict[str, Any] | None:
        if not req.logprobs:
            return None
        if self.f("logprobs-null-without-top") and req.top_logprobs == 0:
            return None
        entries = [self.lp_entry(p, req.top_logprobs) for p in c.content if p.logprobs is not None]
        if self.f("logprobs-count-wrong") and entries:
            entries = entries[:-1]
        return {"content": entries, "refusal": None}

    def tool_call_obj(self, c: ChoiceOut, *, arguments: Any) -> dict[str, Any]:
        assert c.tool_call is not None
        obj: dict[str, Any] = {
            "id": c.tool_call["id"],
            "type": "function",
            "function": {"name": c.tool_call["name"], "arguments": arguments},
        }
        if self.f("tool-call-no-type"):
            del obj["type"]
        return obj

    def finish(self, c: ChoiceOut) -> str:
        if c.finish_reason == "length" and self.f("length-reported-as-stop"):
            return "stop"
        return c.finish_reason

    def _refusal_with_answer(self, req: ChatRequest) -> bool:
        """Fault json-schema-refusal-with-answer: a json_schema answer also carries refusal "none"."""
        rf = req.response_format
        return self.f("json-schema-refusal-with-answer") and rf is not None and rf["type"] == "json_schema"

    def _shape_message(self, message: dict[str, Any]) -> None:
        """null-optional-fields: SGLang's ChatMessage (pydantic, every optional field None) serialised
        without exclude_none; extra-fields: the OpenAI API's message fields."""
        if self.v("null-optional-fields"):
            for key in ("reasoning_content", "tool_calls", "refusal", "function_call"):
                message.setdefault(key, None)
        if self.v("extra-fields"):
            message.setdefault("refusal", None)
            message.setdefault("annotations", [])

    def _shape_top(self, obj: dict[str, Any], *, chunk: bool = False) -> None:
        """The top-level optional fields of a completion or chunk under the shape variants."""
        if self.v("null-optional-fields"):
            obj.setdefault("system_fingerprint", None)
            if chunk:
                obj.setdefault("usage", None)
        if self.v("extra-fields"):
            obj["system_fingerprint"] = SYSTEM_FINGERPRINT
            obj["service_tier"] = "default"
            if chunk:  # "An obfuscation string added to normalize the size of streamed chunks"
                obj["obfuscation"] = uuid.uuid4().hex[: random.randint(1, 24)]

    def _shape_delta(self, choice: dict[str, Any]) -> None:
        """A chunk choice under the shape variants. null-optional-fields: SGLang's DeltaMessage and ToolCall
        (pydantic, optional fields None) serialised without exclude_none: role null after the first delta,
        id/type/function.name null on continuation fragments. extra-fields: OpenAI's first delta carries
        refusal null."""
        delta = choice["delta"]
        if self.v("extra-fields") and "role" in delta:
            delta.setdefault("refusal", None)
        if not self.v("null-optional-fields"):
            return
        choice.setdefault("matched_stop", None)
        for key in ("role", "content", "reasoning_content", "tool_calls"):
            delta.setdefault(key, None)
        for frag in delta["tool_calls"] or []:
            for key in ("id", "type"):
                frag.setdefault(key, None)
            fn = frag.setdefault("function", {})
            if isinstance(fn, dict):
                fn.setdefault("name", None)

    def body(
        self, req: ChatRequest, choices: list[ChoiceOut], completion_id: str, created: int
    ) -> dict[str, Any]:
        out_choices = []
        for c in choices:
            content: str | None = "".join(p.text for p in c.content)
            message: dict[str, Any] = {
                "role": "bot" if self.f("role-wrong") else "assistant",
                "content": content,
            }
            if c.tool_call is not None:
                message["content"] = None
                args: Any = c.tool_call["arguments"]
                if self.f("tool-args-object"):
                    try:
                        args = json.loads(args)
                    except ValueError:
                        args = {"partial": args}
                elif self.f("tool-args-not-json") or (
                    req.tool_choice == "named" and self.f("tool-args-not-json-named")
                ):
                    try:
                        parsed = json.loads(args)
                        args = ", ".join(f"{k}={v}" for k, v in parsed.items()) or "no arguments"
                    except (ValueError, AttributeError):
                        args = "arguments: " + args
                message["tool_calls"] = [self.tool_call_obj(c, arguments=args)]
                if req.tool_choice == "named" and self.f("tool-call-id-empty-named"):
                    message["tool_calls"][0]["id"] = ""
            elif self.f("content-null") and req.response_format is None:
                message["content"] = None
            elif c.cut_in_reasoning and req.reasoning == "separate" and self.v("reasoning-cut-content-null"):
                message["content"] = None  # vLLM's reasoning parser: no answer text was produced
            if req.reasoning == "separate":
                message["reasoning_content"] = "".join(p.text for p in c.reasoning)
            if c.refusal is not None:  # OpenAI structured outputs: content null, the refusal in its own field
                message["content"] = None
                message["refusal"] = "".join(p.text for p in c.refusal)
            elif self._refusal_with_answer(req) and message.get("content"):
                message["refusal"] = "none"
            self._shape_message(message)
            finish = self.finish(c)
            if self.f("finish-reason-invalid"):
                finish = {"stop": "end", "length": "max_length", "tool_calls": "function"}.get(finish, finish)
            if self.f("finish-reason-invalid-later-choices") and c.index >= 1:
                finish = "eos"
            out_choices.append(
                {
                    "index": c.index + (1 if self.f("choices-index-wrong") else 0),
                    "message": message,
                    "logprobs": self.choice_logprobs(req, c),
                    "finish_reason": finish,
                    **({"matched_stop": None} if self.v("null-optional-fields") else {}),
                }
            )
        body: dict[str, Any] = {
            "id": "" if self.f("id-empty") else completion_id,
            "object": "chat_completion" if self.f("wrong-object") else "chat.completion",
            "created": created * 1000 if self.f("created-milliseconds") else created,
            "model": "some-other-model" if self.f("model-name-wrong") else req.model,
            "choices": out_choices,
            "usage": self.usage(req, choices, stream=False),
        }
        self._shape_top(body)
        if self.f("system-fingerprint-integer"):
            body["system_fingerprint"] = 1
        if self.f("choices-empty"):
            body["choices"] = []
        if self.f("model-missing"):
            del body["model"]
        if self.f("usage-missing"):
            del body["usage"]
        return body

    def stream_chunks(
        self, req: ChatRequest, choices: list[ChoiceOut], completion_id: str, created: int
    ) -> list[dict[str, Any]]:
        """The chunks of a stream, in order (the usage chunk last when asked for)."""
        per_choice: list[list[dict[str, Any]]] = []
        plain = not req.stop and req.response_format is None and req.call_tool is None
        for c in choices:
            idx = c.index + (1 if self.f("stream-choice-index-wrong") else 0)
            events: list[tuple[dict[str, Any], Any, bool]] = []  # (delta, logprobs, is_content)
            first: dict[str, Any] = {
                "role": "assistant",
                "content": None if c.tool_call or c.refusal is not None else "",
            }
            if self.f("no-role-first"):
                del first["role"]
            if c.cut_in_reasoning and req.reasoning == "separate" and self.v("reasoning-cut-content-null"):
                del first["content"]  # no content delta at all: the answer never left the reasoning
            events.append((first, None, False))
            for p in c.reasoning:
                key = "content" if self.f("reasoning-stream-in-content") else "reasoning_content"
                events.append(({key: p.text}, None, True))
            pieces = list(c.content)
            if self.f("stream-differs") and plain and len(pieces) > c.answer_start:
                p0 = pieces[c.answer_start]
                text = p0.text.upper() if p0.text.upper() != p0.text else p0.text + "~"
                pieces[c.answer_start] = replace(p0, text=text)
            with_lp = req.logprobs and not self.f("logprobs-stream-missing")
            drop = self.f("stream-drops-multibyte")  # a character made of several byte tokens goes missing
            content_events: list[tuple[dict[str, Any], Any, bool]] = [
                (
                    {"content": "" if drop and VOCAB.is_byte(p.token) and p.text != "\ufffd" else p.text},
                    {"content": [self.lp_entry(p, req.top_logprobs)], "refusal": None}
                    if with_lp and p.logprobs is not None
                    else None,
                    True,
                )
                for p in pieces
            ]
            if self.f("single-chunk") and len(content_events) > 1:
                merged_lp = None
                if with_lp:
                    merged_lp = {
                        "content": [e for _, lp, _ in content_events if lp for e in lp["content"]],
                        "refusal": None,
                    }
                content_events = [({"content": "".join(p.text for p in pieces)}, merged_lp, True)]
            if (
                self.f("json-schema-stream-invalid")
                and req.response_format is not None
                and req.response_format["type"] == "json_schema"
            ):
                content_events.insert(0, ({"content": "//"}, None, True))
            events.extend(content_events)
            for p in c.refusal or []:  # OpenAI structured outputs: a refusal streams as delta.refusal
                events.append(({"refusal": p.text}, None, True))
            if c.refusal is None and pieces and self._refusal_with_answer(req):
                events.append(({"refusal": "none"}, None, True))
            if c.tool_call is not None:
                whole = self.v("tool-call-one-fragment")  # llama.cpp, SGLang: the call in one fragment
                tix = 1 if self.f("stream-tool-call-index-from-1") else 0
                frag: dict[str, Any] = {
                    "index": tix,
                    "id": c.tool_call["id"],
                    "type": "function",
                    "function": {
                        "name": c.tool_call["name"],
                        "arguments": "".join(p.text for p in c.tool_pieces) if whole else "",
                    },
                }
                if self.f("tool-stream-no-id"):
                    del frag["id"]
                if self.f("tool-call-no-type"):
                    del frag["type"]
                events.append(({"tool_calls": [frag]}, None, True))
                for p in [] if whole else c.tool_pieces:
                    events.append(
                        ({"tool_calls": [{"index": tix, "function": {"arguments": p.text}}]}, None, True)
                    )
            if self.v("role-with-content") and len(events) > 1 and events[1][2]:
                # llama.cpp's server: the role rides on the first delta that carries a token
                lead = {k: v for k, v in events[0][0].items() if k != "content"}
                events[:2] = [({**lead, **events[1][0]}, events[1][1], True)]
            finish = self.finish(c)
            chunks = [
                {"index": idx, "delta": d, "logprobs": lp, "finish_reason": None} for d, lp, _ in events
            ]
            final = {"index": idx, "delta": {}, "logprobs": None, "finish_reason": finish}
            if self.f("two-finish-reasons") and len(chunks) > 1:
                chunks[-1]["finish_reason"] = finish
            if self.f("content-after-finish") and len(chunks) > 1 and events[-1][2]:
                chunks.insert(len(chunks) - 1, final)
            else:
                chunks.append(final)
            for ch in chunks:
                self._shape_delta(ch)
            per_choice.append(chunks)

        out: list[dict[str, Any]] = []
        usage = self.usage(req, choices, stream=True)
        for chunks in per_choice:
            for ch in chunks:
                out.append(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "choices": [ch],
                    }
                )
        if req.include_usage:
            for ch in out:
                ch["usage"] = dict(usage) if self.f("usage-every-chunk") else None
            on_finish = self.v("usage-on-finish-chunk") or self.f("usage-chunk-with-choices")
            if on_finish and out and not self.f("no-usage-chunk"):
                out[-1]["usage"] = usage  # on the last chunk, the one carrying finish_reason
            elif not self.f("no-usage-chunk"):
                out.append(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "choices": [],
                        "usage": usage,
                    }
                )
        elif self.f("usage-stream-unrequested"):
            out.append(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req.model,
                    "choices": [],
                    "usage": usage,
                }
            )
        for i, ch in enumerate(out):
            self._shape_top(ch, chunk=True)
            if self.f("stream-id-changes"):
                ch["id"] = "chatcmpl-" + uuid.uuid4().hex
            if self.f("stream-created-changes") and i % 2 == 1:
                ch["created"] = created + 1
            if self.f("stream-created-changes-late") and i >= 20:
                ch["created"] = created + 1
            if self.f("stream-model-changes") and i % 2 == 1:
                ch["model"] = req.model + "-v2"
            if self.f("chunk-wrong-object"):
                ch["object"] = "chat.completion"
            if self.f("chunk-schema-invalid"):
                ch["created"] = str(ch["created"])
            if self.f("stream-chunk-error-member"):
                ch["error"] = {"code": 0, "message": ""}
        if self.f("stream-error-event") and req.n > 1:  # vLLM: an engine error after the status line
            cut: int | None = next(
                (i for i, ch in enumerate(out) for c in ch["choices"] if obj_content(c)), None)
            if cut is not None:
                error = {"message": "EngineCore encountered an issue.", "type": "InternalServerError",
                         "param": None, "code": 500}
                out = [*out[: cut + 1], {"error": error}]
        return out

    def sse(self, chunks: list[dict[str, Any]]) -> list[str]:
        prefix = "event: chunk\n" if self.f("stream-event-field") else ""
        events = [f"{prefix}data: {json.dumps(ch)}\n\n" for ch in chunks]
        if self.f("stream-invalid-json") and events:
            events.insert(1, f'{prefix}data: {{"id": "broken", "choices": [\n\n')
        if not self.f("no-done"):
            events.append(f"{prefix}data: [DONE]\n\n")
            if self.f("events-after-done") and chunks:
                events.append(f"{prefix}data: {json.dumps(chunks[-1])}\n\n")
        if self.v("sse-id-retry"):  # sse-starlette's ServerSentEvent(id=..., retry=...): clients ignore both
            events = [f"id: {i}\n{e}" for i, e in enumerate(events)]
            if events:
                events[0] = "retry: 3000\n" + events[0]
        if self.v("sse-comments-crlf"):
            # sse-starlette's keep-alive comments, CRLF line ends (json.dumps never writes a raw newline);
            # the first event also holds a comment line inside its own block
            events = [": ping\r\n\r\n" + e.replace("\n", "\r\n") for e in events]
            if events:
                events[0] = ": stream open\r\n" + events[0].removeprefix(": ping\r\n\r\n")
        return events

    def json_media(self) -> str:
        """The Content-Type of a JSON answer; content-type-charset adds the charset parameter (FastAPI's
        JSONResponse, TGI)."""
        return "application/json; charset=utf-8" if self.v("content-type-charset") else "application/json"

    # ----------------------------------------------------------------------- endpoints

    async def chat_completions(self, request: Request) -> Response:
        refused = self.traffic.refuse()
        if refused is not None:
            return refused
        stalled = self.traffic.stall_s()
        if stalled > 0:  # stall-mid-run: nothing for a while, then the answer
            await asyncio.sleep(stalled)
        stream_hint = False
        try:
            self.check_auth(request)
            raw = await request.body()
            try:
                body = json.loads(raw, parse_constant=_reject_constant)
            except (ValueError, UnicodeDecodeError) as exc:
                if self.f("malformed-json-500"):
                    return Response(
                        json.dumps(
                            {
                                "error": {
                                    "message": "Internal server error",
                                    "type": "server_error",
                                    "param": None,
                                    "code": None,
                                }
                            }
                        ),
                        status_code=500,
                        media_type="application/json",
                    )
                raise ApiError(
                    400, f"The request body is not valid JSON: {exc}", None, "invalid_json"
                ) from exc
            stream_hint = isinstance(body, dict) and body.get("stream") is True
            req = self.validate(body)
        except ApiError as err:
            return self.error_response(err, stream=stream_hint)
        if self.f("non-ascii-prompt-500") and not json.dumps(body.get("messages"),
                                                            ensure_ascii=False).isascii():
            # an encoder that crashes on non-ASCII text: the same valid request fails every time it is asked
            return Response(json.dumps({"error": {"message": "'ascii' codec can't encode character",
                                                  "type": "server_error", "param": None, "code": None}}),
                            status_code=500, media_type="application/json")
        seeded = req.seed is not None
        # collapse-seeded: too many seeded requests in flight crash the engine. A request is in flight until
        # its answer is out (a stream: its last event), as on a server that holds its slot while it streams
        self.traffic.enter(seeded)
        held = [True]

        def leave() -> None:
            if held[0]:
                held[0] = False
                self.traffic.leave(seeded)

        answer: Response | None = None
        try:
            answer = await self._answer(req, leave)
            return answer
        finally:
            if not isinstance(answer, StreamingResponse):  # a stream leaves with its last event
                leave()

    async def _answer(self, req: ChatRequest, leave: Callable[[], None]) -> Response:
        """A valid request's answer (``leave``: called when a stream's last event is out)."""
        try:
            if self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
            choices = await run_in_threadpool(self.complete, req)
        except BaseException:
            leave()
            raise
        if self.traffic.crashed:
            leave()
            refused = self.traffic.refuse()
            if refused is not None:
                return refused
        completion_id = "chatcmpl-reference-fixed" if self.f("id-reused") else "chatcmpl-" + uuid.uuid4().hex
        if req.stream and self.f("stream-id-reused"):
            completion_id = "chatcmpl-stream-fixed"
        created = int(time.time())
        if not req.stream:
            delay = self.traffic.answer_delay()
            answer = self.body(req, choices, completion_id, created)
            delay += self.generation_time(answer.get("usage"), len(choices))
            if delay > 0:
                await asyncio.sleep(delay)
            media = "text/plain" if self.f("content-type-text") else self.json_media()
            status = 201 if self.f("completion-status-201") else 200
            return Response(json.dumps(answer), status_code=status, media_type=media)
        events = self.sse(self.stream_chunks(req, choices, completion_id, created))
        first_delay = self.traffic.first_token_delay() + self.ttft_s
        token_s = self.token_s

        async def gen() -> AsyncIterator[str]:
            try:
                if first_delay > 0:  # the headers are out already: the first event comes late
                    await asyncio.sleep(first_delay)
                tokens = 0
                for ev in events:
                    # --tps: one generated token per chunk of the first choice (the others in the same step)
                    if token_s and '"delta"' in ev and _FIRST_CHOICE.search(ev):
                        tokens += 1
                        if tokens > 1:
                            await asyncio.sleep(token_s)
                    yield ev
            finally:
                leave()

        media = "application/x-ndjson" if self.f("stream-wrong-content-type") else "text/event-stream"
        if self.v("content-type-charset") and media.startswith("text/"):
            media += "; charset=utf-8"
        return StreamingResponse(
            gen(), media_type=media, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    def generation_time(self, usage: Any, choices: int) -> float:
        """Seconds a model at --ttft / --tps takes for a non-stream answer of ``usage``'s completion tokens
        (the ``choices`` of one request are generated side by side, as a batch)."""
        if not (self.ttft_s or self.token_s):
            return 0.0
        n = usage.get("completion_tokens") if isinstance(usage, dict) else None
        n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
        return self.ttft_s + max(0, math.ceil(n / max(1, choices)) - 1) * self.token_s

    def _admit(self, request: Request) -> Response | None:
        """The answer stopping a request at the door (429/503 of the transport variants, 401/403), or None."""
        refused = self.traffic.refuse()
        if refused is not None:
            return refused
        try:
            self.check_auth(request)
        except ApiError as err:
            return self.error_response(err)
        return None

    async def models(self, request: Request) -> Response:
        stopped = self._admit(request)
        if stopped is not None:
            return stopped
        if self.f("models-missing"):
            return self.error_response(ApiError(404, "Not found", None, "not_found"))
        return Response(
            json.dumps({"object": "list", "data": [self.model_entry()]}), media_type=self.json_media()
        )

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{model}`` (the SDKs' ``models.retrieve``): the model object, or a 404 with an
        OpenAI error body (code ``model_not_found``) for a model this server does not serve."""
        stopped = self._admit(request)
        if stopped is not None:
            return stopped
        name = request.path_params["model"]
        if name != self.model_name or self.f("models-missing"):
            return self.error_response(
                ApiError(
                    404,
                    f"The model '{name}' does not exist (this server serves '{self.model_name}').",
                    "model",
                    "model_not_found",
                )
            )
        return Response(json.dumps(self.model_entry()), media_type=self.json_media())

    def model_entry(self) -> dict[str, Any]:
        """The served model's object, as ``GET /v1/models`` lists it."""
        entry: dict[str, Any] = {
            "id": self.model_name,
            "object": "model",
            "created": _CREATED_AT,
            "owned_by": "chat-conformance",
        }
        if self.v("models-max-model-len"):  # vLLM's ModelCard
            entry.update(root=self.model_name, parent=None, max_model_len=self.context_length, permission=[])
        elif self.v("models-meta-n-ctx"):  # llama.cpp's server: n_ctx per slot, n_ctx_train of the model
            entry["meta"] = {
                "vocab_type": 2,
                "n_vocab": VOCAB.size,
                "n_ctx": self.context_length,
                "n_ctx_train": 16 * self.context_length,
                "n_embd": 64,
            }
        else:
            entry["context_size"] = self.context_length
        if self.f("models-no-context-size"):
            for key in ("context_size", "max_model_len"):
                entry.pop(key, None)
            if isinstance(entry.get("meta"), dict):
                del entry["meta"]["n_ctx"]
        return entry


# --------------------------------------------------------------------------- module helpers

_LAX_INTEGERS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_k", "top_logprobs")
_LAX_NUMBERS = (
    "temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty"
)
_LAX_BOOLS = ("stream", "logprobs", "separate_reasoning", "enable_thinking", "parallel_tool_calls")
_LAX_TRUE = ("true", "1", "yes", "on", "t", "y")
_LAX_FALSE = ("false", "0", "no", "off", "f", "n")


def _lax_value(v: Any, kind: str) -> Any:
    """pydantic's lax mode: numeric strings become numbers, an integral float an int, "true"/"0"... a bool."""
    if kind == "bool":
        if isinstance(v, str) and v.strip().lower() in _LAX_TRUE + _LAX_FALSE:
            return v.strip().lower() in _LAX_TRUE
        if _is_int(v) and v in (0, 1):
            return bool(v)
        return v
    if isinstance(v, str):
        try:
            num = float(v.strip())
        except ValueError:
            return v
        if num != num or num in (float("inf"), float("-inf")):
            return v
        if kind == "int":
            return int(num) if num.is_integer() and v.strip().lstrip("+-").isdigit() else v
        return num
    if kind == "int" and isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _lax_coerce(body: dict[str, Any]) -> dict[str, Any]:
    """The lax-type-coercion variant: the request as a pydantic model in lax mode reads it (vLLM, SGLang)."""
    out = dict(body)
    for names, kind in ((_LAX_INTEGERS, "int"), (_LAX_NUMBERS, "num"), (_LAX_BOOLS, "bool")):
        for name in names:
            if out.get(name) is not None:
                out[name] = _lax_value(out[name], kind)
    so = out.get("stream_options")
    if isinstance(so, dict) and so.get("include_usage") is not None:
        out["stream_options"] = {**so, "include_usage": _lax_value(so["include_usage"], "bool")}
    bias = out.get("logit_bias")
    if isinstance(bias, dict):
        out["logit_bias"] = {k: _lax_value(v, "num") for k, v in bias.items()}
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _render_prompt(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        text = m["text"]
        if m.get("tool_calls"):
            text += json.dumps(m["tool_calls"], ensure_ascii=False, separators=(",", ":"))
        parts.append(f"<|{m['role']}|>{text}\n")
    parts.append("<|assistant|>")
    return "".join(parts)


def _apply_stop(
    pieces: list[Piece], stops: list[str], include: bool, *, whole_tokens: bool = False
) -> tuple[list[Piece], bool, int]:
    """Cut ``pieces`` at the first completed stop sequence: (kept pieces, hit, tokens consumed).

    ``whole_tokens`` (with ``include``): keep the whole token that completed the stop sequence, so the text
    may go on a few characters past it (variant stop-at-token-end)."""
    full = "".join(p.text for p in pieces)
    best: tuple[int, int] | None = None
    for s in stops:
        i = full.find(s)
        if i >= 0 and (best is None or (i + len(s), i) < best):
            best = (i + len(s), i)
    if best is None:
        return pieces, False, len(pieces)
    end, start = best
    cut = end if include else start
    if include and whole_tokens:
        pos = 0
        for p in pieces:
            pos += len(p.text)
            if pos >= end:
                cut = pos
                break
    out: list[Piece] = []
    pos = 0
    consumed = 0
    for p in pieces:
        if pos < end:
            consumed += 1
        if pos < cut:
            out.append(p if pos + len(p.text) <= cut else replace(p, text=p.text[: cut - pos]))
        pos += len(p.text)
    return out, True, consumed


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = exc.detail if isinstance(exc, HTTPException) else "Internal server error"
    return Response(
        json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error" if status < 500 else "server_error",
                    "param": None,
                    "code": None,
                }
            }
        ),
        status_code=status,
        media_type="application/json",
    )


def create_app(
    *,
    api_key: str | None = None,
    faults: Iterable[str] = (),
    profile: str = "seed",
    model_name: str = "reference-tiny",
    context_length: int = 256,
    latency_s: float = 0.0,
    variants: Iterable[str] = (),
    ttft_s: float = 0.0,
    tps: float | None = None,
) -> Starlette:
    """The reference server as an ASGI app; ``faults`` names entries of :data:`FAULTS` to switch on,
    ``variants`` entries of :data:`VARIANTS` (legitimate behaviours of real servers). ``ttft_s`` and ``tps``
    make every completion as slow as a real model: the first token after ``ttft_s`` seconds, then ``tps``
    tokens per second (error answers stay immediate, as a server validates before it generates)."""
    if ttft_s < 0 or (tps is not None and tps <= 0):
        raise ValueError("ttft must be >= 0 seconds and tps > 0 tokens per second")
    chosen = frozenset(faults)
    unknown = sorted(chosen - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
    chosen_variants = frozenset(variants)
    unknown = sorted(chosen_variants - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s): {', '.join(unknown)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (expected one of {', '.join(PROFILES)})")
    server = _Server(
        api_key, chosen, profile, model_name, context_length, latency_s, chosen_variants,
        ttft_s=ttft_s, tps=tps,
    )
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/models/{model:path}", server.model, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _not_found, Exception: _not_found},
    )
    app.state.reference = server
    return app
