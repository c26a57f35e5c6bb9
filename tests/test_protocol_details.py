"""Protocol details the documents leave open (spec/DECISIONS.md#protocol-details): the reference server's
variants for them and the check helpers that accept them without losing the faults."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.testclient import TestClient

from conformance.checks import test_context, test_stop, test_tools
from conformance.checks._stream import judge_stream
from conformance.checks._support import answer_of, deterministic_body, published_context_length
from conformance.evidence import Exchange, SSEEvent
from conformance.profiles import load_profile
from conformance.reference import create_app
from conformance.violations import Inconclusive, Judge

MODEL = "reference-tiny"
TARGET = SimpleNamespace(model=MODEL)
SEED = load_profile("seed")
WEATHER = test_tools.WEATHER
TIME = test_tools.TIME


def _post(client: TestClient, body: dict[str, Any], label: str = "x") -> Exchange:
    r = client.post("/v1/chat/completions", json=body)
    events = []
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for block in r.text.split("\n\n"):
            data = "\n".join(ln[len("data: "):] for ln in block.split("\n") if ln.startswith("data: "))
            if not block.strip():
                continue
            done = data == "[DONE]"
            events.append(SSEEvent(t=0.0, data=data, done=done, json=None if done else json.loads(data)))
    return Exchange(label=label, method="POST", url="http://ref/v1/chat/completions", request_headers={},
                    request_body=json.dumps(body), stream=bool(events), status=r.status_code,
                    response_headers=dict(r.headers), body_text=None if events else r.text, events=events)


def _shared(client: TestClient) -> Any:
    """A stand-in for the plugin's ``shared`` fixture: one exchange per key, sent to ``client``."""
    cache: dict[str, Exchange] = {}
    sent: list[str] = []

    def get(key: str, body: dict[str, Any], **kw: Any) -> Exchange:
        if key not in cache:
            sent.append(key)
            cache[key] = _post(client, body, kw.get("label", key))
        return cache[key]

    get.sent = sent  # type: ignore[attr-defined]
    return get


def _chat(client: TestClient, **kw: Any) -> dict[str, Any]:
    return client.post("/v1/chat/completions", json={"model": MODEL, **kw}).json()  # type: ignore[no-any-return]


def _completion(finish: str, **message: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}]}


def _tool_body(choice: Any, tools: list[Any] | None = None) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": test_tools.PROMPT}],
            "tools": tools or [WEATHER, TIME], "tool_choice": choice, "max_tokens": 200}


# --------------------------------------------------------------------------- usage on the finish chunk


@pytest.mark.parametrize(("variants", "faults"), [(["usage-on-finish-chunk"], []),
                                                  ([], ["usage-chunk-with-choices"])])
def test_usage_rides_on_the_finish_chunk(variants: list[str], faults: list[str]) -> None:
    client = TestClient(create_app(variants=variants, faults=faults))
    ex = _post(client, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                        "stream": True, "stream_options": {"include_usage": True}})
    *body, last = ex.chunks
    assert last["choices"][0]["finish_reason"] == "length" and last["usage"]["completion_tokens"] == 4
    assert all(c["usage"] is None for c in body) and all(c["choices"] for c in ex.chunks)


def _judge_usage(ex: Exchange, empty_choices: bool) -> Judge:
    judge = Judge(requirements=("USAGE-STREAM-LAST-CHUNK", "USAGE-STREAM-EMPTY-CHOICES",
                                "USAGE-STREAM-NULL-ELSEWHERE"))
    judge.exchanges.append(ex)
    judge_stream(judge, ex, include_usage=True, usage_empty_choices=empty_choices)
    return judge


