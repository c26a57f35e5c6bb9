"""The package as a user gets it, never from this checkout.

`python -m build` makes an sdist and a wheel (the wheel built from the sdist: the sdist holds all it needs);
the wheel installs in a fresh virtual environment (without the system's site-packages) and runs from there,
outside the checkout: `--help`, `requirements`, and a core run against the embedded reference server judged
from the wheel's own copy of spec/ (same spec hash as the checkout) with its report templates. The install
lines of the CI integrations work too, each in a fresh virtual environment: the action's (from its own
checkout, `$GITHUB_ACTION_PATH`) and the component's (`git+$CI_SERVER_URL/<project>.git@<component.sha>`,
here a local git repository made from the sdist).

Slow (marked `slow`, about a minute: three installs with their dependencies from the package index or pip's
cache); `-m "not slow"` leaves it out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from conformance.specfiles import load_yaml, spec_dir, spec_hash

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
COMPONENT = ROOT / "templates" / "chat-conformance.yml"
NAME = "chat_conformance"

# read at run time beside the modules (the checkout's paths; in the wheel, under conformance/)
RUNTIME_DATA = [
    "spec/requirements.yaml",
    "spec/openapi.yaml",
    "spec/results.schema.json",
    "spec/requirements.schema.json",
    "spec/profiles/seed.toml",
    "spec/profiles/openai.toml",
    "conformance/reports/templates/report.html.j2",
    "conformance/reports/templates/matrix.html.j2",
    "conformance/reports/templates/_style.css",
    "conformance/checks/pytest.ini",
]


def _clean_env(**more: str) -> dict[str, str]:
    """This environment without what would let an installed copy import this checkout instead."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith(("CONFORMANCE_", "CI_"))
    }
    env.update(more)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _venv(path: Path) -> Path:
    """A fresh virtual environment (no system site-packages); its bin folder."""
    _run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    bin_dir = path / "bin"
    cfg = (path / "pyvenv.cfg").read_text(encoding="utf-8")
    assert re.search(r"include-system-site-packages\s*=\s*false", cfg), cfg
    return bin_dir


def _pip_install(bin_dir: Path, what: str, cwd: Path) -> None:
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, what], cwd)


def _assert_runs_from(bin_dir: Path, where: Path) -> None:
    """The venv's chat-conformance is its own installed copy, never this checkout."""
    code = "import conformance, conformance.specfiles as s; print(conformance.__file__); print(s.spec_dir())"
    module, spec = _run([str(bin_dir / "python"), "-c", code], cwd=where).splitlines()
    venv = bin_dir.parent.resolve()
    assert Path(module).resolve().is_relative_to(venv), module
    assert Path(spec).resolve().is_relative_to(venv), spec
    assert "usage: chat-conformance" in _run([str(bin_dir / "chat-conformance"), "--help"], cwd=where)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out, timeout=300)
    return out


