"""Core response shape and fields of a non-streaming completion."""

from __future__ import annotations

from typing import Any

from conformance.checks._support import (
    COMPARE_LOGPROBS,
    DIVERGED,
    EMPTY,
    EQUAL,
    USER,
    Answer,
    answer_of,
    ask,
    body,
    cut_in_reasoning,
    deterministic_logprobs,
    is_4xx,
    judge_answer_fields,
    judge_schema,
    now,
    obj,
    ok_json,
    published_context_length,
    require_completion,
    settle,
    usage_of,
)
from conformance.engine.registry import check
from conformance.violations import Inconclusive

BASIC = "basic"  # the shared basic completion, judged by several checks


def _basic(shared: Any, target: Any) -> Any:
    return shared(BASIC, body(target, max_tokens=8), label="basic completion")


@check("CORE-REQUEST-JSON", "CORE-CONTENT-TYPE", "CORE-SCHEMA-VALID")
def test_basic_completion_is_json_and_valid(shared, judge, conformance_target):
    ex = _basic(shared, conformance_target)
    judge.require(
        ex.transport_error is None,
        "CORE-REQUEST-JSON",
        "the exchange did not complete",
        expected="a complete answer",
        received=ex.transport_error,
        exchange=ex,
    )
    judge.require(
        ex.status == 200,
        "CORE-REQUEST-JSON",
        "a valid request was not answered 200",
        path="status",
        expected=200,
        received=ex.status,
        exchange=ex,
    )
    judge.check(
        ex.content_type == "application/json",
        "CORE-CONTENT-TYPE",
        "wrong Content-Type",
        path="headers.content-type",
        expected="application/json",
        received=ex.content_type,
        exchange=ex,
    )
    data = ex.json()
    judge.require(
        isinstance(data, dict),
        "CORE-REQUEST-JSON",
        "the body is not a JSON object",
        expected="JSON object",
        received=(ex.body_text or "")[:200],
        exchange=ex,
    )
    judge_schema(judge, "CORE-SCHEMA-VALID", "ChatCompletion", data, ex)


@check(
    "CORE-OBJECT",
    "CORE-ID-PRESENT",
    "CORE-CREATED-SECONDS",
    "CORE-MODEL-PRESENT",
    "CORE-MODEL-MATCHES",
    "CORE-CHOICES-PRESENT",
    "CORE-CHOICE-INDEX",
    "CORE-MESSAGE-ROLE",
    "CORE-MESSAGE-CONTENT",
    "CORE-FINISH-REASON",
    "N-DEFAULT-ONE",
)
def test_completion_fields(shared, judge, conformance_target):
    ex = _basic(shared, conformance_target)
    data = ok_json(ex)
    judge_answer_fields(judge, ex, data)
    created = data.get("created")
    ok_created = isinstance(created, int) and not isinstance(created, bool) and abs(created - now(ex)) < 600
    judge.check(
        ok_created,
        "CORE-CREATED-SECONDS",
        "created is not Unix seconds near now",
        path="$.created",
        expected=f"integer within 600 s of {int(now(ex))}",
        received=created,
        exchange=ex,
    )
    model = data.get("model")
    judge.check(
        isinstance(model, str) and model != "",
        "CORE-MODEL-PRESENT",
        "model missing or empty",
        path="$.model",
        expected="non-empty string",
        received=model,
        exchange=ex,
    )
    want = conformance_target.model
    judge.check(
        isinstance(model, str)
        and (model == want or model.startswith(want + "-") or model.startswith(want + ":")),
        "CORE-MODEL-MATCHES",
        "model does not name the requested model",
        path="$.model",
        expected=want,
        received=model,
        exchange=ex,
    )
    choices = data.get("choices")
    judge.require(
        isinstance(choices, list) and len(choices) > 0,
        "CORE-CHOICES-PRESENT",
        "choices missing or empty",
        path="$.choices",
        expected="non-empty array",
        received=choices,
        exchange=ex,
    )
    judge.check(
        len(choices) == 1,
        "N-DEFAULT-ONE",
        "without n, the number of choices is not 1",
        path="$.choices",
        expected=1,
        received=len(choices),
        exchange=ex,
    )
    indices = [c.get("index") if isinstance(c, dict) else None for c in choices]
    judge.check(
        sorted(i for i in indices if isinstance(i, int)) == list(range(len(choices)))
        and all(isinstance(i, int) for i in indices),
        "CORE-CHOICE-INDEX",
        "choices are not indexed 0..n-1",
        path="$.choices[*].index",
        expected=list(range(len(choices))),
        received=indices,
        exchange=ex,
    )
    if any(cut_in_reasoning(data, i) for i in range(len(choices))):
        # a null content cut inside the reasoning is legitimate, and it hides a server that answers null
        # everywhere: ask again with room, so that an answer past the reasoning shows its content
        again = ask(None, body(conformance_target, max_tokens=8), label="basic completion", shared=shared,
                    key=BASIC)
        adata = obj(again.json()) if again is not ex and again.status == 200 else {}
        if adata:
            judge_answer_fields(judge, again, adata, note=" (asked again with room for the reasoning)")


