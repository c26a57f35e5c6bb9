#!/usr/bin/env python3
"""Run llama.cpp's HTTP server (via the xllamacpp wheel) as a conformance target.

    CONFORMANCE_API_KEY=sk-... python targets/llamacpp/serve.py \
        --model targets/llamacpp/build/tiny-chat.gguf --port 8080

Listens on 127.0.0.1 only.  The API key is read from an environment variable
(--api-key-env, default CONFORMANCE_API_KEY), never from the command line.  Jinja
chat templates are enabled (needed for tools and response_format) and several
slots are configured so n>1 and concurrent requests work.  Prints
"ready http://127.0.0.1:PORT/v1" on stdout once /health answers, then blocks
until SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # targets/common.py
from common import stop_on_signals  # noqa: E402


def build_params(args, api_key: str | None):
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.hostnames = ["127.0.0.1"]
    p.port = args.port
    p.model_alias = {args.alias}
    p.use_jinja = True
    p.n_parallel = args.parallel
    # n_ctx is the total KV size shared by all slots: give each slot --ctx tokens.
    p.n_ctx = args.ctx * args.parallel
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.ui = False
    p.endpoint_props = True
    p.verbosity = args.verbosity
    if api_key:
        p.api_keys = [api_key]
    return p


def wait_healthy(base: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="llama.cpp server (xllamacpp) conformance target", allow_abbrev=False
    )
    ap.add_argument("--model", required=True, help="path to a .gguf model")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api-key-env", default="CONFORMANCE_API_KEY",
                    help="name of the env var holding the API key (default CONFORMANCE_API_KEY)")
    ap.add_argument("--no-auth", action="store_true",
                    help="run without an API key when the env var is unset")
    ap.add_argument("--alias", default="tiny-chat", help="model name served (default tiny-chat)")
    ap.add_argument("--ctx", type=int, default=1024, help="context size per slot (default 1024)")
    ap.add_argument("--parallel", type=int, default=4,
                    help="number of slots = largest n accepted (default 4)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--verbosity", type=int, default=2, help="llama.cpp log verbosity (default 2)")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    args = ap.parse_args(argv)

    if not os.path.isfile(args.model):
        print(f"serve.py: model not found: {args.model}", file=sys.stderr)
        return 2
    api_key = os.environ.get(args.api_key_env) or None
    if api_key is None and not args.no_auth:
        print(f"serve.py: ${args.api_key_env} is not set (use --no-auth to run without a key)",
              file=sys.stderr)
        return 2

    import xllamacpp

    try:
        holder = [xllamacpp.Server(build_params(args, api_key))]  # listens in native threads
    except RuntimeError as e:  # e.g. port already in use
        print(f"serve.py: llama.cpp server failed to start: {e}", file=sys.stderr)
        return 1

    # Install handlers after the native server started, so they win over any it set.
    stop = stop_on_signals()

    base = f"http://127.0.0.1:{args.port}"
    if not wait_healthy(base, args.ready_timeout):
        print(f"serve.py: server did not become healthy on {base}", file=sys.stderr)
        os._exit(1)
    print(f"ready {base}/v1", flush=True)
    while not stop.wait(0.5):
        pass
    print("serve.py: stopping", file=sys.stderr, flush=True)
    # Graceful native shutdown can wait on open keep-alive connections: give it 2 s.
    t = threading.Thread(target=holder.clear, daemon=True)  # drops the last reference
    t.start()
    t.join(2.0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

if __name__ == "__main__":
    sys.exit(main())
