"""Property-based requests built from spec/openapi.yaml (CreateChatCompletionRequest), and the bounded
hypothesis runner that sends them through the recording client.

Where the requests come from (issue 6: schemathesis generates, this module only narrows and classifies):

* ``valid_requests`` (positive phase): schemathesis's positive-mode strategy for ``POST /chat/completions``
  (``schemathesis.openapi.from_dict(...)["/chat/completions"]["POST"].as_strategy(GenerationMode.POSITIVE)``)
  over a copy of the contract *narrowed to the target* (``target_document``): the same operation, with
  the request body schema tightened where the contract is wider than what a run may send or what the
  target must accept: the target's model (const), max_tokens required in [1, MAX_TOKENS], n in
  [1, MAX_N], seed in the int32 range, each seed bound written ``<`` made exclusive unless the profile or
  the documented default makes it MUST (spec/DECISIONS.md#ranges), logit_bias keyed by the profile's token
  id, short stop strings, a few named tools with a fixed parameters schema, the response formats the
  target supports, no vendor extension fields, optional-capability fields only when supported. Every
  narrowed body is still valid under the real schema (the runner validates each request against it
  before sending). Every narrowed field is required, so schemathesis draws a value for each, and a
  hand-drawn boolean per field keeps a random subset (left to itself, hypothesis-jsonschema mostly
  leaves optional properties out: temperature appeared in 0 of 15 examples). The body is then
  ``.map()``-ed through ``_keep_valid`` for what JSON Schema cannot say: top_logprobs only with
  logprobs true, stream_options only with stream true, tool_choice only with tools and naming one of
  them, a JSON response format asks for JSON in the last message, integral floats of integer fields sent
  as integers (JSON Schema's integer 6.0), numbers rounded to 6 decimals (a bound reached by rounding
  drops the field). ``sampling_request`` (hand-written, an explicit example): every sampling field at
  once, mid-range, so a field refused inside its range is caught whatever the seed draws.
  Hand-written, and why: the ``messages`` list (``_messages``). The schema accepts any sequence of
  system/user/assistant/tool turns, with any content; which conversation shapes a real chat template
  takes (system first, user and assistant alternating, ending on a user turn, tool turns answering a
  call) cannot be written in JSON Schema, and a refused odd-shaped conversation would be our mistake,
  not the target's. The drawn messages are combined with the schemathesis body (``st.tuples``), so
  they shrink with it.
* ``invalid_requests`` (negative phase, one field at a time): schemathesis's negative-mode strategy
  (``GenerationMode.NEGATIVE``) cannot be told to mutate a single property of a body: it mutates any
  keyword anywhere (and headers, and sometimes sends bytes that are not JSON). So each field gets its own
  one-property document (``field_document``: a body ``{field: <its schema>}``, closed, the field
  required, no security scheme); schemathesis's negative bodies for it are kept when they are a JSON
  object holding only that field (or nothing, for a required field: "removed"), and the field's value is
  put into a valid request from the positive phase (``apply_mutation``, which also keeps the other
  fields valid: top_logprobs gets logprobs, stream_options gets stream, ...). The result is kept only if
  it is invalid against the real schema, and ``classify`` maps the broken value to one of the field's
  ``Mutation`` kinds (below/above the closed range, wrong JSON type, not in the enum, more than 4 stop
  sequences, unknown role, ...) and so to the requirement an accepted request breaks; a value that fits
  no kind is kept out (it would name no requirement, and an unlisted breakage is not a contract rule this
  suite judges), and so is null for an optional field (top-level, or stream_options.include_usage):
  OpenAI's own schema makes these nullable and servers read null as absent, so accepting it breaks no
  listed requirement. Hand-written, and why: the ``mutations`` table (kinds, requirement ids, and one fixed
  example per kind, the explicit examples every run sends first, so each kind is checked whatever the
  seed draws).
* ``run_property``: draw first, then send, then judge. ``draw_requests`` draws every request of a property
  before any is sent (the explicit examples first, then the distinct ones among ``max_examples`` that
  hypothesis draws with the fixed seed: no database, no shrinking, no constants read from local source
  files), so the target's answers cannot steer later draws and the same seed sends the same requests
  (spec/DECISIONS.md#reproducible-draws); ``send_requests`` sends them, each once, in order;
  each answer is judged on its own, and for each requirement broken the smallest request that showed it
  is the evidence.

schemathesis is imported lazily (inside ``_operation``): importing conformance.checks does not pay for it.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import json
import math
import os
import re
import string
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from conformance.catalog import catalog
from conformance.evidence import PARSE_LOCK, Exchange
from conformance.files import write_atomic
from conformance.schemas import schema_errors
from conformance.specfiles import openapi
from conformance.violations import Judge, ServerError, Unanswered, Violation

__all__ = [
    "REQUEST_SCHEMA",
    "MAX_N",
    "MAX_TOKENS",
    "CAPABILITY_FIELDS",
    "REMOVED",
    "Mutation",
    "mutations",
    "mutation_fields",
    "mutation_requirements",
    "apply_mutation",
    "classify",
    "examples_per_field",
    "target_document",
    "field_document",
    "valid_requests",
    "invalid_requests",
    "minimal_request",
    "sampling_request",
    "combined_request",
    "inside_ranges",
    "run_property",
    "draw_requests",
    "send_requests",
    "Drawn",
    "drawn_once",
    "drawn_property",
    "draw_ahead",
    "valid_explicit",
    "invalid_explicit",
    "VALID_LABEL",
    "invalid_label",
    "property_key",
    "forget_drawn",
    "RunStats",
    "UNANSWERED_IN_A_ROW",
]

REQUEST_SCHEMA = "CreateChatCompletionRequest"
PATH, METHOD = "/chat/completions", "POST"
MAX_N = 3  # n is drawn from [1, MAX_N]: every choice costs tokens
MAX_TOKENS = 8  # max_tokens is always set, from [1, MAX_TOKENS]
SEED_RANGE = (-(2**31), 2**31 - 1)  # seed: an int32, which every implementation takes
CAPABILITY_FIELDS: dict[str, tuple[str, ...]] = {  # request field -> optional capabilities that enable it
    "tools": ("tools",),
    "tool_choice": ("tools",),
    "response_format": ("json-object", "json-schema"),
    "separate_reasoning": ("reasoning",),
    "enable_thinking": ("thinking",),
}
PROMPTS = (
    "Write a short story about a cat.",
    "Say hello.",
    "Count from one to five.",
    "What is the weather in Paris?",
    "Name a colour.",
)
TOOL_NAMES = ("get_weather", "get_time", "lookup")
KNOWN_ROLES = ("system", "user", "assistant", "tool", "developer", "function")
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,?", min_size=1, max_size=24)
_NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
_STOP = st.text(alphabet="#@!<>ENDSTOP.", min_size=1, max_size=5)
_STOP_PATTERN = "^[#@!<>ENDSTOP.]{1,5}$"
_RANGE_RE = re.compile(r"Required range:\s*(-?[\d.]+)\s*(<=?)\s*x\s*(<=?)\s*(-?[\d.]+)")
_DECIMALS = 6  # generated numbers are rounded to 6 decimals: no subnormal floats a server reads as 0

_SKIP: Any = object()  # a schemathesis body that broke something else than the field
REMOVED: Any = type("Removed", (), {"__repr__": lambda self: "REMOVED"})()  # a field's value: absent


# ---- the contract, read from spec/openapi.yaml ----------------------------------------------------------


def _props() -> dict[str, Any]:
    return openapi()["components"]["schemas"][REQUEST_SCHEMA]["properties"]


def _required() -> list[str]:
    return list(openapi()["components"]["schemas"][REQUEST_SCHEMA].get("required", []))


@dataclass(frozen=True)
class Bounds:
    """A numeric field's closed range (the schema) and which bounds MUST be accepted (seed + profile)."""

    name: str
    integer: bool
    lo: float | None
    hi: float | None
    lo_in: bool = True
    hi_in: bool = True

    def holds(self, v: float) -> bool:
        lo_ok = self.lo is None or v > self.lo or (self.lo_in and v == self.lo)
        hi_ok = self.hi is None or v < self.hi or (self.hi_in and v == self.hi)
        return lo_ok and hi_ok


