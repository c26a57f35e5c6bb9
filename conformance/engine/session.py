"""A run, front-end agnostic: from a ``RunConfig`` to results and reports.

``RunSession`` holds what one run shares (target, profile, waivers, budget, the checks' client, the discovered
capabilities, a replay's transport, the progress line) and does the run's steps in order: ``capabilities()``
(discovery), ``selects()`` (level, ``--only``, profile), ``engine()`` (every selected check once), and
``finish()`` (the target's health over every exchange, the run-wide judges, verdicts, reports). The CLI calls
these steps directly; the pytest plugin calls them from its hooks. Nothing here imports pytest or the checks:
the run-wide judges are handed in by the front-end.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conformance.engine.options import RunConfig
from conformance.engine.registry import Check
from conformance.engine.run import CheckContext, Engine, RunOptions

# (records, stop_sequence, capabilities) -> the run-wide records (conformance.checks.run_wide)
RunWide = Callable[[list[dict[str, Any]], Any, Any], list[dict[str, Any]]]


def target_from_config(cfg: RunConfig, api_key: str | None = None) -> Any:
    """The run's target. ``api_key``: a key the front-end holds itself (the embedded server's, a replay's
    placeholder), never put in the environment; else the key is read from ``cfg.api_key_env``."""
    from conformance.errors import UsageError
    from conformance.target import Limits, Target, check_base_url

    base_url = check_base_url(cfg.base_url or "")
    if not cfg.model:
        raise UsageError("no model given: pass --model NAME (the name the target serves)")
    key_env = cfg.api_key_env
    if api_key is None:
        api_key = os.environ.get(key_env) or None
    if key_env != "CONFORMANCE_API_KEY" and api_key is None:
        from conformance.target import key_env_unset

        raise key_env_unset(key_env)  # never echoes a key given in place of the variable's name
    headers: dict[str, str] = {}
    for h in cfg.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError("a --header is not 'NAME: VALUE': write e.g. --header 'X-Org: acme'")
        headers[name.strip()] = value.strip()
    verify: bool | str = True
    if cfg.insecure:
        verify = False
    elif cfg.ca_bundle:
        verify = cfg.ca_bundle
    limits = Limits(
        total_timeout=cfg.timeout,
        idle_timeout=cfg.idle_timeout,
        rate_limit=cfg.rate_limit,
        max_requests=cfg.max_requests,
        max_tokens_total=cfg.max_tokens_total,
    )
    return Target(
        base_url=base_url.rstrip("/"),
        model=cfg.model,
        api_key=api_key,
        api_key_env=key_env,
        profile=cfg.profile,
        extra_headers=headers,
        verify_tls=verify,
        limits=limits,
    )


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


def hypothesis_home() -> None:
    """hypothesis keeps caches (``.hypothesis/``: constants, character tables) in the current directory unless
    told otherwise; a run keeps them in ``hypothesis_cache_dir()``. ``HYPOTHESIS_STORAGE_DIRECTORY`` set by
    the user wins. (No example database is kept: the generated phase draws without one.)"""
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(hypothesis_cache_dir())



def write_reports(results: dict[str, Any], report_dir: Path) -> list[Path]:
    """results.json, JUnit, summary.md and report.html in ``report_dir``, whoever ends the run (its finish, or
    the CLI's stop before any check ran); the paths. report.html failing is the suite's own fault: said in
    the results (exit 4), the other reports kept."""
    from conformance.results import write_all

    paths = write_all(results, report_dir)
    try:
        from conformance.reports.html import write_html

        paths.append(write_html(results, report_dir))
    except Exception as exc:  # noqa: BLE001  # the suite's own fault: say so, keep the other reports
        results["exit_code"] = 4
        results["verdict"] = (f"internal error of the suite writing report.html ({type(exc).__name__}); the "
                              f"other reports are written, their verdict: {results['verdict']}")
        results["notes"].append(f"internal error writing report.html: {type(exc).__name__}: {exc}")
        paths = write_all(results, report_dir)
    return paths


class RunSession:
    """One run's shared state and steps. ``worker``: a pytest-xdist worker's session, which shares the
    controller's state folder and capabilities (``state_dir``, ``capabilities``) and never discovers."""

    def __init__(self, cfg: RunConfig, *, state_dir: str | None = None,
                 capabilities: dict[str, dict[str, Any]] | None = None, worker: bool = False,
                 api_key: str | None = None) -> None:
        from conformance.profiles import load_profile

        hypothesis_home()
        self.cfg = cfg
        self.target = target_from_config(cfg, api_key)
        self.profile = load_profile(self.target.profile)
        if not worker:
            from conformance.catalog import check_selection

            check_selection(cfg.only, cfg.require)
        self.waivers: dict[str, Any] = {}
        if cfg.expectations:  # which findings fail the gate
            from conformance.expectations import load_expectations

            self.waivers = load_expectations(cfg.expectations)
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="conformance-run-")
        self._owns_state_dir = state_dir is None  # removed by close(): a CI runner's /tmp never fills up
        self._capabilities = capabilities
        self.started = time.time()
        self.interrupted = False
        self.stopped_by: str | None = None
        self.discovery_exchanges: list[Any] = []
        self.budget: Any = None
        self.transport: Any = None
        self.progress: Any = None
        self.checks_client: Any = None
        self._context: CheckContext | None = None
        self.current: Engine | None = None
        self.results: dict[str, Any] | None = None
        self.written: list[Path] = []
        if cfg.replay:  # every client of the run answers from the recording
            from conformance.har import ReplayTransport

            self.transport = ReplayTransport.from_file(cfg.replay, api_key=self.target.api_key)

    # ---- the progress line ---------------------------------------------------------------------------------
    def start_progress(self) -> None:
        if self.cfg.progress == "off":
            return
        from conformance.progress import Progress

        def sent() -> int:
            client = self.checks_client
            return (client.sent.value if client is not None else 0) + len(self.discovery_exchanges)

        self.progress = Progress(self.cfg.progress, requests=sent)
        self.progress.start()

    def phase(self, text: str) -> None:
        if self.progress is not None:
            self.progress.set_phase(text)

    def stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    # ---- clients -------------------------------------------------------------------------------------------
    def make_client(self, on_exchange: Any = None, *, checks: bool = False, concurrency: int = 1) -> Any:
        """A client on the run's shared budget. ``checks``: the checks' client, on which a 429/503 that
        survives the retries raises ``Unanswered`` (the check is inconclusive: never judged on a "not
        now")."""
        from conformance.budget import Budget
        from conformance.client import Client

        t = self.target
        if self.budget is None:
            self.budget = Budget(
                Path(self.state_dir),
                max_requests=t.limits.max_requests,
                max_tokens_total=t.limits.max_tokens_total,
                rate_limit=t.limits.rate_limit,
            )
        return Client(t, budget=self.budget, on_exchange=on_exchange, raise_unanswered=checks,
                      concurrency=concurrency, transport=self.transport)

    def client(self) -> Any:
        """The one client every check's handle shares (its connections, in-flight limit and budget)."""
        if self.checks_client is None:
            self.checks_client = self.make_client(checks=True, concurrency=self.cfg.concurrency)
        return self.checks_client

    # ---- discovery -----------------------------------------------------------------------------------------
    def capabilities(self) -> dict[str, dict[str, Any]]:
        """Optional capabilities: declared by the profile, else discovered once (cheap probes)."""
        if self._capabilities is None:
            from conformance.discovery import discover

            self.phase("probing the target's optional capabilities")
            probes = self.discovery_exchanges
            with self.make_client(probes.append, concurrency=self.cfg.concurrency) as client:
                replay = _ReplayProbes(client) if self.transport is not None else None
                if replay is not None:  # the probes are asked by discovery, not by a check
                    self.transport.asking = None
                found = discover(replay or client, self.profile, skip=self.cfg.skip_discovery,
                                 required=tuple(self.cfg.require))
            if replay is not None:
                _unknown_when_not_recorded(found, replay.missed)
            self._capabilities = found
        return self._capabilities

    @property
    def discovered(self) -> dict[str, dict[str, Any]] | None:
        return self._capabilities

    # ---- selection -----------------------------------------------------------------------------------------
    def selects(self, requirements: Sequence[str]) -> bool:
        """Whether a check of ``requirements`` runs: one of them applies to the profile, is at or below
        ``--level`` and, with ``--only``, is named by id or capability."""
        from conformance.catalog import catalog, level_rank

        profile = self.profile.base  # the catalog speaks of the built-in profile a user profile extends
        level = level_rank(self.cfg.level)
        only = set(self.cfg.only)
        reqs = [catalog()[r] for r in requirements if r in catalog()]
        live = [r for r in reqs if r.applies_to(profile) and level_rank(r.level_for(profile)) <= level]
        if only:
            live = [r for r in live if r.id in only or r.capability in only]
        return bool(live)

    # ---- the checks ----------------------------------------------------------------------------------------
    def context(self) -> CheckContext:
        """What the run gives its checks (discovery runs the first time it is asked for)."""
        if self._context is None:
            capabilities = self.capabilities()
            self._context = CheckContext(
                conformance_target=self.target,
                profile=self.profile,
                capabilities=capabilities,
                options=RunOptions(examples=self.cfg.examples, hypothesis_seed=self.cfg.hypothesis_seed,
                                   no_prefetch=self.cfg.no_prefetch),
                root=self.client(),
                transport=self.transport,
            )
        return self._context

    def engine(self, checks: Sequence[Check], *, on_record: Any = None) -> Engine:
        """The engine of this run's checks (not started). A replay runs one check at a time: its recording is
        told which check asks."""
        concurrency = 1 if self.transport is not None else self.cfg.concurrency
        self.current = Engine(self.context(), checks, concurrency=concurrency, on_record=on_record)
        return self.current

    def interrupt(self, cause: str | None) -> None:
        """A Ctrl-C, SIGTERM or time limit: the run stops taking checks and the requests in flight end now."""
        self.interrupted = True
        self.stopped_by = cause
        self.stop_now()

    def stop_now(self) -> None:
        """The run stops taking checks and the requests in flight end now."""
        if self.current is not None:
            self.current.stop()
        elif self.checks_client is not None:
            self.checks_client.abort()

    def settle(self) -> None:
        """No engine thread outlives the run (a check the front-end never waited for is stopped)."""
        engine = self.current
        if engine is None:
            return
        if not all(engine.done(k) for k in engine.keys):
            engine.stop()
            engine.join(1.5)  # stopped: the reports come within seconds, all threads together
        engine.close()

    # ---- the end: health, run-wide judges, verdicts, reports ---------------------------------------------
    def finish(self, records: list[dict[str, Any]], *, run_wide: RunWide, selected: set[str] | None,
               notes: list[str]) -> dict[str, Any]:
        """Judge the run over ``records`` (every check's, each once) and write the reports; the results."""
        from conformance.health import HEALTH, Health, availability_record, not_judged_in_a_collapse
        from conformance.results import build_results, cost_of

        self.phase("judging the run and writing the reports")
        cfg, t = self.cfg, self.target
        stored = list(records)
        health = Health.of_run(records)  # every exchange of the run, each once, in the order they completed
        collapses = health.collapses()
        records, judged_exchanges = not_judged_in_a_collapse(records, collapses)
        stop_sequence = getattr(self.profile, "stop_sequence", None)
        records += run_wide(judged_exchanges, stop_sequence, self._capabilities)
        if any(HEALTH in r["requirements"] for r in records):
            records.append(availability_record(health, collapses, replay=bool(cfg.replay)))
        probes = [{"exchanges": [ex.to_dict() for ex in self.discovery_exchanges]}]
        cost = cost_of([*records, *probes])
        if self.budget is not None and self.budget.shared:  # counted across workers only when a limit is set
            cost["budget"] = self.budget.snapshot()
        engine = self.current
        if engine is not None and engine.stop_reason and engine.stop_reason not in notes:
            notes = [*notes, engine.stop_reason]
        limiter = self.checks_client.limiter if self.checks_client is not None else None
        if limiter is not None and limiter.lowered:
            notes = [*notes, "the target left requests unanswered or answered them with server errors: the "
                             f"run lowered the requests in flight to {limiter.lowest} (of at most "
                             f"{limiter.ceiling}), and raised them again as it answered"]
        results = build_results(
            records,
            target={
                "base_url": t.display_url,
                "model": t.model,
                "profile": t.profile,
                "profile_name": self.profile.name,
                **({"embedded": True} if cfg.embedded else {}),
            },
            profile=self.profile.base,
            level=cfg.level,
            started=self.started,
            finished=time.time(),
            cost=cost,
            capabilities=self._capabilities or {},
            waivers=self.waivers,
            strict_waivers=cfg.strict_waivers,
            interrupted=self.interrupted,
            stopped_by=self.stopped_by,
            selected=selected,
            notes=notes,
            fail_on=cfg.fail_on,
        )
        self.results = results
        written: list[Path] = []
        if cfg.record:
            from conformance.har import write_har

            run = {**results["target"], "level": cfg.level, "started": self.started, "examples": cfg.examples,
                   "hypothesis_seed": cfg.hypothesis_seed, "auth": bool(t.api_key),
                   "api_key_env": t.api_key_env, "require": list(cfg.require),
                   "skip_discovery": bool(cfg.skip_discovery)}
            written.append(write_har(cfg.record, stored, self.discovery_exchanges, run=run))
            self.written = written
        if cfg.report_dir:
            self.written = [*write_reports(results, Path(cfg.report_dir)), *written]
        self.close()
        return results

    def close(self) -> None:
        """The checks' client closed, the progress line ended, the run's state folder removed (if this
        session made it: an xdist worker's is its controller's). Safe to call more than once."""
        if self.checks_client is not None:
            self.checks_client.close()
        self.stop_progress()
        if self._owns_state_dir:
            import shutil

            shutil.rmtree(self.state_dir, ignore_errors=True)
            self._owns_state_dir = False


class _ReplayProbes:
    """Discovery's client in a replay: a probe the recording lacks gets an exchange that says so (never sent,
    never evidence: the client's ``on_exchange`` never sees it), and its label is kept in ``missed``."""

    def __init__(self, client: Any) -> None:
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
    its checks are "not recorded" (``engine.run``). One the recorded answers show honoured stays supported."""
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
