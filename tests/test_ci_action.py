"""The reusable CI integrations: the GitHub Action (`action.yml`) and the GitLab CI/CD component
(`templates/chat-conformance.yml`).

Both files are parsed; every input reaches a real `chat-conformance run` option (read from the CLI's
argparse); and their shell steps are run for real against the embedded reference server, as a runner would run
them: the job summary is written, the report folder is there to upload, and the run's exit code fails (or
passes) the job. Neither GitHub nor GitLab runs here: the `uses:` steps (setup-python, upload-artifact) and
the install step (it needs the network) are emulated; the suite comes from this checkout through a
`chat-conformance` shim.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.cli import _build_parser
from conformance.reference import start_in_thread

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
COMPONENT = ROOT / "templates" / "chat-conformance.yml"

# inputs that configure the CI job itself, not the run: each is used by the file outside the run's arguments
ACTION_ONLY = {"extra-args", "artifact-name", "python-version"}
COMPONENT_ONLY = {"extra-args", "job-name", "stage", "image", "package"}

CANARY_KEY = "sk-action-canary-7f3a"


def _run_options() -> set[str]:
    run_parser = _build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    return {opt for action in run_parser._actions for opt in action.option_strings}


def _action() -> dict[str, Any]:
    data = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _component() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = list(yaml.safe_load_all(COMPONENT.read_text(encoding="utf-8")))
    assert len(docs) == 2, "a component is a `spec:` header, `---`, then the jobs"
    return docs[0], docs[1]


def _step(action: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in action["runs"]["steps"] if s.get("id") == step_id)


def _option_of_variable(script: str) -> dict[str, str]:
    """{"CC_MODEL": "--model", ...}: the run option each variable is passed to (`--opt "$VAR"`)."""
    return {var: opt for opt, var in re.findall(r'(--[a-z][a-z-]*) "\$(CC_[A-Z_]+)"', script)}


def _input_options(variables: dict[str, str], script: str, pattern: str) -> dict[str, str]:
    """{input name: run option} through the variables (`CC_X: <input expression>`) and the script."""
    to_option = _option_of_variable(script)
    mapped = {}
    for var, expr in variables.items():
        m = re.fullmatch(pattern, str(expr).strip())
        if m and var in to_option:
            mapped[m.group(1)] = to_option[var]
    return mapped


def _check_mapping(inputs: set[str], mapped: dict[str, str], job_only: set[str], where: str) -> None:
    known = _run_options()
    for name in sorted(inputs - job_only):
        assert name in mapped, f"{where}: input {name!r} reaches no `chat-conformance run` option"
        option = mapped[name]
        assert option in known, (
            f"{where}: input {name!r} maps to {option}, which `chat-conformance run` does not have"
        )
    assert job_only <= inputs, (
        f"{where}: job-only inputs {sorted(job_only - inputs)} are gone: update the test"
    )


# ---- the files ---------------------------------------------------------------------------------------------


def test_action_is_a_composite_action_whose_inputs_are_run_options() -> None:
    action = _action()
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    for name in (
        "base-url",
        "model",
        "profile",
        "expectations",
        "level",
        "fail-on",
        "concurrency",
        "api-key-env",
        "report-dir",
    ):
        assert name in inputs, name
    for name, spec in inputs.items():
        assert spec.get("description"), f"input {name!r} has no description"
    run = _step(action, "run")
    mapped = _input_options(run["env"], run["run"], r"\$\{\{\s*inputs\.([a-z-]+)\s*\}\}")
    assert mapped["api-key-env"] == "--api-key-env"  # the key's variable NAME, never the key
    _check_mapping(set(inputs), mapped, ACTION_ONLY, "action.yml")
    for step in action["runs"]["steps"]:  # inputs reach scripts through env: only (no script injection)
        assert "${{" not in step.get("run", ""), (
            f"step {step.get('name')!r} pastes an expression in its script"
        )
    assert [n for n in inputs if "key" in n] == ["api-key-env"]  # the key itself is never an input
    assert "secrets." not in yaml.safe_dump(action["runs"])


def test_action_reports_whatever_the_verdict_and_gates_last() -> None:
    steps = _action()["runs"]["steps"]
    names = [s.get("uses", s.get("id", s.get("name"))) for s in steps]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    summary = next(s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    gate = steps[-1]
    assert upload["if"] == "always()" and summary["if"] == "always()" and gate["if"] == "always()"
    assert upload["with"]["path"] == "${{ inputs.report-dir }}"
    assert "exit" in gate["run"] and "steps.run.outputs.exit-code" in str(gate["env"]), names
    assert steps.index(summary) < steps.index(upload) < steps.index(gate)
    install = _step(_action(), "install")["run"]
    assert "pip install" in install and '"$GITHUB_ACTION_PATH"' in install  # the action's own copy


def test_gitlab_component_spec_inputs_are_run_options() -> None:
    header, jobs = _component()
    inputs = header["spec"]["inputs"]
    for name, spec in inputs.items():
        assert spec.get("description"), f"input {name!r} has no description"
    assert inputs["level"]["options"] == ["must", "should", "may"] == inputs["fail-on"]["options"]
    (job,) = jobs.values()
    script = "\n".join(job["script"])
    mapped = _input_options(job["variables"], script, r"\$\[\[\s*inputs\.([a-z-]+)\s*\]\]")
    _check_mapping(set(inputs), mapped, COMPONENT_ONLY, "templates/chat-conformance.yml")
    assert job["artifacts"]["when"] == "always"
    # the same run-facing inputs as the action, with the same defaults
    action_inputs = _action()["inputs"]
    for name in set(action_inputs) - ACTION_ONLY:
        assert name in inputs, f"the component lacks the action's input {name!r}"
        assert str(inputs[name]["default"]) == str(action_inputs[name]["default"]), name


def test_both_use_the_same_option_choices_as_the_cli() -> None:
    run_parser = _build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    choices = {a.dest: list(a.choices) for a in run_parser._actions if a.choices}
    header, _ = _component()
    assert header["spec"]["inputs"]["level"]["options"] == choices["level"]
    assert header["spec"]["inputs"]["fail-on"]["options"] == choices["fail_on"]
    action_inputs = _action()["inputs"]
    assert action_inputs["level"]["default"] in choices["level"]
    assert action_inputs["fail-on"]["default"] in choices["fail_on"]


# ---- running them ------------------------------------------------------------------------------------------


@dataclass
class Job:
    failed: bool = False
    exit_code: int | None = None  # the last step's exit code
    summary: str = ""
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    uploaded: list[Path] = field(default_factory=list)
    log: str = ""


def _shim(tmp: Path) -> Path:
    """A `chat-conformance` on PATH running this checkout (what the install step puts on a runner's PATH)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "chat-conformance"
    argv_log = tmp / "argv.log"  # what the job passed, one line per call
    shim.write_text(
        f'#!/bin/sh\necho "$*" >> "{argv_log}"\nexec "{sys.executable}" -m conformance.cli "$@"\n',
        encoding="utf-8",
    )
    shim.chmod(0o755)
    return bin_dir


def _base_env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CONFORMANCE_", "CI_"))}
    env.update(extra)
    env["PATH"] = f"{_shim(tmp)}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run_action(tmp: Path, inputs: dict[str, str], env: dict[str, str]) -> Job:
    """Run action.yml's steps as a GitHub runner would: `${{ }}` substituted, each `run:` in
    `bash --noprofile --norc -eo pipefail`, a failed step skipping the later ones unless `if: always()`."""
    action = _action()
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    values.update(inputs)
    workspace = tmp / "workspace"
    workspace.mkdir(parents=True)
    summary = tmp / "step_summary.md"
    summary.touch()
    base = _base_env(tmp, env)
    base.update(
        GITHUB_STEP_SUMMARY=str(summary),
        GITHUB_PATH=str(tmp / "github_path"),
        GITHUB_ACTION_PATH=str(ROOT),
        RUNNER_TEMP=str(tmp),
    )
    job = Job()

    def expand(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            expr = m.group(1)
            if expr.startswith("inputs."):
                return values[expr.removeprefix("inputs.")]
            step = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
            assert step, f"the emulated runner does not know the expression {expr!r}"
            return job.outputs.get(step.group(1), {}).get(step.group(2), "")

        return re.sub(r"\$\{\{\s*(.+?)\s*\}\}", one, text)

    for i, step in enumerate(action["runs"]["steps"]):
        condition = step.get("if")
        assert condition in (None, "always()"), f"the emulated runner does not know `if: {condition}`"
        if job.failed and condition != "always()":
            continue
        uses = step.get("uses", "")
        if uses.startswith("actions/setup-python@") or step.get("id") == "install":
            continue  # the Python running these tests, and the shim on PATH
        if uses.startswith("actions/upload-artifact@"):
            path = workspace / expand(step["with"]["path"])
            if path.exists():
                job.uploaded.append(path)
            continue
        assert "run" in step and step.get("shell") == "bash", f"step {i} is neither emulated nor a bash step"
        output = tmp / f"output-{i}"
        output.touch()
        step_env = {**base, "GITHUB_OUTPUT": str(output)}
        step_env.update({k: expand(str(v)) for k, v in step.get("env", {}).items()})
        script = tmp / f"step-{i}.sh"
        script.write_text(expand(step["run"]), encoding="utf-8")
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        job.log += done.stdout + done.stderr
        job.exit_code = done.returncode
        if done.returncode != 0:
            job.failed = True
        if "id" in step:
            lines = output.read_text(encoding="utf-8").splitlines()
            job.outputs[step["id"]] = dict(line.split("=", 1) for line in lines if "=" in line)
    job.summary = summary.read_text(encoding="utf-8")
    return job


@pytest.fixture(scope="module")
def clean_server() -> Any:
    with start_in_thread(api_key=CANARY_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def faulty_server() -> Any:
    with start_in_thread(api_key=CANARY_KEY, faults=("models-missing",)) as server:
        yield server


def _inputs(server: Any, **more: str) -> dict[str, str]:
    return {
        "base-url": server.base_url,
        "model": server.model,
        "api-key-env": "STAGING_KEY",
        "report-dir": "out/conformance",
        "extra-args": "--only CORE-MODELS-LIST",
        **more,
    }


def test_action_steps_pass_a_conformant_target(tmp_path: Path, clean_server: Any) -> None:
    job = _run_action(tmp_path, _inputs(clean_server, concurrency="2"), {"STAGING_KEY": CANARY_KEY})
    assert job.outputs["run"]["exit-code"] == "0", job.log
    argv = (tmp_path / "argv.log").read_text(encoding="utf-8")
    assert "--concurrency 2" in argv and "--api-key-env STAGING_KEY" in argv and CANARY_KEY not in argv
    assert not job.failed and job.exit_code == 0, job.log
    report = tmp_path / "workspace" / "out" / "conformance"
    assert job.summary == (report / "summary.md").read_text(encoding="utf-8")
    assert "CONFORMANT" in job.summary
    assert job.uploaded == [report] and (report / "report.html").is_file()
    assert CANARY_KEY not in job.log + job.summary


def test_action_steps_fail_the_job_by_the_exit_code_after_the_summary(
    tmp_path: Path, faulty_server: Any
) -> None:
    # models-missing breaks CORE-MODELS-LIST, a SHOULD: the default gate passes, fail-on should fails
    job = _run_action(tmp_path, _inputs(faulty_server), {"STAGING_KEY": CANARY_KEY})
    assert job.outputs["run"]["exit-code"] == "0" and not job.failed, job.log
    assert "CORE-MODELS-LIST" in job.summary
    job = _run_action(
        tmp_path / "strict", _inputs(faulty_server, **{"fail-on": "should"}), {"STAGING_KEY": CANARY_KEY}
    )
    assert job.outputs["run"]["exit-code"] == "1", job.log
    assert job.failed and job.exit_code == 1  # the gate, the last step
    report = tmp_path / "strict" / "workspace" / "out" / "conformance"
    assert job.summary == (report / "summary.md").read_text(encoding="utf-8")
    assert "NOT CONFORMANT" in job.summary
    assert job.uploaded == [report]
    assert CANARY_KEY not in job.log + job.summary


def test_action_steps_say_so_when_there_is_no_summary(tmp_path: Path, clean_server: Any) -> None:
    job = _run_action(tmp_path, _inputs(clean_server, profile="no-such-profile"), {"STAGING_KEY": CANARY_KEY})
    assert job.outputs["run"]["exit-code"] == "2", job.log
    assert job.failed and job.exit_code == 2
    assert "unknown profile 'no-such-profile'" in job.log
    assert job.summary.strip() == "chat-conformance wrote no summary (exit code 2): see the step's log."
    assert job.uploaded == []


def _run_component(
    tmp: Path, inputs: dict[str, str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the component's job script as a GitLab runner would (inputs interpolated, variables in the
    environment, the script in one POSIX shell), without the install line."""
    header, _ = _component()
    values = {name: str(spec.get("default", "")) for name, spec in header["spec"]["inputs"].items()}
    values.update(inputs)
    text = re.sub(
        r"\$\[\[\s*inputs\.([a-z-]+)\s*\]\]",
        lambda m: values[m.group(1)],
        COMPONENT.read_text(encoding="utf-8"),
    )
    (job,) = list(yaml.safe_load_all(text))[1].values()
    script = [line for line in job["script"] if "pip install" not in line]
    assert len(script) == len(job["script"]) - 1
    workspace = tmp / "project"
    workspace.mkdir()
    run_env = _base_env(tmp, env)
    run_env.update({k: str(v) for k, v in job["variables"].items()})
    return subprocess.run(
        ["sh", "-e", "-c", "\n".join(script)],
        cwd=workspace,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_gitlab_component_job_fails_by_the_exit_code_and_keeps_the_reports(
    tmp_path: Path, faulty_server: Any
) -> None:
    done = _run_component(
        tmp_path, _inputs(faulty_server, **{"fail-on": "should"}), {"STAGING_KEY": CANARY_KEY}
    )
    assert done.returncode == 1, done.stdout + done.stderr
    header, jobs = _component()
    (job,) = jobs.values()
    report = tmp_path / "project" / "out" / "conformance"
    assert (report / "summary.md").is_file() and (report / "junit.xml").is_file()
    artifact = job["artifacts"]["paths"][0].replace("$[[ inputs.report-dir ]]", "out/conformance")
    assert (tmp_path / "project" / artifact).resolve() == report.resolve()
    assert CANARY_KEY not in done.stdout + done.stderr


def test_docs_and_readme_use_the_action_and_the_component_with_real_inputs() -> None:
    docs = ROOT / "docs" / "ci"
    text = (docs / "README.md").read_text(encoding="utf-8")
    assert "`action.yml`" in text and "`templates/chat-conformance.yml`" in text
    action_inputs = set(_action()["inputs"])
    workflow = yaml.safe_load((docs / "github-actions.yml").read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    (step,) = [s for s in job["steps"] if str(s.get("uses", "")).endswith("/chat-conformance@v1")]
    assert set(step["with"]) <= action_inputs, sorted(set(step["with"]) - action_inputs)
    assert step["with"]["api-key-env"] in step["env"]  # the named variable is set, from a secret
    header, _ = _component()
    include = yaml.safe_load((docs / "gitlab-ci.yml").read_text(encoding="utf-8"))["include"]
    (component,) = [c for c in include if str(c.get("component", "")).endswith("/chat-conformance@v1")]
    assert set(component["inputs"]) <= set(header["spec"]["inputs"])
    # README: the first two commands stay first and unchanged; the action's three lines follow them
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(\w+)\n(.*?)```", readme, flags=re.S)
    assert blocks[0][0] == "sh" and blocks[0][1].startswith(
        "python -m pip install -e . && chat-conformance run"
    )
    assert len(blocks[0][1].strip().splitlines()) == 2
    assert blocks[1][0] == "yaml" and len(blocks[1][1].strip().splitlines()) == 3
    (usage,) = yaml.safe_load(blocks[1][1])
    assert usage["uses"].endswith("/chat-conformance@v1") and set(usage["with"]) <= action_inputs
    assert readme.index(blocks[1][1]) < readme.index("# chat-conformance")
