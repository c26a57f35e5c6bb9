"""Fault modes of the reference server: each one breaks exactly one requirement of spec/requirements.yaml.

``create_app(faults=[...])`` switches them on; the kill matrix proves the checks catch each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fault", "FAULTS"]


@dataclass(frozen=True)
class Fault:
    name: str
    requirement: str
    description: str
    run_wide: bool = False  # shows only on some exchanges of a whole run: proven by a full run, not --only


_TABLE: list[tuple[str, str, str]] = [
    # --- core
    ("wrong-object", "CORE-OBJECT", 'Non-streaming responses carry object "chat_completion".'),
    (
        "system-fingerprint-integer",
        "CORE-SCHEMA-VALID",
        "Non-streaming responses carry system_fingerprint as an integer (the schema wants a string or null).",
    ),
    ("completion-status-201", "CORE-REQUEST-JSON", "Non-streaming completions are answered with status 201."),
    ("choices-empty", "CORE-CHOICES-PRESENT", "Non-streaming responses carry choices []."),
    ("id-reused", "CORE-ID-UNIQUE", "Every response (and stream) carries the same id."),
    ("id-empty", "CORE-ID-PRESENT", 'Non-streaming responses carry id "".'),
    ("created-milliseconds", "CORE-CREATED-SECONDS", "Non-streaming created is in milliseconds."),
    ("model-missing", "CORE-MODEL-PRESENT", "Non-streaming responses carry no model field."),
    ("model-name-wrong", "CORE-MODEL-MATCHES", 'Non-streaming responses name model "some-other-model".'),
    ("choices-index-wrong", "CORE-CHOICE-INDEX", "Non-streaming choices are indexed from 1."),
    ("role-wrong", "CORE-MESSAGE-ROLE", 'Non-streaming messages carry role "bot".'),
    ("content-null", "CORE-MESSAGE-CONTENT", "Plain-text non-streaming answers carry content null."),
    (
        "finish-reason-invalid",
        "CORE-FINISH-REASON",
        'Non-streaming finish_reason is "end", "max_length" or "function".',
    ),
    ("content-type-text", "CORE-CONTENT-TYPE", "Non-streaming 200 responses are sent as text/plain."),
    (
        "content-parts-rejected",
        "CORE-CONTENT-PARTS",
        "A message whose content is an array of parts gets 400.",
    ),
    ("multi-turn-rejected", "CORE-MULTI-TURN", "An assistant message without tool_calls gets 400."),
    (
        "content-parts-text-dropped",
        "CORE-CONTENT-PARTS",
        "A message whose content is an array of parts is accepted, but its text is dropped (read as \"\").",
    ),
    (
        "history-ignored",
        "CORE-MULTI-TURN",
        "Conversations are accepted, but only the last message reaches the prompt (history ignored).",
    ),
    (
        "history-counted-not-used",
        "CORE-MULTI-TURN",
        "Conversations are counted whole in usage.prompt_tokens, but only the last message reaches the model "
        "(the history is billed, never read).",
    ),
    ("models-missing", "CORE-MODELS-LIST", "GET /models answers 404."),
    (
        "models-no-context-size",
        "CORE-CONTEXT-SIZE-PUBLISHED",
        "GET /models publishes no context length (no context_size, max_model_len or meta.n_ctx).",
    ),
    # --- usage
    ("usage-missing", "USAGE-PRESENT", "Non-streaming responses carry no usage."),
    ("usage-float", "USAGE-INTEGERS", "Non-streaming usage.prompt_tokens is a float (e.g. 12.5)."),
    ("usage-total-wrong", "USAGE-TOTAL-SUM", "usage.total_tokens is one more than the sum."),
    (
        "completion-tokens-wrong",
        "USAGE-COMPLETION-EXACT",
        "Non-streaming completion_tokens is one less than counted (total kept consistent).",
    ),
    (
        "reasoning-tokens-uncounted",
        "USAGE-COMPLETION-EXACT",
        "completion_tokens (streamed or not) leaves out the reasoning tokens (reasoning_content, or the "
        "<think> segment of content): only the answer's tokens are counted.",
    ),
    ("prompt-tokens-constant", "USAGE-PROMPT-GROWS", "prompt_tokens is always 10 (total kept consistent)."),
    ("no-usage-chunk", "USAGE-STREAM-LAST-CHUNK", "With include_usage the usage chunk is not sent."),
    ("usage-every-chunk", "USAGE-STREAM-NULL-ELSEWHERE", "With include_usage every chunk carries the usage."),
    (
        "usage-chunk-with-choices",
        "USAGE-STREAM-EMPTY-CHOICES",
        "With include_usage the usage rides on the finish chunk instead of an extra chunk with choices [].",
    ),
    ("stream-usage-differs", "USAGE-STREAM-MATCHES", "Streamed usage counts one more prompt token."),
    (
        "stream-usage-last-message",
        "USAGE-STREAM-MATCHES",
        "Streamed usage counts only the last message's tokens as prompt_tokens (the history is left out of "
        "the count, not of the prompt); the same for a one-message prompt.",
    ),
    (
        "stream-usage-first-choice",
        "USAGE-STREAM-MATCHES",
        "Streamed usage counts only choice 0's tokens in completion_tokens when n > 1 (non-streamed usage "
        "counts every choice).",
    ),
    (
        "usage-stream-unrequested",
        "USAGE-STREAM-ABSENT",
        "Streams without include_usage end with a usage chunk (openai profile).",
    ),
    # --- streaming
    ("stream-wrong-content-type", "STREAM-CONTENT-TYPE", "Streams are sent as application/x-ndjson."),
    ("stream-event-field", "STREAM-DATA-ONLY", "Every stream event carries an `event: chunk` line."),
    (
        "stream-invalid-json",
        "STREAM-CHUNK-JSON",
        "An extra event with a non-JSON payload is sent mid-stream.",
    ),
    ("chunk-schema-invalid", "STREAM-CHUNK-SCHEMA", "Chunks carry created as a string."),
    ("chunk-wrong-object", "STREAM-CHUNK-OBJECT", 'Chunks carry object "chat.completion".'),
    ("no-done", "STREAM-DONE-TERMINATES", "The stream ends without data: [DONE]."),
    ("events-after-done", "STREAM-NOTHING-AFTER-DONE", "A chunk is sent again after data: [DONE]."),
    ("stream-id-changes", "STREAM-ID-CONSTANT", "Every chunk carries a fresh id."),
    ("stream-created-changes", "STREAM-CREATED-CONSTANT", "Odd chunks carry created + 1."),
    ("stream-model-changes", "STREAM-MODEL-CONSTANT", 'Odd chunks carry the model name plus "-v2".'),
    ("no-role-first", "STREAM-ROLE-FIRST", "The first delta carries no role."),
    (
        "two-finish-reasons",
        "STREAM-FINISH-ONCE",
        "The last content chunk already carries the finish_reason that the final chunk repeats.",
    ),
    ("content-after-finish", "STREAM-FINISH-LAST", "The finish chunk is sent before the last content chunk."),
    ("single-chunk", "STREAM-INCREMENTAL", "The whole content is sent in one chunk."),
    ("stream-choice-index-wrong", "STREAM-CHOICE-INDEX", "Chunk choices are indexed from 1."),
    (
        "stream-drops-multibyte",
        "STREAM-MATCHES-NONSTREAM",
        "Streams drop the characters made of several byte tokens (the delta that completes one carries \"\"; "
        "the logprobs keep every token and its bytes): a detokenizer that loses incomplete UTF-8.",
    ),
    (
        "stream-differs",
        "STREAM-MATCHES-NONSTREAM",
        "Plain-text streams (no stop, tools or response_format) upper-case the first content token.",
    ),
    (
        "stream-options-without-stream-accepted",
        "STREAM-OPTIONS-REQUIRES-STREAM",
        "stream_options without stream true is accepted.",
    ),
    # --- max_tokens and context
    ("max-tokens-ignored", "MAXTOK-BOUND", "max_tokens is ignored (generation runs to eos or the context)."),
    ("length-reported-as-stop", "MAXTOK-LENGTH-FINISH", 'A choice cut by max_tokens ends with "stop".'),
    ("stream-max-tokens-ignored", "MAXTOK-STREAM-BOUND", "Streams ignore max_tokens."),
    ("max-tokens-zero-accepted", "MAXTOK-REJECT-NONPOSITIVE", "max_tokens <= 0 is accepted (default used)."),
    (
        "context-truncate-errors",
        "CONTEXT-TRUNCATE-DEFAULT",
        "Prompt + max_tokens over the context gets 400 even without behaviour error.",
    ),
    (
        "context-truncate-prompt",
        "CONTEXT-TRUNCATE-DEFAULT",
        "Prompt + max_tokens over the context is answered with the prompt's start cut off to make room for "
        "the whole max_tokens, instead of max_tokens reduced.",
    ),
    (
        "context-error-ignored",
        "CONTEXT-ERROR-BEHAVIOR",
        'context_length_exceeded_behavior "error" truncates.',
    ),
    (
        "prompt-too-long-accepted",
        "CONTEXT-PROMPT-TOO-LONG",
        "A prompt longer than the context is cut from the left and answered.",
    ),
    (
        "context-behavior-any-accepted",
        "CONTEXT-BEHAVIOR-ENUM",
        "Any context_length_exceeded_behavior string is accepted (as truncate).",
    ),
    # --- n
    ("n-ignored", "N-CHOICES-COUNT", "n is ignored: one choice."),
    ("n-default-two", "N-DEFAULT-ONE", "Without n, two choices are returned."),
    ("n-usage-one-choice", "N-USAGE-COUNTS-ALL", "completion_tokens counts only choice 0."),
    # --- seed and sampling
    ("seed-ignored", "SEED-DETERMINISM", "seed is ignored (fresh randomness)."),
    (
        "logprob-bytes-replacement",
        "LOGPROBS-BYTES-CONCAT",
        "A logprob entry's bytes are its decoded token string's: a token holding part of a multi-byte "
        "character carries the bytes of U+FFFD (EF BF BD), not its own.",
    ),
    ("always-greedy", "SEED-VARIES", "Sampling is always greedy, whatever the temperature."),
    (
        "greedy-at-temperature-1",
        "SAMPLING-TEMPERATURE-SAMPLES",
        "Decoding is greedy at any temperature up to 1 (the default): only higher temperatures sample.",
    ),
    ("top-p-keeps-only-the-top", "SAMPLING-TOP-P-KEEPS", "Any top_p below 1 keeps the top token only."),
    ("min-p-keeps-only-the-top", "SAMPLING-MIN-P-KEEPS", "Any min_p above 0 keeps the top token only."),
    ("top-p-ignored", "SAMPLING-TOP-P-EFFECT", "top_p is ignored."),
    ("min-p-ignored", "SAMPLING-MIN-P-EFFECT", "min_p is ignored."),
    ("top-k-ignored", "SAMPLING-TOP-K-EFFECT", "top_k is ignored."),
    (
        "top-p-skips-top",
        "SAMPLING-TOP-P-EFFECT",
        "top_p builds its nucleus from the second most likely token on: a tiny top_p always picks the "
        "runner-up (the same answer for every seed).",
    ),
    (
        "min-p-skips-top",
        "SAMPLING-MIN-P-EFFECT",
        "min_p filters from the second most likely token on: min_p 1 always picks the runner-up (the same "
        "answer for every seed).",
    ),
    (
        "top-k-skips-top",
        "SAMPLING-TOP-K-EFFECT",
        "top_k keeps the k tokens after the most likely one: top_k 1 always picks the runner-up (the same "
        "answer for every seed).",
    ),
    # --- stop
    ("stop-ignored", "STOP-HONOURED", "Stop sequences are ignored."),
    (
        "stop-wrong-inclusion",
        "STOP-SEQUENCE-INCLUDED",
        "The stop sequence is cut from the text (seed profile).",
    ),
    (
        "stop-kept",
        "STOP-SEQUENCE-EXCLUDED",
        "The text keeps the stop sequence at its end (openai profile).",
    ),
    ("stop-string-rejected", "STOP-STRING-OR-ARRAY", "stop as a single string gets 400."),
    ("stop-stream-ignored", "STOP-STREAM", "Streams ignore stop sequences."),
    # --- penalties and logit_bias
    ("penalties-ignored", "PENALTY-FREQUENCY-EFFECT", "frequency_penalty is ignored."),
    ("presence-penalty-ignored", "PENALTY-PRESENCE-EFFECT", "presence_penalty is ignored."),
    ("repetition-penalty-ignored", "PENALTY-REPETITION-EFFECT", "repetition_penalty is ignored."),
    (
        "presence-penalty-ignored-confident",
        "PENALTY-PRESENCE-EFFECT",
        "presence_penalty is ignored, by a model whose margins are wide (its logits x 5.5: a large model "
        "surer of its next token): 1.9 could flip no token of a 24-token answer, 1.99 one of a 61-token one.",
    ),
    (
        "frequency-penalty-backwards",
        "PENALTY-FREQUENCY-EFFECT",
        "frequency_penalty is applied with its sign reversed (a positive value rewards repeated tokens).",
    ),
    (
        "presence-penalty-backwards",
        "PENALTY-PRESENCE-EFFECT",
        "presence_penalty is applied with its sign reversed (a positive value rewards present tokens).",
    ),
    (
        "repetition-penalty-backwards",
        "PENALTY-REPETITION-EFFECT",
        "repetition_penalty r is applied as 1/r (above 1 rewards repetition, below 1 discourages it).",
    ),
    ("logit-bias-ignored", "LOGIT-BIAS-FORCE", "Positive logit_bias values are ignored."),
    ("logit-bias-ban-ignored", "LOGIT-BIAS-BAN", "Negative logit_bias values are ignored."),
    # --- logprobs
    ("logprobs-count-wrong", "LOGPROBS-PRESENT", "logprobs.content is one entry short."),
    ("logprobs-positive", "LOGPROBS-VALUES", "Each entry's logprob is sent as a positive number."),
    (
        "logprobs-tokens-wrong",
        "LOGPROBS-TOKENS-CONCAT",
        'Each logprob token string (and its top entry) gets "_".',
    ),
    ("top-logprobs-count-wrong", "LOGPROBS-TOP-AT-MOST", "top_logprobs carries k + 1 alternatives."),
    ("top-logprobs-fewer", "LOGPROBS-TOP-COUNT", "top_logprobs carries k - 1 alternatives (k > 1)."),
    ("top-logprobs-unsorted", "LOGPROBS-TOP-ORDER", "top_logprobs are sorted from least to most likely."),
    (
        "logprobs-greedy-inconsistent",
        "LOGPROBS-GREEDY-CONSISTENT",
        "The chosen token's logprob is 0.25 below its own top_logprobs entry.",
    ),
    ("logprobs-by-default", "LOGPROBS-ABSENT-BY-DEFAULT", "logprobs are returned even when not asked for."),
    (
        "top-logprobs-without-logprobs-accepted",
        "LOGPROBS-TOP-REQUIRES-LOGPROBS",
        "top_logprobs without logprobs true is accepted.",
    ),
    ("logprobs-stream-missing", "LOGPROBS-STREAM", "Streamed chunks carry no logprobs."),
    # --- tools
    ("tool-call-no-type", "TOOLS-CALL-SHAPE", "Tool calls carry no type."),
    (
        "tool-call-id-reused",
        "TOOLS-CALL-ID-UNIQUE",
        'Every tool call, streamed or not, carries the id "call_0" (an id numbered per response, so every '
        "response's first call has the same one).",
    ),
    (
        "tool-args-object",
        "TOOLS-CALL-SHAPE",
        "Non-streaming tool-call arguments are a JSON object, not a string.",
    ),
    (
        "tool-args-not-json",
        "TOOLS-ARGS-JSON",
        "Non-streaming tool-call arguments are a string that is not JSON (key=value pairs).",
    ),
    (
        "tool-args-invalid-schema",
        "TOOLS-ARGS-SCHEMA",
        "Tool-call arguments do not validate against the schema.",
    ),
    ("tool-finish-stop", "TOOLS-FINISH-REASON", 'Tool-call answers end with finish_reason "stop".'),
    (
        "tool-call-cut-finish-tool-calls",
        "TOOLS-FINISH-REASON",
        'A tool call cut short by max_tokens (its arguments unfinished) ends with finish_reason '
        '"tool_calls", not "length".',
    ),
    ("tool-choice-none-ignored", "TOOLS-CHOICE-NONE", 'tool_choice "none" still calls the first tool.'),
    ("tool-auto-rejected", "TOOLS-CHOICE-AUTO", 'tool_choice "auto" gets 400.'),
    ("tool-required-ignored", "TOOLS-CHOICE-REQUIRED", 'tool_choice "required" answers with plain content.'),
    (
        "tool-required-as-auto",
        "TOOLS-CHOICE-REQUIRED",
        'tool_choice "required" is treated as "auto": a call only when the question invites one (it names '
        "the weather or a tool), plain content otherwise.",
    ),
    ("tool-named-wrong", "TOOLS-CHOICE-NAMED", "A named tool_choice calls another function."),
    ("tool-result-rejected", "TOOLS-RESULT-TURN", "A conversation holding a tool message gets 400."),
    ("tool-stream-no-id", "TOOLS-STREAM-FRAGMENTS", "The first streamed tool-call fragment carries no id."),
    (
        "tool-unknown-choice-accepted",
        "TOOLS-UNKNOWN-CHOICE",
        "A named tool_choice matching no tool is accepted.",
    ),
    # --- response formats
    ("format-text-rejected", "FORMAT-TEXT", 'response_format {"type": "text"} gets 400.'),
    ("json-object-prose", "JSON-OBJECT-VALID", "json_object answers are prose."),
    ("json-schema-invalid", "JSON-SCHEMA-VALID", "json_schema answers are JSON that violates the schema."),
    ("json-schema-stream-invalid", "JSON-SCHEMA-STREAM", "Streamed json_schema answers start with '//'."),
    # --- reasoning / thinking
    (
        "reasoning-in-content",
        "REASONING-SEPARATE",
        "With separate_reasoning true the reasoning is put in content inside <think> markup.",
    ),
    ("reasoning-stream-in-content", "REASONING-STREAM", "Streamed reasoning arrives in delta.content."),
    (
        "reasoning-when-not-separated",
        "REASONING-NOT-SEPARATED",
        "separate_reasoning false is treated as true (reasoning_content is a string).",
    ),
    ("thinking-not-disabled", "THINKING-DISABLE", "enable_thinking false is treated as true."),
    ("thinking-enable-ignored", "THINKING-ENABLE", "enable_thinking true produces no reasoning."),
    # --- errors
    ("error-shape-wrong", "ERROR-SHAPE", 'Error bodies are {"error": "<message>"}.'),
    ("error-no-type", "ERROR-SHAPE-FIELDS", "Error objects carry no type."),
    ("error-content-type-text", "ERROR-CONTENT-TYPE", "Error responses are sent as text/plain."),
    (
        "bad-input-500",
        "ERROR-NO-5XX",
        "An unknown model, and a wrong JSON type on a sampling field (temperature, top_p, top_k, min_p, n, "
        "penalties, seed, stream, logprobs, top_logprobs), get 500; other invalid requests still get 4xx.",
    ),
    ("error-with-200", "ERROR-NOT-200", "Validation errors (not auth) are sent with status 200."),
    ("malformed-json-500", "ERROR-MALFORMED-JSON", "A body that is not JSON gets 500."),
    ("missing-messages-accepted", "ERROR-MISSING-MESSAGES", "A request without messages is answered."),
    ("empty-messages-accepted", "ERROR-EMPTY-MESSAGES", "A request with messages [] is answered."),
    ("missing-model-accepted", "ERROR-MISSING-MODEL", "A request without model is answered."),
    ("unknown-model-accepted", "ERROR-UNKNOWN-MODEL", "Any model name is answered."),
    (
        "wrong-type-accepted",
        "ERROR-WRONG-TYPE",
        "max_tokens given as a numeric string is coerced; messages as an object is wrapped in a list.",
    ),
    (
        "top-k-fraction-accepted",
        "ERROR-WRONG-TYPE",
        "top_k given as a fractional number (3.5) is accepted and read as its integer part (a C++ server's "
        "json get<int>).",
    ),
    ("unknown-role-accepted", "ERROR-INVALID-ROLE", "Messages with unknown roles are treated as user."),
    (
        "stream-error-as-events",
        "ERROR-STREAM-BEFORE-EVENTS",
        "Invalid requests with stream true get a 400 text/event-stream with an error event.",
    ),
    (
        "stream-range-error-in-band",
        "ERROR-STREAM-BEFORE-EVENTS",
        "A streamed request with top_logprobs outside [0, 20] gets 200 text/event-stream carrying data: "
        '{"error": {...}} then data: [DONE] (vLLM 0.32 checks it once generation is set up); the same '
        "request without stream still gets a JSON 400.",
    ),
    # --- auth
    ("auth-not-checked", "AUTH-MISSING-KEY", "A request without Authorization is accepted."),
    ("wrong-key-accepted", "AUTH-WRONG-KEY", "Any bearer key is accepted."),
    ("auth-error-completion", "AUTH-NOTHING-GENERATED", "A 401 carries a completion in its body."),
    ("auth-status-403", "AUTH-STATUS-401", "A missing or wrong key is refused with 403 instead of 401."),
    # --- ranges
    (
        "temperature-out-of-range-accepted",
        "RANGE-TEMPERATURE-REJECT",
        "temperature outside [0, 2] is clamped.",
    ),
    ("top-p-out-of-range-accepted", "RANGE-TOP-P-REJECT", "top_p outside [0, 1] is clamped."),
    ("top-p-zero-rejected", "RANGE-TOP-P-BOUNDARY", "top_p 0 gets 400."),
    ("top-k-out-of-range-accepted", "RANGE-TOP-K-REJECT", "top_k outside [1, 128] is clamped."),
    ("top-k-rejected-inside", "RANGE-TOP-K-ACCEPT", "top_k between 2 and 127 gets 400."),
    ("min-p-out-of-range-accepted", "RANGE-MIN-P-REJECT", "min_p outside [0, 1] is clamped."),
    ("n-out-of-range-accepted", "RANGE-N-REJECT", "n outside [1, 128] is clamped."),
    ("n-128-rejected", "RANGE-N-BOUNDARY", "n 128 gets 400."),
    (
        "penalty-out-of-range-accepted",
        "RANGE-FREQUENCY-PENALTY-REJECT",
        "frequency_penalty outside [-2, 2] is clamped.",
    ),
    (
        "presence-penalty-out-of-range-accepted",
        "RANGE-PRESENCE-PENALTY-REJECT",
        "presence_penalty outside [-2, 2] is clamped.",
    ),
    (
        "repetition-penalty-out-of-range-accepted",
        "RANGE-REPETITION-PENALTY-REJECT",
        "repetition_penalty outside [0, 2] is clamped.",
    ),
    (
        "repetition-penalty-zero-rejected",
        "RANGE-REPETITION-PENALTY-BOUNDARY",
        "repetition_penalty 0 gets 400.",
    ),
    (
        "top-logprobs-out-of-range-accepted",
        "RANGE-TOP-LOGPROBS-REJECT",
        "top_logprobs outside [0, 20] clamps.",
    ),
    (
        "logit-bias-out-of-range-accepted",
        "RANGE-LOGIT-BIAS-REJECT",
        "logit_bias values outside [-100, 100] clamp.",
    ),
    ("five-stops-accepted", "RANGE-STOP-REJECT", "More than 4 stop sequences are accepted."),
    (
        "temperature-rejected-inside",
        "RANGE-TEMPERATURE-ACCEPT",
        "temperature strictly between 0 and 1 gets 400.",
    ),
    ("temperature-bound-rejected", "RANGE-TEMPERATURE-BOUNDARY", "temperature 2 gets 400."),
    ("top-p-rejected-inside", "RANGE-TOP-P-ACCEPT", "top_p strictly between 0.1 and 1 gets 400."),
    ("top-k-bound-rejected", "RANGE-TOP-K-BOUNDARY", "top_k 128 gets 400."),
    ("min-p-rejected-inside", "RANGE-MIN-P-ACCEPT", "min_p strictly between 0 and 1 gets 400."),
    ("n-one-rejected", "RANGE-N-ACCEPT", "n 1 sent explicitly gets 400 (no n is still accepted)."),
    (
        "frequency-penalty-rejected-inside",
        "RANGE-FREQUENCY-PENALTY-ACCEPT",
        "frequency_penalty strictly between -2 and 0 gets 400.",
    ),
    (
        "frequency-penalty-bound-rejected",
        "RANGE-FREQUENCY-PENALTY-BOUNDARY",
        "frequency_penalty -2 gets 400.",
    ),
    (
        "presence-penalty-rejected-inside",
        "RANGE-PRESENCE-PENALTY-ACCEPT",
        "presence_penalty strictly between -2 and 0 gets 400.",
    ),
    (
        "presence-penalty-bound-rejected",
        "RANGE-PRESENCE-PENALTY-BOUNDARY",
        "presence_penalty -2 gets 400.",
    ),
    (
        "repetition-penalty-rejected-inside",
        "RANGE-REPETITION-PENALTY-ACCEPT",
        "repetition_penalty strictly between 0 and 1 gets 400.",
    ),
    ("top-logprobs-zero-rejected", "RANGE-TOP-LOGPROBS-ACCEPT", "top_logprobs 0 gets 400."),
    (
        "logit-bias-rejected-inside",
        "RANGE-LOGIT-BIAS-ACCEPT",
        "logit_bias values strictly between -100 and 100, other than 0, get 400.",
    ),
    ("four-stops-rejected", "RANGE-STOP-ACCEPT", "stop with exactly 4 sequences gets 400."),
    # --- generated requests (property-based checks)
    (
        "message-name-rejected",
        "GEN-VALID-ACCEPTED",
        "A message carrying the optional name field gets 400.",
    ),
    (
        "tool-type-any-accepted",
        "GEN-INVALID-REJECTED",
        'A tool whose type is a string other than "function" is accepted (as a function).',
    ),
]

# deviations that show only on some exchanges of a run (the requirement's own check misses them): the
# run-wide invariants (conformance/checks/_runwide.py) catch them on the exchanges other checks made
_RUN_WIDE_TABLE: list[tuple[str, str, str]] = [
    # only the checks whose prompts are not ASCII meet it; they are run a second time, and the same request
    # answered 500 twice is the run-wide judge's finding (spec/DECISIONS.md, "A server error is asked twice")
    (
        "non-ascii-prompt-500",
        "CORE-REQUEST-JSON",
        "A valid request whose messages hold a character outside ASCII is answered 500 (an encoder crash), "
        "every time it is asked.",
    ),
    (
        "max-tokens-overshoot",
        "MAXTOK-BOUND",
        "Non-streaming answers with max_tokens >= 8 generate up to 3 tokens more (llama-cpp-python: "
        "8 -> 16).",
    ),
    (
        "stream-created-changes-late",
        "STREAM-CREATED-CONSTANT",
        "Chunks from the 21st on carry created + 1 (a per-second timestamp crossing a second).",
    ),
    (
        "logprobs-null-without-top",
        "LOGPROBS-PRESENT",
        "logprobs: true without top_logprobs is answered with logprobs null.",
    ),
    ("range-error-500-text", "ERROR-SHAPE", "An out-of-range n is answered 500 text/plain."),
    (
        "bad-input-500-text",
        "ERROR-SHAPE",
        "An unknown model, and a wrong JSON type on a sampling field (as bad-input-500), get 500 text/plain "
        "'Internal Server Error' (the validation error escapes the handler: the ASGI server's own page).",
    ),
    (
        "stream-error-event",
        "STREAM-CHUNK-SCHEMA",
        'Streams with n > 1 send the first content chunk, then data: {"error": {...}} and data: [DONE] with '
        "status 200 (vLLM: an engine error after the status line is sent as an event).",
    ),
    ("stream-id-reused", "CORE-ID-UNIQUE", "Every stream carries the same id."),
    (
        "finish-reason-invalid-later-choices",
        "CORE-FINISH-REASON",
        'Choices after the first (n > 1) carry finish_reason "eos".',
    ),
    (
        "stream-usage-total-wrong",
        "USAGE-TOTAL-SUM",
        "The streamed usage's total_tokens is one more than the sum.",
    ),
    # tool calls, stop sequences and JSON output judged on every answer that shows them
    (
        "tool-call-id-empty-named",
        "TOOLS-CALL-SHAPE",
        'Non-streamed calls forced by a named tool_choice carry id "" (those of tool_choice "required" keep '
        "theirs).",
    ),
    (
        "tool-args-not-json-named",
        "TOOLS-ARGS-JSON",
        "Non-streamed calls forced by a named tool_choice carry their arguments as key=value text, not JSON.",
    ),
    (
        "tool-args-invalid-schema-stream",
        "TOOLS-ARGS-SCHEMA",
        "Streamed calls carry arguments (still a JSON object) that break the function's parameters schema.",
    ),
    (
        "tool-required-stream-wrong-name",
        "TOOLS-CHOICE-REQUIRED",
        'Streamed calls forced by tool_choice "required" name a function that is not among the tools '
        "(its name + _v2).",
    ),
    (
        "finish-tool-calls-without-call",
        "TOOLS-FINISH-REASON",
        'Answers without a tool call to a request offering tools (tool_choice absent or "auto") end with '
        'finish_reason "tool_calls".',
    ),
    (
        "stop-kept-with-several",
        "STOP-SEQUENCE-EXCLUDED",
        "With more than one stop sequence, the one that ended the text is kept (openai profile: it must be "
        "cut off; a single stop sequence is cut off).",
    ),
    (
        "json-schema-loose-prose",
        "JSON-SCHEMA-VALID",
        "A json_schema response format without strict: true is answered in free text, not JSON (strict ones "
        "keep the schema).",
    ),
    # the official openai SDK's reading of every answer (conformance/checks/_sdk.py, spec/DECISIONS.md#sdk):
    # schema-plausible answers that break openai-python
    (
        "stream-chunk-error-member",
        "SDK-PARSE",
        'Stream chunks carry an extra member error {"code": 0, "message": ""} (the engine\'s "no error" '
        "status passed through; the chunk schema allows extra members): the SDK raises APIError on it.",
    ),
    (
        "stream-tool-call-index-from-1",
        "SDK-STREAM-ACCUMULATE",
        "Streamed tool-call fragments number the first call 1, not 0: the SDK's accumulator raises "
        "IndexError.",
    ),
    (
        "json-schema-refusal-with-answer",
        "SDK-STRUCTURED-PARSE",
        'Answers to json_schema requests carry their JSON content and also refusal "none" (message.refusal, '
        "a delta.refusal in streams): the SDK's parse() reads them as refused, message.parsed None.",
    ),
]

FAULTS: dict[str, Fault] = {name: Fault(name, req, desc) for name, req, desc in _TABLE}
FAULTS.update({name: Fault(name, req, desc, run_wide=True) for name, req, desc in _RUN_WIDE_TABLE})
if len(FAULTS) != len(_TABLE) + len(_RUN_WIDE_TABLE):  # pragma: no cover - guards the table
    raise AssertionError("duplicate fault names")