def test_usage_on_the_finish_chunk_is_judged_by_profile() -> None:
    req = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
           "stream_options": {"include_usage": True}}
    on_finish = _post(TestClient(create_app(variants=["usage-on-finish-chunk"])), req)
    assert _judge_usage(on_finish, empty_choices=False).violations == []  # seed: literal compliance
    v = _judge_usage(on_finish, empty_choices=True).violations  # openai: an additional chunk, choices []
    assert [(x.requirement, x.message) for x in v] == [(
        "USAGE-STREAM-EMPTY-CHOICES",
        "the usage came on a chunk that carries choices, not on an additional chunk with choices []")]
    extra = _post(TestClient(create_app()), req)
    assert _judge_usage(extra, empty_choices=True).violations == []
    for fault, req_id in (("no-usage-chunk", "USAGE-STREAM-LAST-CHUNK"),
                          ("usage-every-chunk", "USAGE-STREAM-NULL-ELSEWHERE")):
        app = create_app(variants=["usage-on-finish-chunk"], faults=[fault])
        violations = _judge_usage(_post(TestClient(app), req), empty_choices=False).violations
        assert {x.requirement for x in violations} == {req_id}, fault


# --------------------------------------------------------------------------- forced calls


def test_forced_calls_end_with_stop_under_the_variant() -> None:
    plain, forced = TestClient(create_app()), TestClient(create_app(variants=["forced-call-finish-stop"]))
    named = {"type": "function", "function": {"name": "get_time"}}
    for choice, want in ((named, "stop"), ("required", "stop"), ("auto", "tool_calls")):
        ch = forced.post("/v1/chat/completions", json=_tool_body(choice)).json()["choices"][0]
        assert ch["message"]["tool_calls"] and ch["finish_reason"] == want, choice
        ch = plain.post("/v1/chat/completions", json=_tool_body(choice)).json()["choices"][0]
        assert ch["finish_reason"] == "tool_calls", choice


def test_a_call_cut_by_the_suites_budget_is_asked_again_then_inconclusive() -> None:
    client = TestClient(create_app(variants=["reasoning-always"]))
    shared = _shared(client)
    ex = test_tools._with_retry(shared, "k", TARGET, SEED, "required", "tool_choice required")
    assert shared.sent == ["k"]  # 200 tokens: the call is there, no retry
    assert ex.json()["choices"][0]["message"]["tool_calls"]

    cut = Exchange(label="cut", method="POST", url="u", request_headers={}, status=200,
                   request_body=json.dumps({"max_tokens": 1024}),
                   body_text=json.dumps(_completion("length", content="<think>")))
    with pytest.raises(Inconclusive, match=r"the suite's own max_tokens \(1024, finish_reason length\)"):
        test_tools._no_call_verdict(cut, 'tool_choice "required"')
    stopped = Exchange(label="s", method="POST", url="u", request_headers={}, status=200,
                       body_text=json.dumps(_completion("stop", content="No.")))
    test_tools._no_call_verdict(stopped, "x")  # a finished answer without a call is judged (fails)


def test_retry_is_sent_when_the_first_answer_is_cut() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    answers = iter([_completion("length", content="hm"), _completion("tool_calls", tool_calls=[call])])
    sent: list[tuple[str, int]] = []

    def shared(key: str, body: dict[str, Any], **kw: Any) -> Exchange:
        sent.append((key, body["max_tokens"]))
        return Exchange(label=key, method="POST", url="u", request_headers={}, status=200,
                        request_body=json.dumps(body), body_text=json.dumps(next(answers)))

    ex = test_tools._with_retry(shared, "k", TARGET, SEED, "required", "required")
    assert sent == [("k", test_tools.MAX_TOKENS), ("k-retry", test_tools.RETRY_MAX_TOKENS)]
    assert ex.json()["choices"][0]["finish_reason"] == "tool_calls"


# --------------------------------------------------------------------------- stops matched on whole tokens


def test_stop_at_token_end_keeps_the_token_that_completed_the_stop() -> None:
    seed_c = TestClient(create_app(variants=["stop-at-token-end"]))
    det = dict(SEED.deterministic, max_tokens=16)
    hi = [{"role": "user", "content": "Hi"}]
    base = _chat(seed_c, messages=hi, **det)["choices"][0]["message"]["content"]
    stop, at = test_stop.pick_stop(base) or ("", 0)
    assert stop[-1].isalnum() and base[at + len(stop)].isalnum()  # ends inside a word: a tail shows
    got = _chat(seed_c, messages=hi, stop=[stop], logprobs=True, **det)
    text = got["choices"][0]["message"]["content"]
    assert got["choices"][0]["finish_reason"] == "stop"
    assert base.startswith(text) and len(text) > at + len(stop)
    tokens = [e["token"] for e in got["choices"][0]["logprobs"]["content"]]
    assert "".join(tokens) == text and len("".join(tokens[:-1])) < at + len(stop)


