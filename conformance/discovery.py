"""Discovery: which optional capabilities does the target support? Declared by the profile, else probed.

A probe is one cheap request per capability. A clean 4xx with an error body means *unsupported* (the checks
of that capability are skipped, with the target's reason); a 2xx means supported (its checks run, and a
capability accepted but not honoured fails them); anything else is inconclusive and the checks run.

The reasoning and thinking fields (``separate_reasoning``, ``enable_thinking``) are judged by effect: the seed
ties both to named models ("Supported models: ..."), so a server may accept them for any model and ignore them
where the model has no such mode. Their probes ask the same question with the field absent, true and false;
when every 2xx answer places its reasoning alike (none, in reasoning_content, or inline <think> markup), the
field showed no effect and the capability is "unsupported (ignored)" (spec/DECISIONS.md#reasoning-models).
What the probes saw is kept under ``observed``, so the checks know whether the model reasons unasked.
"""

from __future__ import annotations

from typing import Any

from conformance.catalog import OPTIONAL_CAPABILITIES

__all__ = ["PROBES", "discover", "placement", "reasons_unasked", "switch_works", "PLAIN", "EFFECT_PROBES"]

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

PROBES: dict[str, dict[str, Any]] = {
    "tools": {"tools": [_WEATHER_TOOL]},
    "json-object": {"response_format": {"type": "json_object"}},
    "json-schema": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "probe",
                "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
            },
        }
    },
    "reasoning": {"separate_reasoning": True},
    "thinking": {"enable_thinking": False},
}


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(body.get("message"), str):
            return body["message"]
    return ""


