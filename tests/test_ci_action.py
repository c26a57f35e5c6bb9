"""The reusable CI integrations: the GitHub Action (`action.yml`) and the GitLab CI/CD component
(`templates/chat-conformance.yml`).

Both files are parsed; every input reaches a real `chat-conformance run` option (read from the CLI's
argparse); and their shell steps are run for real against a reference server at a base URL, as a runner would
run them: the job summary is written, the report folder is there to upload, and the run's exit code fails (or
passes) the job. Neither GitHub nor GitLab runs here: the `uses:` steps (setup-python, upload-artifact) and
the install step (it needs the network) are emulated; the suite comes from this checkout through a
`chat-conformance` shim. A misconfigured job (an empty base-url or model) exits 2 naming the input and never
runs the suite; a failed install exits 4, never 1 (pip run for real, failing on a folder that is no project).
The CI samples install nothing unpublished and use the default concurrency. tests/test_packaging.py runs the
real installs (slow).
"""

from __future__ import annotations

import fnmatch
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
COMPONENT_ONLY = {"extra-args", "job-name", "stage", "image", "package", "project"}

CANARY_KEY = "sk-action-canary-7f3a"
COMPONENT_SHA = "0123456789abcdef0123456789abcdef01234567"  # what GitLab puts in $[[ component.sha ]]
GITLAB_URL = "https://gitlab.example.com"  # $CI_SERVER_URL


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
    """{"CC_MODEL": "--model", ...}: the run option each variable is passed to (`--opt "$VAR"`), or the switch
    it turns on (`if [ "$VAR" = true ]; then ... --switch`)."""
    mapped = {var: opt for opt, var in re.findall(r'(--[a-z][a-z-]*) "\$(CC_[A-Z_]+)"', script)}
    switches = re.findall(r'\[ "\$(CC_[A-Z_]+)" = true \]; then [^;\n]*?(--[a-z][a-z-]*)', script)
    mapped.update(dict(switches))
    return mapped


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
        assert _default(inputs[name]) == _default(action_inputs[name]), name


def _default(spec: dict[str, Any]) -> str:
    """An input's default as the runner pastes it (a YAML boolean as true/false)."""
    value = spec.get("default", "")
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_the_embedded_server_is_an_explicit_opt_in_of_both() -> None:
    """An empty base-url is never "run the embedded server": only self-test: true asks for it (--embedded)."""
    action = _action()
    assert _default(action["inputs"]["self-test"]) == "false"
    assert _default(action["inputs"]["base-url"]) == ""
    run = _step(action, "run")
    assert _option_of_variable(run["run"])["CC_SELF_TEST"] == "--embedded"
    assert run["env"]["CC_SELF_TEST"] == "${{ inputs.self-test }}"
    header, jobs = _component()
    assert header["spec"]["inputs"]["self-test"]["type"] == "boolean"
    (job,) = jobs.values()
    assert _option_of_variable("\n".join(job["script"]))["CC_SELF_TEST"] == "--embedded"
    # the input check comes first: nothing is installed for a misconfigured job
    steps = action["runs"]["steps"]
    assert steps[0].get("id") == "inputs" and "exit 2" in steps[0]["run"]
    assert "exit 2" in job["script"][0] and "pip install" not in job["script"][0]


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
    step_codes: dict[str, int] = field(default_factory=dict)  # every step that ran: id (or name) -> exit code
    summary: str = ""
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    action_outputs: dict[str, str] = field(default_factory=dict)  # the action's own outputs (outputs: value:)
    uploaded: list[Path] = field(default_factory=list)
    log: str = ""


