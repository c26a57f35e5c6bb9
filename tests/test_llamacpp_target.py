"""Smoke test of the llama.cpp conformance target (targets/llamacpp/).

The session fixture ``llamacpp_server`` (tests/conftest.py) builds the tiny GGUF model, starts serve.py
(llama.cpp's server via xllamacpp) on a free port with a canary API key, and always stops it. Skipped when
xllamacpp (or the model-building packages) are not installed, except in CI (CI=true), where that fails.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from conftest import LlamaCppServer


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


def test_chat_completion_returns_choices(llamacpp_server: LlamaCppServer):
    status, body = _post(f"{llamacpp_server.base_url}/chat/completions",
                         {"model": llamacpp_server.model, "messages": [{"role": "user", "content": "Hello"}],
                          "max_tokens": 4, "seed": 1}, llamacpp_server.key)
    assert status == 200, body
    assert isinstance(body.get("choices"), list) and body["choices"]
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_wrong_key_is_rejected(llamacpp_server: LlamaCppServer):
    status, body = _post(f"{llamacpp_server.base_url}/chat/completions",
                         {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1},
                         "sk-wrong")
    assert status == 401, body
