"""The engine (issue 22): registered checks run once each, typed records, a check unit-tested with no server
and no pytest run (a mock transport, then the HAR recording of that exchange)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import check_context, fake_check, mock_completion, mock_target

import conformance.checks  # noqa: F401  (registers every check)
from conformance.engine.registry import CHECKS, Check, case, check, ordered
from conformance.engine.run import Engine, run_check
from conformance.errors import BudgetExhausted
from conformance.har import ReplayTransport, write_har
from conformance.records import CheckRecord, Outcome, SkipKind, skip_kind_of
from conformance.violations import Inconclusive, Skipped

# Requirement ids: the engine's own (no requirement of the contract): how checks are run, not what they judge.

TARGET = mock_target()


# ---- the registry ------------------------------------------------------------------------------------------


def test_every_check_is_registered_under_its_old_pytest_node_id() -> None:
    assert len(CHECKS) >= 160
    assert "test_core.py::test_completion_fields" in CHECKS
    assert "test_errors.py::test_invalid_request_refused[max-tokens-zero]" in CHECKS
    assert "test_ranges.py::test_value_inside_range_accepted[temperature=0.7]" in CHECKS
    for key, c in CHECKS.items():
        assert c.key == key and c.requirements, key
        assert not c.module.startswith("tests"), key
    keys = [c.key for c in ordered(CHECKS.values())]
    assert keys[0].startswith("test_auth.py::") and keys[-1].startswith("test_usage.py::")


def test_a_case_adds_its_requirements_and_values() -> None:
    @check("CORE-OBJECT", argnames="x", cases=[case(1, id="one", requirements=("CORE-ID-PRESENT",))])
    def test_local_case(judge: Any, x: int) -> None:
        judge.check(x == 1, "CORE-ID-PRESENT", "x is not 1")

    try:
        key = f"{Path(__file__).name}::test_local_case[one]"
        c = CHECKS[key]
        assert c.requirements == ("CORE-ID-PRESENT", "CORE-OBJECT") and c.params == {"x": 1}
        with pytest.raises(TypeError, match="argnames and cases go together"):
            check("CORE-OBJECT", argnames="x")
        with pytest.raises(TypeError, match="name the requirement ids"):
            check()(lambda judge: None)
    finally:
        CHECKS.pop(f"{Path(__file__).name}::test_local_case[one]", None)


# ---- one check, no server ----------------------------------------------------------------------------------


def test_a_check_is_unit_tested_with_a_mock_transport_then_from_its_har(tmp_path: Path) -> None:
    fields = CHECKS["test_core.py::test_completion_fields"]
    rec = run_check(fields, check_context(httpx.MockTransport(mock_completion)))
    assert rec is not None and rec.outcome is Outcome.PASSED, rec
    assert "CORE-OBJECT" in rec.judged and len(rec.exchanges) == 1

    wrong = run_check(fields, check_context(httpx.MockTransport(lambda r: mock_completion(r, obj="list"))))
    assert wrong is not None and wrong.outcome is Outcome.FAILED
    assert [v["requirement"] for v in wrong.violations] == ["CORE-OBJECT"]

    # the same check judged again from the HAR recording of its exchange: no network at all
    run = {"base_url": TARGET.base_url, "model": "tiny", "auth": False, "started": time.time()}
    har = write_har(tmp_path / "one.har", [rec.to_dict()], [], run=run)
    replay = ReplayTransport.from_file(har)
    again = run_check(fields, check_context(replay, replay=replay))
    assert again is not None and again.outcome is Outcome.PASSED and again.judged == rec.judged
    assert replay.served == 1


def test_typed_outcomes_of_a_check(tmp_path: Path) -> None:
    ctx = check_context(httpx.MockTransport(mock_completion))

    def unsupported(judge: Any) -> None:
        raise Skipped("unsupported: tools: not offered", SkipKind.UNSUPPORTED)

    def inconclusive(judge: Any) -> None:
        judge.check(True, "CORE-OBJECT", "x")
        raise Inconclusive("too weak")

    def bare_assert(judge: Any) -> None:
        assert 1 == 2, "a bug in the check"

    def crash(judge: Any) -> None:
        {}["missing"]  # noqa: B018

    def throttled(client: Any, judge: Any) -> None:
        client.chat({"model": "tiny", "messages": []})

    outs = {f.__name__: run_check(fake_check(f.__name__, f), ctx)
            for f in (unsupported, inconclusive, bare_assert, crash)}
    limited = check_context(httpx.MockTransport(lambda r: httpx.Response(429, headers={"retry-after": "0"})))
    outs["throttled"] = run_check(fake_check("throttled", throttled), limited)
    got = {k: (r.outcome, r.skip_kind) for k, r in outs.items() if r is not None}
    assert got == {
        "unsupported": (Outcome.SKIPPED, SkipKind.UNSUPPORTED),
        "inconclusive": (Outcome.SKIPPED, SkipKind.INCONCLUSIVE),
        "bare_assert": (Outcome.ERROR, None),
        "crash": (Outcome.ERROR, None),
        "throttled": (Outcome.SKIPPED, SkipKind.UNANSWERED),
    }
    assert outs["inconclusive"].judged == []  # what it judged before it gave up is not a pass
    assert "check failed without a violation: a bug in the check" in outs["bare_assert"].error
    assert "KeyError" in outs["crash"].error and '{}["missing"]' in outs["crash"].error
    assert outs["throttled"].skip_reason.startswith("inconclusive: rate-limited after 0 retries")
    for r in outs.values():
        assert skip_kind_of(r.to_dict()) is r.skip_kind
    unknown = run_check(fake_check("asks", lambda wizard: None), ctx)
    assert unknown is not None and unknown.outcome is Outcome.ERROR and "asks for 'wizard'" in unknown.error


def test_skip_kind_of_a_results_file_written_before_the_field() -> None:
    old = {"outcome": "skipped", "skip_reason": "inconclusive: no answer (timed out: ...)"}
    assert skip_kind_of(old) is SkipKind.UNANSWERED
    assert skip_kind_of({**old, "skip_reason": "not run: budget exhausted: 10 requests"}) is SkipKind.BUDGET
    assert skip_kind_of({**old, "skip_reason": "the profile judges X"}) is SkipKind.NOT_APPLICABLE
    assert skip_kind_of({"outcome": "passed"}) is None
    assert CheckRecord("k", ["R"], Outcome.SKIPPED, SkipKind.BUDGET).to_dict()["skip_kind"] == "budget"


# ---- the engine --------------------------------------------------------------------------------------------


class _Counting:
    def __init__(self, delay: float = 0.02) -> None:
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return mock_completion(request)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_each_check_runs_once_and_a_shared_exchange_is_sent_once(concurrency: int) -> None:
    target = _Counting()
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def make(i: int) -> Check:
        def f(shared: Any, client: Any, judge: Any) -> None:
            with lock:
                calls[f"c{i}"] = calls.get(f"c{i}", 0) + 1
            ex = shared("basic", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
            judge.check(ex.status == 200, "CORE-OBJECT", "not 200", exchange=ex)
            client.chat({"model": "tiny", "messages": [{"role": "user", "content": str(i)}]})

        return Check(key=f"test_fake.py::c{i}", module="tests.fake", name=f"c{i}", func=f,
                     requirements=("CORE-OBJECT",), order=("test_fake.py", i, 0))

    checks = [make(i) for i in range(20)]
    engine = Engine(check_context(httpx.MockTransport(target), concurrency=concurrency), checks,
                    concurrency=concurrency)
    records = engine.run()
    assert calls == {f"c{i}": 1 for i in range(20)}  # once each
    assert target.calls == 1 + 20  # the shared request once, then each check's own
    assert [r.nodeid for r in records] == [c.key for c in checks]  # the run's order
    assert all(r.outcome is Outcome.PASSED and len(r.exchanges) == 2 for r in records)
    assert len({r.exchanges[0]["xid"] for r in records}) == 1  # the one shared exchange, in every evidence


def test_a_spent_budget_stops_the_engine() -> None:
    def f(judge: Any) -> None:
        raise BudgetExhausted("--max-requests 1 reached")

    def never(judge: Any) -> None:
        raise AssertionError("runs after the budget was spent")

    checks = [fake_check("a", f), Check(key="test_fake.py::b", module="tests.fake", name="b", func=never,
                                    requirements=("CORE-OBJECT",), order=("test_fake.py", 1, 0))]
    engine = Engine(check_context(httpx.MockTransport(mock_completion)), checks, concurrency=1)
    records = engine.run()
    assert [(r.nodeid, r.skip_kind) for r in records] == [("test_fake.py::a", SkipKind.BUDGET)]
    assert engine.stop_reason == "budget exhausted: --max-requests 1 reached"
    assert engine.record("test_fake.py::b") is None


def test_a_stop_cuts_the_checks_in_flight_and_keeps_the_finished_ones() -> None:
    started = threading.Event()

    def quick(judge: Any) -> None:
        judge.check(True, "CORE-OBJECT", "x")

    def slow(client: Any, judge: Any) -> None:
        started.set()
        client.chat({"model": "tiny", "messages": []})  # a mock has no socket to cut: it ends
        client.chat({"model": "tiny", "messages": []})  # never sent: the run was stopped

    def stall(request: httpx.Request) -> httpx.Response:
        time.sleep(1)
        return mock_completion(request)

    checks = [fake_check("quick", quick), Check(key="test_fake.py::slow", module="tests.fake", name="slow",
                                           func=slow, requirements=("CORE-OBJECT",), order=("z", 0, 0))]
    engine = Engine(check_context(httpx.MockTransport(stall)), checks, concurrency=1)
    engine.start()
    assert started.wait(5)
    t0 = time.monotonic()
    engine.stop()
    engine.join(5)
    assert [r.nodeid for r in engine.records()] == ["test_fake.py::quick"]
    assert time.monotonic() - t0 < 3


def test_results_json_keeps_its_schema_with_the_skip_kind() -> None:
    schema = json.loads((Path(__file__).resolve().parents[1] / "spec" / "results.schema.json").read_text())
    kinds = schema["$defs"]["check"]["properties"]["skip_kind"]["enum"]
    assert sorted(kinds) == sorted(k.value for k in SkipKind)


def test_one_option_table_gives_the_plugin_and_the_cli_their_defaults() -> None:
    """A default lives once (engine/options.py): the CLI's `run` flags that are run options default to it,
    and the plugin's --conformance-* options are made from it."""
    from conformance.cli import _build_parser
    from conformance.engine.options import DEFAULTS, OPTIONS, RunConfig

    run = _build_parser().parse_args(["run"])
    shared = ("api_key_env", "profile", "level", "fail_on", "timeout", "idle_timeout")
    assert {n: getattr(run, n) for n in shared} == {n: DEFAULTS[n] for n in shared}
    assert run.concurrency is None  # resolved to DEFAULTS["concurrency"] (or -n N) by the CLI
    assert {o.flag for o in OPTIONS} >= {"--conformance-base-url", "--conformance-concurrency"}
    cfg = RunConfig.from_values(lambda name: None)
    assert cfg.concurrency == DEFAULTS["concurrency"] == 32 and cfg.only == []


