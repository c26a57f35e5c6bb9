"""Discovery judges the reasoning and thinking fields by effect (spec/DECISIONS.md#reasoning-models)."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from conformance.checks._support import (
    answer_text,
    cut_in_reasoning,
    reasoning_text,
    room,
    split_think,
    thinking_off,
)
from conformance.discovery import discover, placement, reasons_unasked, switch_works
from conformance.evidence import Exchange

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def _completion(content: Any, reasoning: str | None = None, finish: str = "length") -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    return {"object": "chat.completion", "choices": [{"index": 0, "message": msg, "finish_reason": finish}]}


class FakeClient:
    """Answers each request with ``answer(body)`` (a completion dict, or an int status for an error)."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any]) -> None:
        self.answer = answer
        self.target = SimpleNamespace(model="m")
        self.sent: list[dict[str, Any]] = []

    def chat(self, body: dict[str, Any], *, label: str = "") -> Exchange:
        self.sent.append(body)
        got = self.answer(body)
        if isinstance(got, int):
            text = json.dumps({"error": {"message": "unknown field", "type": "invalid_request_error"}})
            return Exchange(label, "POST", "http://x/chat/completions", {}, json.dumps(body), status=got,
                            body_text=text)
        return Exchange(label, "POST", "http://x/chat/completions", {}, json.dumps(body), status=200,
                        body_text=json.dumps(got))


PROFILE = SimpleNamespace(capabilities={}, deterministic={"temperature": 1.0, "top_p": 1e-6, "seed": 1})


def _reference(body: dict[str, Any]) -> dict[str, Any]:
    """The clean reference server: reasoning only when asked, enable_thinking false switches it off."""
    if body.get("enable_thinking") is False:
        return _completion("Five.")
    if body.get("separate_reasoning"):
        return _completion("Five.", "two plus three")
    if body.get("enable_thinking"):
        return _completion("<think>two plus three</think>Five.")
    return _completion("Five.")


def _caps(answer: Callable[[dict[str, Any]], Any], **kw: Any) -> dict[str, dict[str, Any]]:
    return discover(FakeClient(answer), PROFILE, **kw)


def test_working_fields_are_supported_by_effect() -> None:
    caps = _caps(_reference)
    assert caps["reasoning"]["supported"] and caps["thinking"]["supported"]
    assert "has an effect" in caps["reasoning"]["reason"]
    assert caps["reasoning"]["observed"] == {
        "plain": "none", "separate_reasoning=true": "separate", "separate_reasoning=false": "none"}
    assert not reasons_unasked(caps)
    assert switch_works(caps)


@pytest.mark.parametrize(
    ("name", "answer", "where"),
    [
        ("no reasoning mode", lambda b: _completion("Five."), "no reasoning"),
        ("always reasons, separated", lambda b: _completion("Five.", "two plus three"),
         "reasoning in reasoning_content"),
        ("always reasons, inline", lambda b: _completion("<think>two plus three</think>Five."),
         "<think> markup in content"),
    ],
)
def test_fields_without_effect_are_unsupported_ignored(name: str, answer: Answer, where: str) -> None:
    caps = _caps(answer)
    for cap, field in (("reasoning", "separate_reasoning"), ("thinking", "enable_thinking")):
        info = caps[cap]
        assert info["supported"] is False, name
        assert info["source"] == "probe"
        assert info["reason"] == (
            f"unsupported (ignored): the target accepts {field} but the field shows no effect ({where} in "
            f"every probe); make it mandatory with --require {cap} or declare it in a profile to have it "
            "judged")
    assert reasons_unasked(caps) == (where != "no reasoning")
    assert not switch_works(caps)


def test_required_or_declared_capabilities_are_not_probed() -> None:
    client = FakeClient(lambda b: _completion("Five."))
    profile = SimpleNamespace(capabilities={"thinking": True}, deterministic={})
    caps = discover(client, profile, required=("reasoning",))
    assert caps["reasoning"] == {
        "supported": True, "source": "required", "reason": "made mandatory with --require"}
    assert caps["thinking"]["source"] == "profile" and switch_works(caps)
    assert not any("separate_reasoning" in b or "enable_thinking" in b for b in client.sent)


def test_a_clean_refusal_is_unsupported() -> None:
    caps = _caps(lambda b: 400 if "separate_reasoning" in b or "enable_thinking" in b else _completion("x"))
    assert caps["reasoning"]["supported"] is False
    assert caps["reasoning"]["reason"].startswith("target rejected the probe with HTTP 400: unknown field")
    assert "observed" not in caps["reasoning"]


