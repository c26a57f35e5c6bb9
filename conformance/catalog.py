"""The requirements catalog (``spec/requirements.yaml``) as typed objects."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from conformance.specfiles import load_yaml

__all__ = ["LEVELS", "CAPABILITIES", "Requirement", "catalog", "get", "level_rank", "check_selection"]

LEVELS = ("MUST", "SHOULD", "MAY")
CAPABILITIES = (
    "core",
    "streaming",
    "usage",
    "sampling",
    "n",
    "seed",
    "stop",
    "max-tokens",
    "penalties",
    "logit-bias",
    "logprobs",
    "tools",
    "json-object",
    "json-schema",
    "reasoning",
    "thinking",
    "errors",
    "auth",
)
# Capabilities the seed ties to particular models: a clean 4xx makes them "unsupported", not failed.
OPTIONAL_CAPABILITIES = ("tools", "json-object", "json-schema", "reasoning", "thinking")


@dataclass(frozen=True)
class Requirement:
    id: str
    level: str
    capability: str
    statement: str
    source: dict[str, str]
    profiles: tuple[str, ...] = ()
    profile_levels: dict[str, str] = field(default_factory=dict)

    def applies_to(self, profile: str) -> bool:
        return not self.profiles or profile in self.profiles

    def level_for(self, profile: str) -> str:
        return self.profile_levels.get(profile, self.level)

    @property
    def optional(self) -> bool:
        return self.capability in OPTIONAL_CAPABILITIES


def level_rank(level: str) -> int:
    """MUST=0, SHOULD=1, MAY=2: a run at level L judges requirements with rank <= rank(L)."""
    return LEVELS.index(level.upper())


@functools.cache
def catalog() -> dict[str, Requirement]:
    raw = load_yaml("requirements.yaml")
    out: dict[str, Requirement] = {}
    for entry in raw["requirements"]:
        req = Requirement(
            id=entry["id"],
            level=entry["level"],
            capability=entry["capability"],
            statement=entry["statement"],
            source=dict(entry["source"]),
            profiles=tuple(entry.get("profiles") or ()),
            profile_levels=dict(entry.get("profile_levels") or {}),
        )
        out[req.id] = req
    return out


def get(req_id: str) -> Requirement:
    return catalog()[req_id]


def check_selection(only: list[str], require: list[str]) -> None:
    """``--only`` and ``--require`` name real requirement ids / capabilities, else a one-line UsageError."""
    from conformance.errors import UsageError

    for sel in only:
        if sel not in catalog() and sel not in CAPABILITIES:
            raise UsageError(f"--only {sel!r} is neither a requirement id nor a capability: "
                             "list them with `chat-conformance requirements`")
    for cap in require:
        if cap not in OPTIONAL_CAPABILITIES:
            raise UsageError(f"--require {cap!r} is not an optional capability: use one of "
                             + ", ".join(OPTIONAL_CAPABILITIES))
