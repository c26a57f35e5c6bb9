"""The pytest plugin (``pytest11`` entry point): options, markers, fixtures, evidence and results.

Inert unless ``--conformance-base-url`` is given. Heavy imports happen inside hooks and fixtures.
Under pytest-xdist each worker sends its records on the test report (``user_properties``); only the
controller aggregates them and writes the reports.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conformance.client import Client
    from conformance.target import Target

RECORD_KEY = "conformance"
_records = pytest.StashKey[list[Any]]()
_state = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("conformance", "chat-conformance: judge a /chat/completions endpoint")
    g.addoption(
        "--conformance-embedded",
        action="store_true",
        help="the target is the embedded reference server (said in the console and every report)",
    )
    g.addoption(
        "--conformance-console",
        action="store_true",
        help="the suite's own console: no pytest progress letters (the CLI's; the verdict is the last line)",
    )
    g.addoption(
        "--conformance-progress",
        choices=("live", "lines", "off"),
        default="off",
        help="a progress line on stderr while the run goes: live (redrawn), lines (every 10 s), off "
        "(default)",
    )
    g.addoption(
        "--conformance-base-url",
        metavar="URL",
        help="base URL ending before /chat/completions, e.g. http://127.0.0.1:8080/v1 (enables the plugin)",
    )
    g.addoption("--conformance-model", metavar="NAME", help="model name to request")
    g.addoption(
        "--conformance-api-key-env",
        metavar="VAR",
        default="CONFORMANCE_API_KEY",
        help="environment variable holding the API key (default CONFORMANCE_API_KEY)",
    )
    g.addoption(
        "--conformance-profile",
        metavar="NAME|FILE",
        default="seed",
        help="seed (default), openai, or a profile .toml file",
    )
    g.addoption(
        "--conformance-level",
        choices=("must", "should", "may"),
        default="may",
        help="run requirements up to this level (default may: all)",
    )
    g.addoption(
        "--conformance-only",
        action="append",
        default=[],
        metavar="ID|CAPABILITY",
        help="run only the checks of these requirement ids or capabilities (repeatable)",
    )
    g.addoption(
        "--conformance-require",
        action="append",
        default=[],
        metavar="CAPABILITY",
        help="make an optional capability mandatory (repeatable)",
    )
    g.addoption(
        "--conformance-report-dir",
        metavar="DIR",
        default=None,
        help="write results.json, junit.xml, summary.md and report.html here",
    )
    g.addoption(
        "--conformance-expectations",
        metavar="FILE",
        default=None,
        help="TOML file of known failures (waivers)",
    )
    g.addoption(
        "--conformance-strict-waivers",
        action="store_true",
        default=False,
        help="a waived requirement that passes fails the gate",
    )
    g.addoption(
        "--conformance-fail-on",
        choices=("must", "should", "may"),
        default="must",
        help="the loosest level whose failure fails the gate (default must; looser failures are warnings)",
    )
    g.addoption("--conformance-max-requests", type=int, default=None, help="request budget of the run")
    g.addoption("--conformance-max-tokens-total", type=int, default=None, help="token budget of the run")
    g.addoption(
        "--conformance-rate-limit",
        type=float,
        default=None,
        help="requests per second, shared by all workers",
    )
    g.addoption("--conformance-timeout", type=float, default=60.0, help="deadline of one exchange, seconds")
    g.addoption(
        "--conformance-idle-timeout", type=float, default=20.0, help="longest silence between bytes, seconds"
    )
    g.addoption(
        "--conformance-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    g.addoption(
        "--conformance-insecure",
        action="store_true",
        default=False,
        help="accept an unverified TLS certificate",
    )
    g.addoption("--conformance-ca-bundle", metavar="FILE", default=None, help="CA bundle for TLS")
    g.addoption(
        "--conformance-skip-discovery",
        action="store_true",
        default=False,
        help="do not probe optional capabilities (treat undeclared ones as supported)",
    )
    g.addoption(
        "--conformance-examples",
        type=int,
        default=15,
        metavar="N",
        help="property-based checks: generated examples of the valid-request phase (default 15; the "
        "invalid-request phase tries each field's mutations plus N/10 generated ones)",
    )
    g.addoption(
        "--conformance-record",
        metavar="FILE",
        default=None,
        help="write every exchange of the run to FILE as HAR 1.2 (credentials masked)",
    )
    g.addoption(
        "--conformance-replay",
        metavar="FILE",
        default=None,
        help="answer every request from the HAR recording FILE instead of the network",
    )
    g.addoption(
        "--conformance-no-prefetch",
        action="store_true",
        default=False,
        help="no work ahead in a helper process (the generated requests are then drawn as each check runs)",
    )
    g.addoption(
        "--conformance-concurrency",
        type=int,
        default=32,
        metavar="N",
        help="requests in flight at once from one process (default 32; 1: one at a time)",
    )
    g.addoption(
        "--conformance-hypothesis-seed",
        type=int,
        default=0,
        metavar="N",
        help="property-based checks: the hypothesis seed (default 0), recorded in every finding",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requirement(*ids): the requirement ids of spec/requirements.yaml that this check judges"
    )
    if not config.getoption("conformance_base_url", None):
        return
    from conformance.errors import UsageError

    _hypothesis_home()
    config.stash[_records] = []
    try:
        state = _worker_state(config) if hasattr(config, "workerinput") else _controller_state(config)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("conformance_replay"):  # every client of the run answers from the recording
        from conformance.har import ReplayTransport

        try:
            state["transport"] = ReplayTransport.from_file(config.getoption("conformance_replay"),
                                                            api_key=state["target"].api_key)
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[_state] = state
    config.pluginmanager.register(_Recorder(config), "conformance-recorder")
    if not hasattr(config, "workerinput") and config.getoption("conformance_progress") != "off":
        from conformance.progress import Progress

        def sent() -> int:
            client = state.get("checks_client")
            probes = len(state.get("discovery_exchanges", []))
            return (client.sent.value if client is not None else 0) + probes

        state["progress"] = Progress(config.getoption("conformance_progress"), requests=sent)
        state["progress"].start()


def _phase(config: pytest.Config, phase: str) -> None:
    """The progress line's phase (when the run shows one)."""
    state = config.stash.get(_state, None)
    if state is not None and "progress" in state:
        state["progress"].set_phase(phase)


