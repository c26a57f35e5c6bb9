"""The CLI's usage errors (one line naming the fix, exit code 2), exit codes and key hygiene."""

from __future__ import annotations

import pytest

from conformance.cli import EXIT_UNREACHABLE, EXIT_USAGE, main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--profile", "nonsense"], "unknown profile 'nonsense'"),
        (["run", "--only", "NO-SUCH-ID"], "--only 'NO-SUCH-ID' is neither a requirement id nor a capability"),
        (["run", "--require", "n"], "--require 'n' is not an optional capability"),
        (["run", "--base-url", "ftp://x", "--model", "m"], "is not an http(s) URL"),
        (
            ["run", "--base-url", "http://127.0.0.1:1/v1/chat/completions", "--model", "m"],
            "--base-url must end before /chat/completions",
        ),
        (["run", "--base-url", "http://127.0.0.1:1/v1"], "--model is required with --base-url"),
        (["run", "--fault", "no-such-fault"], "unknown fault 'no-such-fault'"),
        (
            ["run", "--expectations", "/nonexistent/x.toml"],
            "expectations file '/nonexistent/x.toml' not found",
        ),
        (["run", "-n", "many"], "-n 'many' is not a number of workers"),
        (
            [
                "run",
                "--base-url",
                "http://127.0.0.1:1/v1",
                "--model",
                "m",
                "--api-key-env",
                "NO_SUCH_VAR_XYZ",
            ],
            "environment variable NO_SUCH_VAR_XYZ is not set",
        ),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["requirements", "--capability", "nope"], "unknown capability 'nope'"),
        (["serve", "--fault", "nope"], "unknown fault 'nope'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("chat-conformance: error: ")
    assert message in lines[0]


def test_unreachable_target_exits_3_before_any_check(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFORMANCE_API_KEY", "sk-canary-unreachable-9d1e")
    code = main(["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--timeout", "3"])
    out = capsys.readouterr()
    assert code == EXIT_UNREACHABLE
    assert "unreachable" in out.err
    assert "sk-canary" not in out.err + out.out


def test_requirements_lists_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["requirements", "--capability", "streaming"]) == 0
    out = capsys.readouterr().out
    assert "STREAM-DONE-TERMINATES" in out
    assert "CORE-OBJECT" not in out


def test_ci_integration_files_use_only_real_options() -> None:
    import re
    from pathlib import Path

    import yaml

    from conformance.cli import _build_parser

    docs = Path(__file__).resolve().parent.parent / "docs" / "ci"
    run_parser = _build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    known = {opt for action in run_parser._actions for opt in action.option_strings}
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (docs / name).read_text(encoding="utf-8")
        yaml.safe_load(text)
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", text.split("chat-conformance run", 1)[1]))
        assert used and used <= known, f"{name} uses unknown options {sorted(used - known)}"
