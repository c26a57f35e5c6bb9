"""Shared fixtures of the project's own tests.

``llamacpp_server``: llama.cpp's HTTP server (targets/llamacpp/serve.py, via the xllamacpp wheel) serving the
tiny model of targets/llamacpp/build_model.py, started once per session for every llama.cpp test and always
stopped. It yields a :class:`LlamaCppServer` (base_url, model, key).

Outside CI the llama.cpp tests are skipped when xllamacpp (or the model-building packages) is not installed;
in CI (``CI=true``) a missing package is an error, so the real third-party target is never skipped silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LLAMACPP_TARGET = ROOT / "targets" / "llamacpp"
LLAMACPP_MODULES = ("xllamacpp", "gguf", "tokenizers", "numpy")
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 10
CANARY_KEY = "sk-canary-llamacpp-7f3e"
MODEL = "tiny-chat"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_llamacpp_modules() -> list[str]:
    return [m for m in LLAMACPP_MODULES if importlib.util.find_spec(m) is None]


def require_llamacpp() -> None:
    """Skip (outside CI) or fail (in CI) when the llama.cpp target cannot run here."""
    missing = missing_llamacpp_modules()
    if not missing:
        return
    why = f"{', '.join(missing)} not installed (pip install -e '.[test]')"
    if in_ci():
        pytest.fail(f"CI=true but the llama.cpp target cannot run: {why}", pytrace=False)
    pytest.skip(why)


@dataclass(frozen=True)
class LlamaCppServer:
    base_url: str  # ends with /v1
    model: str
    key: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def wait_ready(proc: subprocess.Popen[str], timeout: float = READY_TIMEOUT_S) -> str:
    """The base URL a target's serve.py prints ("ready URL") on stdout, or fail after ``timeout`` seconds."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(ln) for ln in stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            pytest.fail(f"serve.py not ready within {timeout}s (exit code {proc.poll()})")
        try:
            line = lines.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if line.startswith("ready "):
            return line.split()[1]


# Verdicts that break the gate: a failing requirement, (--strict-waivers) a waived one that passes, an error.
DRIFT = ("fail", "unexpectedly-passing", "error")


def drift(results: dict[str, Any]) -> list[str]:
    """What in a run's results breaks a target's pinned verdicts, one line each."""
    out = []
    for rid, r in sorted(results.get("requirements", {}).items()):
        if r.get("verdict") in DRIFT:
            out.append(f"{rid} [{r.get('level')}] {r.get('verdict')}: {r.get('reason')}")
    for c in results.get("checks", []):
        if c.get("outcome") == "error":
            out.append(f"internal error in {c.get('nodeid')}: {str(c.get('error'))[:300]}")
    return out


def run_suite(target: Path, base_url: str, model: str, report: Path, *extra: str) -> int:
    """Run the whole suite against a real target with its profile and waivers (--strict-waivers); the exit
    code (the results are in ``report``)."""
    from conformance.cli import main

    return main(["run", "--base-url", base_url, "--model", model, "--profile", str(target / "profile.toml"),
                 "--expectations", str(target / "expectations.toml"), "--strict-waivers",
                 "--report-dir", str(report), *extra])


def check_pinned(target: Path, report: Path, code: int) -> None:
    """Assert a run's gate held; on failure, list what drifted from ``target/expectations.toml``."""
    results_file = report / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    drifted = drift(results)
    detail = "\n".join(drifted) or f"no failing requirement in {results_file} (see its notes / junit.xml)"
    assert code == 0, (f"chat-conformance run against {target.name} exited {code} (0 expected); requirements "
                       f"that drifted from {target.name}/expectations.toml:\n{detail}")
    assert not drifted, "\n".join(drifted)


def assert_verdicts_pinned(target: Path, base_url: str, model: str, report: Path, *extra: str) -> None:
    """Run the whole suite against a real target (``run_suite``); assert the gate holds (``check_pinned``)."""
    check_pinned(target, report, run_suite(target, base_url, model, report, *extra))


def logit_bias_probe_run(
    target: Path, base_url: str, model: str, tmp_path: Path, *extra: str
) -> dict[str, Any]:
    """LOGIT-BIAS-FORCE and -BAN against a real target with its profile minus ``logit_bias_token_id``: the
    suite probes for the token itself (spec/DECISIONS.md#logit-bias-token). The results, and the probes
    (at most 5) as ``results["probes"]``: (label, status) of the force check's probe exchanges."""
    from conformance.cli import main

    text = (target / "profile.toml").read_text(encoding="utf-8")
    profile = tmp_path / "profile.toml"
    profile.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("logit_bias_token_id")),
                       encoding="utf-8")
    report = tmp_path / "probe"
    main(["run", "--base-url", base_url, "--model", model, "--profile", str(profile), "--only",
          "LOGIT-BIAS-FORCE", "--only", "LOGIT-BIAS-BAN", "--report-dir", str(report), *extra])
    results: dict[str, Any] = json.loads((report / "results.json").read_text(encoding="utf-8"))
    check = next(c for c in results["checks"] if c["nodeid"].endswith("test_logit_bias_forces_token"))
    results["probes"] = [(e["label"], e["status"]) for e in check["exchanges"]
                         if e["label"].startswith("logit-bias token probe")]
    assert 1 <= len(results["probes"]) <= 5
    return results