@check("CORE-ID-UNIQUE")
def test_ids_unique(shared, client, judge, conformance_target):
    first = ok_json(_basic(shared, conformance_target))
    ex = client.chat(body(conformance_target, max_tokens=2), label="second completion")
    second = ok_json(ex)
    judge.check(
        first.get("id") != second.get("id"),
        "CORE-ID-UNIQUE",
        "two responses share an id",
        path="$.id",
        expected=f"an id other than {first.get('id')!r}",
        received=second.get("id"),
        exchange=ex,
    )


# ---- the same request with other messages (spec/DECISIONS.md#oracles) ------------------------------------
# Content parts and history are judged on what they do to a deterministic answer: the request is the shared
# deterministic 16-token one with logprobs (USER as a string, deterministic_logprobs) with only its messages
# changed, so the two answers differ in nothing but the messages.

HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello."},
    {"role": "assistant", "content": "Hi. I am a helpful assistant, and I like to tell short stories about "
     "animals: cats, dogs and birds."},
]


class _Pair:
    """The shared deterministic request (USER as a plain string) and the same request with other messages:
    their first answers and how to ask each again."""

    def __init__(self, shared: Any, client: Any, target: Any, profile: Any, capabilities: Any,
                 messages: list[dict[str, Any]], what: str) -> None:
        self.client, self.what = client, what
        base = deterministic_logprobs(shared, target, profile, capabilities)
        self.base_req = base.request_json if isinstance(base.request_json, dict) else {}
        if is_4xx(base):  # logprobs refused: both sides go without them
            self.base_req = {k: v for k, v in self.base_req.items() if k not in COMPARE_LOGPROBS}
            base = client.chat(self.base_req, label="deterministic request (USER as a string), no logprobs")
        self.base = base
        self.req = {**self.base_req, "messages": messages}
        self.ex = self._send_new()

    def _send_new(self) -> Any:
        return self.client.chat(self.req, label=f"deterministic request, {self.what}")

    def ask_base(self) -> Answer:
        ex = self.client.chat(self.base_req, label="deterministic request (USER as a string), asked again")
        return answer_of(ok_json(ex, "the deterministic request"))

    def ask_new(self) -> Answer:
        return answer_of(ok_json(self._send_new(), f"the request with {self.what}"))


# How far the history must move the next-token distributions to show by itself that it reached the model,
# whatever the numerics: beyond the batch-variant noise of GPU logits that spec/DECISIONS.md#near-ties bounds
# by 0.5 nats, with room.
HISTORY_SHIFT = 1.0


