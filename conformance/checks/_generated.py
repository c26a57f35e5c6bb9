"""Property-based requests built from spec/openapi.yaml (CreateChatCompletionRequest), and the bounded
hypothesis runner that sends them through the recording client.

* ``valid_requests``: every optional field, in combinations, with values inside the documented ranges
  (bounds only where the seed's range or the profile makes them MUST-accept: spec/DECISIONS.md#ranges),
  kept valid in the ways the schema cannot say (top_logprobs needs logprobs true, stream_options needs
  stream, small n and max_tokens, short messages, the target's model, logit_bias on the profile's token id,
  tool_choice naming an existing tool; optional-capability fields only where the target supports them).
* ``mutations``: for each top-level field, the ways to break it alone (below/above its closed range, a
  wrong JSON type, outside its enum or item count, a required field removed), each naming the requirement
  that an accepted mutation breaks.
* ``run_property``: hypothesis (fixed seed, ``max_examples``, explicit examples first, shrinking) with a
  hard cap on the requests sent; only the minimal failing request's violations reach the check's judge.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, example, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from conformance.catalog import catalog
from conformance.errors import BudgetExhausted
from conformance.evidence import Exchange
from conformance.schemas import schema_errors
from conformance.specfiles import openapi
from conformance.violations import Judge, Violation

__all__ = [
    "REQUEST_SCHEMA",
    "MAX_N",
    "MAX_TOKENS",
    "CAPABILITY_FIELDS",
    "Mutation",
    "mutations",
    "mutation_fields",
    "mutation_requirements",
    "apply_mutation",
    "examples_per_field",
    "valid_requests",
    "invalid_requests",
    "minimal_request",
    "inside_ranges",
    "run_property",
    "RunStats",
]

REQUEST_SCHEMA = "CreateChatCompletionRequest"
MAX_N = 3  # n is drawn from [1, MAX_N]: every choice costs tokens
MAX_TOKENS = 8  # max_tokens is always set, from [1, MAX_TOKENS]
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
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,?", min_size=1, max_size=24)
_NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
_STOP = st.text(alphabet="#@!<>ENDSTOP.", min_size=1, max_size=5)
_RANGE_RE = re.compile(r"Required range:\s*(-?[\d.]+)\s*(<=?)\s*x\s*(<=?)\s*(-?[\d.]+)")
_GRID = 100  # non-integer numbers are drawn on a grid of 1/100 of their range


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


# ---- valid values -----------------------------------------------------------------------------------------


def _inside(b: Bounds) -> st.SearchStrategy[Any]:
    if b.integer:
        lo = -(2**31) if b.lo is None else int(b.lo) + (0 if b.lo_in else 1)
        hi = 2**31 - 1 if b.hi is None else int(b.hi) - (0 if b.hi_in else 1)
        if b.name == "n":
            hi = min(hi, MAX_N)
        if b.name == "max_tokens":
            hi = MAX_TOKENS
        return st.integers(lo, hi)
    assert b.lo is not None and b.hi is not None, f"{b.name}: an open numeric range"
    lo_k, hi_k = (0 if b.lo_in else 1), (_GRID if b.hi_in else _GRID - 1)
    base, span = b.lo, b.hi - b.lo

    def value(k: int, as_int: bool) -> float | int:
        v = round(base + k * span / _GRID, 6)
        return int(v) if as_int and float(v).is_integer() else v

    return st.builds(value, st.integers(lo_k, hi_k), st.booleans())


def _content() -> st.SearchStrategy[Any]:
    text = st.one_of(st.sampled_from(PROMPTS), _TEXT)
    parts = st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), min_size=1, max_size=2)
    return st.one_of(text, parts)


@st.composite
def _messages(draw: Any) -> list[dict[str, Any]]:
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


def _mention_json(messages: list[dict[str, Any]]) -> None:
    last = messages[-1]
    if isinstance(last["content"], str):
        last["content"] += " Answer in JSON."
    else:
        last["content"] = [*last["content"], {"type": "text", "text": " Answer in JSON."}]


@st.composite
def valid_requests(
    draw: Any, model: str, profile: Any, capabilities: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A request valid under the contract and the profile, with a random subset of optional fields."""
    ranges = inside_ranges(getattr(profile, "base", "seed"))
    req: dict[str, Any] = {
        "model": model,
        "messages": draw(_messages()),
        "max_tokens": draw(_inside(ranges["max_tokens"])),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        name: _inside(b)
        for name, b in ranges.items()
        if name not in ("max_tokens", "top_logprobs", "logit_bias")
    }
    optional["top_logprobs"] = _inside(ranges["top_logprobs"])
    optional["logit_bias"] = _inside(ranges["logit_bias"]).map(
        lambda v: {str(profile.logit_bias_token_id): v}
    )
    optional["stream"] = st.booleans()
    optional["logprobs"] = st.booleans()
    optional["context_length_exceeded_behavior"] = st.sampled_from(
        _props()["context_length_exceeded_behavior"]["enum"]
    )
    optional["stop"] = st.one_of(_STOP, st.lists(_STOP, min_size=1, max_size=4), st.none())
    optional["stream_options"] = st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})
    if _supported(capabilities, "tools"):
        optional["tools"] = st.lists(
            st.sampled_from(["get_weather", "get_time", "lookup"]), min_size=1, max_size=2, unique=True
        ).map(lambda ns: [_tool(n) for n in ns])
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
    if _field_enabled("response_format", capabilities):
        optional["response_format"] = st.sampled_from(formats)
    if _supported(capabilities, "reasoning"):
        optional["separate_reasoning"] = st.booleans()
    if _supported(capabilities, "thinking"):
        optional["enable_thinking"] = st.booleans()
    for name in sorted(optional):  # each optional field present or not; absent is the simpler example
        if draw(st.booleans()):
            req[name] = draw(optional[name])
    # what the schema cannot say
    if req.get("logprobs") is not True:
        req.pop("top_logprobs", None)
    if req.get("stream") is not True:
        req.pop("stream_options", None)
    if "tools" in req and draw(st.booleans()):
        names = [t["function"]["name"] for t in req["tools"]]
        req["tool_choice"] = draw(
            st.one_of(
                st.sampled_from(["none", "auto", "required"]),
                st.sampled_from(names).map(lambda n: {"type": "function", "function": {"name": n}}),
            )
        )
    if req.get("response_format", {}).get("type") in ("json_object", "json_schema"):
        _mention_json(req["messages"])
    return req