def _shim(tmp: Path) -> Path:
    """A `chat-conformance` on PATH running this checkout (what the install step puts on a runner's PATH), and
    `python` as the interpreter running these tests (what setup-python, or the job's image, puts there)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "chat-conformance"
    argv_log = tmp / "argv.log"  # what the job passed, one line per call
    shim.write_text(
        f'#!/bin/sh\necho "$*" >> "{argv_log}"\nexec "{sys.executable}" -m conformance.cli "$@"\n',
        encoding="utf-8",
    )
    shim.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    return bin_dir


def _base_env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CONFORMANCE_", "CI_"))}
    env.update(extra)
    env["PATH"] = f"{_shim(tmp)}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run_action(
    tmp: Path, inputs: dict[str, str], env: dict[str, str], action_path: Path | None = None
) -> Job:
    """Run action.yml's steps as a GitHub runner would: `${{ }}` substituted, each `run:` in
    `bash --noprofile --norc -eo pipefail`, a failed step skipping the later ones unless `if: always()`.
    The install step is emulated (the shim) unless `action_path` is given: then it runs for real, installing
    from that folder as `$GITHUB_ACTION_PATH`."""
    action = _action()
    values = {name: _default(spec) for name, spec in action["inputs"].items()}
    values.update(inputs)
    workspace = tmp / "workspace"
    workspace.mkdir(parents=True)
    summary = tmp / "step_summary.md"
    summary.touch()
    base = _base_env(tmp, env)
    base.update(
        GITHUB_STEP_SUMMARY=str(summary),
        GITHUB_PATH=str(tmp / "github_path"),
        GITHUB_ACTION_PATH=str(action_path or ROOT),
        RUNNER_TEMP=str(tmp),
    )
    job = Job()

    def evaluate(expr: str) -> str:
        """`inputs.x`, `steps.id.outputs.y`, and `a || b || ...` (the first that is not empty)."""
        for part in (p.strip() for p in expr.split("||")):
            if part.startswith("inputs."):
                value = values[part.removeprefix("inputs.")]
            else:
                step = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", part)
                assert step, f"the emulated runner does not know the expression {part!r}"
                value = job.outputs.get(step.group(1), {}).get(step.group(2), "")
            if value:
                return value
        return ""

    def expand(text: str) -> str:
        return re.sub(r"\$\{\{\s*(.+?)\s*\}\}", lambda m: evaluate(m.group(1)), text)

    for i, step in enumerate(action["runs"]["steps"]):
        condition = step.get("if")
        assert condition in (None, "always()"), f"the emulated runner does not know `if: {condition}`"
        if job.failed and condition != "always()":
            continue
        uses = step.get("uses", "")
        if uses.startswith("actions/setup-python@"):
            continue  # the Python running these tests (`python` in the shim's folder)
        if step.get("id") == "install" and action_path is None:
            continue  # the shim on PATH
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
        job.step_codes[step.get("id", step.get("name", str(i)))] = done.returncode
        if done.returncode != 0:
            job.failed = True
        if "id" in step:
            lines = output.read_text(encoding="utf-8").splitlines()
            job.outputs[step["id"]] = dict(line.split("=", 1) for line in lines if "=" in line)
    job.summary = summary.read_text(encoding="utf-8")
    job.action_outputs = {name: expand(str(spec["value"])) for name, spec in action["outputs"].items()}
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
    tmp: Path, inputs: dict[str, str], env: dict[str, str], install: str = "skip"
) -> subprocess.CompletedProcess[str]:
    """Run the component's job script as a GitLab runner would (inputs and the component context
    interpolated, variables in the environment, the script in one POSIX shell). `install`: "skip" drops the
    install item (the shim on PATH); "record" runs it with a `python` that writes the pip command to pip.log
    and succeeds (what would be installed, no network); "real" runs it with this interpreter's pip."""
    header, _ = _component()
    values = {name: _default(spec) for name, spec in header["spec"]["inputs"].items()}
    values.update(inputs)
    declared = set(header["spec"].get("component", []))

    def interpolate(m: re.Match[str]) -> str:
        context, name = m.group(1), m.group(2)
        if context == "inputs":
            return values[name]
        assert name in declared, f"$[[ component.{name} ]] is used but not declared in spec: component:"
        return {"sha": COMPONENT_SHA}[name]

    text = re.sub(
        r"\$\[\[\s*(inputs|component)\.([a-z_-]+)\s*\]\]", interpolate, COMPONENT.read_text(encoding="utf-8")
    )
    (job,) = list(yaml.safe_load_all(text))[1].values()
    script = list(job["script"])
    (install_item,) = [item for item in script if "pip install" in item]
    if install == "skip":
        script.remove(install_item)
    workspace = tmp / "project"
    workspace.mkdir()
    run_env = _base_env(tmp, env)
    if install == "record":
        python = tmp / "bin" / "python"
        python.unlink()
        python.write_text(
            f'#!/bin/sh\nif [ "$1 $2" = "-m pip" ]; then echo "$*" >> "{tmp / "pip.log"}"; exit 0; fi\n'
            f'exec "{sys.executable}" "$@"\n',
            encoding="utf-8",
        )
        python.chmod(0o755)
    run_env["CI_SERVER_URL"] = GITLAB_URL
    run_env.update({k: str(v) for k, v in job["variables"].items()})
    return subprocess.run(
        ["sh", "-e", "-c", "\n".join(script)],
        cwd=workspace,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _component_inputs(server: Any, **more: str) -> dict[str, str]:
    return _inputs(server, **{"project": "my-group/chat-conformance", **more})


def test_gitlab_component_job_fails_by_the_exit_code_and_keeps_the_reports(
    tmp_path: Path, faulty_server: Any
) -> None:
    done = _run_component(
        tmp_path, _component_inputs(faulty_server, **{"fail-on": "should"}), {"STAGING_KEY": CANARY_KEY}
    )
    assert done.returncode == 1, done.stdout + done.stderr
    header, jobs = _component()
    (job,) = jobs.values()
    report = tmp_path / "project" / "out" / "conformance"
    assert (report / "summary.md").is_file() and (report / "junit.xml").is_file()
    artifact = job["artifacts"]["paths"][0].replace("$[[ inputs.report-dir ]]", "out/conformance")
    assert (tmp_path / "project" / artifact).resolve() == report.resolve()
    assert CANARY_KEY not in done.stdout + done.stderr


# ---- a misconfigured job, a failed install ----------------------------------------------------------------

# (inputs over a well-configured job's, the input the one-line error must name)
MISCONFIGURED = [
    pytest.param({"base-url": ""}, "input base-url", id="empty-base-url"),
    pytest.param({"base-url": "$STAGING_BASE_URL"}, "input base-url", id="unexpanded-base-url"),
    pytest.param({"model": ""}, "input model", id="empty-model"),
    pytest.param({"self-test": "true"}, "inputs base-url and self-test", id="self-test-and-base-url"),
]


def _one_error_line(log: str, marker: str = "chat-conformance: ") -> str:
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) == 1, log
    return lines[0]