def distribution_shift(a: Answer, b: Answer) -> tuple[float, int, bool]:
    """How the next-token distributions of two answers differ, over the positions where both had chosen the
    same tokens so far (the first divergence included): the largest change of a listed logprob (a token
    listed on one side only counts from the other side's lowest listed value, which it is below), the number
    of positions compared, and whether every compared position is the same to the bit (chosen token, its
    logprob, every listed alternative). A pure function; (0.0, 0, False) without logprobs."""
    shift, n, same = 0.0, 0, True
    for ta, tb in zip(a.tokens or (), b.tokens or (), strict=False):
        if not ta.top or not tb.top:
            break
        n += 1
        same = same and ta.token == tb.token and ta.logprob == tb.logprob and ta.top == tb.top
        da, db = dict(ta.top), dict(tb.top)
        low_a, low_b = min(da.values()), min(db.values())
        for tok in set(da) | set(db):
            if tok in da and tok in db:
                shift = max(shift, abs(da[tok] - db[tok]))
            elif tok in da:
                shift = max(shift, da[tok] - low_b)
            else:
                shift = max(shift, db[tok] - low_a)
        if ta.token != tb.token:
            break
    return shift, n, same and n > 0


@check("CORE-MULTI-TURN", neighbours=("history-counted-not-used", "history-ignored"))
def test_multi_turn_conversation(shared, client, judge, conformance_target, profile, capabilities):
    # History must reach the model, not only the bill: usage.prompt_tokens shows what was counted, not what
    # the model read (a server that counts the history and drops it passed on the prompt size alone). The
    # evidence is the model's next-token distributions, with the history and without it (the shared
    # deterministic request with logprobs, only its messages changed): a model that reads three more turns
    # gives other distributions, a model fed the same prompt gives the same ones, to the bit on a server that
    # repeats a prompt exactly (spec/DECISIONS.md#neighbours).
    pair = _Pair(shared, client, conformance_target, profile, capabilities,
                 [*HISTORY, {"role": "user", "content": USER}],
                 "a system/user/assistant conversation before it")
    data = require_completion(judge, pair.ex, "CORE-MULTI-TURN", "a system/user/assistant conversation")
    base = ok_json(pair.base, "the last user message alone")
    alone, full = usage_of(base, "prompt_tokens"), usage_of(data, "prompt_tokens")
    sizes = f"prompt_tokens {full} with the history, {alone} without"
    first_base, first_full = answer_of(base), answer_of(data)
    if first_base.empty and first_full.empty:
        raise Inconclusive(f"both answers are empty ({sizes}): nothing to compare")
    shift, positions, same = distribution_shift(first_base, first_full)
    if positions:
        if shift >= HISTORY_SHIFT:
            judge.check(True, "CORE-MULTI-TURN", "")
            return
        if same and first_base.text == first_full.text:
            judge.check(False, "CORE-MULTI-TURN",
                        "the conversation was answered as if it were its last user message alone: the same "
                        f"answer and the same next-token distributions, to the bit, over {positions} tokens "
                        f"({sizes})", path="$.choices[0].logprobs.content",
                        expected="other distributions once the system, user and assistant turns come before "
                        "the last message", received=first_full.text, exchange=pair.ex)
            return
        again = pair.ask_base()
        noise, _, repeats = distribution_shift(first_base, again)
        if repeats and not same:
            judge.check(True, "CORE-MULTI-TURN", "")  # the server repeats a prompt to the bit; not this one
            return
        if shift > 2 * noise + 0.1:
            judge.check(True, "CORE-MULTI-TURN", "")
            return
        why = (f"the history moved the next-token distributions by at most {shift:.3f} nats over "
               f"{positions} tokens, the same request without it by {noise:.3f} nats when asked again: "
               "whether the history reached the model cannot be told from this server's numerics")
    else:
        why = "no logprobs to compare the next-token distributions"
    # no logprobs (or only noise-sized shifts): only a confidently different answer shows the history was
    # read; the prompt size alone shows what was counted, and an unchanged one with an unchanged answer fails
    done = settle(first_base, first_full, pair.ask_base, pair.ask_new)
    cmp = done.comparison
    if cmp.kind == EMPTY:
        raise Inconclusive(f"both answers are empty ({sizes}): nothing to compare")
    if cmp.kind == DIVERGED:
        judge.check(True, "CORE-MULTI-TURN", "")
        return
    if cmp.kind == EQUAL and alone is not None and full is not None and full <= alone:
        judge.check(False, "CORE-MULTI-TURN",
                    "the conversation was answered as if it were its last user message alone: the same "
                    f"prompt size ({sizes}) and the same deterministic answer", path="$.usage.prompt_tokens",
                    expected=f"more than {alone} prompt tokens (system, user and assistant turns before the "
                    "last message)", received=full, exchange=pair.ex)
        return
    raise Inconclusive(f"{why}, and the answers with and without the history are {cmp.kind} "
                       f"({done.reason}; {sizes}): a larger prompt_tokens shows the history was counted, not "
                       "that the model read it")


