"""The CLI's usage errors (one line naming the fix, exit code 2), exit codes and key hygiene."""

from __future__ import annotations

from typing import Any

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


# ---- serve ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--context-length", "8"], "--context-length 8 is too small: give at least 32 tokens"),
        (
            ["serve", "--api-key-env", "NO_SUCH_SERVE_VAR_XYZ"],
            "environment variable NO_SUCH_SERVE_VAR_XYZ is not set: export it with the key to require",
        ),
        (["serve", "--variant", "nope"], "unknown variant 'nope'"),
        (["serve", "--port", "many"], "argument --port: invalid int value: 'many'"),
    ],
)
def test_serve_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("chat-conformance: error: ")
    assert message in lines[0]


def test_serve_port_in_use_is_a_usage_error_naming_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == EXIT_USAGE
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines == [
        f"chat-conformance: error: port {port} on 127.0.0.1 is in use: "
        "choose another --port, or --port 0 for any free port"
    ]


def test_serve_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for default in (
        "(default: 127.0.0.1)",
        "(default: 8080)",
        "(default: CONFORMANCE_SERVE_API_KEY; unset: no authentication)",
        "(default: 256)",
        "(default: seed)",
    ):
        assert default in out, default
    assert "visible to every user in `ps`" in out


def _serve(args: list[str], env: dict[str, str]) -> tuple[Any, str]:
    """Start `chat-conformance serve` in a child process; its start line and the process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    full_env = {**os.environ, **env, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        text=True,
    )
    assert proc.stderr is not None
    return proc, proc.stderr.readline()


def test_serve_announces_itself_retrieves_its_model_and_stops_on_ctrl_c() -> None:
    import re
    import signal

    import httpx

    proc, line = _serve(
        ["--port", "0", "--context-length", "512"], {"CONFORMANCE_SERVE_API_KEY": "sk-serve-1"}
    )
    try:
        m = re.fullmatch(
            r"chat-conformance: reference server at (http://127\.0\.0\.1:\d+/v1): model reference-tiny, "
            r"profile seed, context length 512, auth on \(bearer key from \$CONFORMANCE_SERVE_API_KEY\); "
            r"Ctrl-C stops it\n",
            line,
        )
        assert m, line
        base = m.group(1)
        assert "sk-serve-1" not in line
        auth = {"Authorization": "Bearer sk-serve-1"}
        assert httpx.get(f"{base}/models/reference-tiny", timeout=10).status_code == 401
        r = httpx.get(f"{base}/models/reference-tiny", headers=auth, timeout=10)
        assert r.status_code == 200
        assert r.json()["id"] == "reference-tiny" and r.json()["context_size"] == 512
        r = httpx.get(f"{base}/models/gpt-none", headers=auth, timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert err.strip() == "chat-conformance: reference server stopped"


def test_serve_without_a_key_says_auth_is_off() -> None:
    import signal

    proc, line = _serve(["--port", "0"], {"CONFORMANCE_SERVE_API_KEY": ""})
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=15)
    assert "auth off (set CONFORMANCE_SERVE_API_KEY to require a key); Ctrl-C stops it" in line


def test_a_closed_pipe_ends_a_listing_quietly() -> None:
    """`chat-conformance serve --list-variants | head`: the reader goes away; no traceback, exit 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "conformance.cli", "serve", "--list-variants"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": root},
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_stop_is_held_past_the_imports_and_raised_after_them() -> None:
    """A SIGTERM landing inside the run's imports (the preflight thread imports beside them) left a module
    lock held: the preflight thread waited on it forever and the run never exited (2 of 20 stops under load,
    py-spy). Inside ``held()`` the stop is kept, and raised when it ends."""
    import os
    import signal

    from conformance.cli import _Stops

    stops = _Stops()
    reached_the_end = False
    with stops, pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with stops.held():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # give the handler its chance to run (it runs between bytecodes)
                pass
            reached_the_end = True
    assert reached_the_end and stops.cause == "SIGTERM"
