"""One table of a run's options: the pytest plugin's ``--conformance-NAME`` options and ``RunConfig``'s fields
and defaults come from it; the CLI's ``run`` parser takes its defaults from it (``DEFAULTS``) and builds a
``RunConfig`` (``RunConfig.from_values``). A default lives here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Option:
    name: str  # RunConfig's field; the plugin's --conformance-<name with dashes>
    default: Any
    help: str
    type: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    action: str | None = None  # "store_true" or "append"

    @property
    def flag(self) -> str:
        return "--conformance-" + self.name.replace("_", "-")

    def argparse_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"help": self.help}
        if self.action == "store_true":
            kw.update(action="store_true", default=False)
            return kw
        if self.action == "append":
            kw.update(action="append", default=[])
        else:
            kw["default"] = self.default
        if self.type is not None:
            kw["type"] = self.type
        if self.choices is not None:
            kw["choices"] = self.choices
        if self.metavar is not None:
            kw["metavar"] = self.metavar
        return kw


OPTIONS: tuple[Option, ...] = (
    Option("embedded", False, "the target is the embedded reference server (said in the console and every "
           "report)", action="store_true"),
    Option("console", False, "the suite's own console: no pytest progress letters (the CLI's; the verdict is "
           "the last line)", action="store_true"),
    Option("progress", "off", "a progress line on stderr while the run goes: live (redrawn), lines (every "
           "10 s), off (default)", choices=("live", "lines", "off")),
    Option("base_url", None, "base URL ending before /chat/completions, e.g. http://127.0.0.1:8080/v1 "
           "(enables the plugin)", metavar="URL"),
    Option("model", None, "model name to request", metavar="NAME"),
    Option("api_key_env", "CONFORMANCE_API_KEY", "environment variable holding the API key (default "
           "CONFORMANCE_API_KEY)", metavar="VAR"),
    Option("profile", "seed", "seed (default), openai, or a profile .toml file", metavar="NAME|FILE"),
    Option("level", "may", "run requirements up to this level (default may: all)",
           choices=("must", "should", "may")),
    Option("only", [], "run only the checks of these requirement ids or capabilities (repeatable)",
           metavar="ID|CAPABILITY", action="append"),
    Option("require", [], "make an optional capability mandatory (repeatable)", metavar="CAPABILITY",
           action="append"),
    Option("report_dir", None, "write results.json, junit.xml, summary.md and report.html here",
           metavar="DIR"),
    Option("expectations", None, "TOML file of known failures (waivers)", metavar="FILE"),
    Option("strict_waivers", False, "a waived requirement that passes fails the gate", action="store_true"),
    Option("fail_on", "must", "the loosest level whose failure fails the gate (default must; looser failures "
           "are warnings)", choices=("must", "should", "may")),
    Option("max_requests", None, "request budget of the run", type=int),
    Option("max_tokens_total", None, "token budget of the run", type=int),
    Option("rate_limit", None, "requests per second, shared by all workers", type=float),
    Option("timeout", 60.0, "deadline of one exchange, seconds", type=float),
    Option("idle_timeout", 20.0, "longest silence between bytes, seconds", type=float),
    Option("header", [], "extra request header (repeatable)", metavar="'NAME: VALUE'", action="append"),
    Option("insecure", False, "accept an unverified TLS certificate", action="store_true"),
    Option("ca_bundle", None, "CA bundle for TLS", metavar="FILE"),
    Option("skip_discovery", False, "do not probe optional capabilities (treat undeclared ones as supported)",
           action="store_true"),
    Option("examples", 15, "property-based checks: generated examples of the valid-request phase (default "
           "15; the invalid-request phase tries each field's mutations plus N/10 generated ones)", type=int,
           metavar="N"),
    Option("record", None, "write every exchange of the run to FILE as HAR 1.2 (credentials masked)",
           metavar="FILE"),
    Option("replay", None, "answer every request from the HAR recording FILE instead of the network",
           metavar="FILE"),
    Option("no_prefetch", False, "no work ahead in a helper process (the generated requests are then drawn "
           "as each check runs)", action="store_true"),
    Option("concurrency", 32, "requests in flight at once from one process (default 32; 1: one at a time)",
           type=int, metavar="N"),
    Option("hypothesis_seed", 0, "property-based checks: the hypothesis seed (default 0), recorded in every "
           "finding", type=int, metavar="N"),
)

DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS}


@dataclass
class RunConfig:
    """A run's options, whichever front-end took them (fields: ``OPTIONS``' names)."""

    embedded: bool = False
    console: bool = False
    progress: str = "off"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "CONFORMANCE_API_KEY"
    profile: str = "seed"
    level: str = "may"
    only: list[str] = field(default_factory=list)
    require: list[str] = field(default_factory=list)
    report_dir: str | None = None
    expectations: str | None = None
    strict_waivers: bool = False
    fail_on: str = "must"
    max_requests: int | None = None
    max_tokens_total: int | None = None
    rate_limit: float | None = None
    timeout: float = 60.0
    idle_timeout: float = 20.0
    header: list[str] = field(default_factory=list)
    insecure: bool = False
    ca_bundle: str | None = None
    skip_discovery: bool = False
    examples: int | None = 15
    record: str | None = None
    replay: str | None = None
    no_prefetch: bool = False
    concurrency: int = 32
    hypothesis_seed: int = 0

    @classmethod
    def from_values(cls, get: Any) -> RunConfig:
        """A config from ``get(name)`` for every option (a front-end's parsed values); None keeps the default
        of an option that has one."""
        out = cls()
        for f in fields(cls):
            value = get(f.name)
            if value is not None:
                setattr(out, f.name, list(value) if isinstance(value, list | tuple) else value)
        return out


def _check_table() -> None:
    names = {f.name for f in fields(RunConfig)}
    table = {o.name for o in OPTIONS}
    if names != table:  # pragma: no cover - a programming error, caught by the first import in any test
        raise RuntimeError(f"RunConfig and OPTIONS disagree: {sorted(names ^ table)}")
    for o in OPTIONS:
        default = getattr(RunConfig(), o.name)
        if o.action != "append" and default != o.default:  # pragma: no cover
            raise RuntimeError(f"RunConfig.{o.name} defaults to {default!r}, OPTIONS to {o.default!r}")


_check_table()
