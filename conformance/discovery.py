"""Discovery: which optional capabilities does the target support? Declared by the profile, else probed.

A probe is one cheap request per capability. A clean 4xx with an error body means *unsupported* (the checks
of that capability are skipped, with the target's reason); a 2xx means supported (its checks run, and a
capability accepted but not honoured fails them); anything else is inconclusive and the checks run.
"""

from __future__ import annotations

from typing import Any

from conformance.catalog import OPTIONAL_CAPABILITIES

__all__ = ["PROBES", "discover"]

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
    """Map each optional capability to {supported, source, reason}."""
    out: dict[str, dict[str, Any]] = {}
    declared = dict(getattr(profile, "capabilities", {}) or {})
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
        else:
            out[cap] = _probe(client, cap, profile)
    return out


def _probe(client: Any, cap: str, profile: Any) -> dict[str, Any]:
    body = {
        "model": client.target.model,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        **PROBES[cap],
    }
    ex = client.chat(body, label=f"discovery: {cap}")
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