def test_pick_stop_prefers_a_sequence_ending_inside_a_word() -> None:
    assert test_stop.pick_stop(" cat cat cat cat cat cat cat cat cat cat") == ("t ca", 3)
    assert test_stop.pick_stop(" Once upon a time, a small cat named Tom lived by the sea.") == ("a smal", 19)
    assert test_stop.pick_stop("ab") is None


def _exchange(body: dict[str, Any] | None, status: int = 200) -> Exchange:
    return Exchange(label="x", method="POST", url="u", request_headers={}, status=status,
                    body_text=json.dumps(body) if body is not None else "")


def test_tail_verdict_against_the_reference_server() -> None:
    client = TestClient(create_app(variants=["stop-at-token-end"]))
    base = answer_of(client.post("/v1/chat/completions", json=deterministic_body(TARGET, SEED, max_tokens=16)
                                 ).json())
    stop, at = test_stop.pick_stop(base.content) or ("", 0)
    body = deterministic_body(TARGET, SEED, max_tokens=16, stop=[stop], logprobs=True)
    ex = _post(client, body)
    got = answer_of(ex.json())
    assert test_stop._is_tail_candidate(base.content, stop, at, got.content)
    shared = _shared(client)
    assert test_stop.tail_verdict(shared, TARGET, SEED, ex, got, stop, at) == (
        True, "the text ends with the token that completed the stop sequence (logprobs)")
    assert test_stop._pair(base, got, stop) == "ok" and shared.sent == []
    # without logprobs: the max_tokens probe confirms it
    plain = _post(client, {k: v for k, v in body.items() if k != "logprobs"})
    verdict, why = test_stop.tail_verdict(shared, TARGET, SEED, plain, answer_of(plain.json()), stop, at)
    assert verdict is True and "(max_tokens probe)" in why and shared.sent == ["stop-probe-1"]
    # the stop-less answer (the stop ignored): at least one whole token past the stop sequence
    full = _post(TestClient(create_app(faults=["stop-ignored"])), body)
    verdict, why = test_stop.tail_verdict(shared, TARGET, SEED, full, answer_of(full.json()), stop, at)
    assert verdict is False and "at least one whole token past it" in why
    assert test_stop._honoured(shared, TARGET, SEED, full, answer_of(full.json()), base, stop, at)[0] is False


def test_tail_verdict_paths() -> None:
    stop, at = "t ca", 3  # in " cat cat cat ...": the sequence ends at 7, inside the second " cat"

    def answer(content: str, tokens: list[str] | None = None, ct: int | None = None) -> dict[str, Any]:
        lp = {"content": [{"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": []}
                          for t in tokens]} if tokens else None
        out: dict[str, Any] = {"choices": [{"index": 0, "finish_reason": "stop", "logprobs": lp,
                                            "message": {"role": "assistant", "content": content}}]}
        if ct is not None:
            out["usage"] = {"prompt_tokens": 5, "completion_tokens": ct, "total_tokens": 5 + ct}
        return out

    def run(cut: dict[str, Any], probes: dict[str, Exchange] | None = None) -> tuple[bool | None, str]:
        def shared(key: str, body: dict[str, Any], **kw: Any) -> Exchange:
            return (probes or {}).get(key) or _exchange(None, 400)
        ex = _exchange(cut)
        return test_stop.tail_verdict(shared, TARGET, SEED, ex, answer_of(ex.json()), stop, at)

    # logprobs: the last token " cat" starts at 4, before the end of "t ca" (7): confirmed
    assert run(answer(" cat cat", [" cat", " cat"]))[0] is True
    # logprobs: the last token starts at 8, after it: one whole token too many
    v, why = run(answer(" cat cat cat", [" cat", " cat", " cat"]))
    assert v is False and "starts after the end of the stop sequence" in why
    # no logprobs: the max_tokens probe with one token less ends before the stop sequence does
    assert run(answer(" cat cat", ct=2), {"stop-probe-1": _exchange(answer(" cat"))})[0] is True
    # the probe holds the whole stop sequence already: not a failure (token counts may differ), inconclusive
    v, why = run(answer(" cat cat cat", ct=3), {"stop-probe-2": _exchange(answer(" cat cat"))})
    assert v is None and "neither logprobs nor a max_tokens probe" in why
    # nothing to go on
    v, why = run(answer(" cat cat"))
    assert v is None and "without logprobs or usage.completion_tokens" in why


