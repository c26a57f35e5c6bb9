#!/usr/bin/env python3
"""Run Hugging Face transformers' own OpenAI-compatible server (`transformers serve`) as a conformance target.

    python targets/transformers/serve.py --model targets/transformers/build/tiny-chat --port 8000

The server is `transformers.cli.serve.Serve` (what the `transformers serve` command runs: FastAPI + uvicorn),
pinned to one local model directory (its `force_model`), on CPU, listening on 127.0.0.1 only.  The model is
served under the name --alias (default tiny-chat): transformers names a local model by its path, so serve.py
links the directory as ./ALIAS in a private working directory and pins the server to that relative path.
Offline mode is forced (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1): nothing is fetched from the Hub.

`transformers serve` has no API-key check: requests are accepted with any key or none.  Prints
"ready http://127.0.0.1:PORT/v1" on stdout once /health answers and a first completion was generated,
then blocks until SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # targets/common.py
from common import stop_on_signals  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


def wait_ready(serve, base: str, alias: str, timeout: float) -> bool:
    """uvicorn has bound the port, /health answers 200, then one tiny completion (the first one pays for lazy
    imports).  False at once when the server thread dies (port in use: uvicorn leaves its thread)."""
    deadline = time.monotonic() + timeout
    while not serve.server.started:
        if not serve._thread.is_alive() or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    while time.monotonic() < deadline:
        try:
            if _get(base + "/health") == 200:
                break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    else:
        return False
    body = json.dumps({"model": alias, "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 1}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=max(1.0, deadline - time.monotonic())) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError) as e:
        print(f"serve.py: warm-up completion failed: {e}", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="transformers serve conformance target", allow_abbrev=False)
    ap.add_argument("--model", required=True, help="local model directory (save_pretrained output)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--alias", default="tiny-chat", help="model name served (default tiny-chat)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--log-level", default="warning", help="transformers log level (default warning)")
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    args = ap.parse_args(argv)

    model_dir = os.path.abspath(args.model)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        print(f"serve.py: no model (config.json) in {model_dir}", file=sys.stderr)
        return 2
    if "/" in args.alias or ":" in args.alias or "@" in args.alias:
        print("serve.py: --alias must be a plain name (no '/', ':' or '@')", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="tf-serve-")
    os.symlink(model_dir, os.path.join(work, args.alias))
    os.chdir(work)  # the server resolves the pinned name as a path relative to the working directory

    import torch

    torch.set_num_threads(args.threads)
    from transformers.cli.serve import Serve

    try:
        serve = Serve(force_model=args.alias, host="127.0.0.1", port=args.port, device="cpu",
                      log_level=args.log_level, non_blocking=True)
    except Exception as e:  # noqa: BLE001 - model load failure
        print(f"serve.py: transformers serve failed to start: {e!r}", file=sys.stderr)
        return 1

    stop = stop_on_signals()

    base = f"http://127.0.0.1:{args.port}"
    if not wait_ready(serve, base, args.alias, args.ready_timeout) or not serve._thread.is_alive():
        print(f"serve.py: server did not become ready on {base}", file=sys.stderr)
        os._exit(1)
    print(f"ready {base}/v1", flush=True)
    while not stop.wait(0.5):
        if not serve._thread.is_alive():  # uvicorn died (e.g. port in use)
            print("serve.py: server thread exited", file=sys.stderr, flush=True)
            os._exit(1)
    print("serve.py: stopping", file=sys.stderr, flush=True)
    t = threading.Thread(target=serve.kill_server, daemon=True)
    t.start()
    t.join(3.0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
