"""Secrets never printed, and reproducers that send what the check sent (issue 21, point 5).

A key-shaped value goes to every option of every subcommand that takes one (read from the parser itself), to
abbreviations and to options that do not exist: no piece of it may reach stdout, stderr or a report, and each
is a usage error (exit 2). The curl of an exchange sends the wrong key the wrong-key check sent, names the
variable the run read its key from, and keeps the header the request used.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.checks.test_auth import WRONG_KEY
from conformance.cli import _build_parser, main
from conformance.client import Client
from conformance.errors import TargetUnreachable
from conformance.evidence import Exchange, looks_like_secret
from conformance.target import Limits, Target

CANARY = "sk-canary-9f8e7d6c5b4a"
RANDOM_CANARY = "9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c"  # a key without a prefix: long and random
ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "http://127.0.0.1:9/v1"  # never contacted: every argv below fails validation first


def _pieces(value: str, n: int = 8) -> list[str]:
    return [value[i : i + n] for i in range(len(value) - n + 1)]


def _assert_hidden(text: str, value: str = CANARY) -> None:
    shown = [p for p in _pieces(value) if p in text]
    assert not shown, f"a piece of the key is shown: {shown[:3]} in {text[-500:]!r}"


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = _build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


# what each subcommand needs beside the option under test, so that the command fails validation before any
# request, server or file: (dest, words, positional); the option's own dest is left out
_FILLERS: dict[str, list[tuple[str, list[str], bool]]] = {
    "run": [
        ("base_url", ["--base-url", UNREACHABLE], False),
        ("model", ["--model", "m"], False),
        ("concurrency", ["--concurrency", "0"], False),
    ],
    "replay": [("recording", ["/nonexistent/run.har"], True)],
    "serve": [("context_length", ["--context-length", "1"], False)],
    "requirements": [],
    "report": [("results", ["/nonexistent/results.json"], True)],
    "diff": [("old", ["/nonexistent/old.json"], True), ("new", ["/nonexistent/new.json"], True)],
}


def _argv(command: str, skip: str, *tested: str) -> list[str]:
    fill = [f for f in _FILLERS[command] if f[0] != skip]
    positional = [w for _, words, pos in fill if pos for w in words]
    flags = [w for _, words, pos in fill if not pos for w in words]
    return [command, *positional, *tested, *flags]


def _value_cases() -> Iterator[Any]:
    """(command, argv, value) for every option that takes a value, and every positional, of every
    subcommand, with two keys: one with a prefix, one long and random."""
    for command, sub in _subparsers().items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.nargs == 0:
                continue
            for value in (CANARY, RANDOM_CANARY):
                if not action.option_strings:
                    yield pytest.param(
                        command,
                        _argv(command, action.dest, value),
                        value,
                        id=f"{command} <{action.dest}> {value[:6]}",
                    )
                for opt in action.option_strings:
                    yield pytest.param(
                        command,
                        _argv(command, action.dest, opt, value),
                        value,
                        id=f"{command} {opt} {value[:6]}",
                    )
                    if opt.startswith("--"):
                        yield pytest.param(
                            command,
                            _argv(command, action.dest, f"{opt}={value}"),
                            value,
                            id=f"{command} {opt}=... {value[:6]}",
                        )


def test_the_cases_cover_every_option_that_takes_a_value() -> None:
    ids = {c.id for c in _value_cases()}
    for case in (
        "run --api-key-env",
        "run --header",
        "run --only",
        "run --profile",
        "run --base-url",
        "run --model",
        "run --record",
        "run --report-dir",
        "run -n",
        "serve --api-key",
        "serve --host",
        "requirements --capability",
        "replay <recording>",
        "report --out",
        "diff <new>",
    ):
        assert any(i.startswith(case + " ") for i in ids), case
    assert len(ids) > 150


@pytest.mark.parametrize("command, argv, value", list(_value_cases()))
def test_a_key_given_to_any_option_is_never_shown(
    command: str,
    argv: list[str],
    value: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONFORMANCE_API_KEY", raising=False)
    monkeypatch.delenv("CONFORMANCE_SERVE_API_KEY", raising=False)
    code, text = _run_cli(argv, capsys)
    _assert_hidden(text, value)
    assert code == 2, (argv, text)
    assert text.count("\n") == 1 and "error:" in text  # one line


def _long_options(sub: argparse.ArgumentParser) -> set[str]:
    return {o for a in sub._actions for o in a.option_strings if o.startswith("--")}


def _unknown_cases() -> Iterator[Any]:
    """Options that do not exist (those a user types to pass a key) and every abbreviation of a real one."""
    for command, sub in _subparsers().items():
        real = _long_options(sub)
        unknown = {"--api-key", "--key", "--token", "--api_key", "--apikey", "--bearer", "--auth", "-k"}
        for opt in sorted(real):
            for cut in range(3, len(opt)):
                if opt[:cut] not in real:
                    unknown.add(opt[:cut])
        for opt in sorted(unknown - real):
            yield pytest.param(command, opt, id=f"{command} {opt}")


@pytest.mark.parametrize("command, option", list(_unknown_cases()))
def test_no_abbreviation_and_no_unknown_option_takes_the_key(
    command: str, option: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFORMANCE_API_KEY", raising=False)
    for argv in (_argv(command, "", option, CANARY), _argv(command, "", f"{option}={CANARY}")):
        code, text = _run_cli(argv, capsys)
        _assert_hidden(text)
        assert code == 2, (argv, text)
        assert f"{option} is not an option" in text or f"unrecognized arguments: {option} " in text, text


def test_run_api_key_says_where_the_key_goes(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run_cli(["run", "--base-url", UNREACHABLE, "--model", "m", "--api-key", CANARY], capsys)
    assert code == 2
    assert text.strip() == (
        "chat-conformance: error: --api-key is not an option: put the key in "
        "$CONFORMANCE_API_KEY (or name another variable with --api-key-env)"
    )


def test_positional_junk_is_refused_without_being_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([CANARY], ["run", CANARY], ["requirements", CANARY, "--json"], ["diff", "a", "b", CANARY]):
        code, text = _run_cli(argv, capsys)
        assert code == 2, argv
        _assert_hidden(text)


@pytest.mark.parametrize("name", [CANARY, RANDOM_CANARY, "Bearer xyz123", "my key"])
def test_api_key_env_given_a_key_says_it_takes_a_name(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for argv in (
        ["run", "--base-url", UNREACHABLE, "--model", "m", "--api-key-env", name],
        ["run", "--api-key-env", name, "--only", "core"],  # the embedded server: refused too
        ["serve", "--api-key-env", name],
    ):
        code, text = _run_cli(argv, capsys)
        assert code == 2, (argv, text)
        assert "--api-key-env takes the NAME of an environment variable, not the key itself" in text
        _assert_hidden(text, name) if len(name) >= 8 else None
        assert name not in text


def test_api_key_env_names_an_unset_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_STAGING_KEY", raising=False)
    code, text = _run_cli(
        ["run", "--base-url", UNREACHABLE, "--model", "m", "--api-key-env", "MY_STAGING_KEY"], capsys
    )
    assert code == 2
    assert "environment variable MY_STAGING_KEY is not set: export it" in text


def test_a_bad_header_error_shows_no_value(capsys: pytest.CaptureFixture[str]) -> None:
    # no colon: the value is not echoed (it is the key, typed without its header name)
    code, text = _run_cli(
        ["run", "--header", CANARY, "--only", "CORE-CONTENT-TYPE", "--report-dir", "/tmp/h21-secrets-header"],
        capsys,
    )
    assert code == 2
    _assert_hidden(text)
    assert "--header" in text


def test_every_argument_parser_in_the_repo_refuses_abbreviations() -> None:
    """Every ``argparse.ArgumentParser(...)`` of the project passes allow_abbrev=False; the CLI's _Parser
    forces it (its subcommands are _Parser too)."""
    missing = []
    for folder in ("conformance", "targets", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                    if name == "ArgumentParser" and not any(
                        k.arg == "allow_abbrev"
                        and isinstance(k.value, ast.Constant)
                        and k.value.value is False
                        for k in node.keywords
                    ):
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not missing
    parser = _build_parser()
    assert parser.allow_abbrev is False
    assert all(sub.allow_abbrev is False for sub in _subparsers().values())


def test_looks_like_secret() -> None:
    for key in (CANARY, RANDOM_CANARY, "hf_abcdefghijkl", "eyJhbGciOiJIUzI1NiJ9.e30.x", "Bearer abcdefgh"):
        assert looks_like_secret(key), key
    for word in (
        "OPENAI_API_KEY",
        "Qwen2.5-0.5B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "STREAM-DONE-SENTINEL",
        "http://127.0.0.1:8080/v1",
        "reports/run-2",
        "acme",
        "must",
    ):
        assert not looks_like_secret(word), word


# ---- a whole run: reports and console ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[Any]:
    from conformance.reference.server import start_in_thread

    server = start_in_thread(api_key=CANARY)
    try:
        yield server
    finally:
        server.stop()


def _files_text(folder: Path) -> str:
    return "\n".join(
        p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.is_file()
    )


def _curls(report: Path) -> dict[str, str]:
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    return {
        ex["label"]: Exchange.from_dict(ex).curl() for c in results["checks"] for ex in c.get("exchanges", [])
    }


def test_a_run_never_shows_the_key_and_its_curls_name_the_variable(
    keyed_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFORMANCE_API_KEY", raising=False)
    monkeypatch.setenv("MY_STAGING_KEY", CANARY)
    report = tmp_path / "r"
    code, text = _run_cli(
        [
            "run",
            "--base-url",
            keyed_server.base_url,
            "--model",
            keyed_server.model,
            "--api-key-env",
            "MY_STAGING_KEY",
            "--header",
            f"x-api-key: {CANARY}",  # the key again, in the header style a gateway wants
            "--header",
            f"X-Gateway-Token: {RANDOM_CANARY}",  # a credential under a name no list knows
            "--only",
            "auth",
            "--only",
            "CORE-CONTENT-TYPE",
            "--record",
            str(tmp_path / "run.har"),
            "--report-dir",
            str(report),
            "--progress",
            "off",
        ],
        capsys,
    )
    assert code == 0, text
    for value in (CANARY, RANDOM_CANARY):
        _assert_hidden(text, value)
        _assert_hidden(_files_text(tmp_path), value)
    curls = _curls(report)
    keyed = next(
        c for label, c in curls.items() if label not in ("wrong bearer key", "no Authorization header")
    )
    assert '-H "authorization: Bearer $MY_STAGING_KEY"' in keyed
    assert '-H "x-api-key: $MY_STAGING_KEY"' in keyed  # its own style: no Bearer
    assert "x-gateway-token: ***" in keyed
    assert "CONFORMANCE_API_KEY" not in keyed
    wrong = curls["wrong bearer key"]
    assert f"-H 'authorization: Bearer {WRONG_KEY}'" in wrong  # the wrong key the check sent
    assert "$MY_STAGING_KEY" not in wrong and "x-api-key" not in wrong
    missing = curls["no Authorization header"]
    assert "authorization" not in missing.lower() and "x-api-key" not in missing and "$" not in missing


# ---- reproducers, unit -----------------------------------------------------------------------------------


def _mock_client(**target: Any) -> Client:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    t = Target("https://api.example.test/v1", "m", limits=Limits(max_retries=0), **target)
    return Client(t, transport=httpx.MockTransport(answer))


def test_curl_sends_the_wrong_key_the_check_sent() -> None:
    with _mock_client(api_key=CANARY, api_key_env="MY_VAR") as c:
        ex = c.chat({"model": "m", "messages": []}, auth=WRONG_KEY)
    curl = ex.curl()
    assert f"'authorization: Bearer {WRONG_KEY}'" in curl
    assert "$MY_VAR" not in curl and "CONFORMANCE_API_KEY" not in curl
    assert ex.request_headers["authorization"] == "Bearer ***"  # the evidence stays masked
    _assert_hidden(curl + json.dumps(ex.to_dict()))


def test_curl_names_the_variable_the_run_read_the_key_from() -> None:
    with _mock_client(api_key=CANARY, api_key_env="MY_VAR") as c:
        ex = c.chat({"model": "m", "messages": []})
    curl = ex.curl()
    assert '-H "authorization: Bearer $MY_VAR"' in curl
    assert "CONFORMANCE_API_KEY" not in curl
    # the record keeps it: the report re-renders the same curl from results.json
    assert Exchange.from_dict(json.loads(json.dumps(ex.to_dict()))).curl() == curl
    _assert_hidden(curl + json.dumps(ex.to_dict()))


def test_curl_keeps_the_header_style_of_the_request() -> None:
    with _mock_client(api_key=CANARY, api_key_env="MY_VAR", extra_headers={"x-api-key": CANARY}) as c:
        ex = c.chat({"model": "m", "messages": []})
    assert '-H "x-api-key: $MY_VAR"' in ex.curl()
    # an older record (no credentials field): the default variable, in the request's header style
    old = Exchange(
        "x",
        "POST",
        "https://h/v1/chat/completions",
        {"x-api-key": "***", "Authorization": "Bearer ***"},
        "{}",
    )
    assert '-H "x-api-key: $CONFORMANCE_API_KEY"' in old.curl()
    assert '-H "Authorization: Bearer $CONFORMANCE_API_KEY"' in old.curl()


def test_curl_of_a_request_without_a_key_has_no_credential() -> None:
    with _mock_client(api_key=CANARY, api_key_env="MY_VAR", extra_headers={"x-api-key": CANARY}) as c:
        ex = c.chat({"model": "m", "messages": []}, auth=False)
    curl = ex.curl()
    assert "authorization" not in curl.lower() and "x-api-key" not in curl and "$" not in curl


def test_a_credential_from_a_header_that_is_not_the_key_stays_masked() -> None:
    with _mock_client(
        api_key=None, extra_headers={"x-api-key": CANARY, "X-Gateway-Token": RANDOM_CANARY}
    ) as c:
        ex = c.chat({"model": "m", "messages": []})
    curl = ex.curl()
    assert "'x-api-key: ***'" in curl and "'x-gateway-token: ***'" in curl  # to fill in: no variable held it
    assert "CONFORMANCE_API_KEY" not in curl
    _assert_hidden(curl + json.dumps(ex.to_dict()))
    _assert_hidden(curl + json.dumps(ex.to_dict()), RANDOM_CANARY)


def test_curl_quotes_a_variable_for_the_shell() -> None:
    ex = Exchange(
        "x",
        "GET",
        "https://h/v1/models",
        {"authorization": "Bearer ***"},
        None,
        credentials={"authorization": "$MY_VAR"},
    )
    assert ex.curl() == 'curl -sS -X GET https://h/v1/models -H "authorization: Bearer $MY_VAR"'
    # a name no shell variable can have is never written as one (it stays masked)
    odd = Exchange(
        "x",
        "GET",
        "https://h/v1/models",
        {"authorization": "Bearer ***"},
        None,
        credentials={"authorization": "$sk-abc;rm -rf"},
    )
    assert odd.curl().endswith("-H 'authorization: Bearer ***'")


# ---- preflight: a missing key and a wrong one, the variable named ------------------------------------------


def _preflight(server: Any, **target: Any) -> str:
    from conformance.preflight import preflight

    t = Target(server.base_url, server.model, limits=Limits(total_timeout=10.0), **target)
    with pytest.raises(TargetUnreachable) as info:
        preflight(t, wait_ready=0)
    return str(info.value)


def test_preflight_names_the_variable_of_a_refused_key(keyed_server: Any) -> None:
    message = _preflight(keyed_server, api_key="sk-not-the-key-1234567", api_key_env="MY_STAGING_KEY")
    assert "the key in $MY_STAGING_KEY was not accepted" in message and "HTTP 401" in message
    assert "sk-not-the-key" not in message and "\n" not in message


def test_preflight_tells_a_missing_key_from_a_wrong_one(keyed_server: Any) -> None:
    message = _preflight(keyed_server, api_key=None, api_key_env="MY_STAGING_KEY")
    assert "no key: $MY_STAGING_KEY is not set; export it" in message
    assert "not accepted" not in message
    default = _preflight(keyed_server, api_key=None)
    assert "no key: $CONFORMANCE_API_KEY is not set; export it" in default


def test_preflight_names_a_header_credential_by_its_name_only(keyed_server: Any) -> None:
    message = _preflight(keyed_server, api_key=None, extra_headers={"X-Api-Key": CANARY})
    assert "--header X-Api-Key" in message
    _assert_hidden(message)


def test_cli_preflight_names_the_variable(
    keyed_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_STAGING_KEY", "sk-not-the-key-1234567")
    code, text = _run_cli(
        [
            "run",
            "--base-url",
            keyed_server.base_url,
            "--model",
            keyed_server.model,
            "--api-key-env",
            "MY_STAGING_KEY",
            "--report-dir",
            str(tmp_path),
            "--wait-ready",
            "0",
        ],
        capsys,
    )
    assert code == 3
    assert "the key in $MY_STAGING_KEY was not accepted" in text
    assert "sk-not-the-key" not in text
    assert os.environ["MY_STAGING_KEY"] == "sk-not-the-key-1234567"


def test_a_base_url_with_a_password_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run_cli(["run", "--base-url", "ftp://me:hunter2secret@host/v1", "--model", "m"], capsys)
    assert code == 2
    assert "hunter2secret" not in text and "ftp://***:***@host/v1" in text


def test_a_fleet_file_with_a_key_for_its_variable_name_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        f'[[target]]\nbase_url = "{UNREACHABLE}"\nmodel = "m"\napi_key_env = "{CANARY}"\n', encoding="utf-8"
    )
    code, text = _run_cli(["run", "--fleet", str(fleet), "--report-dir", str(tmp_path / "r")], capsys)
    assert code == 2
    _assert_hidden(text)
    assert "--api-key-env takes the NAME of an environment variable" in text


def test_a_replay_names_the_variable_the_recorded_run_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay ran under a placeholder variable of its own, and its reproducers named that variable
    ($CONFORMANCE_REPLAY_API_KEY), not the one the user's run read the key from."""
    from conformance.reference.server import start_in_thread

    key = "replay-test-key-0123"
    monkeypatch.setenv("MY_STAGING_KEY", key)
    har = tmp_path / "run.har"
    with start_in_thread(api_key=key) as srv:
        code = main(["run", "--base-url", srv.base_url, "--model", srv.model,
                     "--api-key-env", "MY_STAGING_KEY", "--only", "core", "--progress", "off",
                     "--record", str(har),
                     "--report-dir", str(tmp_path / "r1")])
    assert code == 0
    monkeypatch.delenv("MY_STAGING_KEY")
    code = main(["replay", str(har), "--only", "core", "--progress", "off",
                 "--report-dir", str(tmp_path / "r2")])
    capsys.readouterr()
    assert code == 0
    assert "MY_STAGING_KEY" not in os.environ  # the placeholder stood in for the run only
    results = json.loads((tmp_path / "r2" / "results.json").read_text())
    curls = [Exchange.from_dict(ex).curl() for c in results["checks"] for ex in c["exchanges"]]
    keyed = [c for c in curls if "authorization" in c.lower()]
    assert keyed and all("$MY_STAGING_KEY" in c for c in keyed), keyed[:2]
    assert not any("CONFORMANCE_REPLAY_API_KEY" in c for c in curls)


def test_an_embedded_run_never_puts_its_key_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded server's key was written to $CONFORMANCE_API_KEY of the process (issue 22: nothing passes
    through the environment): a later run in the same process against a real target then sent it."""
    monkeypatch.delenv("CONFORMANCE_API_KEY", raising=False)
    code = main(["run", "--only", "AUTH-MISSING-KEY", "--report-dir", str(tmp_path), "--progress", "off"])
    assert code == 0
    assert "CONFORMANCE_API_KEY" not in os.environ
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["requirements"]["AUTH-MISSING-KEY"]["verdict"] == "pass"  # the run had its key all the same
