"""The generated phase's draws made ahead in a helper process (spec/DECISIONS.md#draw-ahead): the same lists
as drawn in this process, a helper that fails leaves the drawing here, and a closed helper is gone.
Requirements: GEN-VALID-ACCEPTED, GEN-INVALID-REJECTED (the requests their checks send)."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from conformance.checks import _generated as G
from conformance.profiles import load_profile
from conformance.schemas import schema_errors

pytestmark = pytest.mark.requirement("GEN-VALID-ACCEPTED", "GEN-INVALID-REJECTED")

FIELDS = ["messages", "temperature"]
EXAMPLES = 3


@pytest.fixture(autouse=True)
def _no_lists_from_earlier_tests() -> None:
    """Each test sees the helper start: nothing drawn by an earlier test of this process is recalled."""
    G.forget_drawn()


def _helpers() -> list[int]:
    """Pids of this process's live draw helper processes (Linux: /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            state, ppid = stat[0], int(stat[1])
            if b"conformance.checks._draw_ahead" in cmd and state != "Z" and ppid == os.getpid():
                out.append(int(d.name))
    return out


def _local() -> dict[str | None, list[G.Drawn]]:
    profile = load_profile("seed")
    memo: dict = {}
    out: dict[str | None, list[G.Drawn]] = {None: G.drawn_property(memo, "m", profile, {}, None, EXAMPLES, 0)}
    for f in FIELDS:
        out[f] = G.drawn_property(memo, "m", profile, {}, f, EXAMPLES, 0)
    return out


def test_drawn_ahead_are_the_lists_drawn_here() -> None:
    profile = load_profile("seed")
    memo: dict = {}
    close = G.draw_ahead(memo, "m", profile, {}, FIELDS, EXAMPLES, 0)
    assert close is not None
    try:
        assert all(isinstance(v, Future) for v in memo.values()) and len(memo) == 1 + len(FIELDS)
        ahead = {None: G.drawn_property(memo, "m", profile, {}, None, EXAMPLES, 0)}
        for f in FIELDS:
            ahead[f] = G.drawn_property(memo, "m", profile, {}, f, EXAMPLES, 0)
        assert all(isinstance(v, list) for v in memo.values())  # the futures' lists were taken
    finally:
        close()
    assert ahead == _local()
    assert [d.what for d in ahead["messages"] if not d.explicit]  # something was drawn, not only examples
    assert all(schema_errors(G.REQUEST_SCHEMA, d.request) for d in ahead["messages"])  # all invalid


def test_the_helper_keeps_the_run_s_hypothesis_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hypothesis.configuration import set_hypothesis_home_dir, storage_directory

    old = storage_directory(intent_to_write=False).home_directory
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)
    set_hypothesis_home_dir(home)
    try:
        close = G.draw_ahead({}, "m", load_profile("seed"), {}, [], 1, 0)
        assert close is not None
        deadline = time.monotonic() + 60
        while not list(home.rglob("codec-utf-8.json.gz")) and time.monotonic() < deadline:
            time.sleep(0.1)  # the helper's first draw writes the UTF-8 table into its home
        close()
    finally:
        set_hypothesis_home_dir(old)
    assert list(home.rglob("codec-utf-8.json.gz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing in the current directory


def test_a_helper_that_fails_leaves_the_drawing_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # starts, answers nothing, ends
    profile = load_profile("seed")
    memo: dict = {}
    close = G.draw_ahead(memo, "m", profile, {}, FIELDS[:1], EXAMPLES, 0)
    assert close is not None
    try:
        got = G.drawn_property(memo, "m", profile, {}, FIELDS[0], EXAMPLES, 0)
    finally:
        close()
    assert got == _local()[FIELDS[0]]


def test_no_interpreter_no_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "")
    memo: dict = {}
    assert G.draw_ahead(memo, "m", load_profile("seed"), {}, FIELDS, EXAMPLES, 0) is None
    assert memo == {}


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_a_closed_helper_is_gone_even_mid_draw() -> None:
    before = set(_helpers())
    close = G.draw_ahead({}, "m", load_profile("seed"), {}, G.mutation_fields(), 25, 0)
    assert close is not None
    deadline = time.monotonic() + 10
    while not set(_helpers()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_helpers()) - before, "no helper process started"
    close()  # long before its 26 draws are done
    assert not set(_helpers()) - before


def test_the_utf8_table_is_written_where_hypothesis_reads_it(tmp_path: Path) -> None:
    from hypothesis.configuration import set_hypothesis_home_dir, storage_directory
    from hypothesis.internal.charmap import charmap_file

    old = storage_directory(intent_to_write=False).home_directory
    set_hypothesis_home_dir(tmp_path)
    try:
        G._seed_unicode_table()
        path = Path(charmap_file("codec-utf-8"))
        assert path.is_relative_to(tmp_path) and path.exists()
        import gzip
        import json

        table = json.loads(gzip.decompress(path.read_bytes()))
        # what hypothesis would compute: every code point UTF-8 encodes
        for lo, hi in table:
            for cp in (lo, hi):
                chr(cp).encode("utf-8")
        for cp in (0xD800, 0xDFFF):
            with pytest.raises(UnicodeEncodeError):
                chr(cp).encode("utf-8")
        assert table == [[0, 0xD7FF], [0xE000, sys.maxunicode]]
    finally:
        set_hypothesis_home_dir(old)


def test_a_schema_verdict_is_kept_per_json_text() -> None:
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1}
    assert schema_errors(G.REQUEST_SCHEMA, ok) == []
    assert schema_errors(G.REQUEST_SCHEMA, dict(ok)) == []  # from the kept verdict
    assert schema_errors(G.REQUEST_SCHEMA, {**ok, "n": 1.5})  # another text: judged again
    assert schema_errors(G.REQUEST_SCHEMA, {**ok, "n": "1"})