@check("CORE-CONTENT-PARTS")
def test_content_parts(shared, client, judge, conformance_target, profile, capabilities):
    # Content parts are "the equivalent string": the same deterministic request with USER as one text part
    # must give the same answer (compared token by token: a near-tie divergence is asked again, then
    # Inconclusive; a confident one fails).
    pair = _Pair(shared, client, conformance_target, profile, capabilities,
                 [{"role": "user", "content": [{"type": "text", "text": USER}]}], "USER as one text part")
    data = require_completion(judge, pair.ex, "CORE-CONTENT-PARTS", "content given as an array of text parts")
    base = ok_json(pair.base, "the same request with a string content")
    done = settle(answer_of(base), answer_of(data), pair.ask_base, pair.ask_new)
    cmp = done.comparison
    if cmp.kind == EMPTY:
        raise Inconclusive(f"both answers are empty: {cmp.detail}")
    if not cmp.settled:
        raise Inconclusive(f"the answers to a string and to the equivalent text part differ only where the "
                           f"model nearly ties: {done.reason}")
    judge.check(cmp.kind == EQUAL, "CORE-CONTENT-PARTS",
                f"content given as a text part was answered differently from the equivalent string "
                f"({cmp.detail})", path="$.choices[0].message.content",
                expected=done.answers_a[done.a].text, received=done.answers_b[done.b].text, exchange=pair.ex)


@check("CORE-MODELS-LIST", "CORE-CONTEXT-SIZE-PUBLISHED")
def test_models_list(client, judge, conformance_target):
    ex = client.get("/models", label="list models")
    data = ex.json()
    judge.require(
        ex.status == 200 and isinstance(data, dict),
        "CORE-MODELS-LIST",
        "GET /models failed",
        path="status",
        expected="200 with a JSON object",
        received=ex.status,
        exchange=ex,
    )
    items = data.get("data")
    judge.require(
        isinstance(items, list),
        "CORE-MODELS-LIST",
        "data is not a list",
        path="$.data",
        expected="array of models",
        received=items,
        exchange=ex,
    )
    ids = [m.get("id") for m in items if isinstance(m, dict)]
    judge.check(
        data.get("object") == "list",
        "CORE-MODELS-LIST",
        "object is not list",
        path="$.object",
        expected="list",
        received=data.get("object"),
        exchange=ex,
    )
    judge.check(
        conformance_target.model in ids,
        "CORE-MODELS-LIST",
        "the model under test is not listed",
        path="$.data[*].id",
        expected=conformance_target.model,
        received=ids,
        exchange=ex,
    )
    mine = next((m for m in items if isinstance(m, dict) and m.get("id") == conformance_target.model), {})
    ctx, _ = published_context_length(mine)
    judge.check(
        ctx is not None,
        "CORE-CONTEXT-SIZE-PUBLISHED",
        "the model's context length is not published (context_size, max_model_len or meta.n_ctx)",
        path="$.data[*].context_size",
        expected="a positive integer in context_size, max_model_len or meta.n_ctx",
        received={k: mine.get(k) for k in ("context_size", "max_model_len", "meta") if k in mine}
        or "none of these fields",
        exchange=ex,
    )


@check("TARGET-AVAILABLE")
def test_target_keeps_answering_under_the_runs_load(judge):
    # no request of its own: every exchange of the run's checks is judged after the run (conformance.health);
    # the verdict is the run-wide record's (spec/DECISIONS.md#target-health)
    raise Inconclusive("judged run-wide on every exchange of the run")