def test_a_run_leaves_no_state_folder_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's budget state lives in a folder of its own, removed when the run ends (a CI runner that runs
    the gate on every commit kept thousands of them in /tmp)."""
    import tempfile

    from conformance.cli import main

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    code = main(["run", "--only", "CORE-OBJECT", "--report-dir", str(tmp_path / "r"), "--progress", "off"])
    assert code == 0
    assert [p.name for p in scratch.iterdir() if p.name.startswith("conformance-run-")] == []


def test_report_html_failing_is_the_suites_fault_and_keeps_the_other_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One writer of the reports: report.html raising is an internal error (exit 4, said in the notes), never
    blamed on the target, and results.json, JUnit and summary.md are still written."""
    import conformance.reports.html as html
    from conformance.cli import main

    def broken(results: dict[str, Any], out: Path) -> Path:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(html, "write_html", broken)
    report = tmp_path / "r"
    code = main(["run", "--only", "CORE-OBJECT", "--report-dir", str(report), "--progress", "off"])
    assert code == 4
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    assert results["exit_code"] == 4
    assert any(n.startswith("internal error writing report.html: RuntimeError") for n in results["notes"])
    assert (report / "junit.xml").is_file() and (report / "summary.md").is_file()
    assert not (report / "report.html").exists()
    assert results["verdict"].startswith("internal error of the suite writing report.html (RuntimeError)")
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("chat-conformance: internal error of the suite")


def test_every_run_option_of_the_table_reaches_the_cli_run_by_its_name() -> None:
    """The CLI builds its RunConfig from the parsed flags by name (``RunConfig.from_values``): each option of
    the table is a `run` flag of the same name with the table's default and choices, or one of the few the
    CLI decides itself; nothing is re-spelt in between."""
    from conformance.cli import _build_parser
    from conformance.engine.options import OPTIONS, RunConfig

    parser = _build_parser()
    run_parser = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["run"]
    flags = {a.dest: a for a in run_parser._actions}
    decided_by_the_cli = {"embedded", "console", "progress", "replay", "no_prefetch", "model"}
    differs = {"report_dir": "reports"}  # the CLI writes reports/ by default; the plugin only when asked
    parsed = parser.parse_args(["run"])
    cfg = RunConfig.from_values(lambda name: getattr(parsed, name, None))
    for o in OPTIONS:
        if o.name in decided_by_the_cli:
            continue
        assert o.name in flags, f"--{o.name.replace('_', '-')} is a run option the CLI does not offer"
        assert getattr(cfg, o.name) == differs.get(o.name, o.default), o.name
        if o.choices is not None:
            assert tuple(flags[o.name].choices) == o.choices, o.name