@pytest.mark.parametrize("flag", [[], ["--conformance-no-prefetch"]], ids=["prefetch", "no-prefetch"])
def test_no_prefetch_draws_as_each_check_runs(flag: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--conformance-no-prefetch`` (the pytest plugin's option): no helper process, the checks draw their
    requests themselves, and they still judge."""
    import pytest as _pytest

    from conformance.checks import test_generated as module
    from conformance.reference.server import start_in_thread

    started: list[list[str]] = []
    real = module.draw_ahead

    def spy(*args: object, **kwargs: object) -> object:
        started.append(list(args[4]))  # type: ignore[call-overload]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "draw_ahead", spy)
    outcomes: list[str] = []

    class Grab:
        def pytest_runtest_logreport(self, report: _pytest.TestReport) -> None:
            if report.when == "call":
                outcomes.append(report.outcome)

    with start_in_thread() as srv:
        code = _pytest.main(
            [module.__file__, "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-k", "valid_requests",
             "--conformance-base-url", srv.base_url, "--conformance-model", srv.model,
             "--conformance-skip-discovery", "--conformance-examples", "3", *flag],
            plugins=[Grab()],
        )
    assert code == 0 and outcomes == ["passed"]
    assert started == ([] if flag else [[]])  # the valid phase only: no field was selected


def test_a_later_run_in_the_same_process_recalls_the_lists_and_starts_no_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test process, a fleet or a kill matrix makes many runs: the lists a run drew are recalled by the
    next run with the same target, profile and capabilities (no helper process, the same requests sent);
    another model draws its own."""
    import json

    from conformance.checks import test_generated as module
    from conformance.cli import main

    helpers: list[object] = []
    real = module.draw_ahead

    def spy(*args: object, **kwargs: object) -> object:
        started = real(*args, **kwargs)  # type: ignore[arg-type]
        helpers.append(started)
        return started

    monkeypatch.setattr(module, "draw_ahead", spy)

    def run(name: str, *extra: str) -> list[object]:
        report = tmp_path / name
        code = main(["run", "--only", "GEN-INVALID-REJECTED", "--only", "GEN-VALID-ACCEPTED", "--examples",
                     "3", "--report-dir", str(report), "--progress", "off", *extra])
        assert code == 0
        results = json.loads((report / "results.json").read_text(encoding="utf-8"))
        return sorted(e.get("request_body") or "" for c in results["checks"] for e in c["exchanges"])

    first = run("first")
    second = run("second")
    other = run("other", "--embedded", "--model", "another-model")
    assert helpers[0] is not None, "the first run draws in a helper"
    assert helpers[1] is None, "the second run recalls every list: no helper"
    assert helpers[2] is not None, "another model's requests are drawn anew"
    assert first == second
    assert len(first) > 10
    assert other != first