def generated_requests(results: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The generated phase's requests of a run, check by check: (exchange label, request body)."""
    checks = sorted(results.get("checks", []), key=lambda c: str(c.get("nodeid")))  # xdist: any order
    return [(e["label"], e.get("request_body")) for c in checks
            if "test_generated.py" in c.get("nodeid", "") for e in c.get("exchanges", [])]

def assert_two_runs_agree(target: Path, first: Path, second: Path) -> None:
    """A CI gate gives the same verdict twice (issue 14): two runs' report folders against the same target
    have the same verdict for every requirement and send the same generated requests (label and body, in
    order). Except where the target's waivers say ``intermittent = true`` (a deviation seen in some runs
    only): there pass and waived may trade places, nothing else."""
    from conformance.expectations import load_expectations

    a, b = (json.loads((r / "results.json").read_text(encoding="utf-8")) for r in (first, second))
    verdicts = [{k: v["verdict"] for k, v in r["requirements"].items()} for r in (a, b)]
    intermittent = {rid for rid, w in load_expectations(target / "expectations.toml").items()
                    if w.get("intermittent")}
    flipped = {k: (v, verdicts[1].get(k)) for k, v in verdicts[0].items() if verdicts[1].get(k) != v
               and not (k in intermittent and {v, verdicts[1].get(k)} <= {"pass", "waived"})}
    reasons = {k: (a["requirements"][k]["reason"], b["requirements"].get(k, {}).get("reason"))
               for k in flipped}
    assert flipped == {}, f"verdicts differ between two runs: {flipped}\n{reasons}"
    drawn = [generated_requests(r) for r in (a, b)]
    assert len(drawn[0]) > 50
    assert drawn[0] == drawn[1], next((x, y) for x, y in zip(*drawn, strict=False) if x != y)



@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    require_llamacpp()
    model = tmp_path_factory.mktemp("llamacpp") / "tiny-chat.gguf"
    subprocess.run([sys.executable, str(LLAMACPP_TARGET / "build_model.py"), str(model)], check=True,
                   timeout=120, stdout=subprocess.DEVNULL)
    port = _free_port()
    env = {**os.environ, "CONFORMANCE_API_KEY": CANARY_KEY}
    proc = subprocess.Popen(
        [sys.executable, str(LLAMACPP_TARGET / "serve.py"), "--model", str(model), "--port", str(port),
         "--alias", MODEL],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        base = wait_ready(proc)
        yield LlamaCppServer(base_url=base, model=MODEL, key=CANARY_KEY)
    finally:
        _stop(proc)


# ---- markers: a fast subset (`-m "not whole_run"`) and the real servers (`-m "not real_server"`) ----------

# the real-server lineages: they build or install a server and run the whole suite against it
REAL_SERVER_MODULES = {"test_llamacpp_suite", "test_llamacpp_target", "test_transformers_suite"}
# modules whose tests mostly run the whole suite (a CLI run against a server, in process or not): matrices,
# partial runs, target health, rate limits, concurrency, fleets, replays, reproducibility
WHOLE_RUN_MODULES = {
    "test_kill_matrix", "test_variant_matrix", "test_target_health", "test_partial_runs", "test_rate_limits",
    "test_concurrency", "test_fleet", "test_run", "test_replay_subsets", "test_reproducible", "test_chaos",
    "test_real_server_misses", "test_sdk", "test_console", "test_packaging", *REAL_SERVER_MODULES,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        if name in WHOLE_RUN_MODULES:
            item.add_marker(pytest.mark.whole_run)
        if name in REAL_SERVER_MODULES:
            item.add_marker(pytest.mark.real_server)


# ---- a check run in process against a mock transport (test_engine.py, test_server_errors.py) ---------------

def mock_target() -> Any:
    """A target no request ever reaches (the checks' client gets a mock transport), with no retries."""
    from conformance.target import Limits, Target

    return Target("https://api.example.test/v1", "tiny", limits=Limits(max_retries=0))


def mock_completion(request: Any = None, *, obj: str = "chat.completion") -> Any:
    """A mock target's 200 with a one-token completion (``obj``: its object field)."""
    import httpx

    return httpx.Response(200, json={
        "id": "chatcmpl-1", "object": obj, "created": int(time.time()), "model": "tiny",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    })


def check_context(transport: Any, *, capabilities: dict[str, Any] | None = None, concurrency: int = 1,
                  replay: Any = None, target: Any = None) -> Any:
    """A CheckContext over ``transport`` (seed profile), as the engine makes one for a run."""
    from conformance.client import Client
    from conformance.engine.run import CheckContext, RunOptions
    from conformance.profiles import load_profile

    target = target or mock_target()
    root = Client(target, transport=transport, raise_unanswered=True, concurrency=concurrency)
    return CheckContext(conformance_target=target, profile=load_profile("seed"),
                        capabilities=capabilities or {}, options=RunOptions(), root=root, transport=replay)


def fake_check(name: str, func: Any, *requirements: str) -> Any:
    """A registered-check stand-in calling ``func`` (marked CORE-OBJECT unless ``requirements``)."""
    from conformance.engine.registry import Check

    return Check(key=f"test_fake.py::{name}", module="tests.fake", name=name, func=func,
                 requirements=requirements or ("CORE-OBJECT",), order=("test_fake.py", 0, 0))
