"""Smoke test of the llama.cpp conformance target (targets/llamacpp/).

Builds the tiny GGUF model, starts serve.py (llama.cpp's server via xllamacpp) on a
free port with a canary API key, checks one chat completion, and always stops it.
Skipped when xllamacpp (or the model-building packages) are not installed.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

for _mod in ("xllamacpp", "gguf", "tokenizers", "numpy"):
    pytest.importorskip(_mod, reason=f"{_mod} not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "targets" / "llamacpp"
READY_TIMEOUT_S = 120
CANARY_KEY = "sk-canary-llamacpp-7f3e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llamacpp_server(tmp_path_factory):
    model = tmp_path_factory.mktemp("llamacpp") / "tiny-chat.gguf"
    subprocess.run([sys.executable, str(TARGET / "build_model.py"), str(model)], check=True,
                   timeout=120)
    port = _free_port()
    env = {**os.environ, "CONFORMANCE_API_KEY": CANARY_KEY}
    proc = subprocess.Popen(
        [sys.executable, str(TARGET / "serve.py"), "--model", str(model), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        base = None
        while base is None:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                pytest.fail(f"serve.py not ready within {READY_TIMEOUT_S}s (exit code {proc.poll()})")
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line.startswith("ready "):
                base = line.split()[1]
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _post(url: str, body: dict, key: str | None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_chat_completion_returns_choices(llamacpp_server):
    status, body = _post(f"{llamacpp_server}/chat/completions",
                         {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello"}],
                          "max_tokens": 4, "seed": 1}, CANARY_KEY)
    assert status == 200, body
    assert isinstance(body.get("choices"), list) and body["choices"]
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_wrong_key_is_rejected(llamacpp_server):
    status, body = _post(f"{llamacpp_server}/chat/completions",
                         {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1},
                         "sk-wrong")
    assert status == 401, body