def _stop_progress(config: pytest.Config) -> None:
    state = config.stash.get(_state, None)
    if state is not None and "progress" in state:
        state["progress"].stop()


def hypothesis_cache_dir() -> Path:
    """Where a run keeps hypothesis's caches (character tables, constants): the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``chat-conformance/hypothesis``), so that the next run finds
    them; a temporary folder where that cannot be written. Never the current directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = Path(base) / "chat-conformance" / "hypothesis"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home.resolve()
    except OSError:
        pass
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"chat-conformance-hypothesis-{user}"


def _hypothesis_home() -> None:
    """hypothesis keeps caches (``.hypothesis/``: constants, character tables) in the current directory unless
    told otherwise; a run keeps them in ``hypothesis_cache_dir()``. ``HYPOTHESIS_STORAGE_DIRECTORY`` set by
    the user wins. (No example database is kept: the generated phase draws without one.)"""
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(hypothesis_cache_dir())


def _target_from_options(config: pytest.Config) -> Target:
    from conformance.errors import UsageError
    from conformance.target import Limits, Target, check_base_url

    base_url = check_base_url(config.getoption("conformance_base_url"))
    model = config.getoption("conformance_model")
    if not model:
        raise UsageError("no model given: pass --model NAME (the name the target serves)")
    key_env = config.getoption("conformance_api_key_env")
    api_key = os.environ.get(key_env) or None
    if key_env != "CONFORMANCE_API_KEY" and api_key is None:
        from conformance.target import key_env_unset

        raise key_env_unset(key_env)  # never echoes a key given in place of the variable's name
    headers: dict[str, str] = {}
    for h in config.getoption("conformance_header"):
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError("a --header is not 'NAME: VALUE': write e.g. --header 'X-Org: acme'")
        headers[name.strip()] = value.strip()
    verify: bool | str = True
    if config.getoption("conformance_insecure"):
        verify = False
    elif config.getoption("conformance_ca_bundle"):
        verify = config.getoption("conformance_ca_bundle")
    limits = Limits(
        total_timeout=config.getoption("conformance_timeout"),
        idle_timeout=config.getoption("conformance_idle_timeout"),
        rate_limit=config.getoption("conformance_rate_limit"),
        max_requests=config.getoption("conformance_max_requests"),
        max_tokens_total=config.getoption("conformance_max_tokens_total"),
    )
    return Target(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key=api_key,
        api_key_env=key_env,
        profile=config.getoption("conformance_profile"),
        extra_headers=headers,
        verify_tls=verify,
        limits=limits,
    )


def _controller_state(config: pytest.Config) -> dict[str, Any]:
    """Validate options, load the profile and expectations, probe capabilities: once, on the controller."""
    from conformance.catalog import check_selection
    from conformance.profiles import load_profile

    target = _target_from_options(config)
    profile = load_profile(target.profile)
    check_selection(config.getoption("conformance_only"), config.getoption("conformance_require"))
    waivers: dict[str, Any] = {}
    if config.getoption("conformance_expectations"):
        from conformance.expectations import load_expectations

        waivers = load_expectations(config.getoption("conformance_expectations"))
    state_dir = tempfile.mkdtemp(prefix="conformance-run-")
    return {
        "target": target,
        "profile": profile,
        "waivers": waivers,
        "state_dir": state_dir,
        "capabilities": None,
        "started": time.time(),
        "interrupted": False,
    }


def _worker_state(config: pytest.Config) -> dict[str, Any]:
    from conformance.profiles import load_profile

    wi = config.workerinput  # type: ignore[attr-defined]
    target = _target_from_options(config)
    waivers: dict[str, Any] = {}
    if config.getoption("conformance_expectations"):  # which findings fail the gate (the test's outcome)
        from conformance.expectations import load_expectations

        waivers = load_expectations(config.getoption("conformance_expectations"))
    return {
        "target": target,
        "profile": load_profile(target.profile),
        "waivers": waivers,
        "state_dir": wi["conformance_state_dir"],
        "capabilities": wi.get("conformance_capabilities"),
        "started": time.time(),
        "interrupted": False,
    }


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # pytest-xdist: hand the run's shared state to a worker
    state = node.config.stash.get(_state, None)
    if state is None:
        return
    node.workerinput["conformance_state_dir"] = state["state_dir"]
    node.workerinput["conformance_capabilities"] = _capabilities(node.config)


def _capabilities(config: pytest.Config) -> dict[str, dict[str, Any]]:
    """Optional capabilities: declared by the profile, else discovered once (cheap probes)."""
    state = config.stash[_state]
    if state["capabilities"] is None:
        from conformance.discovery import discover

        _phase(config, "probing the target's optional capabilities")

        probes: list[Any] = state.setdefault("discovery_exchanges", [])
        concurrency = config.getoption("conformance_concurrency")
        with _make_client(config, probes.append, concurrency=concurrency) as client:
            replay = _ReplayProbes(client) if config.getoption("conformance_replay") else None
            asking = state["transport"].asking if replay is not None else None
            if replay is not None:  # the probes are asked by discovery, not by the check that needed them
                state["transport"].asking = None
            found = discover(
                replay or client,
                state["profile"],
                skip=config.getoption("conformance_skip_discovery"),
                required=tuple(config.getoption("conformance_require")),
            )
        if replay is not None:
            state["transport"].asking = asking
            _unknown_when_not_recorded(found, replay.missed)
        state["capabilities"] = found
    return state["capabilities"]


class _ReplayProbes:
    """Discovery's client in a replay: a probe the recording lacks gets an exchange that says so (never sent,
    never evidence: the client's ``on_exchange`` never sees it), and its label is kept in ``missed``."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.missed: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def chat(self, body: dict[str, Any], *, label: str = "", **kw: Any) -> Any:
        from conformance.evidence import Exchange
        from conformance.har import NotRecorded

        try:
            return self._client.chat(body, label=label, **kw)
        except NotRecorded as exc:
            self.missed.add(label.removeprefix("discovery: "))
            return Exchange(label=label, method="POST", url="", request_headers={}, transport_error=str(exc))