def _req_id(*candidates: str) -> str:
    for c in candidates:
        if c in catalog():
            return c
    return "GEN-INVALID-REJECTED"


def _upper(name: str) -> str:
    return name.upper().replace("_", "-")


def inside_ranges(profile_base: str = "seed") -> dict[str, Bounds]:
    """The numeric request fields and the part of their range that MUST be accepted under the profile:
    a seed bound written ``<`` is exclusive (informational, never generated) unless it is the documented
    default (n = 1, DECISIONS #n-range) or the profile's RANGE-<FIELD>-BOUNDARY requirement is MUST."""
    out: dict[str, Bounds] = {}
    for name, prop in _props().items():
        if prop.get("type") not in ("number", "integer"):
            continue
        lo, hi = prop.get("minimum"), prop.get("maximum")
        lo_in = hi_in = True
        m = _RANGE_RE.search(" ".join(str(prop.get("description", "")).split()))
        if m:
            lo_in, hi_in = m[2] == "<=", m[3] == "<="
        default = prop.get("default")
        if default is not None and default == lo:
            lo_in = True
        if default is not None and default == hi:
            hi_in = True
        bound = catalog().get(f"RANGE-{_upper(name)}-BOUNDARY")
        if bound is not None and bound.level_for(profile_base) == "MUST":
            lo_in = hi_in = True
        out[name] = Bounds(name, prop["type"] == "integer", lo, hi, lo_in, hi_in)
    lb = _props()["logit_bias"]["additionalProperties"]
    out["logit_bias"] = Bounds("logit_bias", False, lb.get("minimum"), lb.get("maximum"))  # "between"
    return out


# ---- valid requests: schemathesis over the contract narrowed to the target ------------------------------


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name} function",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }


def _supported(capabilities: dict[str, dict[str, Any]], cap: str) -> bool:
    return bool((capabilities.get(cap) or {}).get("supported", True))


def _field_enabled(name: str, capabilities: dict[str, dict[str, Any]]) -> bool:
    caps = CAPABILITY_FIELDS.get(name)
    return caps is None or any(_supported(capabilities, c) for c in caps)


def _formats(capabilities: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    formats: list[dict[str, Any]] = [{"type": "text"}]
    if _supported(capabilities, "json-object"):
        formats.append({"type": "json_object"})
    if _supported(capabilities, "json-schema"):
        formats.append(
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                },
            }
        )
    return formats


def _number_schema(b: Bounds) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "integer" if b.integer else "number"}
    lo, hi = b.lo, b.hi
    if b.name == "seed":
        lo, hi = SEED_RANGE
    if b.name == "n":
        hi = MAX_N if hi is None else min(hi, MAX_N)
    if b.name == "max_tokens":
        hi = MAX_TOKENS
    if lo is not None:
        s["minimum" if b.lo_in or lo != b.lo else "exclusiveMinimum"] = lo
    if hi is not None:
        s["maximum" if b.hi_in or hi != b.hi else "exclusiveMaximum"] = hi
    return s


def _narrowed_body(
    model: str, profile_base: str, token_id: int, capabilities: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """CreateChatCompletionRequest narrowed to what a run sends this target (see the module docstring)."""
    props = _props()
    ranges = inside_ranges(profile_base)
    out: dict[str, Any] = {"model": {"type": "string", "const": model}}
    for name, b in ranges.items():
        if name != "logit_bias":
            out[name] = _number_schema(b)
    lb = ranges["logit_bias"]
    out["logit_bias"] = {
        "type": "object",
        "properties": {str(token_id): _number_schema(lb)},
        "required": [str(token_id)],
        "additionalProperties": False,
    }
    for name in ("stream", "logprobs", "context_length_exceeded_behavior", "stream_options"):
        out[name] = copy.deepcopy(props[name])
    stop = {"type": "string", "pattern": _STOP_PATTERN}
    out["stop"] = {
        "anyOf": [stop, {"type": "array", "minItems": 1, "maxItems": 4, "items": stop}, {"type": "null"}]
    }
    if _supported(capabilities, "tools"):
        out["tools"] = {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "uniqueItems": True,
            "items": {"enum": [_tool(n) for n in TOOL_NAMES]},
        }
        out["tool_choice"] = {
            "anyOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {"name": {"enum": list(TOOL_NAMES)}},
                        },
                    },
                },
            ]
        }
    if _field_enabled("response_format", capabilities):
        out["response_format"] = {"enum": _formats(capabilities)}
    for name, cap in (("separate_reasoning", "reasoning"), ("enable_thinking", "thinking")):
        if _supported(capabilities, cap):
            out[name] = {"type": "boolean"}
    # every field required: schemathesis draws a value for each, and ``valid_requests`` keeps a random
    # subset (left alone, it mostly leaves optional properties out: temperature in 0 of 15 examples)
    return {"type": "object", "additionalProperties": False, "required": sorted(out), "properties": out}


