"""A fleet in one run: the targets of ``run --model A --model B`` or ``run --fleet FLEET.toml``, their report
folders and the fleet's exit code. No I/O beyond reading the fleet file; ``cli`` runs the targets.

A fleet file (TOML) lists one ``[[target]]`` table per model::

    [[target]]
    base_url = "https://staging.example.com/v1"
    model = "my-model"
    profile = "openai"                  # optional: seed, openai or a .toml (relative to the fleet file)
    expectations = "waivers.toml"       # optional: relative to the fleet file
    api_key_env = "STAGING_API_KEY"     # optional: the variable holding this target's key

Every mistake in the file is a one-line ``UsageError`` (exit 2) naming the file, the target and the fix.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from conformance.errors import UsageError

__all__ = ["FleetTarget", "load_fleet", "folder_names", "safe_name", "worst_exit", "EXIT_SEVERITY"]

TARGET_KEYS = ("base_url", "model", "profile", "expectations", "api_key_env")

# The fleet's exit code is the worst of its models' codes, worst first: a run stopped by Ctrl-C (130) or
# SIGTERM (143) (the fleet stopped there: it exits as a shell expects of an interrupted command) > a usage
# error (the invocation or a target's settings are wrong: nothing of the fleet can be trusted) > an internal
# error of the suite > a target that could not be judged (unreachable, key refused) > a run cut short by its
# budget or time limit, or left too much unanswered (5, INCOMPLETE: partly judged) > a target that is not
# conformant > conformant.
EXIT_SEVERITY = (130, 143, 2, 4, 3, 5, 1, 0)


@dataclass(frozen=True)
class FleetTarget:
    """One model of a fleet. ``None`` fields take the command line's value (``base_url`` ``None``: the
    embedded reference server, serving ``model``)."""

    model: str
    base_url: str | None = None
    profile: str | None = None
    expectations: str | None = None
    api_key_env: str | None = None

    def label(self) -> str:
        return f"{self.model} @ {self.base_url or 'the embedded reference server'}"


def worst_exit(codes: list[int]) -> int:
    """The worst of the models' exit codes by :data:`EXIT_SEVERITY` (an unknown code counts as internal
    error, 4); 0 for an empty fleet."""
    rank = {code: i for i, code in enumerate(EXIT_SEVERITY)}
    worst = 0
    for code in codes:
        c = code if code in rank else 4
        if rank[c] < rank[worst]:
            worst = c
    return worst


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(model: str) -> str:
    """A folder name for a model: runs of characters other than letters, digits, ``.``, ``_`` and ``-``
    become ``_`` (``org/model:q4`` → ``org_model_q4``); never empty, never ``.``/``..``, at most 100
    characters."""
    name = _UNSAFE.sub("_", model).strip("._") or "model"
    return name[:100]


def folder_names(targets: list[FleetTarget]) -> list[str]:
    """Each target's folder under the report directory: :func:`safe_name` of its model; when two targets
    would share one (the same model on two base URLs, or names equal once made safe), the later ones get
    ``-2``, ``-3``, ... in the fleet's order."""
    out: list[str] = []
    taken: set[str] = set()
    for t in targets:
        base = safe_name(t.model)
        name, n = base, 1
        while name.lower() in taken:  # case-insensitive file systems (macOS, Windows) too
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        out.append(name)
    return out


def _resolve(value: str, root: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else root / p)


def load_fleet(path: str) -> list[FleetTarget]:
    """Read a fleet file: a list of :class:`FleetTarget`, every one with its ``base_url``; relative
    ``profile`` files and ``expectations`` are read from the fleet file's folder."""
    p = Path(path)
    where = f"fleet file {path}"
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise UsageError(
            f"cannot read {where} ({why}): give the path of a TOML file of [[target]] tables"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where} is not valid TOML ({exc}): fix the syntax") from None
    extra = sorted(set(data) - {"target"})
    if extra:
        raise UsageError(f"{where}: unknown key {extra[0]!r}: the file holds [[target]] tables only")
    raw = data.get("target")
    if raw is None or raw == []:
        raise UsageError(f"{where} lists no targets: add [[target]] tables with base_url and model")
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise UsageError(f"{where}: 'target' must be an array of tables: write each one as [[target]]")
    root = p.parent
    targets: list[FleetTarget] = []
    for i, t in enumerate(raw, 1):
        at = f"{where}: target {i}"
        unknown = sorted(set(t) - set(TARGET_KEYS))
        if unknown:
            raise UsageError(f"{at}: unknown key {unknown[0]!r}: use {', '.join(TARGET_KEYS)}")
        for key, value in t.items():
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f'{at}: {key} must be a non-empty string: write {key} = "..."')
        if "model" not in t:
            raise UsageError(f'{at}: missing model: add model = "NAME" (the model name the target serves)')
        at = f"{at} ({t['model']})"
        if "base_url" not in t:
            raise UsageError(f'{at}: missing base_url: add base_url = "https://HOST/v1"')
        from conformance.target import check_base_url

        try:
            base_url = check_base_url(t["base_url"])
        except UsageError as exc:
            raise UsageError(f"{at}: {str(exc).replace('--base-url', 'base_url')}") from None
        profile = t.get("profile")
        if profile is not None and (profile.endswith(".toml") or "/" in profile):
            profile = _resolve(profile, root)
        expectations = t.get("expectations")
        targets.append(
            FleetTarget(
                model=t["model"],
                base_url=base_url,
                profile=profile,
                expectations=_resolve(expectations, root) if expectations is not None else None,
                api_key_env=t.get("api_key_env"),
            )
        )
    return targets