def discover(
    client: Any, profile: Any, *, skip: bool = False, required: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Map each optional capability to {supported, source, reason} (and ``observed`` for judged-by-effect
    probes: probe label -> where the answer put its reasoning)."""
    out: dict[str, dict[str, Any]] = {}
    declared = dict(getattr(profile, "capabilities", {}) or {})
    effects = _EffectProbes(client, profile)
    probed = [c for c in OPTIONAL_CAPABILITIES if c not in required and c not in declared and not skip]
    # the probes that do not depend on another's answer go out together (client.concurrency at a time)
    effects.prefetch([(cap, _probe_body(client, cap)) for cap in probed if cap not in EFFECT_PROBES]
                     + [effects.request(*next(iter(EFFECT_PROBES[c].items()))) for c in probed
                        if c in EFFECT_PROBES])
    second = [effects.request(label, fields) for c in probed if c in EFFECT_PROBES
              and _answered(effects.exchanges.get(next(iter(EFFECT_PROBES[c]))))
              for label, fields in {PLAIN: {}, **EFFECT_PROBES[c]}.items()]
    sr = effects.exchanges.get(next(iter(EFFECT_PROBES["reasoning"])))
    if "thinking" in probed and sr is not None and _answered(sr) and placement(sr.json()) == "separate":
        second += [effects.request(label, fields) for label, fields in _THINKING_SEPARATE.items()]
    effects.prefetch(second)
    for cap in OPTIONAL_CAPABILITIES:
        if cap in required:
            out[cap] = {"supported": True, "source": "required", "reason": "made mandatory with --require"}
        elif cap in declared:
            out[cap] = {
                "supported": bool(declared[cap]),
                "source": "profile",
                "reason": "declared by the profile",
            }
        elif skip:
            out[cap] = {"supported": True, "source": "assumed", "reason": "discovery skipped"}
        elif cap in EFFECT_PROBES:
            out[cap] = _probe_effect(effects, cap, out)
        else:
            out[cap] = _by_status(effects.send(cap, _probe_body(client, cap)))
    return out


def _answered(ex: Any) -> bool:
    return ex is not None and not ex.transport_error and ex.status is not None and 200 <= ex.status < 300


def _probe_body(client: Any, cap: str) -> dict[str, Any]:
    return {
        "model": client.target.model,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        **PROBES[cap],
    }


def _by_status(ex: Any) -> dict[str, Any]:
    if ex.transport_error or ex.status is None:
        return {"supported": True, "source": "probe", "reason": f"probe inconclusive ({ex.transport_error})"}
    if 200 <= ex.status < 300:
        return {"supported": True, "source": "probe", "reason": f"probe accepted (HTTP {ex.status})"}
    msg = _error_message(ex.json())
    if 400 <= ex.status < 500 and ex.status not in (401, 403, 408, 429) and msg:
        return {
            "supported": False,
            "source": "probe",
            "reason": f"target rejected the probe with HTTP {ex.status}: {msg[:200]}",
        }
    return {"supported": True, "source": "probe", "reason": f"probe inconclusive (HTTP {ex.status})"}


# ---- capabilities judged by effect (separate_reasoning, enable_thinking) -----------------------------------

PLAIN = "plain"
EFFECT_MAX_TOKENS = 16
# Per capability: the probe (label -> fields) whose refusal makes it unsupported, then the ones compared.
EFFECT_PROBES: dict[str, dict[str, dict[str, Any]]] = {
    "reasoning": {
        "separate_reasoning=true": {"separate_reasoning": True},
        "separate_reasoning=false": {"separate_reasoning": False},
    },
    "thinking": {
        "enable_thinking=false": {"enable_thinking": False},
        "enable_thinking=true": {"enable_thinking": True},
    },
}
# With separate_reasoning honoured, thinking is also compared under it (the switch may show only there).
_THINKING_SEPARATE = {
    "separate_reasoning=true, enable_thinking=false": {"separate_reasoning": True, "enable_thinking": False},
    "separate_reasoning=true, enable_thinking=true": {"separate_reasoning": True, "enable_thinking": True},
}
MARKUP = ("<think>", "</think>")
_WHERE = {
    "none": "no reasoning",
    "separate": "reasoning in reasoning_content",
    "inline": "<think> markup in content",
}


def placement(data: Any) -> str | None:
    """Where a completion put its reasoning: "separate" (message.reasoning_content or message.reasoning),
    "inline" (<think> markup in content) or "none"; None when ``data`` is no completion."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict):
        return None
    for key in ("reasoning_content", "reasoning"):
        rc = msg.get(key)
        if isinstance(rc, str) and rc.strip():
            return "separate"
    content = msg.get("content")
    if isinstance(content, str) and any(m in content for m in MARKUP):
        return "inline"
    return "none"


class _EffectProbes:
    """The probes of the judged-by-effect capabilities, each sent at most once (labels are shared)."""

    def __init__(self, client: Any, profile: Any) -> None:
        self.client = client
        self.profile = profile
        self.exchanges: dict[str, Any] = {}

    def request(self, label: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(label, body) of the effect probe ``label``."""
        return label, {
            "model": self.client.target.model,
            "messages": [{"role": "user", "content": "What is 2 + 3? Answer briefly."}],
            **dict(getattr(self.profile, "deterministic", {}) or {}),
            "max_tokens": EFFECT_MAX_TOKENS,
            **fields,
        }

    def send(self, label: str, body: dict[str, Any]) -> Any:
        if label not in self.exchanges:
            self.exchanges[label] = self.client.chat(body, label=f"discovery: {label}")
        return self.exchanges[label]

    def prefetch(self, requests: list[tuple[str, dict[str, Any]]]) -> None:
        """Send the probes not sent yet, up to the client's concurrency at a time."""
        todo = {label: body for label, body in requests if label not in self.exchanges}
        if len(todo) <= 1 or getattr(self.client, "concurrency", 1) <= 1:
            for label, body in todo.items():
                self.send(label, body)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=min(len(todo), self.client.concurrency))
        stopped = False
        try:
            sent = {label: pool.submit(self.client.chat, body, label=f"discovery: {label}")
                    for label, body in todo.items()}
            done = {label: fut.result() for label, fut in sent.items()}
        except KeyboardInterrupt:
            # stopped (Ctrl-C, SIGTERM) with probes in flight: they end now. A `with` block waited for them,
            # up to their timeout (a run stopped during discovery hung 20 s and more against a slow target)
            stopped = True
            abort = getattr(self.client, "abort", None)
            if abort is not None:
                abort()
            raise
        finally:
            pool.shutdown(wait=not stopped, cancel_futures=stopped)
        for label, ex in done.items():
            self.exchanges.setdefault(label, ex)

    def get(self, label: str, fields: dict[str, Any]) -> Any:
        return self.send(*self.request(label, fields))

    def seen(self, label: str, fields: dict[str, Any]) -> str | None:
        ex = self.get(label, fields)
        if ex.transport_error or ex.status is None or not 200 <= ex.status < 300:
            return None
        return placement(ex.json())


def _probe_effect(probes: _EffectProbes, cap: str, found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    specs = EFFECT_PROBES[cap]
    first_label, first_fields = next(iter(specs.items()))
    first = probes.get(first_label, first_fields)
    if first.transport_error or first.status is None or not 200 <= first.status < 300:
        return _by_status(first)  # refused cleanly: unsupported; anything else: inconclusive, checks run
    groups: list[dict[str, Any]] = [{PLAIN: {}, **specs}]
    reasoning = found.get("reasoning") or {}
    if cap == "thinking" and (reasoning.get("observed") or {}).get("separate_reasoning=true") == "separate":
        groups.append({"separate_reasoning=true": {"separate_reasoning": True}, **_THINKING_SEPARATE})
    observed: dict[str, str] = {}
    effect = ""
    for group in groups:
        seen = {label: probes.seen(label, fields) for label, fields in group.items()}
        observed.update({k: v for k, v in seen.items() if v is not None})
        kinds = {v for v in seen.values() if v is not None}
        if len(kinds) > 1 and not effect:
            effect = ", ".join(f"{k}: {v}" for k, v in seen.items() if v is not None)
    if effect:
        return {
            "supported": True,
            "source": "probe",
            "reason": f"probe accepted and the field has an effect (reasoning placed {effect})",
            "observed": observed,
        }
    if len(observed) < 2:
        return {"supported": True, "source": "probe", "reason": "probe inconclusive (too few answers to "
                "compare)", "observed": observed}
    kind = _WHERE[next(iter(set(observed.values())))]
    return {
        "supported": False,
        "source": "probe",
        "reason": f"unsupported (ignored): the target accepts {'/'.join(sorted(_fields(specs)))} but the "
        f"field shows no effect ({kind} in every probe); make it mandatory with --require {cap} or "
        "declare it in a profile to have it judged",
        "observed": observed,
    }


def reasons_unasked(capabilities: dict[str, Any]) -> bool:
    """Did discovery see the model reason on a request that set neither reasoning field?"""
    for cap in EFFECT_PROBES:
        seen = (capabilities.get(cap) or {}).get("observed") or {}
        if seen.get(PLAIN) in ("separate", "inline"):
            return True
    return False


def switch_works(capabilities: dict[str, Any]) -> bool:
    """Was enable_thinking shown to switch reasoning (or declared to, by the profile or --require)?"""
    info = capabilities.get("thinking") or {}
    return bool(info.get("supported")) and info.get("source") in ("profile", "required", "probe") and (
        info.get("source") != "probe" or "has an effect" in str(info.get("reason")))


def _fields(specs: dict[str, dict[str, Any]]) -> set[str]:
    return {k for fields in specs.values() for k in fields}
