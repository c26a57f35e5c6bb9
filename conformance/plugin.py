"""The pytest front-end (``pytest11`` entry point): ``pytest --pyargs conformance.checks
--conformance-base-url URL --conformance-model NAME`` runs the suite as pytest tests, one item per registered
check.

Inert unless ``--conformance-base-url`` is given. The run itself is the engine's (``conformance.engine``): the
options come from its table, a ``RunSession`` discovers, selects and finishes; one ``Engine`` runs every
selected check once, ``--conformance-concurrency`` at a time, as pytest's loop starts; each item then reports
its check's record. Under pytest-xdist each worker runs its own items' checks, one at a time, and sends the
records on the test reports (``user_properties``); only the controller judges the run and writes the reports.
Heavy imports happen inside hooks.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pytest

from conformance.console import escape_controls as _escape_controls
from conformance.console import one_line as _one_line

if TYPE_CHECKING:
    from conformance.engine.session import RunSession

RECORD_KEY = "conformance"
_records = pytest.StashKey[list[Any]]()
_run = pytest.StashKey["RunSession"]()
_record_key = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    from conformance.engine.options import OPTIONS

    g = parser.getgroup("conformance", "chat-conformance: judge a /chat/completions endpoint")
    for option in OPTIONS:
        g.addoption(option.flag, dest="conformance_" + option.name, **option.argparse_kwargs())


def _config_of(config: pytest.Config) -> Any:
    from conformance.engine.options import RunConfig

    return RunConfig.from_values(lambda name: config.getoption("conformance_" + name))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requirement(*ids): the requirement ids of spec/requirements.yaml that this check judges"
    )
    if not config.getoption("conformance_base_url", None):
        return
    from conformance.engine.session import RunSession
    from conformance.errors import UsageError

    config.stash[_records] = []
    worker = getattr(config, "workerinput", None)
    try:
        if worker is not None:
            run = RunSession(_config_of(config), state_dir=worker["conformance_state_dir"],
                             capabilities=worker.get("conformance_capabilities"), worker=True)
        else:
            run = RunSession(_config_of(config))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_run] = run
    config.pluginmanager.register(_Recorder(config), "conformance-recorder")
    if worker is None:
        run.start_progress()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # pytest-xdist: hand the run's shared state to a worker
    run = node.config.stash.get(_run, None)
    if run is None:
        return
    node.workerinput["conformance_state_dir"] = run.state_dir
    node.workerinput["conformance_capabilities"] = run.capabilities()


# ---- selection ---------------------------------------------------------------------------------------------


def _item_requirements(item: pytest.Item) -> tuple[str, ...]:
    if isinstance(item, CheckItem):
        return tuple(item.check.requirements)
    ids: list[str] = []
    for mark in item.iter_markers("requirement"):
        ids.extend(mark.args)
    return tuple(dict.fromkeys(ids))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run = config.stash.get(_run, None)
    if run is None:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if run.selects(_item_requirements(item)) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if run.progress is not None:
        run.progress.total = len(items)


# ---- the checks as pytest items: each reports its record from the one engine run ------------------------


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
        run = self.config.stash.get(_run, None)
        if run is None:
            pytest.skip("chat-conformance checks need --conformance-base-url (use `chat-conformance run`)")
        from conformance.records import Outcome, SkipKind

        rec = _record_of(self, run)
        self.stash[_record_key] = rec
        engine = run.current
        if rec is None:  # the run stopped before (or while) this check ran: no record, nothing judged
            why = (engine.stop_reason if engine is not None else None) or "the run was stopped"
            if engine is not None and engine.stop_reason and not self.session.shouldstop:
                self.session.shouldstop = engine.stop_reason
            pytest.skip(f"not run: {why}")
        if rec.skip_kind is SkipKind.BUDGET:
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


def _record_of(item: CheckItem, run: RunSession) -> Any:
    """The check's record: from the engine that runs the session's checks (waiting for it), or, where no
    engine runs (an xdist worker), made now."""
    from conformance.engine.run import _Budget, run_check

    engine = run.current
    if engine is not None and item.check.key in engine.keys:
        return engine.record(item.check.key)
    try:
        return run_check(item.check, run.context())
    except _Budget as b:
        return b.record


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """As pytest's loop starts, the engine starts running every selected check once, ``--concurrency`` at a
    time; each item then reports its check's record. Not under pytest-xdist (each worker runs its items'
    checks one at a time)."""
    config = session.config
    run = config.stash.get(_run, None)
    if run is None or config.option.collectonly or session.testscollected == 0:
        return
    if hasattr(config, "workerinput") or getattr(config.option, "numprocesses", None):
        return
    items = [it for it in session.items if isinstance(it, CheckItem)]
    if not items:
        return
    engine = run.engine([it.check for it in items])
    engine.start()
    place = {c.key: i for i, c in enumerate(engine.checks)}
    session.items.sort(key=lambda it: place.get(it.check.key, -1) if isinstance(it, CheckItem) else -1)
    run.phase("running the checks")


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
    from conformance.results import blocks_gate

    run = config.stash[_run]
    return blocks_gate(violations, profile=run.profile.base, fail_on=run.cfg.fail_on, waivers=run.waivers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    from conformance.evidence import PARSE_LOCK

    with PARSE_LOCK:  # a traceback's source may be parsed: never while an engine thread draws
        report = yield
    if _run not in item.config.stash:
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


class _Recorder:
    """Registered on an enabled run: gathers records (its own and every xdist worker's) on the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == RECORD_KEY:
                self.config.stash[_records].append(value)  # type: ignore[arg-type]
                progress = self.config.stash[_run].progress
                if progress is not None:
                    progress.check_done()

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        # pytest's own stop (session.Interrupted, e.g. our budget stop) is a KeyboardInterrupt subclass too;
        # a stop by signal or time limit is a KeyboardInterrupt naming its cause
        run = self.config.stash[_run]
        if excinfo.type is KeyboardInterrupt:
            from conformance.errors import stop_cause

            run.interrupt(stop_cause(excinfo.value))
        else:
            run.stop_now()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    run = config.stash.get(_run, None)
    if run is None:
        return
    if hasattr(config, "workerinput"):
        if run.checks_client is not None:
            run.checks_client.close()
        return
    from conformance.checks import run_wide

    run.settle()
    records: list[Any] = list(config.stash[_records])  # type: ignore[index]
    if run.current is not None:  # checks the engine ran that pytest's loop did not report (a stopped run)
        reported = {r["nodeid"] for r in records}
        records += [r.to_dict() for r in run.current.records() if r.nodeid not in reported]
    notes = [str(session.shouldstop)] if session.shouldstop else []
    results = run.finish(records, run_wide=run_wide, notes=notes,
                         selected={r for it in session.items for r in _item_requirements(it)} or None)
    session.exitstatus = results["exit_code"]


def _escape_tree(obj: Any, depth: int = 0) -> Any:
    """``escape_controls`` over every string of a report's longrepr (pytest's dataclasses, in place)."""
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
    """The run's summary (``conformance.console``); the verdict itself is the console's last line
    (:func:`pytest_unconfigure`), after pytest's own count."""
    run = config.stash.get(_run, None)
    if run is None:
        return
    run.close()  # the controller's state folder goes; a worker's is the controller's
    if run.results is None:
        return
    from conformance.console import summary_lines

    tr = terminalreporter
    tr.section("chat-conformance")
    for line in summary_lines(run.results, run.written):
        tr.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The suite's verdict is the console's last line, after pytest's test count (which counts checks, not
    requirements)."""
    run = config.stash.get(_run, None)
    if run is None:
        return
    run.close()  # the controller's state folder goes; a worker's is the controller's
    if run.results is None:
        return
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    from conformance.console import verdict_line

    tr.write_line(verdict_line(run.results))