def _document(body: dict[str, Any]) -> dict[str, Any]:
    """spec/openapi.yaml with ``POST /chat/completions`` only, taking ``body``, and no security scheme
    (schemathesis would otherwise spend negative examples on the Authorization header)."""
    doc = copy.deepcopy(openapi())
    op = doc["paths"][PATH][METHOD.lower()]
    op["security"] = []
    op["requestBody"]["content"]["application/json"]["schema"] = body
    doc["paths"] = {PATH: {METHOD.lower(): op}}
    return doc


def target_document(
    model: str, profile_base: str = "seed", token_id: int = 100, capabilities: Any = None
) -> dict[str, Any]:
    return _document(_narrowed_body(model, profile_base, token_id, capabilities or {}))


def field_document(name: str) -> dict[str, Any]:
    """A document whose request body is the one property ``name`` of CreateChatCompletionRequest."""
    body = {
        "type": "object",
        "additionalProperties": False,
        "required": [name],
        "properties": {name: copy.deepcopy(_props()[name])},
    }
    doc = _document(body)
    _close_objects(doc["components"]["schemas"])
    return doc


def _close_objects(node: Any) -> None:
    """Every object schema that leaves its other properties open is closed (``additionalProperties: false``),
    and one open to any properties (``{"type": "object"}``: a tool's parameters, a JSON schema) takes none:
    the negative phase breaks a field at a listed place (its type, a role, a content, a tool type, ...),
    and an open object only made hypothesis draw large nested JSON of any shape (most of the draw's CPU)
    that was then thrown away. A value broken there is still checked against the real schema before it
    is sent (``invalid_requests``)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            _close_objects(v)
    elif isinstance(node, list):
        for v in node:
            _close_objects(v)


@functools.lru_cache(maxsize=64)
def _operation(doc_json: str) -> Any:
    import schemathesis  # lazy: heavy, and only the generated checks need it
    from schemathesis.config import SchemathesisConfig

    # an explicit config: a schemathesis.toml in the working directory must not change what a run sends
    schema = schemathesis.openapi.from_dict(json.loads(doc_json), config=SchemathesisConfig())
    return schema[PATH][METHOD]


@functools.lru_cache(maxsize=64)
def _bodies(doc_json: str, positive: bool) -> st.SearchStrategy[Any]:
    from schemathesis import GenerationMode

    mode = GenerationMode.POSITIVE if positive else GenerationMode.NEGATIVE
    return _operation(doc_json).as_strategy(generation_mode=mode).map(lambda case: case.body)


def _content() -> st.SearchStrategy[Any]:
    text = st.one_of(st.sampled_from(PROMPTS), _TEXT)
    parts = st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), min_size=1, max_size=2)
    return st.one_of(text, parts)


@st.composite
def _messages(draw: Any) -> list[dict[str, Any]]:
    """Hand-written (see the module docstring): conversation shapes a chat template takes."""

    def msg(role: str, content: Any) -> dict[str, Any]:
        m = {"role": role, "content": content}
        if draw(st.booleans()) and draw(st.booleans()):
            m["name"] = draw(_NAME)
        return m

    out = []
    if draw(st.booleans()):
        out.append(msg("system", draw(_content())))
    if draw(st.booleans()):  # an earlier turn
        out.append(msg("user", draw(_content())))
        out.append(msg("assistant", draw(st.one_of(st.sampled_from(PROMPTS), _TEXT))))
    out.append(msg("user", draw(_content())))
    return out


def _mention_json(messages: list[dict[str, Any]]) -> None:
    last = messages[-1]
    if isinstance(last["content"], str):
        last["content"] += " Answer in JSON."
    else:
        last["content"] = [*last["content"], {"type": "text", "text": " Answer in JSON."}]


def _keep_valid(
    body: dict[str, Any], keep: dict[str, bool], messages: list[dict[str, Any]], ranges: dict[str, Bounds]
) -> dict[str, Any]:
    """What JSON Schema cannot say (see the module docstring), applied to a schemathesis body, of which
    the optional fields marked in ``keep`` stay."""
    req: dict[str, Any] = {"model": body["model"], "messages": json.loads(json.dumps(messages))}
    req.update((k, json.loads(json.dumps(v))) for k, v in body.items() if k == "max_tokens" or keep.get(k))
    for name, b in ranges.items():
        v = req.get(name)
        if name == "logit_bias" and isinstance(v, dict):
            req[name] = {k: round(x, _DECIMALS) for k, x in v.items()}
            if not all(b.holds(x) for x in req[name].values()):
                req.pop(name)
        elif isinstance(v, float) and b.integer:  # JSON Schema's integer 6.0: sent as 6
            req[name] = int(v)
        elif isinstance(v, float):
            req[name] = round(v, _DECIMALS) + 0.0  # + 0.0: no -0.0
            if not b.holds(req[name]):
                req.pop(name)
    if req.get("logprobs") is not True:
        req.pop("top_logprobs", None)
    if req.get("stream") is not True:
        req.pop("stream_options", None)
    if "tools" not in req:
        req.pop("tool_choice", None)
    elif isinstance(req.get("tool_choice"), dict):
        names = [t["function"]["name"] for t in req["tools"]]
        chosen = req["tool_choice"]["function"]["name"]
        if chosen not in names:  # the one the schema drew, else the first offered tool
            req["tool_choice"]["function"]["name"] = names[0]
    if (req.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        _mention_json(req["messages"])
    return req


def _any_token_id(profile: Any) -> int:
    """The token id the generated requests put a bias on (any id does: the value is what is judged)."""
    tid = getattr(profile, "logit_bias_token_id", None)
    return 100 if tid is None else int(tid)


def valid_requests(
    model: str, profile: Any, capabilities: dict[str, dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """A request valid under the contract and the profile, with a random subset of optional fields:
    schemathesis's positive-mode body of the narrowed contract, messages drawn by ``_messages``."""
    base = getattr(profile, "base", "seed")
    doc = target_document(model, base, _any_token_id(profile), capabilities)
    ranges = inside_ranges(base)
    bodies = _bodies(json.dumps(doc, sort_keys=True), True)
    body_schema = doc["paths"][PATH][METHOD.lower()]["requestBody"]["content"]["application/json"]["schema"]
    optional = sorted(set(body_schema["properties"]) - {"model", "max_tokens"})
    keep = st.fixed_dictionaries({name: st.booleans() for name in optional})  # absent: the simpler example
    return st.tuples(bodies, keep, _messages()).map(lambda b: _keep_valid(b[0], b[1], b[2], ranges))


def minimal_request(model: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": MAX_TOKENS,
        **fields,
    }