def _unknown_when_not_recorded(capabilities: dict[str, dict[str, Any]], missed: set[str]) -> None:
    """A capability whose discovery probe the recording lacks is unknown, never unsupported nor supported:
    its checks are "not recorded" (``_new_judge``). One the recorded answers show honoured stays supported."""
    from conformance.discovery import _THINKING_SEPARATE, EFFECT_PROBES, PLAIN

    for cap, info in capabilities.items():
        labels = {cap}
        if cap in EFFECT_PROBES:
            labels = {PLAIN, *EFFECT_PROBES[cap]}
            if cap == "thinking":
                labels |= {*_THINKING_SEPARATE, *EFFECT_PROBES["reasoning"]}
        lost = sorted(labels & missed)
        if info.get("source") != "probe" or not lost or "has an effect" in str(info.get("reason")):
            continue
        capabilities[cap] = {
            "supported": True,
            "source": "not recorded",
            "reason": f"not recorded: the discovery probe ({', '.join(lost)}) is not in the recording, so "
                      f"whether the target supports {cap} is unknown and its checks are not judged",
        }


def _make_client(config: pytest.Config, on_exchange: Any = None, *, checks: bool = False,
                 concurrency: int = 1) -> Client:
    """A client on the run's shared budget. ``checks``: the checks' client, on which a 429/503 that survives
    the retries raises ``Unanswered`` (the check is inconclusive: it never judges a "not now")."""
    from conformance.budget import Budget
    from conformance.client import Client

    state = config.stash[_state]
    t: Target = state["target"]
    if "budget" not in state:
        state["budget"] = Budget(
            Path(state["state_dir"]),
            max_requests=t.limits.max_requests,
            max_tokens_total=t.limits.max_tokens_total,
            rate_limit=t.limits.rate_limit,
        )
    return Client(
        t, budget=state["budget"], on_exchange=on_exchange, raise_unanswered=checks, concurrency=concurrency,
        transport=state.get("transport"),
    )