@pytest.mark.parametrize(
    ("inputs", "named"),
    [*MISCONFIGURED, pytest.param({"self-test": "yes"}, "input self-test", id="self-test-not-a-boolean")],
)
def test_action_misconfigured_exits_2_naming_the_input_and_runs_nothing(
    tmp_path: Path, clean_server: Any, inputs: dict[str, str], named: str
) -> None:
    """An unset variable or a fork's pull request without secrets never runs anything green: exit 2, one line
    naming the input, nothing installed (the action's folder here is none: an install would exit 4)."""
    job = _run_action(
        tmp_path, _inputs(clean_server, **inputs), {"STAGING_KEY": CANARY_KEY}, action_path=tmp_path / "none"
    )
    assert job.step_codes["inputs"] == 2, job.log
    assert "install" not in job.step_codes and "run" not in job.step_codes
    assert not (tmp_path / "argv.log").exists()  # the suite never ran, not even against the embedded server
    assert job.failed and job.exit_code == 2 and job.action_outputs["exit-code"] == "2"
    line = _one_error_line(job.log)
    assert line.startswith("::error") and named in line, line
    assert job.summary.strip() == "chat-conformance wrote no summary (exit code 2): see the step's log."
    assert job.uploaded == []


def test_action_self_test_judges_the_embedded_server_only_when_asked(tmp_path: Path) -> None:
    job = _run_action(tmp_path, {"self-test": "true", "extra-args": "--only CORE-MODELS-LIST"}, {})
    assert job.step_codes["run"] == 0 and job.exit_code == 0, job.log
    assert job.action_outputs["exit-code"] == "0"
    argv = (tmp_path / "argv.log").read_text(encoding="utf-8")
    assert "--embedded" in argv and "--base-url" not in argv


def test_action_failed_install_exits_4_never_1(tmp_path: Path, clean_server: Any) -> None:
    """pip run for real on a folder that is no Python project: exit 4 (the suite could not run), never 1."""
    checkout = tmp_path / "not-a-project"
    checkout.mkdir()
    job = _run_action(tmp_path, _inputs(clean_server), {"STAGING_KEY": CANARY_KEY}, action_path=checkout)
    assert job.step_codes["install"] == 4, job.log
    assert 1 not in job.step_codes.values(), job.step_codes
    assert "run" not in job.step_codes and not (tmp_path / "argv.log").exists()
    assert job.exit_code == 4 and job.action_outputs["exit-code"] == "4"
    assert "could not be installed" in _one_error_line(job.log, "::error")
    assert job.summary.strip() == "chat-conformance wrote no summary (exit code 4): see the step's log."