def combined_request(model: str, capabilities: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A streamed request with logprobs (top_logprobs 2) and a tool offered, when the target supports tools:
    an explicit example, so that a refused combination of optional fields (llama.cpp: "logprobs is not
    supported with tools + stream") is caught whatever the seed draws (the draws no longer follow a failure,
    spec/DECISIONS.md#reproducible-draws). None without tools."""
    if not _supported(capabilities, "tools"):
        return None
    return minimal_request(model, stream=True, logprobs=True, top_logprobs=2, tools=[_tool(TOOL_NAMES[0])])


def sampling_request(model: str, profile: Any) -> dict[str, Any]:
    """Every sampling field at once, each in the middle of the part of its range the profile makes MUST:
    an explicit example, so that a field refused inside its range is caught whatever the seed draws."""
    ranges = inside_ranges(getattr(profile, "base", "seed"))
    fields: dict[str, Any] = {}
    for name, b in ranges.items():
        if name in ("max_tokens", "logit_bias"):
            continue
        lo, hi = b.lo, b.hi
        if name == "n":
            hi = MAX_N
        if lo is None or hi is None:
            fields[name] = 42
            continue
        mid = (lo + hi) / 2
        fields[name] = int(mid) if b.integer else round(mid, _DECIMALS) + 0.0
    fields["logprobs"] = True
    fields["stop"] = ["###"]
    fields["logit_bias"] = {str(_any_token_id(profile)): 0}
    fields["context_length_exceeded_behavior"] = "truncate"
    return minimal_request(model, **fields)


# ---- invalid requests: schemathesis negative mode, one field at a time ------------------------------------


@dataclass(frozen=True)
class Mutation:
    """One way to make a single field invalid, the requirement an accepted request breaks, and the
    simplest bad value (``example``, the explicit example every run sends; REMOVED: the field is removed).
    ``generic`` marks the catch-all kind of a field (a breakage no listed kind names)."""

    field: str
    kind: str
    requirement: str
    example: Any = None

    @property
    def what(self) -> str:
        return f"{self.field}: {self.kind}"

    @property
    def removes(self) -> bool:
        return self.example is REMOVED


def _wrong_type_example(json_type: str, sample: Any) -> Any:
    return {"number": str(sample), "integer": str(sample), "boolean": "true", "string": 1}.get(json_type, [])


def mutations(model: str, profile_token_id: int = 100) -> dict[str, list[Mutation]]:
    """For each top-level field of the request schema, the kinds of breaking it alone (hand-written: the
    requirement of each kind, and its fixed example)."""
    props, required = _props(), _required()
    closed = inside_ranges()
    out: dict[str, list[Mutation]] = {}
    wrong_type = "ERROR-WRONG-TYPE"
    for name, prop in props.items():
        muts: list[Mutation] = []
        up = _upper(name)
        if name in required:
            muts.append(Mutation(name, "removed", _req_id(f"ERROR-MISSING-{up}"), REMOVED))
        typ = prop.get("type")
        if typ in ("number", "integer") and name in closed:
            b = closed[name]
            reject_id = _req_id(f"RANGE-{up}-REJECT")
            lo_id = "MAXTOK-REJECT-NONPOSITIVE" if name == "max_tokens" else reject_id
            if b.lo is not None:
                lo = int(b.lo) if b.integer else b.lo
                ex = round(lo - (1 if b.integer else 0.5), 6)
                muts.append(Mutation(name, "below minimum", _req_id(lo_id), ex))
            if b.hi is not None:
                hi = int(b.hi) if b.integer else b.hi
                ex = round(hi + (1 if b.integer else 0.5), 6)
                muts.append(Mutation(name, "above maximum", reject_id, ex))
            sample = 1 if b.lo is None or b.lo <= 1 <= (b.hi if b.hi is not None else 2) else int(b.lo)
            muts.append(Mutation(name, "wrong type", wrong_type, _wrong_type_example(typ, sample)))
        elif typ == "boolean":
            muts.append(Mutation(name, "wrong type", wrong_type, "true"))
        elif typ == "string":
            muts.append(Mutation(name, "wrong type", wrong_type, 1))
            if "enum" in prop:
                enum_id = "CONTEXT-BEHAVIOR-ENUM" if name == "context_length_exceeded_behavior" else ""
                muts.append(Mutation(name, "not in enum", _req_id(enum_id), "bogus"))
        out[name] = muts
    # structured fields
    user = {"role": "user", "content": PROMPTS[0]}
    out["messages"] += [
        Mutation("messages", "wrong type", wrong_type, user),
        Mutation("messages", "empty", _req_id("ERROR-EMPTY-MESSAGES"), []),
        Mutation(
            "messages",
            "unknown role",
            _req_id("ERROR-INVALID-ROLE"),
            [{"role": "bogus", "content": PROMPTS[0]}],
        ),
        Mutation("messages", "content removed", "GEN-INVALID-REJECTED", [{"role": "user"}]),
    ]
    out["stop"] = [
        Mutation("stop", "wrong type", wrong_type, 1),
        Mutation(
            "stop", "more than 4 sequences", _req_id("RANGE-STOP-REJECT"), ["#", "##", "###", "@@", "!!"]
        ),
        Mutation("stop", "items of a wrong type", wrong_type, [1]),
    ]
    b = closed["logit_bias"]
    tok = str(profile_token_id)
    out["logit_bias"] = [
        Mutation("logit_bias", "wrong type", wrong_type, [tok]),
        Mutation(
            "logit_bias", "value below minimum", _req_id("RANGE-LOGIT-BIAS-REJECT"), {tok: (b.lo or 0) - 0.5}
        ),
        Mutation(
            "logit_bias", "value above maximum", _req_id("RANGE-LOGIT-BIAS-REJECT"), {tok: (b.hi or 0) + 0.5}
        ),
        Mutation("logit_bias", "value of a wrong type", wrong_type, {tok: "1"}),
        Mutation("logit_bias", "key not a token id", "GEN-INVALID-REJECTED", {"abc": 1}),
    ]
    out["stream_options"] = [
        Mutation("stream_options", "wrong type", wrong_type, []),
        Mutation("stream_options", "include_usage of a wrong type", wrong_type, {"include_usage": "true"}),
    ]
    out["tools"] = [
        Mutation("tools", "wrong type", wrong_type, _tool("get_weather")),
        Mutation(
            "tools",
            "tool type not function",
            "GEN-INVALID-REJECTED",
            [{**_tool("get_weather"), "type": "bogus"}],
        ),
    ]
    out["tool_choice"] = [
        Mutation("tool_choice", "wrong type", wrong_type, 1),
        Mutation("tool_choice", "not in enum", "GEN-INVALID-REJECTED", "bogus"),
    ]
    out["response_format"] = [
        Mutation("response_format", "wrong type", wrong_type, "json_object"),
        Mutation("response_format", "type not in enum", "GEN-INVALID-REJECTED", {"type": "bogus"}),
    ]
    return {k: v for k, v in out.items() if v}


def mutation_fields() -> list[str]:
    return list(mutations("m"))


def mutation_requirements(name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.requirement for m in mutations("m")[name]))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_type_ok(v: Any, typ: str) -> bool:
    if typ == "integer":
        return _is_number(v) and float(v).is_integer()
    if typ == "number":
        return _is_number(v)
    if typ == "boolean":
        return isinstance(v, bool)
    if typ == "string":
        return isinstance(v, str)
    if typ == "array":
        return isinstance(v, list)
    return isinstance(v, dict)


def _kind(name: str, v: Any) -> str | None:
    """Which listed kind of breakage the value ``v`` of field ``name`` is, if any."""
    if v is REMOVED:
        return "removed"
    if v is None and name not in _required():
        return None  # null for an optional field reads as absent (the OpenAI convention): no listed kind
    prop = _props()[name]
    typ = prop.get("type")
    if name == "messages":
        if not isinstance(v, list):
            return "wrong type"
        if not v:
            return "empty"
        if any(
            isinstance(m, dict) and isinstance(m.get("role"), str) and m["role"] not in KNOWN_ROLES for m in v
        ):
            return "unknown role"
        if any(isinstance(m, dict) and m.get("role") in ("user", "system") and "content" not in m for m in v):
            return "content removed"
        return None
    if name == "stop":
        if isinstance(v, list):
            if len(v) > 4 and all(isinstance(s, str) for s in v):
                return "more than 4 sequences"
            if v and not any(isinstance(s, str) for s in v):
                return "items of a wrong type"
            return None
        return None if isinstance(v, str) or v is None else "wrong type"
    if name == "logit_bias":
        if not isinstance(v, dict):
            return "wrong type"
        if any(not re.fullmatch(r"[0-9]+", k) for k in v):
            return "key not a token id"
        if any(not _is_number(x) for x in v.values()):
            return "value of a wrong type"
        b = inside_ranges()["logit_bias"]
        if any(b.lo is not None and x < b.lo for x in v.values()):
            return "value below minimum"
        if any(b.hi is not None and x > b.hi for x in v.values()):
            return "value above maximum"
        return None
    if name == "stream_options":
        if not isinstance(v, dict):
            return "wrong type"
        if v.get("include_usage") is not None and not isinstance(v["include_usage"], bool):  # null: absent
            return "include_usage of a wrong type"
        return None
    if name == "tools":
        if not isinstance(v, list):
            return "wrong type"
        types = [t.get("type") for t in v if isinstance(t, dict)]
        return (
            "tool type not function" if any(isinstance(t, str) and t != "function" for t in types) else None
        )
    if name == "tool_choice":
        if isinstance(v, str):
            return "not in enum" if v not in ("none", "auto", "required") else None
        return "wrong type" if not isinstance(v, dict) else None
    if name == "response_format":
        if not isinstance(v, dict):
            return "wrong type"
        t = v.get("type")
        return (
            "type not in enum"
            if isinstance(t, str) and t not in ("text", "json_object", "json_schema")
            else None
        )
    if typ in ("number", "integer"):
        if not _json_type_ok(v, typ):
            return "wrong type"
        if prop.get("minimum") is not None and v < prop["minimum"]:
            return "below minimum"
        if prop.get("maximum") is not None and v > prop["maximum"]:
            return "above maximum"
        return None
    if typ in ("boolean", "string"):
        if not _json_type_ok(v, typ):
            return "wrong type"
        if "enum" in prop and v not in prop["enum"]:
            return "not in enum"
    return None


def classify(name: str, value: Any, muts: list[Mutation]) -> Mutation | None:
    """The listed mutation of field ``name`` that ``value`` is, or None."""
    kind = _kind(name, value)
    return next((m for m in muts if m.kind == kind), None)


def apply_mutation(base: dict[str, Any], m: Mutation | str, value: Any) -> dict[str, Any]:
    """``base`` (valid) with field ``m`` (a Mutation or a field name) set to ``value`` (REMOVED: removed),
    and everything else kept valid."""
    req = json.loads(json.dumps(base))
    f = m if isinstance(m, str) else m.field
    if f == "top_logprobs":
        req["logprobs"] = True
    if f == "stream_options":
        req["stream"] = True
    if f == "stream":
        req.pop("stream_options", None)
    if f == "logprobs":
        req.pop("top_logprobs", None)
    if f == "tool_choice" and "tools" not in req:
        req["tools"] = [_tool("get_weather")]
    if f == "tools":
        req.pop("tool_choice", None)
    if f == "messages" and req.get("response_format"):
        req.pop("response_format")  # a JSON format asks for a message that mentions JSON
    if value is REMOVED:
        req.pop(f, None)
    else:
        req[f] = json.loads(json.dumps(value))
    return req


def _field_value(body: Any, name: str) -> Any:
    """The broken value of ``name`` in a schemathesis negative body of ``field_document(name)``, or _SKIP
    when the body broke something else (not a JSON object, another property, ...)."""
    if not isinstance(body, dict) or set(body) - {name}:
        return _SKIP
    value = body.get(name, REMOVED)
    if value is REMOVED and name not in _required():
        return _SKIP
    try:  # sent as JSON: NaN, infinities and unpaired surrogates cannot be
        json.dumps(value, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError):
        return _SKIP
    return value


def invalid_requests(
    base: st.SearchStrategy[dict[str, Any]], name: str, muts: list[Mutation]
) -> st.SearchStrategy[tuple[dict[str, Any], Mutation]]:
    """Valid requests from ``base`` with field ``name`` broken by schemathesis (negative mode over
    ``field_document(name)``), each with the listed mutation it is; invalid against the schema."""
    bodies = _bodies(json.dumps(field_document(name), sort_keys=True), False)
    values = bodies.map(lambda b: _field_value(b, name))

    def build(pair: tuple[dict[str, Any], Any]) -> tuple[dict[str, Any], Mutation] | None:
        base_req, value = pair
        if value is _SKIP:
            return None
        m = classify(name, value, muts)
        if m is None:
            return None
        req = apply_mutation(base_req, name, value)
        return (req, m) if schema_errors(REQUEST_SCHEMA, req) else None

    return st.tuples(base, values).map(build).filter(lambda x: x is not None)  # type: ignore[return-value]


# ---- the runner: draw every request first, then send them, then judge ---------------------------------


@dataclass
class RunStats:
    examples: int = 0  # requests answered and judged
    sent: int = 0
    cap: int = 0  # requests drawn: the most a property sends
    seed: int = 0
    unanswered: int = 0  # requests still answered 429/503 after the client's retries: not judged


@dataclass(frozen=True)
class Drawn:
    """One request of a property, drawn before anything is sent: the request, what it is (the description
    its exchange label and findings carry) and whether it is one of the hand-written explicit examples."""

    request: dict[str, Any]
    what: str
    explicit: bool = False


@dataclass
class _Outcome:
    drawn: Drawn
    exchange: Exchange
    violations: list[Violation]
    judged: set[str]


UNANSWERED_IN_A_ROW = 3  # the generated phase gives up on a target that answers nothing but 429/503
# hypothesis's draws touch process-wide state: one property draws at a time (see _isolated_draws)
_DRAW_LOCK = PARSE_LOCK  # and pytest's traceback formatting (see evidence.PARSE_LOCK)


def _canonical(req: Any) -> str:
    return json.dumps(req, sort_keys=True, ensure_ascii=False)


_UTF8_TABLE = b"[[0, 55295], [57344, 1114111]]"  # UTF-8 encodes every code point but the surrogates


def _seed_unicode_table() -> None:
    """hypothesis finds which characters UTF-8 encodes by trying all 1.1 million of them (over a second, and
    some 180 MB at its peak) unless the answer is in its cache folder; the answer is known, so it is written
    there when missing, in hypothesis's own format (read back as its own cache). Best effort: another
    hypothesis layout only loses the shortcut."""
    try:
        import gzip

        from hypothesis.internal.charmap import charmap_file

        path = Path(charmap_file("codec-utf-8"))
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, gzip.compress(_UTF8_TABLE, mtime=1))
    except Exception:  # noqa: BLE001  # best effort: hypothesis computes it
        pass


