#!/usr/bin/env python3
"""Build a tiny, reproducible GGUF chat model for conformance runs against llama.cpp.

The model is a 2-layer llama with random weights (fixed seed) and a byte-level BPE
tokenizer trained locally on a small built-in text.  It produces gibberish, but it
loads in llama.cpp's server, exposes a ChatML chat template with Hermes-style tool
calls (<tool_call>{"name": ..., "arguments": ...}</tool_call>), and is small enough
(< 1 MB) to build in about a second.  Nothing is downloaded.

Usage: python targets/llamacpp/build_model.py [OUT.gguf] [--ctx 1024] [--seed 1234]
Requires: numpy, gguf, tokenizers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # targets/common.py
from common import (  # noqa: E402
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    TEXT_SPECIALS,
    suppressed_token,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "build" / "tiny-chat.gguf"


VOCAB_SIZE = 768
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_LAYER = 2
N_FF = 128

BIAS_C = 8.0      # value of the constant residual channel (see build())
SUPPRESS = 10.0   # output.weight[:, 0] for suppressed tokens (times h[0] ~ 4..6)


# Small built-in training text: prose, chat turns, JSON and tool calls, so that the
# merges cover the strings the conformance suite sends and grammars produce.
_PROSE = """\
The quick brown fox jumps over the lazy dog. Hello, world! How are you today?
You are a helpful assistant. Answer the question briefly and politely.
Say hello. Count from one to ten: one two three four five six seven eight nine ten.
What is the weather like in Paris? It is sunny and warm in Paris today.
What is the capital of France? The capital of France is Paris.
Please write a short poem about the sea. The sea is blue and the sky is wide.
The user asked for a list of colors: red, green, blue, yellow, orange, purple.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 1000 3.14 -1 true false null.
Stop here. The end. STOP. Done. Yes. No. Maybe. OK.
"""
_JSON = [
    {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}},
    {"name": "get_time", "arguments": {"timezone": "UTC"}},
    {"type": "object", "properties": {"answer": {"type": "string"}, "count": {"type": "integer"}},
     "required": ["answer"], "additionalProperties": False},
    {"answer": "Paris", "count": 3, "ok": True, "items": [1, 2, 3], "value": None},
    {"role": "assistant", "content": "Hello!", "tool_calls": []},
]


def training_text() -> list[str]:
    lines = _PROSE.splitlines()
    for obj in _JSON:
        lines.append(json.dumps(obj))
        lines.append(json.dumps(obj, indent=2))
        if "arguments" in obj:
            lines.append("<tool_call>\n" + json.dumps(obj) + "\n</tool_call>")
    lines.append("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>")
    lines.append("<think>\nLet me think about it.\n</think>\nThe answer is 42.")
    # Repeat so that frequent pairs dominate and training is stable.
    return lines * 8


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    tokens = [None] * len(vocab)
    for piece, idx in vocab.items():
        tokens[idx] = piece
    assert all(t is not None for t in tokens), "vocab ids are not contiguous"
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tokens[i] == s, (i, tokens[i], s)
    return tokens, merges


def build(out: Path, ctx: int = 1024, seed: int = 1234) -> Path:
    import gguf

    tokens, merges = train_tokenizer()
    n_vocab = len(tokens)
    token_types = []
    for t in tokens:
        if t in (ENDOFTEXT, IM_START, IM_END):
            token_types.append(gguf.TokenType.CONTROL)
        elif t in TEXT_SPECIALS:
            # Rendered as text so the server's Hermes parser sees "<tool_call>".
            token_types.append(gguf.TokenType.USER_DEFINED)
        else:
            token_types.append(gguf.TokenType.NORMAL)

    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny-chat")
    w.add_context_length(ctx)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(SPECIAL_TOKENS.index(ENDOFTEXT))
    w.add_pad_token_id(SPECIAL_TOKENS.index(ENDOFTEXT))
    w.add_eos_token_id(SPECIAL_TOKENS.index(IM_END))
    w.add_eot_token_id(SPECIAL_TOKENS.index(IM_END))
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)

    def rnd(*shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    ones = lambda n: np.ones((n,), dtype=np.float32)  # noqa: E731

    # Residual-stream dimension 0 is a constant "bias channel": every embedding has
    # BIAS_C there and no layer writes to it (row 0 of attn_output/ffn_down is zero),
    # so after the final RMSNorm h[0] > 0 and column 0 of output.weight acts as a
    # per-token logit bias.  It is used to make unwanted tokens very unlikely (about
    # -40 logits; logit_bias +100 still selects them):
    #   * byte tokens that are not valid UTF-8 alone and control characters, so the
    #     generated text is printable and valid UTF-8;
    #   * all special tokens, including <|im_end|> (EOS): generation runs until
    #     max_tokens / a stop sequence / the context end (finish_reason "length"),
    #     unless a client forces EOS with logit_bias {"2": 100};
    #   * <tool_call> and <think>: the model never starts a tool call or a thought on
    #     its own; tool calls appear only when a grammar forces them.
    embd = rnd(n_vocab, N_EMBD, scale=1.0)
    embd[:, 0] = BIAS_C
    out_w = rnd(n_vocab, N_EMBD, scale=0.3)
    out_w[:, 0] = [(-SUPPRESS if suppressed_token(t) else 0.0) for t in tokens]

    # numpy shape (rows, cols) is stored as GGUF ne = [cols, rows], as llama.cpp expects.
    w.add_tensor("token_embd.weight", embd)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(N_EMBD))
        w.add_tensor(p + "attn_q.weight", rnd(N_EMBD, N_EMBD, scale=0.2))
        w.add_tensor(p + "attn_k.weight", rnd(N_EMBD * N_HEAD_KV // N_HEAD, N_EMBD, scale=0.2))
        w.add_tensor(p + "attn_v.weight", rnd(N_EMBD * N_HEAD_KV // N_HEAD, N_EMBD, scale=0.2))
        attn_out = rnd(N_EMBD, N_EMBD, scale=0.2)
        attn_out[0, :] = 0.0
        w.add_tensor(p + "attn_output.weight", attn_out)
        w.add_tensor(p + "ffn_norm.weight", ones(N_EMBD))
        w.add_tensor(p + "ffn_gate.weight", rnd(N_FF, N_EMBD, scale=0.2))
        w.add_tensor(p + "ffn_up.weight", rnd(N_FF, N_EMBD, scale=0.2))
        ffn_down = rnd(N_EMBD, N_FF, scale=0.2)
        ffn_down[0, :] = 0.0
        w.add_tensor(p + "ffn_down.weight", ffn_down)
    w.add_tensor("output_norm.weight", ones(N_EMBD))
    w.add_tensor("output.weight", out_w)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT), help="output .gguf path")
    ap.add_argument("--ctx", type=int, default=1024, help="llama.context_length (default 1024)")
    ap.add_argument("--seed", type=int, default=1234, help="weight RNG seed (default 1234)")
    args = ap.parse_args(argv)
    out = build(Path(args.out), ctx=args.ctx, seed=args.seed)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