def _checks_client(config: pytest.Config) -> Client:
    """The one client every check's handle shares (its connections, in-flight limit and budget)."""
    state = config.stash[_state]
    if "checks_client" not in state:
        state["checks_client"] = _make_client(
            config, checks=True, concurrency=config.getoption("conformance_concurrency")
        )
    return state["checks_client"]


# ---- selection ---------------------------------------------------------------------------------------------


def _item_requirements(item: pytest.Item) -> tuple[str, ...]:
    if isinstance(item, CheckItem):
        return item.check.requirements
    ids: list[str] = []
    for mark in item.iter_markers("requirement"):
        ids.extend(mark.args)
    return tuple(dict.fromkeys(ids))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _state not in config.stash:
        return
    from conformance.catalog import catalog, level_rank

    state = config.stash[_state]
    profile = state["profile"].base  # the catalog speaks of the built-in profile a user profile extends
    level = level_rank(config.getoption("conformance_level"))
    only = set(config.getoption("conformance_only"))
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        reqs = [catalog()[r] for r in _item_requirements(item) if r in catalog()]
        live = [r for r in reqs if r.applies_to(profile) and level_rank(r.level_for(profile)) <= level]
        if only:
            live = [r for r in live if r.id in only or r.capability in only]
        (keep if live else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if "progress" in state:
        state["progress"].total = len(items)


# ---- the checks as pytest items: each reports its record from the one engine run ------------------------


_record_key = pytest.StashKey[Any]()


class _CheckFailed(AssertionError):
    """A check's violations (the target's fault): shown as one line naming the requirement."""


class _CheckError(Exception):
    """A check crashed (the suite's own fault): shown with the check's own traceback."""


class CheckItem(pytest.Item):
    """One registered check (``conformance.engine.registry``): ``runtest`` reports the record the engine made
    when it ran the check, once (spec/DECISIONS.md#engine)."""

    def __init__(self, *, check: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.check = check
        for rid in check.requirements:  # `-m requirement` and `iter_markers` keep working
            self.add_marker(pytest.mark.requirement(rid))

    def runtest(self) -> None:
        if _state not in self.config.stash:
            pytest.skip("chat-conformance checks need --conformance-base-url (use `chat-conformance run`)")
        from conformance.records import Outcome

        rec = _record_of(self)
        self.stash[_record_key] = rec
        if rec is None:  # the run stopped before (or while) this check ran: no record, nothing judged
            state = self.config.stash[_state]
            engine = state.get("engine")
            why = (engine.stop_reason if engine is not None else None) or "the run was stopped"
            if engine is not None and engine.stop_reason and not self.session.shouldstop:
                self.session.shouldstop = engine.stop_reason
            pytest.skip(f"not run: {why}")
        if rec.skip_kind is not None and rec.skip_kind.value == "budget":
            self.session.shouldstop = rec.skip_reason.removeprefix("not run: ")
        if rec.outcome is Outcome.SKIPPED:
            pytest.skip(rec.skip_reason)
        if rec.outcome is Outcome.FAILED:
            raise _CheckFailed(_one_line(rec.violations))
        if rec.outcome is Outcome.ERROR:
            raise _CheckError(rec.error)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, _CheckError | _CheckFailed):
            return _escape_controls(str(excinfo.value))
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: Any) -> Any:
    """A function registered with ``@check`` becomes one item per case, named as pytest would."""
    keys = getattr(obj, "__conformance_checks__", None)
    if not keys or not callable(obj):
        return None
    from conformance.engine.registry import CHECKS

    return [CheckItem.from_parent(collector, name=key.split("::", 1)[1], check=CHECKS[key]) for key in keys]