@contextlib.contextmanager
def _isolated_draws() -> Iterator[None]:
    """hypothesis mixes into its draws constants read from the source of every *local* module loaded at the
    time (not site-packages): the same seed would draw other requests in a process that happens to have
    imported other modules (a second run in one process, a test harness, a checkout instead of an installed
    package). That pool is empty while a property draws (hypothesis's own global constants stay), and so
    nothing is computed into hypothesis's ``constants`` cache (spec/DECISIONS.md#reproducible-draws)."""
    providers: Any = None
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # another hypothesis layout: no local constants known to neutralise
        pass
    real = getattr(providers, "_get_local_constants", None)
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    _seed_unicode_table()
    if real is not None:
        empty = Constants()
        providers._get_local_constants = lambda: empty
    if isinstance(cache, dict):
        cache.clear()  # pools computed with the local constants
    try:
        yield
    finally:
        if real is not None:
            providers._get_local_constants = real
        if isinstance(cache, dict):
            cache.clear()  # pools computed without them


def draw_requests(
    strategy: st.SearchStrategy[tuple[dict[str, Any], str]],
    *,
    count: int,
    seed: int,
    valid: bool,
    explicit: list[tuple[dict[str, Any], str]] = (),  # type: ignore[assignment]
) -> list[Drawn]:
    """Every request a property will send, drawn before any is sent, so that the target's answers cannot
    steer the draws: the explicit examples first, then the distinct requests among ``count`` examples of
    ``strategy`` (pairs of request and description) that hypothesis draws with ``seed`` (no database,
    generate phase only, no local constants: see ``_isolated_draws``). A request the strategy
    got wrong (valid when ``valid`` is false, or the reverse) is left out: never blame a target for our
    mistake. The same seed, strategy and hypothesis version give the same list, whatever answers."""
    out: list[Drawn] = []
    seen: set[str] = set()

    def keep(req: dict[str, Any], what: str, is_explicit: bool) -> bool:
        if bool(schema_errors(REQUEST_SCHEMA, req)) == valid:
            return False
        key = _canonical(req)
        if key not in seen:
            seen.add(key)
            out.append(Drawn(copy.deepcopy(req), what, is_explicit))
        return True

    for req, what in explicit:
        keep(req, what, True)

    def collect(pair: tuple[dict[str, Any], str]) -> None:
        if not keep(pair[0], pair[1], False):
            reject()

    test = given(pair=strategy)(collect)
    test = settings(
        max_examples=max(1, count),
        database=None,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        verbosity=Verbosity.quiet,
    )(test)
    test = hypothesis_seed(seed)(test)
    with _DRAW_LOCK, _isolated_draws():
        try:
            test()
        except Unsatisfiable:
            pass
    return out


