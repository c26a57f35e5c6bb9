"""Legitimate variants of the reference server: behaviours real, conformant servers show.

Faults (:mod:`.faults`) prove that a check can fail; variants prove that it does not fail wrongly.
``create_app(variants=[...])`` switches them on (they compose with each other and with faults); the
false-alarm matrix (``tests/test_variant_matrix.py``) runs the suite's default gate under each one.

Two kinds:

* ``legit``: the behaviour keeps every requirement of its profile. Under it the gate exits 0 and no
  requirement at any level fails.
* ``should``: the behaviour breaks the SHOULD requirements named in ``breaks`` and nothing else. Under it
  the default gate (``--fail-on must``) still exits 0, no MUST fails, and each named SHOULD is reported.

``profile`` names the built-in profile the behaviour is legitimate under (``None``: both).
``conflicts`` names the fault modes it does not compose with (the two change the same decision).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from conformance.reference.faults import FAULTS

__all__ = ["Variant", "VARIANTS"]


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "legit" | "should"
    description: str
    breaks: tuple[str, ...] = ()
    profile: str | None = None
    conflicts: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.name} — {self.description}"


_TABLE: list[Variant] = [
    # --- shapes: fields a conformant server may add, leave null or lay out differently
    Variant(
        "null-optional-fields",
        "legit",
        "Optional response fields sent as null (SGLang, LMDeploy): message tool_calls/refusal/"
        "reasoning_content null, delta role null after the first chunk, null id/type/function.name on "
        "later tool-call fragments, logprobs bytes null; every OpenAI SDK reads such a null as absent.",
    ),
    Variant(
        "extra-fields",
        "legit",
        "Fields the OpenAI API itself adds: system_fingerprint, service_tier, usage.prompt_tokens_details"
        " and completion_tokens_details, message refusal null and annotations [], stream obfuscation "
        "padding (OpenAI API reference, chat completion object).",
    ),
    Variant(
        "sse-comments-crlf",
        "legit",
        "Keep-alive comment lines (': ping') between events and CRLF line endings (sse-starlette, behind "
        "proxies; the SSE specification allows both).",
    ),
    Variant(
        "sse-id-retry",
        "legit",
        "Every stream event carries an `id:` line and the stream opens with `retry: 3000` (sse-starlette's "
        "ServerSentEvent(id=..., retry=...)): SSE clients, the official SDKs included, deliver the data "
        "unchanged.",
    ),
    Variant(
        "content-type-charset",
        "legit",
        "Content-Type with parameters: application/json; charset=utf-8 and text/event-stream; "
        "charset=utf-8 (FastAPI/Starlette stacks, TGI).",
    ),
    Variant(
        "tool-call-one-fragment",
        "legit",
        "A streamed tool call sent whole in one fragment (id, type, name and all arguments at once), as "
        "llama.cpp's server and SGLang do without incremental argument parsing.",
    ),
    Variant(
        "default-repeat-penalty",
        "legit",
        "A default repeat penalty unless the request sets repetition_penalty (llama.cpp's server: "
        "repeat_penalty 1.1 on logits of 20-30; 1.3 on this model's logits of 5-10 shifts them as much), "
        "left out of the logprobs it reports (llama.cpp reports the probabilities before its sampler "
        "chain): the greedy pick can differ from the top logprob.",
    ),
    Variant(
        "role-with-content",
        "legit",
        "The first stream delta carries role and the first content token together (llama.cpp's server).",
    ),
    # --- reasoning models and models without reasoning
    Variant(
        "reasoning-unsupported",
        "legit",
        "A model without a reasoning mode accepts and ignores separate_reasoning and enable_thinking "
        "(vLLM without --reasoning-parser; the seed names the models that support them: 'Supported "
        "models: ...').",
    ),
    Variant(
        "reasoning-always",
        "legit",
        "A reasoning model without a thinking switch (DeepSeek-R1 behind SGLang's reasoning parser): "
        "every answer reasons first (12-24 tokens), in reasoning_content (inline <think> markup with "
        "separate_reasoning false, as SGLang does), and the reasoning counts toward max_tokens and "
        "completion_tokens; enable_thinking is ignored.",
    ),
    Variant(
        "reasoning-cut-content-null",
        "legit",
        "DeepSeek-R1 behind vLLM's reasoning parser: every answer reasons first (12-24 tokens) in "
        "reasoning_content, separate_reasoning and enable_thinking are unknown fields and ignored, and when "
        "max_tokens ends the answer inside the reasoning message.content is null and a stream sends no "
        "content delta (no answer text was produced).",
    ),
    Variant(
        "reasoning-inline-always",
        "legit",
        "A thinking model served without a reasoning parser (Qwen3, DeepSeek-R1 on llama.cpp): every "
        "free-text answer starts with template-forced <think>...</think> (12-24 tokens) in content, those "
        "tokens appear in the logprobs and stop sequences match inside them; both reasoning fields are "
        "ignored; a grammar-constrained answer (tool call, response_format) starts at its first token.",
    ),
    # --- numerics
    Variant(
        "near-tie-noise",
        "legit",
        "GPU numerics that are not batch-invariant (vLLM, SGLang, TGI on GPUs): a tiny per-request "
        "perturbation of the logits (up to 0.02 nats), so two identical greedy or seeded requests can "
        "differ where two tokens nearly tie (about one position in five here), never at a confident one "
        "(the seed calls seed determinism best effort).",
    ),
    Variant(
        "seeded-draw-drift",
        "legit",
        "Seeded sampling on GPU numerics that are not batch-invariant (vLLM's exponential race with a "
        "per-request generator): the seed fixes every draw, but each request's batch moves every "
        "temperature-scaled logit by up to 0.4 nats (a few bf16 steps), so where the race's two leaders "
        "nearly tie the other one may win: identical seeded requests share a prefix, then part, each at its "
        "own place, often all five of them (the seed calls seed determinism best effort); greedy requests "
        "are untouched.",
    ),
    Variant(
        "byte-level-vocab",
        "legit",
        "Token ids numbered as byte-level BPE vocabularies number them (GPT-2, Llama-3, Qwen2): the byte "
        "tokens come first, so logit_bias id 100 is a partial UTF-8 byte, and ' the' is id 279 (its id in "
        "Llama-3 and Qwen2); logit_bias keys are read in that numbering.",
    ),
    # --- transport
    Variant(
        "rate-limit-429",
        "legit",
        "A token-bucket rate limiter in front of the server (12 requests/s, bursts of 12) answering 429 "
        "with Retry-After, x-ratelimit-* headers and a rate_limit_exceeded error (OpenAI's API, LiteLLM "
        "and API gateways).",
    ),
    Variant(
        "overloaded-503",
        "legit",
        "Now and then (every 10th request) 503 with Retry-After 1 while the engine is saturated (OpenAI's "
        "'engine is currently overloaded', TGI's queue, vLLM behind a load balancer).",
    ),
    Variant(
        "server-error-once",
        "legit",
        "Now and then (every 53rd request after the 40th) one request is answered with a server error, "
        "once: a gateway's 502 (HTML) and OpenAI's 500 'The server had an error while processing your "
        "request' in turn; asked again, it is answered (a restarted worker, a load balancer's bad node).",
    ),
    Variant(
        "slow-first-token",
        "legit",
        "A slow first token: the status line and headers come at once, the first event 1 s later; "
        "every 8th non-stream answer 1 s late (a large model under load; vLLM's scheduler queue).",
    ),
    # --- a target that falls over (kind "health": not legitimate, not a contract deviation either; the run
    # names the collapse once, TARGET-AVAILABLE, and misjudges nothing: tests/test_target_health.py)
    Variant(
        "collapse-seeded",
        "health",
        "Falls over once more than 2 seeded requests are in flight at once, and answers every later request "
        "with a bare 500 text/plain (vLLM 0.32's CPU engine under concurrent seeded requests: 'CPU Generator "
        "does not use offset', then connection refused).",
    ),
    Variant(
        "stall-mid-run",
        "health",
        "Stops answering for 30 s from its 40th request on, then answers again (a GPU engine stalled by a "
        "long prefill, a garbage-collection pause, a node draining).",
    ),
    # --- protocol details the documents leave open
    Variant(
        "usage-on-finish-chunk",
        "legit",
        "With include_usage, usage rides on the last chunk, the one that carries finish_reason, not on "
        "an extra chunk with choices [] (transformers serve, TGI; the seed says only that usage is "
        "'included in the last response chunk returned').",
        profile="seed",
        conflicts=("usage-chunk-with-choices",),  # the same behaviour, a fault under the openai profile
    ),
    Variant(
        "forced-call-finish-stop",
        "legit",
        "A call forced by tool_choice (a named function or 'required') ends with finish_reason 'stop' "
        "(the OpenAI API: named calls end with stop, as vLLM copies it; 'required' did in 2024).",
    ),
    Variant(
        "stop-at-token-end",
        "legit",
        "Stop sequences are matched on whole tokens: the text ends with the token that completed the "
        "stop sequence, so it contains the sequence and possibly a few characters after it (seed "
        "profile: 'the returned text will contain the stop sequence'; llama.cpp, vLLM detokenize per "
        "token).",
        profile="seed",
    ),
    Variant(
        "models-max-model-len",
        "legit",
        "GET /models publishes the context length as max_model_len instead of context_size (vLLM).",
    ),
    Variant(
        "models-meta-n-ctx",
        "legit",
        "GET /models publishes the context length as meta.n_ctx instead of context_size (llama.cpp's "
        "server).",
    ),
    Variant(
        "validation-422",
        "legit",
        "Validation errors answered 422 instead of 400, malformed JSON included, as FastAPI's default "
        "handler for request validation errors does (transformers serve answers malformed JSON 422, "
        "targets/transformers/NOTES.md); the body keeps the OpenAI error shape.",
    ),
    Variant(
        "refusal-json-schema",
        "legit",
        "A json_schema request answered with a refusal: content null and message.refusal a string "
        "(OpenAI structured outputs).",
        # every first ask of a json_schema request is refused: the generated requests, asked once, show the
        # fault json-schema-loose-prose nowhere (a known miss under this variant, never a false alarm)
        conflicts=("json-schema-loose-prose",),
    ),
    # --- SHOULD-level deviations: the default gate passes, the SHOULD is reported
    Variant(
        "tool-args-not-object",
        "should",
        "Tool-call arguments are the JSON the model wrote, here false, not an object, streamed or not (a "
        "small model under a server that does not constrain the arguments; OpenAI: 'the model does not "
        "always generate valid JSON').",
        breaks=("TOOLS-ARGS-JSON",),
    ),
    Variant(
        "lax-type-coercion",
        "should",
        "Lax validators coerce types: max_tokens '8' and other numeric strings are read as numbers "
        "(pydantic in lax mode: vLLM, SGLang).",
        breaks=("ERROR-WRONG-TYPE",),
    ),
    Variant(
        "unknown-role-accepted",
        "should",
        "Messages with an unknown role are accepted (llama.cpp's server and transformers serve answer "
        "role 'wizard' with 200, targets/*/NOTES.md); here they are read as user messages.",
        breaks=("ERROR-INVALID-ROLE",),
    ),
    Variant(
        "auth-403",
        "should",
        "A wrong or missing API key is refused with 403 instead of 401 (AWS API Gateway answers a "
        "missing or invalid API key 403 Forbidden); the body keeps the OpenAI error shape.",
        breaks=("AUTH-STATUS-401",),
    ),
    Variant(
        "fewer-top-logprobs",
        "should",
        "Fewer top_logprobs than requested: k - 1 alternatives for k > 1 (the OpenAI reference: 'In "
        "some cases, the number of returned tokens may be fewer than requested').",
        breaks=("LOGPROBS-TOP-COUNT",),
    ),
]

def _faults_of(*prefixes: str) -> tuple[str, ...]:
    """Names of the fault modes that break a requirement whose id starts with one of ``prefixes``."""
    return tuple(sorted(f.name for f in FAULTS.values() if f.requirement.startswith(prefixes)))


# A model that ignores the reasoning fields (or reasons whatever they say) decides where reasoning goes by
# itself: the reasoning and thinking faults change that same decision, and the capability they break is
# unsupported (ignored) or not switchable under it. Under per-request noise an ignored penalty, or sampling
# that is silently greedy, shows as a difference at a near-tie just as the numerics do: the penalty checks say
# Inconclusive there (spec/DECISIONS.md#near-ties), SEED-VARIES sees varied answers. Those pairs do not
# compose (a known miss, never a false alarm).
_REASONING_FAULTS = _faults_of("REASONING-", "THINKING-")
_MORE_CONFLICTS: dict[str, tuple[str, ...]] = {
    "reasoning-unsupported": _REASONING_FAULTS,
    "reasoning-always": _REASONING_FAULTS,
    "reasoning-cut-content-null": _REASONING_FAULTS,
    "reasoning-inline-always": _REASONING_FAULTS,
    "near-tie-noise": _faults_of("PENALTY-", "SEED-VARIES"),
}
_TABLE = [replace(v, conflicts=(*v.conflicts, *_MORE_CONFLICTS.get(v.name, ()))) for v in _TABLE]

VARIANTS: dict[str, Variant] = {v.name: v for v in _TABLE}