def test_a_switch_that_only_turns_reasoning_on_is_supported() -> None:
    """enable_thinking false treated as true still has an effect (plain answers do not reason): the checks
    judge it, and THINKING-DISABLE fails rather than being excused as an always-reasoning model."""
    def answer(b: dict[str, Any]) -> dict[str, Any]:
        if "enable_thinking" in b:
            return _completion("<think>hm</think>Five.")
        return _completion("Five.")
    caps = _caps(answer)
    assert caps["thinking"]["supported"] is True


def test_thinking_effect_seen_only_with_separate_reasoning() -> None:
    """enable_thinking true that switches reasoning off shows only against separate_reasoning true."""
    def answer(b: dict[str, Any]) -> dict[str, Any]:
        if b.get("separate_reasoning") and "enable_thinking" not in b:
            return _completion("Five.", "two plus three")
        return _completion("Five.")
    caps = _caps(answer)
    assert caps["reasoning"]["supported"] is True
    assert caps["thinking"]["supported"] is True
    assert caps["thinking"]["observed"]["separate_reasoning=true, enable_thinking=true"] == "none"


def test_inconclusive_probes_leave_the_capability_supported() -> None:
    caps = _caps(lambda b: 503 if "separate_reasoning" in b else _completion("Five."))
    assert caps["reasoning"]["supported"] is True
    assert caps["reasoning"]["reason"] == "probe inconclusive (HTTP 503)"


def test_placement() -> None:
    assert placement(_completion("Five.", "")) == "none"
    assert placement({"choices": [{"message": {"content": None, "reasoning": "hm"}}]}) == "separate"
    assert placement(_completion("hm</think>Five.")) == "inline"
    assert placement({"choices": []}) is None


def test_reasoning_helpers() -> None:
    assert split_think("<think>a b</think>Five.") == ("a b", "Five.")
    assert split_think("a b</think>Five.") == ("a b", "Five.")  # template-forced <think> in the prompt
    assert split_think("<think>a b") == ("a b", "")
    assert split_think("Five.") == ("", "Five.")
    cut = _completion(None, "two plus")
    assert cut_in_reasoning(cut) and reasoning_text(cut) == "two plus" and answer_text(cut) == ""
    assert cut_in_reasoning(_completion("<think>two plus"))
    assert not cut_in_reasoning(_completion("<think>two</think>Fi"))
    assert not cut_in_reasoning(_completion("Five.", "two", finish="stop"))
    assert not cut_in_reasoning(_completion(""))  # an empty answer without reasoning is not a cut reasoning


def test_budgets_follow_the_capabilities() -> None:
    always = _caps(lambda b: _completion("Five.", "two plus three"))
    assert room(always, 16) == 80 and thinking_off(always) == {}
    assert room(_caps(_reference), 16) == 16
    # a model that reasons unasked and whose switch works: thinking is switched off, the budget is unchanged
    def glm(b: dict[str, Any]) -> dict[str, Any]:
        return _completion("Five.") if b.get("enable_thinking") is False else _completion("Five.", "hm")
    caps = _caps(glm)
    assert thinking_off(caps) == {"enable_thinking": False} and room(caps, 16) == 16


def test_a_stop_during_the_probes_ends_them_and_waits_for_none() -> None:
    """A SIGTERM while discovery's probes were in flight against a slow target: the main thread waited in
    the probes' `with ThreadPoolExecutor` for every one to end (up to its timeout: the process hung past
    the test's 20 s). The stop now aborts the probes in flight and waits for none of them."""
    import os
    import signal
    import threading
    import time as _time

    from conformance.discovery import _EffectProbes

    class Slow:
        concurrency = 4
        target = type("T", (), {"model": "m"})()

        def __init__(self) -> None:
            self.aborted = threading.Event()

        def chat(self, body: dict, *, label: str = "") -> object:
            self.aborted.wait(30)  # a probe waiting for a slow first token; ends when aborted
            return object()

        def abort(self) -> None:
            self.aborted.set()

    client = Slow()
    probes = _EffectProbes(client, profile=None)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # a real signal, as a CI cancel
    start = _time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        probes.prefetch([("a", {}), ("b", {}), ("c", {})])
    assert _time.monotonic() - start < 5
    assert client.aborted.is_set()