SEND_BATCH = 8  # drawn requests sent together (a fixed size: the same requests at any --concurrency)


def send_requests(
    drawn: list[Drawn], send: Callable[[dict[str, Any], str], Exchange], *, label: str, seed: int,
    first: int = 1,
) -> list[Exchange | Unanswered]:
    """Send drawn requests, each once: the one place a property's requests leave (``run_property`` hands
    them over in batches). They depend on no answer, so they go together where ``send`` has a ``many`` (the
    checks' client: up to its concurrency at a time). An answer per request, in order: its exchange, or the
    ``Unanswered`` of a "not now" (429/503 after the client's retries). ``first``: the number of the first
    one in the labels. BudgetExhausted propagates."""
    batch = [(d.request, f"{label} #{i}: {d.what} (hypothesis seed {seed})")
             for i, d in enumerate(drawn, first)]
    many = getattr(send, "many", None)
    if many is not None:
        return list(many(batch))
    answers: list[Exchange | Unanswered] = []
    for req, lab in batch:
        try:
            answers.append(send(req, lab))
        except Unanswered as exc:
            answers.append(exc)
    return answers


def _size(d: Drawn) -> tuple[int, str]:
    key = _canonical(d.request)
    return len(key), key


def property_key(
    label: str, seed: int, examples: int, valid: bool, explicit: list[tuple[dict[str, Any], str]]
) -> tuple[Any, ...]:
    """A property's key in the run's memo of drawn lists (the strategy is the run's: target, profile and
    capabilities never change in one run)."""
    return (label, seed, examples, valid, _canonical([list(e) for e in explicit]))


_MEMO_LOCK = threading.RLock()  # held while a memoised draw is made: a draw is made once per run
# the lists drawn in this process, across its runs (a test process, a fleet, a kill matrix: each run drew the
# same lists again, in a helper process of its own). Drawing is a pure function of the key
# (spec/DECISIONS.md#reproducible-draws): a list kept here is the list a new draw would give.
_PROCESS_DRAWN: collections.OrderedDict[Any, list[Drawn]] = collections.OrderedDict()
_PROCESS_KEEP = 256  # properties (a run has at most ~40): the oldest go first


