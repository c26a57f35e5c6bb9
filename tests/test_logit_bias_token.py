"""The logit-bias token the suite finds itself (conformance/checks/test_logit_bias.py, spec/DECISIONS.md
#logit-bias-token): a few one-token probes, an ordinary word token kept, once per run, the fix named when none
is found; and the reference server's byte-level-vocab variant, under which the old default id 100 is a
partial byte, proves the probe is what the checks use."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.checks.test_logit_bias import CANDIDATES, bias_token, word_token
from conformance.cli import main
from conformance.evidence import Exchange
from conformance.profiles import load_profile
from conformance.target import Target
from conformance.violations import Inconclusive

TARGET = Target(base_url="http://x/v1", model="m")


@pytest.mark.parametrize("text", [" the", "the", " green", "ings", " Über", " a", "ab"])
def test_word_tokens(text: str) -> None:
    assert word_token(text)


@pytest.mark.parametrize("text", [
    "\ufffd", " \ufffd", "a", "~", "  ", "\n\n", " 42", "<0x41>", "<|im_end|>", "</s>", "[PAD]", "", None, 7,
    "a\u0000",
])
def test_not_word_tokens(text: Any) -> None:
    assert not word_token(text)


def _answer(token: str | None, status: int = 200, logprobs: bool = True) -> Exchange:
    if token is None:
        msg, lp, fr, ct = {"role": "assistant", "content": ""}, None, "stop", 0
    else:
        msg, fr, ct = {"role": "assistant", "content": token}, "length", 1
        lp = {"content": [{"token": token, "logprob": 0.0, "top_logprobs": []}]} if logprobs else None
    data = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": msg, "logprobs": lp, "finish_reason": fr}],
            "usage": {"prompt_tokens": 3, "completion_tokens": ct, "total_tokens": 3 + ct}}
    body = json.dumps(data) if status == 200 else '{"error": {"message": "bad token id"}}'
    return Exchange(label="", method="POST", url="http://x/v1/chat/completions", request_headers={},
                    status=status, body_text=body)


class _Shared:
    """The ``shared`` fixture: one exchange per key, sent once, replayed to every later caller."""

    def __init__(self, answers: dict[int, Exchange]) -> None:
        self.answers, self.cache, self.sent = answers, {}, []  # type: ignore[var-annotated]

    def __call__(self, key: str, body: dict[str, Any], **kw: Any) -> Exchange:
        if key not in self.cache:
            (tid,) = body["logit_bias"]
            assert body["logit_bias"] == {tid: 100} and body["max_tokens"] == 1 and body["logprobs"] is True
            self.sent.append(int(tid))
            self.cache[key] = self.answers[int(tid)]
        return self.cache[key]  # type: ignore[no-any-return]


def test_the_first_word_token_is_kept_and_probed_once_per_run() -> None:
    # a byte-level BPE vocabulary: 100 is a partial UTF-8 byte, 279 is " the"
    shared = _Shared({100: _answer("\ufffd"), 279: _answer(" the")})
    profile = load_profile("seed")
    assert profile.logit_bias_token_id is None
    assert bias_token(shared, TARGET, profile, {}) == 279
    assert bias_token(shared, TARGET, profile, {}) == 279  # the second check replays the same probes
    assert shared.sent == [100, 279]


def test_the_answer_text_is_read_without_logprobs_from_a_one_token_answer() -> None:
    shared = _Shared({100: _answer(" the", logprobs=False)})
    assert bias_token(shared, TARGET, load_profile("seed"), {}) == 100
    assert shared.sent == [100]


def test_a_profile_that_names_the_token_is_not_probed() -> None:
    shared = _Shared({})
    profile = dataclasses.replace(load_profile("seed"), logit_bias_token_id=640)
    assert bias_token(shared, TARGET, profile, {}) == 640
    assert shared.sent == []


def test_no_word_token_is_inconclusive_and_names_the_fix() -> None:
    answers = {100: _answer("\ufffd"), 279: _answer(None), 262: _answer("<0x41>"), 278: _answer("~"),
               700: _answer(None, status=400)}
    shared = _Shared(answers)
    with pytest.raises(Inconclusive) as exc:
        bias_token(shared, TARGET, load_profile("seed"), {})
    assert shared.sent == list(CANDIDATES) and len(CANDIDATES) <= 5  # a few probes, each once
    assert str(exc.value) == (
        "no ordinary word token among the ids probed with logit_bias +100 (100: '\\ufffd'; 279: empty answer "
        "(finish_reason 'stop'): an end or special token; 262: '<0x41>'; 278: '~'; 700: HTTP 400): set "
        "logit_bias_token_id in a profile (--profile) to the id of a word token of the target's vocabulary "
        "(README, 'The logit-bias token')"
    )


def _logit_bias_run(report: Path, *args: str) -> dict[str, Any]:
    code = main(["run", "--report-dir", str(report), "--only", "LOGIT-BIAS-FORCE", "--only", "LOGIT-BIAS-BAN",
                 *args])
    assert code == 0
    return json.loads((report / "results.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _probes(results: dict[str, Any]) -> list[str]:
    check = next(c for c in results["checks"] if c["nodeid"].endswith("test_logit_bias_forces_token"))
    return [e["label"] for e in check["exchanges"] if e["label"].startswith("logit-bias token probe")]


def test_the_checks_use_the_probed_token(tmp_path: Path) -> None:
    """Under byte-level-vocab id 100 is a partial byte (with the old fixed default, LOGIT-BIAS-BAN could not
    be judged): the probe moves on to 279 (" the"), and both checks pass on it. On the plain reference server
    the first probe (100, " the" there) is kept: one probe request per run."""
    results = _logit_bias_run(tmp_path / "bytes", "--variant", "byte-level-vocab")
    for rid in ("LOGIT-BIAS-FORCE", "LOGIT-BIAS-BAN"):
        assert results["requirements"][rid]["verdict"] == "pass", results["requirements"][rid]
    probes = [p.split("logit_bias ")[1] for p in _probes(results)]
    assert probes == ["{100: 100}, logprobs", "{279: 100}, logprobs"]
    labels = [e["label"] for c in results["checks"] for e in c["exchanges"]]
    assert "deterministic, 16 tokens, logit_bias {279: -100}, logprobs" in labels

    results = _logit_bias_run(tmp_path / "plain")
    assert {results["requirements"][r]["verdict"] for r in ("LOGIT-BIAS-FORCE", "LOGIT-BIAS-BAN")} == {"pass"}
    assert len(_probes(results)) == 1