def _context(config: pytest.Config) -> Any:
    """The run's ``CheckContext`` (discovery runs the first time it is asked for)."""
    state = config.stash[_state]
    if "context" not in state:
        from conformance.engine.run import CheckContext, RunOptions

        capabilities = _capabilities(config)
        state["context"] = CheckContext(
            conformance_target=state["target"],
            profile=state["profile"],
            capabilities=capabilities,
            options=RunOptions(
                examples=config.getoption("conformance_examples"),
                hypothesis_seed=config.getoption("conformance_hypothesis_seed"),
                no_prefetch=bool(config.getoption("conformance_no_prefetch")),
            ),
            root=_checks_client(config),
            transport=state.get("transport"),
        )
    return state["context"]


def _record_of(item: CheckItem) -> Any:
    """The check's record: from the engine that runs the session's checks (waiting for it), or, where no
    engine runs (an xdist worker), made now."""
    from conformance.engine.run import _Budget, run_check

    state = item.config.stash[_state]
    engine = state.get("engine")
    if engine is not None and item.check.key in engine.keys:
        return engine.record(item.check.key)
    try:
        return run_check(item.check, _context(item.config))
    except _Budget as b:
        return b.record


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """As pytest's loop starts, the engine starts running every selected check once, ``--concurrency`` at a
    time; each item then reports its check's record. Not under pytest-xdist (each worker runs its items'
    checks one at a time)."""
    config = session.config
    if _state not in config.stash or config.option.collectonly or session.testscollected == 0:
        return
    if hasattr(config, "workerinput") or getattr(config.option, "numprocesses", None):
        return
    from conformance.engine.run import Engine

    items = [it for it in session.items if isinstance(it, CheckItem)]
    if not items:
        return
    ctx = _context(config)
    concurrency = 1 if config.getoption("conformance_replay") else config.getoption("conformance_concurrency")
    engine = Engine(ctx, [it.check for it in items], concurrency=concurrency)
    state = config.stash[_state]
    state["engine"] = engine
    engine.start()
    place = {c.key: i for i, c in enumerate(engine.checks)}
    session.items.sort(key=lambda it: place.get(it.check.key, -1) if isinstance(it, CheckItem) else -1)
    _phase(config, "running the checks")


def _stop_engine(config: pytest.Config) -> None:
    """Ctrl-C: the engine stops taking checks and the requests in flight end now."""
    state = config.stash.get(_state, None)
    if state is None:
        return
    if "engine" in state:
        state["engine"].stop()
    elif "checks_client" in state:
        state["checks_client"].abort()


# ---- outcome ----------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    """The CLI's console (``--conformance-console``) shows the suite's progress line, not pytest's letters."""
    result = yield
    if config.getoption("conformance_console", False) and result:
        return (result[0], "", "")
    return result


def _blocks_gate(config: pytest.Config, violations: list[dict[str, Any]]) -> bool:
    """Whether one of a check's violations fails the gate: its requirement's level at ``--fail-on`` or
    stricter (a MAY finding only under ``--fail-on may``), and no unexpired waiver for it. The others are
    findings the reports show as warnings: never a failed test, never under pytest's FAILURES."""
    import datetime as dt

    from conformance.catalog import catalog
    from conformance.results import fails_gate, waiver_applies

    state = config.stash[_state]
    profile = state["profile"].base
    fail_on = str(config.getoption("conformance_fail_on"))
    waivers = state.get("waivers") or {}
    today = dt.date.today()
    for v in violations:
        req = catalog().get(v["requirement"])
        if req is None:
            return True  # a requirement the catalog does not know: never hidden
        lvl = req.level_for(profile)
        waiver = waivers.get(req.id)
        # the verdict aggregate() will give this violation's requirement
        verdict = "waived" if waiver is not None and waiver_applies(waiver, today) else (
            "informational" if lvl == "MAY" else "fail")
        if fails_gate(lvl, verdict, fail_on):
            return True
    return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    from conformance.evidence import PARSE_LOCK

    with PARSE_LOCK:  # a traceback's source may be parsed: never while an engine thread draws
        report = yield
    if _state not in item.config.stash:
        return report
    if report.longrepr is not None:  # target text (ANSI escapes, CR, BEL) is shown, never interpreted
        report.longrepr = _escape_tree(report.longrepr)
        report.sections = _escape_tree(report.sections)
    rec = item.stash.get(_record_key, None)
    if report.when != "call" or rec is None:
        return report
    record = rec.to_dict()
    report.user_properties.append((RECORD_KEY, record))
    below = record["outcome"] == "failed" and not _blocks_gate(item.config, record["violations"])
    if report.failed and below:
        # below the gate (a warning, a MAY finding, a waived failure): the record keeps it, the reports
        # show it; pytest does not count it as a failure the job would then contradict
        report.sections.append(("chat-conformance finding (does not fail the gate)", str(report.longrepr)))
        report.outcome = "passed"
        report.longrepr = None
    return report