# --------------------------------------------------------------------------- published context length


@pytest.mark.parametrize(("entry", "want"), [
    ({"context_size": 256}, (256, "context_size")),
    ({"max_model_len": 4096, "root": "m"}, (4096, "max_model_len")),
    ({"meta": {"n_ctx": 1024, "n_ctx_train": 32768}}, (1024, "meta.n_ctx")),
    ({"meta": {"n_ctx_train": 32768}}, (None, "")),  # the training length is not what the server accepts
    ({"context_size": True}, (None, "")),
    ({"context_size": 0, "max_model_len": 2048}, (2048, "max_model_len")),
    ({"meta": "n_ctx"}, (None, "")),
    (None, (None, "")),
])
def test_published_context_length(entry: Any, want: tuple[int | None, str]) -> None:
    assert published_context_length(entry) == want


@pytest.mark.parametrize("variant", ["models-max-model-len", "models-meta-n-ctx", None])
def test_models_variants_publish_the_context_length_and_the_fault_removes_it(variant: str | None) -> None:
    variants = [variant] if variant else []
    entry = TestClient(create_app(variants=variants, context_length=300)).get("/v1/models").json()["data"][0]
    assert published_context_length(entry)[0] == 300
    bare = TestClient(create_app(variants=variants, faults=["models-no-context-size"])).get("/v1/models")
    assert published_context_length(bare.json()["data"][0]) == (None, "")


def test_context_error_behavior_measures_the_prompt() -> None:
    shared = _shared(TestClient(create_app()))
    msgs = test_context._words(30)
    n = test_context._prompt_tokens(shared, TARGET, msgs)
    assert isinstance(n, int) and n > 30 and shared.sent == ["context-overflow-prompt"]
    refused = _shared(TestClient(create_app(context_length=16)))
    assert test_context._prompt_tokens(refused, TARGET, msgs) is None  # the prompt alone does not fit


# ------------------------------------------------------------------------ where the stop sequence comes from


def _stop_sources(answers: dict[str, str]) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """A fake ``shared``: the deterministic answers by whether the request carries penalties."""
    sent: list[tuple[str, dict[str, Any]]] = []

    def shared(key: str, body: dict[str, Any], **kw: Any) -> Exchange:
        sent.append((key, body))
        content = answers["spread" if "presence_penalty" in body else "plain"]
        return _exchange(_completion("stop" if len(content) < 20 else "length", content=content))

    return shared, sent


def test_a_short_answer_without_a_stop_sequence_falls_back_to_a_penalty_spread_one() -> None:
    shared, sent = _stop_sources({"plain": " Hi.", "spread": " Once upon a time, a small cat named Tom"})
    base, stop, at, src = test_stop._stop(shared, TARGET, SEED)
    assert (stop, at, src.key) == ("tim", 13, "-spread")
    assert [k for k, _ in sent] == ["deterministic-logprobs-16", "stop-base-spread"]
    spread = sent[-1][1]
    assert spread["max_tokens"] == test_stop.LONG and spread["presence_penalty"] == 1.9
    # every request of the stop checks is then that request with the stop sequence added
    cut = test_stop._cut_body(TARGET, SEED, [stop], src)
    assert {k: v for k, v in cut.items() if k != "stop"} == {k: v for k, v in spread.items()
                                                             if k not in ("logprobs", "top_logprobs")}


def test_the_short_answer_is_kept_when_it_holds_a_stop_sequence_and_no_source_is_inconclusive() -> None:
    shared, sent = _stop_sources({"plain": " cat cat cat cat", "spread": "x"})
    assert test_stop._stop(shared, TARGET, SEED)[1:3] == ("t ca", 3) and len(sent) == 1
    shared, _ = _stop_sources({"plain": " Hi.", "spread": " Ok."})
    with pytest.raises(Inconclusive, match="no deterministic answer holds a usable stop sequence"):
        test_stop._stop(shared, TARGET, SEED)