def minimal_request(model: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": MAX_TOKENS,
        **fields,
    }


# ---- mutations --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """One way to make a single field invalid. ``values`` draws the bad value (None: the field is removed);
    ``example`` is the simplest bad value (the explicit example every run sends)."""

    field: str
    kind: str
    requirement: str
    values: st.SearchStrategy[Any] | None
    example: Any = None

    @property
    def what(self) -> str:
        return f"{self.field}: {self.kind}"


def _shift(bound: float, sign: int, offset: float) -> float:
    return round(bound + sign * offset, 6)


def _offsets(integer: bool) -> st.SearchStrategy[Any]:
    return st.integers(1, 100) if integer else st.integers(1, 1000).map(lambda k: k / 10)


def _wrong_types(json_type: str, sample: Any) -> tuple[st.SearchStrategy[Any], Any]:
    """A strategy of values of another JSON type than ``json_type`` and its simplest value."""
    if json_type in ("number", "integer"):
        choices: list[Any] = [str(sample), True, [sample]]
        if json_type == "integer":
            choices.insert(1, sample + 0.5)
    elif json_type == "boolean":
        choices = ["true", 1]
    elif json_type == "string":
        choices = [1, True, [sample]]
    elif json_type == "array":
        choices = [{"0": sample}, 1, "x"] if sample is not None else [1, "x"]
    else:  # object
        choices = [[], "x", 1]
    return st.sampled_from(choices), choices[0]


def _not_in(enum: list[Any]) -> st.SearchStrategy[str]:
    return st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
        lambda s: s not in enum
    )


def mutations(model: str, profile_token_id: int = 100) -> dict[str, list[Mutation]]:
    """For each top-level field of the request schema, the mutations that break it alone."""
    props, required = _props(), _required()
    closed = inside_ranges()
    out: dict[str, list[Mutation]] = {}
    wrong_type = "ERROR-WRONG-TYPE"
    for name, prop in props.items():
        muts: list[Mutation] = []
        up = _upper(name)
        if name in required:
            muts.append(Mutation(name, "removed", _req_id(f"ERROR-MISSING-{up}"), None))
        typ = prop.get("type")
        if typ in ("number", "integer") and name in closed:
            b = closed[name]
            reject_id = _req_id(f"RANGE-{up}-REJECT")
            lo_id = "MAXTOK-REJECT-NONPOSITIVE" if name == "max_tokens" else reject_id
            if b.lo is not None:
                lo = int(b.lo) if b.integer else b.lo
                muts.append(
                    Mutation(
                        name,
                        "below minimum",
                        _req_id(lo_id),
                        _offsets(b.integer).map(functools.partial(_shift, lo, -1)),
                        round(lo - (1 if b.integer else 0.5), 6),
                    )
                )
            if b.hi is not None:
                hi = int(b.hi) if b.integer else b.hi
                muts.append(
                    Mutation(
                        name,
                        "above maximum",
                        reject_id,
                        _offsets(b.integer).map(functools.partial(_shift, hi, 1)),
                        round(hi + (1 if b.integer else 0.5), 6),
                    )
                )
            sample = 1 if b.lo is None or b.lo <= 1 <= (b.hi if b.hi is not None else 2) else int(b.lo)
            strat, simplest = _wrong_types(typ, sample)
            muts.append(Mutation(name, "wrong type", wrong_type, strat, simplest))
        elif typ == "boolean":
            strat, simplest = _wrong_types("boolean", True)
            muts.append(Mutation(name, "wrong type", wrong_type, strat, simplest))
        elif typ == "string":
            strat, simplest = _wrong_types("string", model if name == "model" else "x")
            muts.append(Mutation(name, "wrong type", wrong_type, strat, simplest))
            if "enum" in prop:
                enum_id = "CONTEXT-BEHAVIOR-ENUM" if name == "context_length_exceeded_behavior" else ""
                muts.append(Mutation(name, "not in enum", _req_id(enum_id), _not_in(prop["enum"]), "bogus"))
        out[name] = muts
    # structured fields
    user = {"role": "user", "content": PROMPTS[0]}
    out["messages"] += [
        Mutation("messages", "wrong type", wrong_type, st.sampled_from([user, "hi", 1]), user),
        Mutation("messages", "empty", _req_id("ERROR-EMPTY-MESSAGES"), st.just([]), []),
        Mutation(
            "messages",
            "unknown role",
            _req_id("ERROR-INVALID-ROLE"),
            _not_in(["system", "user", "assistant", "tool", "developer", "function"]).map(
                lambda r: [{"role": r, "content": PROMPTS[0]}]
            ),
            [{"role": "bogus", "content": PROMPTS[0]}],
        ),
        Mutation(
            "messages",
            "content removed",
            "GEN-INVALID-REJECTED",
            st.sampled_from(["user", "system"]).map(lambda r: [{"role": r}]),
            [{"role": "user"}],
        ),
    ]
    out["stop"] = [
        Mutation("stop", "wrong type", wrong_type, st.sampled_from([1, True, {"s": "###"}]), 1),
        Mutation(
            "stop",
            "more than 4 sequences",
            _req_id("RANGE-STOP-REJECT"),
            st.lists(_STOP, min_size=5, max_size=8),
            ["#", "##", "###", "@@", "!!"],
        ),
        Mutation(
            "stop",
            "items of a wrong type",
            wrong_type,
            st.lists(st.integers(0, 9), min_size=1, max_size=4),
            [1],
        ),
    ]
    b = closed["logit_bias"]
    tok = str(profile_token_id)
    out["logit_bias"] = [
        Mutation("logit_bias", "wrong type", wrong_type, st.sampled_from([[tok], "x", 1]), [tok]),
        Mutation(
            "logit_bias",
            "value below minimum",
            _req_id("RANGE-LOGIT-BIAS-REJECT"),
            _offsets(False).map(lambda o: {tok: round(b.lo - o, 6)}),
            {tok: (b.lo or 0) - 0.5},
        ),
        Mutation(
            "logit_bias",
            "value above maximum",
            _req_id("RANGE-LOGIT-BIAS-REJECT"),
            _offsets(False).map(lambda o: {tok: round(b.hi + o, 6)}),
            {tok: (b.hi or 0) + 0.5},
        ),
        Mutation(
            "logit_bias",
            "value of a wrong type",
            wrong_type,
            st.sampled_from(["1", True, [1]]).map(lambda v: {tok: v}),
            {tok: "1"},
        ),
        Mutation(
            "logit_bias",
            "key not a token id",
            "GEN-INVALID-REJECTED",
            st.text(alphabet=string.ascii_letters, min_size=1, max_size=8).map(lambda k: {k: 1}),
            {"abc": 1},
        ),
    ]
    out["stream_options"] = [
        Mutation("stream_options", "wrong type", wrong_type, st.sampled_from([[], "x", True]), []),
        Mutation(
            "stream_options",
            "include_usage of a wrong type",
            wrong_type,
            st.sampled_from(["true", 1]).map(lambda v: {"include_usage": v}),
            {"include_usage": "true"},
        ),
    ]
    out["tools"] = [
        Mutation(
            "tools",
            "wrong type",
            wrong_type,
            st.sampled_from([_tool("get_weather"), "x", 1]),
            _tool("get_weather"),
        ),
        Mutation(
            "tools",
            "tool type not function",
            "GEN-INVALID-REJECTED",
            _not_in(["function"]).map(lambda t: [{**_tool("get_weather"), "type": t}]),
            [{**_tool("get_weather"), "type": "bogus"}],
        ),
    ]
    out["tool_choice"] = [
        Mutation("tool_choice", "wrong type", wrong_type, st.sampled_from([1, True, ["auto"]]), 1),
        Mutation(
            "tool_choice",
            "not in enum",
            "GEN-INVALID-REJECTED",
            _not_in(["none", "auto", "required"]),
            "bogus",
        ),
    ]
    out["response_format"] = [
        Mutation(
            "response_format",
            "wrong type",
            wrong_type,
            st.sampled_from(["json_object", 1, []]),
            "json_object",
        ),
        Mutation(
            "response_format",
            "type not in enum",
            "GEN-INVALID-REJECTED",
            _not_in(["text", "json_object", "json_schema"]).map(lambda t: {"type": t}),
            {"type": "bogus"},
        ),
    ]
    return {k: v for k, v in out.items() if v}


def mutation_fields() -> list[str]:
    return list(mutations("m"))


def mutation_requirements(name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.requirement for m in mutations("m")[name]))


def apply_mutation(base: dict[str, Any], m: Mutation, value: Any) -> dict[str, Any]:
    """``base`` (valid) with field ``m.field`` broken by ``value`` and everything else kept valid."""
    req = json.loads(json.dumps(base))
    f = m.field
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
    if m.values is None:
        req.pop(f, None)
    else:
        req[f] = value
    return req


def invalid_requests(
    base: st.SearchStrategy[dict[str, Any]], muts: list[Mutation]
) -> st.SearchStrategy[tuple[dict[str, Any], Mutation]]:
    def pick(m: Mutation) -> st.SearchStrategy[tuple[Mutation, Any]]:
        values: st.SearchStrategy[Any] = m.values if m.values is not None else st.none()
        return st.tuples(st.just(m), values)

    def build(bv: tuple[dict[str, Any], tuple[Mutation, Any]]) -> tuple[dict[str, Any], Mutation]:
        base_req, (m, v) = bv
        return apply_mutation(base_req, m, v), m

    return st.tuples(base, st.sampled_from(muts).flatmap(pick)).map(build)


# ---- the bounded runner ---------------------------------------------------------------------------------


@dataclass
class RunStats:
    examples: int = 0
    sent: int = 0
    cap: int = 0
    seed: int = 0


@dataclass
class _Outcome:
    request: dict[str, Any]
    what: str
    exchange: Exchange
    violations: list[Violation]
    judged: set[str]


class _Found(Exception):
    pass


def _canonical(req: Any) -> str:
    return json.dumps(req, sort_keys=True, ensure_ascii=False)


def run_property(
    judge: Judge,
    send: Callable[[dict[str, Any], str], Exchange],
    strategy: st.SearchStrategy[tuple[dict[str, Any], str]],
    evaluate: Callable[[Judge, Exchange, dict[str, Any], str], None],
    *,
    max_examples: int,
    seed: int,
    explicit: list[tuple[dict[str, Any], str]] = (),  # type: ignore[assignment]
    label: str,
    valid: bool,
) -> RunStats:
    """Run hypothesis over ``strategy`` (pairs of request and a description), sending each new request once
    (``send``) and judging it with ``evaluate`` on a scratch judge. Explicit examples run first, then
    ``max_examples`` generated ones; a failure is shrunk. At most ``len(explicit) + 3 * max_examples``
    requests are sent: past the cap, new requests are discarded (identical requests are never re-sent).
    The minimal failing request's violations land on ``judge``, with its exchange as evidence."""
    stats = RunStats(cap=len(explicit) + 3 * max(1, max_examples), seed=seed)
    explicit_keys = {_canonical(r) for r, _ in explicit}
    cache: dict[str, _Outcome] = {}
    judged: set[str] = set()
    state: dict[str, Any] = {"last": None, "exhausted": None}

    def one(pair: tuple[dict[str, Any], str]) -> None:
        req, what = pair
        if state["exhausted"] is not None:
            raise state["exhausted"]
        errors = schema_errors(REQUEST_SCHEMA, req)
        if bool(errors) == valid:  # the generator's own guard: never blame a target for our mistake
            reject()
        key = _canonical(req)
        out = cache.get(key)
        if out is None:
            if stats.sent >= stats.cap:
                reject()
            stats.sent += 1
            try:
                ex = send(req, f"{label} #{stats.sent}: {what} (hypothesis seed {seed})")
            except BudgetExhausted as exc:
                state["exhausted"] = exc
                raise
            scratch = Judge(requirements=judge.requirements, exchanges=[ex])
            evaluate(scratch, ex, req, what)
            out = cache[key] = _Outcome(req, what, ex, scratch.violations, scratch.judged)
        stats.examples += 1
        judged.update(out.judged)
        if out.violations:
            state["last"] = out
            raise _Found(key)

    test = given(pair=strategy)(lambda pair: one(pair))
    for ex_pair in reversed(list(explicit)):
        test = example(pair=ex_pair)(test)
    test = settings(
        max_examples=max(1, max_examples),
        database=None,
        deadline=None,
        derandomize=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
    )(test)
    test = hypothesis_seed(seed)(test)
    try:
        test()
    except _Found:
        pass
    except Unsatisfiable:
        pass
    except BudgetExhausted:
        raise
    if state["exhausted"] is not None:
        raise state["exhausted"]
    judge.judged.update(judged)
    last: _Outcome | None = state["last"]
    if last is not None:
        index = judge._index(last.exchange)
        shown = _canonical(last.request)
        shown = shown if len(shown) <= 1500 else shown[:1500] + "..."
        how = "explicit example" if _canonical(last.request) in explicit_keys else "minimal after shrinking"
        capped = f", request cap {stats.cap} reached" if stats.sent >= stats.cap else ""
        for v in last.violations:
            judge.violations.append(
                Violation(
                    v.requirement,
                    f"{v.message} [generated request ({last.what}), {how}, hypothesis seed {seed}, "
                    f"{stats.sent} requests sent{capped}: {shown}]",
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
