"""Profiles: how the suite reads the points where the seed and the OpenAI reference part ways.

A profile is a built-in name (``seed``, ``openai``: ``spec/profiles/<name>.toml``) or a path to a user
``.toml`` file that ``extends`` a built-in one and overrides only what describes the target:
``capabilities``, ``context_length``, ``logit_bias_token_id`` and ``deterministic`` (plus ``name`` and
``description``). Every mistake raises :class:`~conformance.errors.UsageError` with a one-line message that
names the fix.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.catalog import CAPABILITIES
from conformance.errors import SuiteError, UsageError
from conformance.specfiles import spec_dir

__all__ = ["BUILTIN_PROFILES", "Profile", "load_profile"]

BUILTIN_PROFILES = ("seed", "openai")

STOP_SEQUENCE_VALUES = ("included", "excluded")
ANY_TOKEN_ID = 100  # a token id every vocabulary holds (see Profile.any_token_id)
STREAM_USAGE_VALUES = ("allowed", "forbidden")

# Keys of a built-in profile file (all but the optional ones are required there).
_BUILTIN_REQUIRED = (
    "name", "description", "stop_sequence", "inclusive_bounds", "stream_usage_without_option",
    "deterministic",
)
_BUILTIN_OPTIONAL = ("capabilities", "context_length", "logit_bias_token_id")
# Keys a user profile file may set.
_USER_KEYS = ("extends", "name", "description", "capabilities", "context_length", "logit_bias_token_id",
              "deterministic")
# Keys only a built-in profile decides (a user file picks them through ``extends``).
_BASE_ONLY = ("stop_sequence", "inclusive_bounds", "stream_usage_without_option")


@dataclass(frozen=True)
class Profile:
    """A resolved profile.

    ``capabilities`` holds only declared capabilities: a missing key means discover it at run time.
    ``deterministic`` holds request parameters that make sampling deterministic (never temperature 0).
    ``base`` is the built-in profile (seed or openai) whose judgement rules apply.
    ``logit_bias_token_id`` None: the logit-bias checks find an ordinary word token themselves
    (spec/DECISIONS.md#logit-bias-token); :attr:`any_token_id` is the id sent where any id does.
    """

    name: str
    description: str
    stop_sequence: str  # "included" | "excluded"
    inclusive_bounds: bool
    stream_usage_without_option: str  # "allowed" | "forbidden"
    deterministic: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, bool] = field(default_factory=dict)
    context_length: int | None = None
    logit_bias_token_id: int | None = None
    base: str = "seed"

    def __hash__(self) -> int:
        det = tuple(sorted((k, repr(v)) for k, v in self.deterministic.items()))
        caps = tuple(sorted(self.capabilities.items()))
        return hash((self.name, self.base, caps, self.context_length, self.logit_bias_token_id, det))

    @property
    def any_token_id(self) -> int:
        """A token id for requests that judge a logit_bias *value* (range checks, generated requests), where
        any id of the vocabulary does: the profile's logit_bias_token_id, else 100."""
        return ANY_TOKEN_ID if self.logit_bias_token_id is None else self.logit_bias_token_id

    def capability(self, name: str) -> bool | None:
        """True/False when the profile declares the capability, None when it is to be discovered."""
        return self.capabilities.get(name)


def load_profile(name_or_path: str) -> Profile:
    """The built-in profile ``seed`` or ``openai``, or the user profile at a path ending in ``.toml``."""
    if name_or_path in BUILTIN_PROFILES:
        return _builtin(name_or_path)
    if name_or_path.endswith(".toml"):
        return _user(Path(name_or_path))
    raise UsageError(f"unknown profile {name_or_path!r}: use seed, openai or a path to a .toml file")


# --------------------------------------------------------------------------------------------- internals

def _read_toml(path: Path, where: str) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{where} not found: check the path (or use seed or openai)")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        detail = " ".join(str(exc).split())
        raise UsageError(f"{where} is not valid TOML ({detail}): fix the syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())
        raise UsageError(f"{where} cannot be read ({detail}): check the file") from None


def _builtin(name: str) -> Profile:
    where = f"built-in profile file 'spec/profiles/{name}.toml'"
    raw = _read_toml(spec_dir() / "profiles" / f"{name}.toml", where)
    try:
        unknown = [k for k in raw if k not in _BUILTIN_REQUIRED + _BUILTIN_OPTIONAL]
        if unknown:
            raise UsageError(f"{where}: unknown key {unknown[0]!r}")
        missing = [k for k in _BUILTIN_REQUIRED if k not in raw]
        if missing:
            raise UsageError(f"{where}: missing key {missing[0]!r}")
        return Profile(
            name=_string(raw, "name", where),
            description=_string(raw, "description", where),
            stop_sequence=_choice(raw, "stop_sequence", STOP_SEQUENCE_VALUES, where),
            inclusive_bounds=_boolean(raw, "inclusive_bounds", where),
            stream_usage_without_option=_choice(
                raw, "stream_usage_without_option", STREAM_USAGE_VALUES, where),
            deterministic=_deterministic(raw, where),
            capabilities=_capabilities(raw, where),
            context_length=_context_length(raw, where),
            logit_bias_token_id=_token_id(raw, where, default=None),
            base=name,
        )
    except UsageError as exc:  # our own file is broken: a bug of the suite, not the user's mistake
        raise SuiteError(str(exc)) from None


def _user(path: Path) -> Profile:
    where = f"profile file '{path}'"
    raw = _read_toml(path, where)
    for key in raw:
        if key in _BASE_ONLY:
            raise UsageError(f"{where}: {key} is fixed by the base profile: remove it and set "
                             f"extends = \"seed\" or \"openai\"")
        if key not in _USER_KEYS:
            raise UsageError(f"{where}: unknown key {key!r}: allowed keys are {', '.join(_USER_KEYS)}")
    extends = raw.get("extends", "seed")
    if not isinstance(extends, str) or extends not in BUILTIN_PROFILES:
        raise UsageError(f"{where}: extends = {extends!r} is not a built-in profile: use extends = \"seed\" "
                         f"or extends = \"openai\"")
    base = _builtin(extends)
    name = _string(raw, "name", where) if "name" in raw else path.stem
    description = (_string(raw, "description", where) if "description" in raw
                   else f"{name} (user profile extending {extends})")
    capabilities = dict(base.capabilities)
    capabilities.update(_capabilities(raw, where))
    return Profile(
        name=name,
        description=description,
        stop_sequence=base.stop_sequence,
        inclusive_bounds=base.inclusive_bounds,
        stream_usage_without_option=base.stream_usage_without_option,
        deterministic=_deterministic(raw, where) if "deterministic" in raw else dict(base.deterministic),
        capabilities=capabilities,
        context_length=_context_length(raw, where) if "context_length" in raw else base.context_length,
        logit_bias_token_id=_token_id(raw, where, default=base.logit_bias_token_id),
        base=extends,
    )


def _type_name(value: object) -> str:
    return type(value).__name__


def _string(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: {key} must be a non-empty string, got {value!r} ({_type_name(value)})")
    return value


def _boolean(raw: dict[str, Any], key: str, where: str) -> bool:
    value = raw[key]
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false, got {value!r} ({_type_name(value)})")
    return value


def _choice(raw: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    value = raw[key]
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise UsageError(f"{where}: {key} must be one of {options}, got {value!r}")
    return str(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _context_length(raw: dict[str, Any], where: str) -> int | None:
    if "context_length" not in raw:
        return None
    value = raw["context_length"]
    if not _is_int(value) or value < 1:
        raise UsageError(f"{where}: context_length must be a positive integer (tokens), "
                         f"got {value!r} ({_type_name(value)})")
    return int(value)


def _token_id(raw: dict[str, Any], where: str, default: int | None) -> int | None:
    if "logit_bias_token_id" not in raw:
        return default
    value = raw["logit_bias_token_id"]
    if not _is_int(value) or value < 0:
        raise UsageError(f"{where}: logit_bias_token_id must be a non-negative integer (a token id), "
                         f"got {value!r} ({_type_name(value)})")
    return int(value)


def _capabilities(raw: dict[str, Any], where: str) -> dict[str, bool]:
    if "capabilities" not in raw:
        return {}
    table = raw["capabilities"]
    if not isinstance(table, dict):
        raise UsageError(f"{where}: capabilities must be a table ([capabilities] with name = true/false), "
                         f"got {_type_name(table)}")
    out: dict[str, bool] = {}
    for cap, value in table.items():
        if cap not in CAPABILITIES:
            raise UsageError(f"{where}: unknown capability {cap!r} in [capabilities]: use one of "
                             f"{', '.join(CAPABILITIES)}")
        if not isinstance(value, bool):
            raise UsageError(f"{where}: capabilities.{cap} must be true or false, "
                             f"got {value!r} ({_type_name(value)})")
        out[cap] = value
    return out


def _deterministic(raw: dict[str, Any], where: str) -> dict[str, Any]:
    table = raw["deterministic"]
    if not isinstance(table, dict) or not table:
        raise UsageError(f"{where}: deterministic must be a non-empty table of request parameters "
                         f"([deterministic] with e.g. top_p = 1e-06 and seed = 1234)")
    out: dict[str, Any] = {}
    for param, value in table.items():
        if isinstance(value, dict | list) or not isinstance(value, str | int | float | bool):
            raise UsageError(f"{where}: deterministic.{param} must be a number, string or boolean, "
                             f"got {_type_name(value)}")
        out[param] = value
    return out
