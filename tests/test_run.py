"""End-to-end runs of the CLI against the reference server: parallel verdicts, key hygiene, budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.reference.server import start_in_thread

CANARY = "sk-canary-4be1d0c2-never-print-me"


@pytest.fixture(scope="module")
def server() -> Any:
    srv = start_in_thread(api_key=CANARY)
    yield srv
    srv.stop()


def _verdicts(report: Path) -> dict[str, str]:
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    return {k: v["verdict"] for k, v in results["requirements"].items()}


def test_serial_and_parallel_runs_agree_and_never_leak_the_key(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONFORMANCE_API_KEY", CANARY)
    common = ["run", "--base-url", server.base_url, "--model", server.model]
    assert main([*common, "--report-dir", str(tmp_path / "serial")]) == 0
    assert main([*common, "--report-dir", str(tmp_path / "parallel"), "-n", "2"]) == 0
    serial, parallel = _verdicts(tmp_path / "serial"), _verdicts(tmp_path / "parallel")
    assert serial == parallel
    assert set(serial.values()) == {"pass"}
    out = capfd.readouterr()
    assert CANARY not in out.out + out.err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 6
    for path in written:
        assert CANARY not in path.read_text(encoding="utf-8", errors="replace"), f"key leaked into {path}"


def test_request_budget_stops_the_run_cleanly(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFORMANCE_API_KEY", CANARY)
    code = main(
        [
            "run",
            "--base-url",
            server.base_url,
            "--model",
            server.model,
            "--max-requests",
            "12",
            "--report-dir",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert code == 5
    assert results["verdict"].startswith("INCOMPLETE")
    assert results["cost"]["budget"]["requests"] <= 12
    assert "fail" not in _verdicts(tmp_path).values()


def test_refused_key_exits_3(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONFORMANCE_API_KEY", "sk-wrong-key-canary-77")
    code = main(
        ["run", "--base-url", server.base_url, "--model", server.model, "--report-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "refused the credentials (HTTP 401)" in err
    assert "sk-wrong-key-canary-77" not in err


@pytest.mark.parametrize("base, judged, absent", [
    ("seed", "STOP-SEQUENCE-INCLUDED", "STOP-SEQUENCE-EXCLUDED"),
    ("openai", "STOP-SEQUENCE-EXCLUDED", "STOP-SEQUENCE-INCLUDED"),
])
def test_a_user_profile_is_judged_by_the_profile_it_extends(tmp_path: Path, base: str, judged: str,
                                                            absent: str) -> None:
    profile = tmp_path / "mine.toml"
    profile.write_text(f'extends = "{base}"\ncontext_length = 256\n', encoding="utf-8")
    code = main(["run", "--profile", str(profile), "--only", "stop", "--report-dir", str(tmp_path / "r")])
    results = json.loads((tmp_path / "r" / "results.json").read_text(encoding="utf-8"))
    assert code == 0
    assert results["profile"] == base
    assert results["target"]["profile_name"] == "mine"  # the user's profile, by its own name
    summary = (tmp_path / "r" / "summary.md").read_text(encoding="utf-8")
    assert f"profile `mine ({profile}, extends {base})`" in summary
    assert results["requirements"][judged]["verdict"] == "pass"
    assert absent not in results["requirements"]


def test_hypothesis_caches_go_to_the_user_cache_folder_never_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = main(["run", "--only", "GEN-VALID-ACCEPTED", "--examples", "3", "--report-dir", "out"])
    assert code == 0
    assert not (tmp_path / ".hypothesis").exists()
    assert not (tmp_path / "out" / ".hypothesis").exists()
    # what hypothesis caches during the run goes there, where the next run finds it (whether it writes
    # anything depends on what this process cached before; DECISIONS.md#reproducible-draws)
    from hypothesis.configuration import storage_directory

    home = storage_directory(intent_to_write=False).home_directory
    assert home == (tmp_path / "cache" / "chat-conformance" / "hypothesis").resolve()


@pytest.mark.requirement("GEN-VALID-ACCEPTED")
def test_a_run_prints_no_python_warning(tmp_path: Path) -> None:
    """What a run imports ahead while its preflight request is out (cli._preflight_while_loading) must not
    make pytest warn that it cannot rewrite a module imported too early (it did for conformance.plugin)."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "run", "--only", "GEN-VALID-ACCEPTED", "--examples", "3",
         "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning" not in (proc.stdout + proc.stderr).lower()
