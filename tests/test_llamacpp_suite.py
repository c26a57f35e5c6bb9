"""The full conformance suite against llama.cpp's server: the verdicts pinned by targets/llamacpp/.

Runs ``chat-conformance run`` (in process, two workers) against the session's llama.cpp server with the
target's profile and waivers and ``--strict-waivers``: exit code 0 means every failure is a known, waived
deviation and no waived requirement passes. On any other exit code the assertion lists the requirements
that drifted (verdict fail, or a waiver that now passes) with their reasons.

Skipped only when xllamacpp (or the model-building packages) is missing and CI is not "true"; in CI it runs.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LLAMACPP_TARGET, assert_verdicts_pinned, in_ci, missing_llamacpp_modules

if missing_llamacpp_modules() and not in_ci():
    pytest.skip(f"{', '.join(missing_llamacpp_modules())} not installed (pip install -e '.[test]')",
                allow_module_level=True)

# A non-streamed answer's headers come only when its generation ends: on a CPU-starved runner that once
# passed the default 20 s idle timeout.
IDLE_TIMEOUT_S = "120"
def test_suite_verdicts_match_the_waivers(llamacpp_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONFORMANCE_API_KEY", llamacpp_server.key)
    assert_verdicts_pinned(LLAMACPP_TARGET, llamacpp_server.base_url, llamacpp_server.model,
                           tmp_path / "llamacpp", "-n", "2", "--idle-timeout", IDLE_TIMEOUT_S)
