"""The full conformance suite against Hugging Face transformers' own server (`transformers serve`): the
verdicts pinned by targets/transformers/.

Builds the tiny model of targets/transformers/build_model.py, starts targets/transformers/serve.py on a free
port, runs ``chat-conformance run`` (in process, serially) against it with the target's profile and waivers
and ``--strict-waivers``: exit code 0 means every failure is a known, waived deviation and no waived
requirement passes. On any other exit code the assertion lists the requirements that drifted, with reasons.

Serial on purpose: the server implements ``seed`` as a process-wide ``torch.manual_seed``, so concurrent
requests (``-n 2``) break SEED-DETERMINISM at random (see targets/transformers/NOTES.md).

Skipped only when torch or transformers (serving extra) are missing and CI is not "true"; in CI it runs.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    _free_port,
    _stop,
    assert_verdicts_pinned,
    in_ci,
    logit_bias_probe_run,
    wait_ready,
)

TARGET = ROOT / "targets" / "transformers"
MODULES = ("torch", "transformers", "tokenizers", "fastapi", "uvicorn", "openai", "pydantic")
MISSING = [m for m in MODULES if importlib.util.find_spec(m) is None]
if MISSING and not in_ci():
    pytest.skip(f"{', '.join(MISSING)} not installed (see targets/transformers/requirements.txt)",
                allow_module_level=True)

MODEL = "tiny-chat"
READY_TIMEOUT_S = 180  # torch + transformers import and model load: ~4 s idle, more on a loaded runner
IDLE_TIMEOUT_S = "120"
# Verdicts that break the gate: a failing requirement, (--strict-waivers) a waived one that passes, an error.


@dataclass(frozen=True)
class TransformersServer:
    base_url: str  # ends with /v1
    model: str


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersServer]:
    if MISSING:  # only reachable in CI
        pytest.fail(f"CI=true but the transformers target cannot run: {', '.join(MISSING)} not installed",
                    pytrace=False)
    model = tmp_path_factory.mktemp("transformers") / MODEL
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([sys.executable, str(TARGET / "build_model.py"), str(model)], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(TARGET / "serve.py"), "--model", str(model), "--port", str(port),
         "--alias", MODEL],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        base = wait_ready(proc)
        yield TransformersServer(base_url=base, model=MODEL)
    finally:
        _stop(proc)


def test_suite_verdicts_match_the_waivers(transformers_server: TransformersServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    # transformers serve has no authentication: any key is "accepted" (AUTH-* are waived deviations).
    monkeypatch.setenv("CONFORMANCE_API_KEY", "sk-canary-transformers-2b9d")
    assert_verdicts_pinned(TARGET, transformers_server.base_url, transformers_server.model,
                           tmp_path / "transformers", "--idle-timeout", IDLE_TIMEOUT_S)


def test_the_logit_bias_probe_names_what_it_got(transformers_server: TransformersServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    """Without the profile's logit_bias_token_id the suite probes for a word token itself
    (spec/DECISIONS.md#logit-bias-token). transformers serve answers every integer logit_bias value with 500
    (NOTES.md: it wants floats), so no probe is answered: both checks are inconclusive, and the reason lists
    what each probe got and names the fix, never a failure."""
    monkeypatch.setenv("CONFORMANCE_API_KEY", "sk-canary-transformers-2b9d")
    results = logit_bias_probe_run(TARGET, transformers_server.base_url, transformers_server.model, tmp_path,
                                   "--idle-timeout", IDLE_TIMEOUT_S)
    for rid in ("LOGIT-BIAS-FORCE", "LOGIT-BIAS-BAN"):
        r = results["requirements"][rid]
        assert r["verdict"] == "not-run" and r["reason"].startswith("inconclusive: no ordinary word token"), r
        assert "100: HTTP 500" in r["reason"] and "set logit_bias_token_id in a profile" in r["reason"]