def _one(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


def test_the_sdist_holds_the_spec_and_the_templates(dist: Path) -> None:
    sdist = _one(dist, f"{NAME}-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    spec_files = [p.relative_to(ROOT).as_posix() for p in spec_dir().rglob("*") if p.is_file()]
    assert spec_dir() == ROOT / "spec" and spec_files
    missing = sorted({*RUNTIME_DATA, *spec_files, "pyproject.toml", "README.md"} - names)
    assert not missing, f"the sdist lacks {missing}"


def test_the_wheel_installs_in_a_fresh_venv_and_runs_from_its_own_data(dist: Path, tmp_path: Path) -> None:
    wheel = _one(dist, f"{NAME}-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    in_wheel = [f"conformance/{p}" if p.startswith("spec/") else p for p in RUNTIME_DATA]
    assert not sorted(set(in_wheel) - names), sorted(set(in_wheel) - names)
    bin_dir = _venv(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing there to import by accident
    elsewhere.mkdir()
    _pip_install(bin_dir, str(wheel), cwd=elsewhere)
    _assert_runs_from(bin_dir, elsewhere)
    cli = str(bin_dir / "chat-conformance")
    listed = _run([cli, "requirements"], cwd=elsewhere)
    ids = [r["id"] for r in load_yaml("requirements.yaml")["requirements"]]
    assert ids and all(re.search(rf"^{re.escape(i)}\s", listed, flags=re.M) for i in ids), listed[:2000]
    report = tmp_path / "report"
    _run([cli, "run", "--embedded", "--only", "core", "--report-dir", str(report)], cwd=elsewhere)
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    assert results["exit_code"] == 0
    assert results["spec_hash"] == spec_hash()  # the wheel's spec/ is the checkout's
    assert results["counts"] and (report / "junit.xml").is_file() and (report / "summary.md").is_file()
    assert "<html" in (report / "report.html").read_text(encoding="utf-8").lower()  # the wheel's templates


def test_the_action_installs_from_its_own_checkout(tmp_path: Path) -> None:
    """The action's install step, run as is (`python` first on PATH, as setup-python leaves it)."""
    (step,) = [
        s
        for s in yaml.safe_load(ACTION.read_text(encoding="utf-8"))["runs"]["steps"]
        if s.get("id") == "install"
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    output, path_file = tmp_path / "output", tmp_path / "github_path"
    env = _clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        GITHUB_ACTION_PATH=str(ROOT),
        RUNNER_TEMP=str(tmp_path),
        GITHUB_OUTPUT=str(output),
        GITHUB_PATH=str(path_file),
    )
    _run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path, env=env)
    (added,) = path_file.read_text(encoding="utf-8").split()
    _assert_runs_from(Path(added), tmp_path)


def test_the_component_installs_from_its_own_project_at_the_included_commit(
    dist: Path, tmp_path: Path
) -> None:
    """The component's input check and install items, run as is: `git+$CI_SERVER_URL/<project>.git@<sha>`,
    the server here a folder holding the project (the sdist, committed) as my-group/chat-conformance.git."""
    sdist = _one(dist, f"{NAME}-*.tar.gz")
    server = tmp_path / "server"
    project = server / "my-group" / "chat-conformance.git"
    project.parent.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(project.parent, filter="data")
        else:
            tar.extractall(project.parent)
    (top,) = [p for p in project.parent.iterdir() if p.name.startswith(NAME)]
    top.rename(project)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "release"]):
        _run([*git, *cmd], cwd=project)
    sha = _run(["git", "rev-parse", "HEAD"], cwd=project).strip()

    header, job = list(yaml.safe_load_all(COMPONENT.read_text(encoding="utf-8")))
    assert "sha" in header["spec"]["component"]
    inputs = {"project": "my-group/chat-conformance", "base-url": "http://127.0.0.1:9/v1", "model": "m"}
    values = {k: str(v.get("default", "")) for k, v in header["spec"]["inputs"].items()} | inputs

    def interpolate(text: str) -> str:
        text = re.sub(r"\$\[\[\s*component\.sha\s*\]\]", sha, text)
        return re.sub(r"\$\[\[\s*inputs\.([a-z-]+)\s*\]\]", lambda m: values[m.group(1)], text)

    ((_, body),) = job.items()
    script = [interpolate(item) for item in body["script"]]
    install_at = next(i for i, item in enumerate(script) if "pip install" in item)
    bin_dir = _venv(tmp_path / "venv")  # the job image's python
    env = _clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        CI_SERVER_URL=server.as_uri(),
        **{k: interpolate(str(v)) for k, v in body["variables"].items()},
    )
    _run(["sh", "-e", "-c", "\n".join(script[: install_at + 1])], cwd=tmp_path, env=env)
    _assert_runs_from(bin_dir, tmp_path)
    installed = _run([str(bin_dir / "python"), "-m", "pip", "show", "chat-conformance"], cwd=tmp_path)
    assert "Name: chat-conformance" in installed