def _remember(key: Any, drawn: list[Drawn]) -> None:
    with _MEMO_LOCK:
        if key in _PROCESS_DRAWN:
            _PROCESS_DRAWN.move_to_end(key)
            return
        _PROCESS_DRAWN[key] = copy.deepcopy(drawn)
        while len(_PROCESS_DRAWN) > _PROCESS_KEEP:
            _PROCESS_DRAWN.popitem(last=False)


def forget_drawn() -> None:
    """Empty this process's memo of drawn lists (a test that must see a helper start)."""
    with _MEMO_LOCK:
        _PROCESS_DRAWN.clear()


def _recalled(key: Any) -> list[Drawn] | None:
    """A copy of the list an earlier run of this process drew for ``key`` (a run's list is its own to use)."""
    with _MEMO_LOCK:
        got = _PROCESS_DRAWN.get(key)
    return copy.deepcopy(got) if got is not None else None


def drawn_once(memo: dict[Any, list[Drawn]] | None, key: Any, draw: Callable[[], list[Drawn]]) -> list[Drawn]:
    """``draw()``, made once per ``key`` in ``memo`` (the run's drawn lists), whichever thread asks first;
    without a memo, made each time. A future in ``memo`` (``draw_ahead``) is waited for: its list is the one,
    unless the helper process failed."""
    if memo is None:
        return draw()
    with _MEMO_LOCK:
        got = memo.get(key)
        if got is None:
            recalled = _recalled(key)
            if recalled is not None:
                got = memo[key] = recalled
    if isinstance(got, Future):  # drawn ahead in the helper process (``draw_ahead``)
        try:
            drawn = got.result()
        except BaseException:  # noqa: BLE001  # the helper failed or was closed: drawn here (the same list)
            drawn = None
        with _MEMO_LOCK:
            if drawn is not None and memo.get(key) is got:
                memo[key] = drawn
    with _MEMO_LOCK:
        got = memo.get(key)
        if got is None or isinstance(got, Future):
            got = memo[key] = draw()
        _remember(key, got)
        return got


def run_property(
    judge: Judge,
    send: Callable[[dict[str, Any], str], Exchange],
    drawn: list[Drawn],
    evaluate: Callable[[Judge, Exchange, dict[str, Any], str], None],
    *,
    seed: int,
    label: str,
) -> RunStats:
    """Send the property's requests, drawn already (``draw_requests``; in a run ``drawn_property``: once per
    run, for the first pass and the judged pass alike), with ``send_requests``, and judge each answer with
    ``evaluate`` on a scratch judge. At most ``len(drawn)`` requests, never the same one twice, and the same
    ones for the same seed whatever the target answers (spec/DECISIONS.md#reproducible-draws). For each
    requirement broken, the violations of the smallest request that showed it land on ``judge``, its
    exchange being the evidence; a property no request of which was answered raises the Unanswered."""
    stats = RunStats(cap=len(drawn), seed=seed)
    outcomes: list[_Outcome] = []
    unanswered: Unanswered | None = None
    answers: list[Exchange | Unanswered] = []
    start = 0
    while start < len(drawn):
        # batches of fixed sizes (the same requests at any --concurrency): a first one of UNANSWERED_IN_A_ROW,
        # then SEND_BATCH at a time; no batch is sent after one that showed a violation (the evidence is in,
        # and a failing target is not paid for the whole draw) or that ended in 429/503s only
        size = UNANSWERED_IN_A_ROW if start == 0 else SEND_BATCH
        batch = drawn[start:start + size]
        got = send_requests(batch, send, label=label, seed=seed, first=start + 1)
        answers.extend(got)
        found = False
        asked_again: ServerError | None = None
        for d, answer in zip(batch, got, strict=False):
            if isinstance(answer, Unanswered):  # a "not now" says nothing: not judged
                stats.unanswered += 1
                unanswered = answer
                continue
            scratch = Judge(requirements=judge.requirements, exchanges=[answer], asks_again=judge.asks_again)
            try:
                evaluate(scratch, answer, d.request, d.what)
            except ServerError as exc:
                # the check is run again (engine.run.run_check); the batch's other answers are still read
                # (an invalid request's is marked refusal_expected: its 5xx is no sign of the target's health)
                asked_again = asked_again or exc
                continue
            outcomes.append(_Outcome(d, answer, scratch.violations, scratch.judged))
            found = found or bool(scratch.violations)
        if asked_again is not None:
            raise asked_again
        start += size
        tail = answers[-UNANSWERED_IN_A_ROW:]
        if found or (len(tail) >= UNANSWERED_IN_A_ROW and all(isinstance(a, Unanswered) for a in tail)):
            break
    stats.sent = len(answers)
    stats.examples = len(outcomes)
    judged = set().union(*(o.judged for o in outcomes))
    failing = [o for o in outcomes if o.violations]
    if unanswered is not None and not judged and not failing:
        raise unanswered  # no request was answered: nothing is judged
    judge.judged.update(judged)
    broken = dict.fromkeys(v.requirement for o in failing for v in o.violations)
    for rid in broken:
        showing = [o for o in failing if any(v.requirement == rid for v in o.violations)]
        o = min(showing, key=lambda x: _size(x.drawn))
        index = judge._index(o.exchange)
        shown = _canonical(o.drawn.request)
        shown = shown if len(shown) <= 1500 else shown[:1500] + "..."
        how = "explicit example" if o.drawn.explicit else "generated"
        for v in o.violations:
            if v.requirement != rid:
                continue
            judge.violations.append(
                Violation(
                    v.requirement,
                    f"{v.message} [generated request ({o.drawn.what}), {how}, the smallest of "
                    f"{len(showing)} of the {stats.sent} requests sent that showed it, hypothesis seed "
                    f"{seed}: {shown}]",
                    v.path,
                    v.expected,
                    v.received,
                    index,
                )
            )
    return stats


def examples_per_field(examples: int) -> int:
    """Generated examples of each negative-phase field (after its explicit ones): a tenth of --examples."""
    return max(1, math.ceil(examples / 10))


# ---- the run's properties, drawn once per run (ahead, in a helper process, where it pays) ----------------

VALID_LABEL = "generated valid request"


def invalid_label(field: str) -> str:
    return f"generated invalid request ({field})"