def _one_line(violations: list[dict[str, Any]]) -> str:
    first = violations[0]
    message = " ".join(str(first.get("message", "")).split())[:300]
    line = f"{first['requirement']}: {message}"
    if first.get("path"):
        line += f" (at {first['path']})"
    if len(violations) > 1:
        others = sorted({v["requirement"] for v in violations[1:]})
        line += f"; {len(violations) - 1} more violation(s): {', '.join(others)}"
    return _escape_controls(line + "; evidence in the reports")


class _Recorder:
    """Registered on an enabled run: gathers records (its own and every xdist worker's) on the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == RECORD_KEY:
                self.config.stash[_records].append(value)  # type: ignore[arg-type]
                progress = self.config.stash[_state].get("progress")
                if progress is not None:
                    progress.check_done()

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        # pytest's own stop (session.Interrupted, e.g. our budget stop) is a KeyboardInterrupt subclass too;
        # the CLI's stops (SIGTERM, --max-duration) are a KeyboardInterrupt naming their cause
        _stop_engine(self.config)
        if excinfo.type is KeyboardInterrupt:
            from conformance.errors import stop_cause

            state = self.config.stash[_state]
            state["interrupted"] = True
            state["stopped_by"] = stop_cause(excinfo.value)


def _run_wide(records: list[dict[str, Any]], stop_sequence: str | None = None,
              capabilities: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Records of the run-wide invariants over every exchange of the run, for the requirements the run
    selected whose own capability the target offers (``_runwide.run_wide_selection``: a check skipped for
    one capability never takes an unrelated requirement with it)."""
    from conformance.checks._runwide import judge_run, run_wide_selection

    return judge_run(records, run_wide_selection(records, capabilities), stop_sequence=stop_sequence)


_HEALTH = "TARGET-AVAILABLE"