@pytest.mark.parametrize(
    ("inputs", "named"),
    [*MISCONFIGURED, pytest.param({"project": ""}, "input project", id="no-project")],
)
def test_gitlab_component_misconfigured_exits_2_naming_the_input_and_runs_nothing(
    tmp_path: Path, clean_server: Any, inputs: dict[str, str], named: str
) -> None:
    done = _run_component(
        tmp_path, _component_inputs(clean_server, **inputs), {"STAGING_KEY": CANARY_KEY}, install="record"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in _one_error_line(done.stderr)
    assert not (tmp_path / "pip.log").exists() and not (tmp_path / "argv.log").exists()


def test_gitlab_component_installs_from_its_own_project_at_the_included_commit(
    tmp_path: Path, clean_server: Any
) -> None:
    done = _run_component(
        tmp_path, _component_inputs(clean_server), {"STAGING_KEY": CANARY_KEY}, install="record"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (pip,) = (tmp_path / "pip.log").read_text(encoding="utf-8").splitlines()
    assert pip.split()[-1] == f"git+{GITLAB_URL}/my-group/chat-conformance.git@{COMPONENT_SHA}", pip
    # `package` replaces it (a private mirror, with the job token)
    other = "git+https://mirror.example.com/tools/chat-conformance.git@v1"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    inputs = _component_inputs(clean_server, package=other, project="")
    done = _run_component(mirror, inputs, {"STAGING_KEY": CANARY_KEY}, install="record")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (mirror / "pip.log").read_text(encoding="utf-8").split()[-1] == other


def test_gitlab_component_failed_install_exits_4_never_1(tmp_path: Path, clean_server: Any) -> None:
    """pip run for real on a folder that is no Python project: exit 4 (the suite could not run), never 1."""
    checkout = tmp_path / "not-a-project"
    checkout.mkdir()
    done = _run_component(
        tmp_path,
        _component_inputs(clean_server, package=str(checkout)),
        {"STAGING_KEY": CANARY_KEY},
        install="real",
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "could not be installed" in _one_error_line(done.stderr)
    assert not (tmp_path / "argv.log").exists()


# ---- the documents ----------------------------------------------------------------------------------------


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
    # the project the job installs from is the one of the include line (…/<project>/chat-conformance@v1)
    project = str(component["component"]).split("/", 1)[1].rsplit("/", 1)[0]
    assert component["inputs"]["project"] == project
    for sample in (step["with"], component["inputs"]):  # a real target: never the embedded server
        assert sample["base-url"] and sample["model"] and "self-test" not in sample
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


def _repository_text_files() -> list[Path]:
    """Every file of the repository a reader could copy an install line from (tracked, or new unignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file
        files = [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    texts = {".md", ".yml", ".yaml", ".toml", ".py", ".sh", ".ini", ".txt", ".cfg", ""}
    return [p for p in files if p.is_file() and p.suffix in texts and "snapshots" not in p.parts]


_INSTALL = re.compile(r"\b(?:pip3?|pipx|uv pip|uv tool)\s+install\b([^\n]*)")
_PUBLISHED_NAME = re.compile(r"chat[-_.]conformance(\[[^\]]*\])?\s*([<>=!~]=?.*)?", re.I)


def _installs_by_name(line: str) -> list[str]:
    """The requirements of an install command on this line that name the package on an index (not a path,
    URL or git reference): `pip install chat-conformance`, `"chat-conformance[x]>=1"`, ..."""
    found = []
    for m in _INSTALL.finditer(line):
        command = re.split(r"&&|\|\||[;|#]", m.group(1))[0]
        for token in command.split():
            token = token.strip("\"'`")
            if not token.startswith("-") and _PUBLISHED_NAME.fullmatch(token):
                found.append(m.group(0).strip())
    return found


def test_the_install_check_finds_what_it_is_for() -> None:
    for line in (
        "python -m pip install chat-conformance",
        '  - run: pip install --quiet "chat-conformance>=0.1" && chat-conformance run',
        "pip install -U chat_conformance[test]",
        "pipx install chat-conformance",
    ):
        assert _installs_by_name(line), line
    for line in (
        'python -m pip install "git+https://github.com/<owner>/chat-conformance@v1" || exit 4',
        'pip install "$GITHUB_ACTION_PATH"',
        "python -m pip install -e . && chat-conformance run",
        "pip install dist/chat_conformance-0.1.0-py3-none-any.whl",
    ):
        assert not _installs_by_name(line), line


def test_no_document_installs_the_unpublished_name() -> None:
    """No README, recipe, action or component installs `chat-conformance` from a package index: the name is
    not published (a failed install, and an unclaimed name beside a staging key)."""
    offenders = []
    for path in _repository_text_files():
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if path.name != "test_ci_action.py" and _installs_by_name(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    header, _ = _component()
    assert not _PUBLISHED_NAME.fullmatch(str(header["spec"]["inputs"]["package"]["default"]))
    install = _step(_action(), "install")["run"]
    assert re.search(r'pip install [^\n]*"\$GITHUB_ACTION_PATH"\s*;', install), install


_WORKERS = re.compile(r"(?<![\w-])(?:-n|--numprocesses)(?:\s+|=)(?:\d+|auto|logical|N)\b")


def _ci_samples() -> dict[str, str]:
    """Every CI sample: the docs/ci files, the action and the component (descriptions and examples
    included), and the README's code lines that run the suite or configure the action."""
    docs = sorted((ROOT / "docs" / "ci").iterdir())
    samples = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in docs}
    samples["action.yml"] = ACTION.read_text(encoding="utf-8")
    samples["templates/chat-conformance.yml"] = COMPONENT.read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = [
        line
        for lang, block in re.findall(r"```(\w*)\n(.*?)```", readme, flags=re.S)
        for line in block.splitlines()
        if lang in ("yaml", "yml") or "chat-conformance" in line
    ]
    samples["README.md (code)"] = "\n".join(code)
    return samples


def test_ci_samples_use_the_default_concurrency() -> None:
    """`-n N` (pytest-xdist workers, one request at a time each) makes a latency-bound run slower than the
    default concurrency: no CI sample or extra-args example uses it."""
    assert _WORKERS.search("extra-args: -n 4 --rate-limit 5") and _WORKERS.search("run --numprocesses=auto")
    assert not _WORKERS.search("--rate-limit 5 --max-requests 4000 --concurrency 8")
    offenders = [
        f"{name}: {line.strip()}"
        for name, text in _ci_samples().items()
        for line in text.splitlines()
        if _WORKERS.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_release_workflow_builds_and_publishes_with_trusted_publishing() -> None:
    """For the day the name is claimed: on a version tag, `python -m build`, then PyPI's trusted publishing
    (an OIDC token, `id-token: write`), never a password or token secret."""
    path = ROOT / ".github" / "workflows" / "release.yml"
    text = path.read_text(encoding="utf-8")
    workflow = yaml.safe_load(text)
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    tags = trigger["push"]["tags"]
    assert set(trigger) == {"push"} and tags and all(t.startswith("v") for t in tags)
    assert any(fnmatch.fnmatchcase("v0.1.0", t) for t in tags)
    assert not any(
        fnmatch.fnmatchcase("v1", t) for t in tags
    )  # the action's moving major tag never publishes
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    (build,) = [j for j in jobs.values() if any("python -m build" in s.get("run", "") for s in j["steps"])]
    (publish,) = [
        j
        for j in jobs.values()
        if any(str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish@") for s in j["steps"])
    ]
    assert publish is not build and publish["needs"] in ("build", ["build"]) and jobs["build"] is build
    assert publish["permissions"] == {"id-token": "write"}  # trusted publishing, and nothing else
    assert build["permissions"] == {"contents": "read"}
    (step,) = [
        s for s in publish["steps"] if str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish@")
    ]
    assert not {"password", "user", "api-token"} & set(step.get("with") or {})
    assert "secrets." not in text and "PYPI_TOKEN" not in text.upper()
    # the tag must be the version in pyproject.toml
    check = next(
        s for s in build["steps"] if "GITHUB_REF_NAME" in s.get("run", "") or "TAG" in s.get("env", {})
    )
    assert "pyproject.toml" in check["run"] and '"v$version"' in check["run"]
    uploaded = next(
        s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")
    )
    downloaded = next(
        s for s in publish["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact@")
    )
    assert uploaded["with"]["name"] == downloaded["with"]["name"] and uploaded["with"]["path"] == "dist/"