def valid_explicit(
    model: str, profile: Any, capabilities: dict[str, Any]
) -> list[tuple[dict[str, Any], str]]:
    """The valid phase's explicit examples (no schemathesis needed: its strategy is built where it draws)."""
    explicit = [
        (minimal_request(model), "valid request (simplest)"),
        (
            minimal_request(model, stream=True, stream_options={"include_usage": True}),
            "valid streaming request (simplest)",
        ),
        (sampling_request(model, profile), "valid request (every sampling field)"),
    ]
    combined = combined_request(model, capabilities)
    if combined is not None:
        explicit.append((combined, "valid streaming request (logprobs and a tool together)"))
    return explicit


def invalid_explicit(model: str, profile: Any, field: str) -> list[tuple[dict[str, Any], str]]:
    """The invalid phase of ``field``: its explicit examples (one per mutation, the simplest request)."""
    muts = mutations(model, _any_token_id(profile))[field]
    return [(apply_mutation(minimal_request(model), m, m.example), m.what) for m in muts]


def _property(
    memo: dict[Any, Any] | None,
    model: str,
    profile: Any,
    capabilities: dict[str, Any],
    field: str | None,
    examples: int,
    seed: int,
) -> tuple[tuple[Any, ...], Callable[[], list[Drawn]]]:
    """One property of the run: its key in the memo of drawn lists, and how it is drawn. ``field`` None: the
    valid phase; a field: its invalid phase, the field broken by schemathesis in one of the valid phase's
    requests (those drawn once: the base costs no draw of its own)."""
    if field is None:
        explicit = valid_explicit(model, profile, capabilities)

        def draw_valid() -> list[Drawn]:
            strategy = valid_requests(model, profile, capabilities).map(lambda r: (r, "valid request"))
            return draw_requests(strategy, count=examples, seed=seed, valid=True, explicit=explicit)

        return _in_context(property_key(VALID_LABEL, seed, examples, True, explicit), model, profile,
                           capabilities), draw_valid
    explicit = invalid_explicit(model, profile, field)
    count = examples_per_field(examples)

    def draw_invalid() -> list[Drawn]:
        pool = [d.request for d in drawn_property(memo, model, profile, capabilities, None, examples, seed)]
        muts = mutations(model, _any_token_id(profile))[field]
        strategy = invalid_requests(st.sampled_from(pool), field, muts).map(lambda rm: (rm[0], rm[1].what))
        return draw_requests(strategy, count=count, seed=seed, valid=False, explicit=explicit)

    return _in_context(property_key(invalid_label(field), seed, count, False, explicit), model, profile,
                       capabilities), draw_invalid


def _in_context(
    key: tuple[Any, ...], model: str, profile: Any, capabilities: dict[str, Any]
) -> tuple[Any, ...]:
    """A property's key with what its strategy depends on beyond the property (the target's model, the
    profile, the capabilities): the key of the process's memo of drawn lists, across runs."""
    return (*key, model, repr(profile), json.dumps(capabilities, sort_keys=True, default=str))


def drawn_property(
    memo: dict[Any, Any] | None,
    model: str,
    profile: Any,
    capabilities: dict[str, Any],
    field: str | None,
    examples: int,
    seed: int,
) -> list[Drawn]:
    """The requests of one property (``field`` None: the valid phase; a field: its invalid phase), drawn
    once per run in ``memo`` (or waited for, when drawn ahead: ``draw_ahead``)."""
    key, draw = _property(memo, model, profile, capabilities, field, examples, seed)
    return drawn_once(memo, key, draw)


def helper_draws(
    home: str | None,
    model: str,
    profile: Any,
    capabilities: dict[str, Any],
    fields: list[str | None],
    examples: int,
    seed: int,
) -> Iterator[list[Drawn]]:
    """The helper process's work (``conformance/checks/_draw_ahead.py``): each property's drawn list in
    turn (None: the valid phase; a field: its invalid phase), with the valid pool drawn once."""
    if home:
        from hypothesis.configuration import set_hypothesis_home_dir

        set_hypothesis_home_dir(home)
    memo: dict[Any, Any] = {}
    for field in fields:
        yield drawn_property(memo, model, profile, capabilities, field, examples, seed)


def draw_ahead(
    memo: dict[Any, Any],
    model: str,
    profile: Any,
    capabilities: dict[str, Any],
    fields: list[str],
    examples: int,
    seed: int,
) -> Callable[[], None] | None:
    """Start drawing the run's properties (the valid phase, then the invalid phase of each of ``fields``)
    in one helper process, and put their futures in ``memo``: ``drawn_once`` then waits for them instead
    of drawing. Drawing is pure CPU work, the same lists in any process
    (spec/DECISIONS.md#reproducible-draws); in a helper process it runs on another core while this one
    sends, receives and judges (spec/DECISIONS.md#draw-ahead). A helper that cannot start or fails leaves
    the drawing to ``drawn_once``, here. Returns the function that ends the helper (None: none started)."""
    import pickle
    import subprocess
    import sys

    try:
        from hypothesis.configuration import storage_directory

        home: str | None = str(storage_directory(intent_to_write=False).home_directory)
    except Exception:  # another hypothesis layout: the helper keeps hypothesis's default home
        home = None
    order: list[str | None] = []
    keys: list[Any] = []
    for f in [None, *fields]:
        key = _property(None, model, profile, capabilities, f, examples, seed)[0]
        recalled = _recalled(key)
        if recalled is not None:  # drawn by an earlier run of this process: no helper needed for it
            with _MEMO_LOCK:
                memo.setdefault(key, recalled)
            continue
        order.append(f)
        keys.append(key)
    if not order:
        return None
    futures: list[Future[list[Drawn]]] = [Future() for _ in keys]
    env = dict(os.environ)  # the helper imports this very package, wherever it was imported from
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    job = pickle.dumps((home, model, profile, capabilities, order, examples, seed))
    try:
        if not sys.executable:
            raise OSError("no interpreter to start")
        proc = subprocess.Popen(
            [sys.executable, "-m", "conformance.checks._draw_ahead"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except (OSError, ValueError):  # no helper process here: everything is drawn in this one
        return None

    def feed() -> None:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            with proc.stdin:
                proc.stdin.write(job)
            for fut in futures:
                fut.set_result(pickle.load(proc.stdout))
        except Exception as exc:  # noqa: BLE001  # the helper ended, or sent what is not a drawn list
            for fut in futures:
                if not fut.done():
                    fut.set_exception(RuntimeError(f"the draw helper process ended: {exc!r}"))
        finally:
            proc.stdout.close()

    threading.Thread(target=feed, name="conformance-draw-ahead", daemon=True).start()
    with _MEMO_LOCK:
        for key, fut in zip(keys, futures, strict=True):
            memo.setdefault(key, fut)

    def close() -> None:
        with contextlib.suppress(Exception):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(5)

    return close