def _not_judged_in_a_collapse(
    records: list[dict[str, Any]], collapses: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, records for the run-wide judges): a check that saw an exchange of a collapse (the target had
    stopped answering) is unanswered, whatever it found: the crash made its verdict unknowable, and is named
    once (TARGET-AVAILABLE). The run-wide judges never see those exchanges either."""
    if not collapses:
        return records, records
    bad: set[str] = set().union(*(c.xids for c in collapses))
    out: list[dict[str, Any]] = []
    for r in records:
        hit = [ex for ex in r.get("exchanges", []) if ex.get("xid") in bad]
        undecided = r["outcome"] == "skipped" and str(r.get("skip_reason", "")).startswith("inconclusive")
        if hit and (r["outcome"] in ("passed", "failed") or undecided):
            said = ", ".join(sorted({str(v["requirement"]) for v in r.get("violations", [])}))
            why = (f"inconclusive: no answer: the target stopped answering while this check ran ({_HEALTH}): "
                   "not judged" + (f" (it would have failed {said})" if said else ""))
            r = {**r, "outcome": "skipped", "judged": [], "violations": [], "skip_reason": why}
        out.append(r)
    judged = [{**r, "exchanges": [ex for ex in r.get("exchanges", []) if ex.get("xid") not in bad]}
              for r in out]
    return out, judged


def _availability_record(health: Any, collapses: list[Any], *, replay: bool = False) -> dict[str, Any]:
    """TARGET-AVAILABLE, judged on the whole run: failed once per collapse, with the last good and the first
    bad exchange (and the one that showed the target back) as evidence."""
    from conformance.violations import run_wide_record

    record = run_wide_record(_HEALTH, [], [])
    if not collapses:
        if not health.answered():
            why = ("not recorded: no answer of this run's checks is in the recording" if replay
                   else "inconclusive: the target answered none of the run's requests")
            record.update(outcome="skipped", judged=[], skip_reason=why)
        return record
    record["outcome"] = "failed"
    for c in collapses:
        evidence = [ex for ex in (c.last_good, c.bad[0], c.recovered) if ex is not None]
        first = len(record["exchanges"]) + (1 if c.last_good is not None else 0)
        record["exchanges"] += [ex.to_dict() for ex in evidence]
        record["violations"].append({
            "requirement": _HEALTH, "message": c.describe(), "path": "$",
            "expected": "an answer to every request of the run (at most --concurrency in flight), or a "
                        "429/503 with Retry-After while overloaded",
            "received": f"{c.bad[0].label}: " + (f"HTTP {c.bad[0].status}" if c.bad[0].status is not None
                                                  else str(c.bad[0].transport_error)),
            "exchange": first,
        })
    return record


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _state not in config.stash:
        return
    if hasattr(config, "workerinput"):
        if "checks_client" in config.stash[_state]:
            config.stash[_state]["checks_client"].close()
        return
    from conformance.results import build_results, cost_of, write_all

    state = config.stash[_state]
    _phase(config, "judging the run and writing the reports")
    t: Target = state["target"]
    engine = state.get("engine")
    if engine is not None:  # no engine thread outlives the run (a check pytest's loop never reached)
        if not all(engine.done(k) for k in engine.keys):
            engine.stop()
            engine.join(1.5)  # stopped: the reports come within seconds, all threads together
        engine.close()
    stored: list[Any] = config.stash[_records]
    records = list(stored)
    if engine is not None:  # checks the engine ran that pytest's loop did not report (a stopped run)
        reported = {r["nodeid"] for r in records}
        records += [r.to_dict() for r in engine.records() if r.nodeid not in reported]
    from conformance.health import Health

    health = Health.of_run(records)  # every exchange of the run, each once, in the order they completed
    collapses = health.collapses()
    records, judged_exchanges = _not_judged_in_a_collapse(records, collapses)
    records += _run_wide(judged_exchanges, getattr(state["profile"], "stop_sequence", None),
                         state.get("capabilities"))
    if any(_HEALTH in r["requirements"] for r in records):
        records.append(_availability_record(health, collapses,
                                            replay=bool(config.getoption("conformance_replay"))))
    probes = [{"exchanges": [ex.to_dict() for ex in state.get("discovery_exchanges", [])]}]
    cost = cost_of([*records, *probes])
    if "budget" in state and state["budget"].shared:  # counted across workers only when a limit is set
        cost["budget"] = state["budget"].snapshot()
    notes = []
    if session.shouldstop:
        notes.append(str(session.shouldstop))
    if engine is not None and engine.stop_reason and not session.shouldstop:
        notes.append(engine.stop_reason)
    results = build_results(
        records,
        target={
            "base_url": t.display_url,
            "model": t.model,
            "profile": t.profile,
            "profile_name": state["profile"].name,
            **({"embedded": True} if config.getoption("conformance_embedded") else {}),
        },
        profile=state["profile"].base,
        level=config.getoption("conformance_level"),
        started=state["started"],
        finished=time.time(),
        cost=cost,
        capabilities=state["capabilities"] or {},
        waivers=state["waivers"],
        strict_waivers=config.getoption("conformance_strict_waivers"),
        interrupted=state["interrupted"],
        stopped_by=state.get("stopped_by"),
        selected={r for it in session.items for r in _item_requirements(it)} or None,
        notes=notes,
        fail_on=config.getoption("conformance_fail_on"),
    )
    config.stash[_state]["results"] = results
    written: list[Path] = []
    if config.getoption("conformance_record"):
        from conformance.har import write_har

        run = {**results["target"], "level": config.getoption("conformance_level"),
               "started": state["started"], "examples": config.getoption("conformance_examples"),
               "hypothesis_seed": config.getoption("conformance_hypothesis_seed"), "auth": bool(t.api_key),
               "api_key_env": t.api_key_env,
               "require": list(config.getoption("conformance_require")),
               "skip_discovery": bool(config.getoption("conformance_skip_discovery"))}
        written.append(write_har(config.getoption("conformance_record"), stored,
                                 state.get("discovery_exchanges", []), run=run))
        state["written"] = written
    report_dir = config.getoption("conformance_report_dir")
    if report_dir:
        paths = write_all(results, Path(report_dir))
        try:
            from conformance.reports.html import write_html

            paths.append(write_html(results, Path(report_dir)))
        except Exception as exc:  # the suite's own fault: say so, keep the other reports
            results["exit_code"] = 4
            results["notes"].append(f"internal error writing report.html: {type(exc).__name__}: {exc}")
            paths = write_all(results, Path(report_dir))
        state["written"] = [*paths, *written]
    session.exitstatus = results["exit_code"]
    if "checks_client" in state:
        state["checks_client"].close()
    _stop_progress(config)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_controls(text: str) -> str:
    """Target-controlled text bound for a terminal: control characters (ANSI escapes, CR, BEL) and bidi
    overrides written as escapes (``\\x1b``), never interpreted."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _escape_tree(obj: Any, depth: int = 0) -> Any:
    """``_escape_controls`` over every string of a report's longrepr (pytest's dataclasses, in place)."""
    if isinstance(obj, str):
        return _escape_controls(obj)
    if depth > 10:
        return obj
    if isinstance(obj, list):
        return [_escape_tree(x, depth + 1) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_escape_tree(x, depth + 1) for x in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            new = _escape_tree(value, depth + 1)
            if new is not value:
                object.__setattr__(obj, f.name, new)
    return obj


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The run's summary: what fails the gate, what is only a warning, what was not judged and why, the
    levels kept, the cost, the files written. The verdict itself is the console's last line
    (:func:`pytest_unconfigure`), after pytest's own count."""
    _stop_progress(config)
    if _state not in config.stash or "results" not in config.stash[_state]:
        return
    res = config.stash[_state]["results"]
    tr = terminalreporter

    def write(line: str) -> None:
        tr.write_line(_escape_controls(line))

    from conformance.results import finding_groups, is_partial, levels_kept, not_judged_lines

    tr.section("chat-conformance")
    groups = finding_groups(res)
    fail_on = str(res.get("fail_on", "MUST")).lower()
    for kind, rows in (("FAIL", groups["failures"]),
                       (f"WARN (below --fail-on {fail_on})", groups["warnings"]),
                       ("INFO (MAY, informational)", groups["informational"])):
        for r in rows[:40]:
            write(f"  {kind} {r['id']} ({r['level']}): {r['reason'][:200]}{_evidence_hint(res, r['id'])}")
        if len(rows) > 40:
            write(f"  ... and {len(rows) - 40} more {kind.split()[0]} (in the reports)")
    for rec in [r for r in res["checks"] if r["outcome"] == "error"][:5]:  # the suite's own fault, in full
        write(f"  INTERNAL ERROR in {rec['nodeid']}: {rec.get('error', '')[:1500]}")
    if groups["waived"]:
        write(f"  WAIVED {len(groups['waived'])}: " + ", ".join(r["id"] for r in groups["waived"][:10]))
    for line in not_judged_lines(res):
        write(line)
    write(levels_kept(res["level_reached"], res.get("level", "MAY"), partial=is_partial(res)))
    c = res["cost"]
    write(
        f"cost: {c['requests']} requests, {c['prompt_tokens']} prompt + {c['completion_tokens']} "
        f"completion tokens, {c['retries']} retries; {res.get('duration_s', 0):.1f} s"
    )
    for p in config.stash[_state].get("written", []):
        write(f"wrote {p}")
    if not config.getoption("conformance_console"):
        return
    write(f"chat-conformance: {_verdict_line(res)}")
    config.stash[_state]["verdict_said"] = True


def _evidence_hint(res: dict[str, Any], rid: str) -> str:
    """Where the first violation of ``rid`` was seen and what the target sent there (cut short; escaped by the
    caller): enough to recognise it, the evidence is in the reports."""
    for rec in res["checks"]:
        for v in rec.get("violations", []):
            if v.get("requirement") == rid:
                received = " ".join(str(v.get("received", "")).split())
                received = received[:80] + ("..." if len(received) > 80 else "")
                return f" (at {v.get('path') or '$'}: received {received})" if received else ""
    return ""


def _verdict_line(res: dict[str, Any]) -> str:
    from conformance.results import verdict_words

    return verdict_words(res)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Under plain pytest the suite's verdict is the console's last line, after pytest's test count
    (which counts checks, not requirements). The CLI's console gives it as the summary's last line."""
    _stop_progress(config)
    state = config.stash.get(_state, None)
    if state is None or "results" not in state or state.get("verdict_said"):
        return
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    tr.write_line(_escape_controls(f"chat-conformance: {_verdict_line(state['results'])}"))
