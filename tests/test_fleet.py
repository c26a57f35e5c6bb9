"""A fleet in one run: ``run --model A --model B`` and ``run --fleet FLEET.toml`` judge each model in turn,
write ``DIR/<model>/`` and the matrix, and exit with the worst exit code; fleet file mistakes exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conformance.cli import EXIT_USAGE, main
from conformance.errors import UsageError
from conformance.fleet import EXIT_SEVERITY, FleetTarget, folder_names, load_fleet, safe_name, worst_exit
from conformance.reference.server import start_in_thread

SMALL = ["--only", "core"]  # the matrix needs no more than one capability judged per model


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text(encoding="utf-8"))


def test_two_models_on_the_reference_server_give_two_folders_and_a_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports"
    code = main(["run", "--embedded", "--model", "alpha", "--model", "org/beta:q4", *SMALL,
                 "--report-dir", str(out)])
    assert code == 0
    console = "".join(capsys.readouterr())
    assert "PytestAssertRewriteWarning" not in console  # the second run in one process: no noise
    assert "fleet exit 0 (the worst of its models)" in console
    for folder, model in (("alpha", "alpha"), ("org_beta_q4", "org/beta:q4")):
        for name in ("results.json", "summary.md", "report.html", "junit.xml"):
            assert (out / folder / name).is_file(), f"{folder}/{name}"
        res = _results(out / folder)
        assert res["target"]["model"] == model  # each embedded server served the model asked for
        assert res["requirements"]["CORE-MODEL-MATCHES"]["verdict"] == "pass"
        assert res["exit_code"] == 0
    md = (out / "matrix.md").read_text(encoding="utf-8")
    assert md.startswith("| capability | alpha @ ") and "| org/beta:q4 @ " in md
    assert re.search(r"^\| core \| (\d+)/\1 ✅ \| \1/\1 ✅ \|$", md, re.M), md
    self_test = "**CONFORMANT (self-test: embedded reference server)**"
    assert md.rstrip().endswith(f"| **verdict** | {self_test} | {self_test} |")
    html = (out / "matrix.html").read_text(encoding="utf-8")
    assert "2 target(s)" in html and "org/beta:q4" in html


def test_a_fleet_file_exits_with_the_worst_code_and_every_model_has_a_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one target not conformant (exit 1), one unreachable (exit 3): the fleet exits 3
    with start_in_thread(model_name="beta", faults=("role-wrong",)) as faulty:
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(
            f'[[target]]\nbase_url = "{faulty.base_url}"\nmodel = "beta"\nprofile = "openai"\n\n'
            '[[target]]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "gone"\n',
            encoding="utf-8",
        )
        out = tmp_path / "reports"
        stale = out / "gone" / "results.json"  # an earlier run's results never stand for this one
        stale.parent.mkdir(parents=True)
        stale.write_text('{"exit_code": 0}', encoding="utf-8")
        code = main(["run", "--fleet", str(fleet), *SMALL, "--timeout", "3", "--report-dir", str(out)])
    assert code == 3
    beta = _results(out / "beta")
    assert beta["exit_code"] == 1 and beta["profile"] == "openai"
    assert beta["requirements"]["CORE-MESSAGE-ROLE"]["verdict"] == "fail"
    assert not stale.exists()
    md = (out / "matrix.md").read_text(encoding="utf-8")
    assert "| gone @ http://127.0.0.1:9/v1 (seed, ?) |" in md
    assert "**NOT JUDGED (exit 3: unreachable)**" in md
    err = capsys.readouterr().err
    assert (
        "beta @ " in err
        and "exit 1 (not conformant)" in err
        and "gone @ http://127.0.0.1:9/v1: exit 3" in err
    )
    assert "fleet exit 3 (the worst of its models)" in err


@pytest.mark.parametrize(
    "codes, worst",
    [
        ([], 0),
        ([0, 0], 0),
        ([0, 1, 0], 1),
        ([1, 3], 3),
        ([3, 4, 1], 4),
        ([4, 2, 3], 2),
        ([0, 7], 4),  # a code the suite never gives counts as an internal error
    ],
)
def test_the_worst_exit_code(codes: list[int], worst: int) -> None:
    assert worst_exit(codes) == worst
    assert EXIT_SEVERITY == (130, 143, 2, 4, 3, 5, 1, 0)


def test_folder_names_are_safe_and_distinct() -> None:
    assert safe_name("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama_Llama-3.1-8B-Instruct"
    assert safe_name("..") == "model" and safe_name("a b:c") == "a_b_c" and len(safe_name("x" * 300)) == 100
    targets = [
        FleetTarget("m", "http://a/v1"),
        FleetTarget("m", "http://b/v1"),
        FleetTarget("M"),
        FleetTarget("org/x"),
        FleetTarget("org_x"),
    ]
    assert folder_names(targets) == ["m", "m-2", "M-3", "org_x", "org_x-2"]


def _fleet(tmp_path: Path, text: str) -> str:
    p = tmp_path / "fleet.toml"
    p.write_text(text, encoding="utf-8")
    return str(p)


OK = '[[target]]\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "m"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[target]\n", "is not valid TOML ("),
        ("", "lists no targets: add [[target]] tables with base_url and model"),
        ('name = "x"\n' + OK, "unknown key 'name': the file holds [[target]] tables only"),
        ('target = "x"\n', "'target' must be an array of tables: write each one as [[target]]"),
        (
            OK + 'modle = "x"\n',
            "target 1: unknown key 'modle': use base_url, model, profile, expectations, api_key_env",
        ),
        (
            OK + '[[target]]\nbase_url = "http://127.0.0.1:1/v1"\n',
            'target 2: missing model: add model = "NAME"',
        ),
        ('[[target]]\nmodel = "m"\n', 'target 1 (m): missing base_url: add base_url = "https://HOST/v1"'),
        (
            '[[target]]\nmodel = "m"\nbase_url = "ftp://x"\n',
            "target 1 (m): base_url 'ftp://x' is not an http(s) URL: give e.g.",
        ),
        (
            '[[target]]\nmodel = "m"\nbase_url = "http://h/v1/chat/completions"\n',
            "base_url must end before /chat/completions",
        ),
        ('[[target]]\nmodel = 3\nbase_url = "http://h/v1"\n', "target 1: model must be a non-empty string"),
    ],
)
def test_fleet_file_mistakes_are_one_line_usage_errors(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _fleet(tmp_path, text)
    with pytest.raises(UsageError, match=None) as exc:
        load_fleet(path)
    assert message in str(exc.value) and f"fleet file {path}" in str(exc.value)
    assert main(["run", "--fleet", path, "--report-dir", str(tmp_path / "r")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()  # nothing ran


def test_a_missing_fleet_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--fleet", "/nonexistent/fleet.toml"]) == EXIT_USAGE
    assert (
        "cannot read fleet file /nonexistent/fleet.toml (No such file or directory)"
        in capsys.readouterr().err
    )


def test_relative_files_are_read_beside_the_fleet_file(tmp_path: Path) -> None:
    path = _fleet(tmp_path, OK + 'profile = "p/mine.toml"\nexpectations = "w.toml"\napi_key_env = "K"\n')
    (t,) = load_fleet(path)
    assert t == FleetTarget(
        "m", "http://127.0.0.1:1/v1", str(tmp_path / "p/mine.toml"), str(tmp_path / "w.toml"), "K"
    )
    (t,) = load_fleet(_fleet(tmp_path, OK + 'profile = "openai"\n'))
    assert t.profile == "openai"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--fleet", "f.toml", "--model", "m"],
            "--fleet lists the targets and their models: drop --model and --base-url, or drop --fleet",
        ),
        (["--model", "a", "--model", "a"], "--model 'a' is given twice: give each model of the fleet once"),
        (
            ["--model", "a", "--model", "b", "--fault", "nope"],
            "target 1 (a @ the embedded reference server): unknown fault 'nope'",
        ),
        (
            [
                "--base-url",
                "http://127.0.0.1:1/v1",
                "--model",
                "a",
                "--model",
                "b",
                "--api-key-env",
                "NO_SUCH_VAR_XYZ",
            ],
            "target 1 (a @ http://127.0.0.1:1/v1): environment variable NO_SUCH_VAR_XYZ is not set",
        ),
    ],
)
def test_fleet_usage_errors_name_the_target_and_run_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", *argv, "--report-dir", str(tmp_path / "r")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_a_target_without_its_key_variable_stops_the_fleet_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLEET_KEY_XYZ", raising=False)
    path = _fleet(
        tmp_path,
        OK + '\n[[target]]\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "n"\napi_key_env = "FLEET_KEY_XYZ"\n',
    )
    assert main(["run", "--fleet", path, "--report-dir", str(tmp_path / "r")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "target 2 (n @ http://127.0.0.1:1/v1): environment variable FLEET_KEY_XYZ is not set" in err
