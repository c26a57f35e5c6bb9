#!/usr/bin/env python3
"""Build a tiny, reproducible Hugging Face chat model for conformance runs against `transformers serve`.

The model is a 2-layer Qwen2ForCausalLM with random weights (fixed seed) and a byte-level BPE tokenizer
trained locally on a small built-in text, wrapped in a PreTrainedTokenizerFast with a Qwen2.5-style
ChatML chat template (Hermes <tool_call> blocks).  model_type "qwen2" makes transformers' server use its
built-in Qwen response parser (tool calls in <tool_call>{json}</tool_call>).  It produces gibberish, is
~0.5 MB and builds in a few seconds.  Nothing is downloaded (HF_HUB_OFFLINE=1 is set before importing).

Usage: python targets/transformers/build_model.py [OUT_DIR] [--ctx 1024] [--seed 1234]
Requires: torch, transformers, tokenizers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # targets/common.py
from common import (  # noqa: E402
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    SPECIAL_TOKENS,
    TEXT_SPECIALS,
    suppressed_token,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "build" / "tiny-chat"


VOCAB_SIZE = 768
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_LAYER = 2
N_FF = 128

BIAS_C = 8.0      # value of the constant residual channel (see build())
SUPPRESS = 10.0   # lm_head.weight[:, 0] for suppressed tokens


_PROSE = """\
Hello! How can I help you today? I am a helpful assistant.
The quick brown fox jumps over the lazy dog. The cat sat on the mat and looked at the sky.
Write a short story about a cat. Once upon a time there was a cat who liked the sea.
What is the weather like in Paris? It is sunny and warm, about 22 degrees.
The answer is 42. One, two, three, four, five, six, seven, eight, nine, ten.
Red, green, blue, yellow, purple, orange. Yes. No. Maybe. OK. Stop. Done.
Please answer in JSON. {"answer": "yes", "count": 3}
Monday Tuesday Wednesday Thursday Friday Saturday Sunday. The time is 12:30 UTC.
"""

_JSON = [
    {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
    {"name": "get_time", "arguments": {"timezone": "UTC"}},
    {"answer": "blue", "count": 7, "items": [1, 2, 3], "ok": True, "none": None},
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
    return lines * 8


def train_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=1,
        special_tokens=[AddedToken(s, special=s not in TEXT_SPECIALS, normalized=False)
                        for s in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def build(out: Path, ctx: int = 1024, seed: int = 1234) -> Path:
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    raw = train_tokenizer()
    n_vocab = raw.get_vocab_size()
    pieces = [raw.id_to_token(i) for i in range(n_vocab)]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
        model_max_length=ctx, clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    eos = SPECIAL_TOKENS.index(IM_END)
    pad = SPECIAL_TOKENS.index(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=n_vocab, hidden_size=N_EMBD, intermediate_size=N_FF, num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD, num_key_value_heads=N_HEAD_KV, max_position_embeddings=ctx,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=pad, eos_token_id=eos,
        pad_token_id=pad, use_sliding_window=False,
    )
    config.dtype = torch.float32
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale):
        return torch.randn(*shape, generator=g) * scale

    # Dimension 0 of the residual stream is a constant "bias channel" (as in targets/llamacpp/build_model.py):
    # every embedding has BIAS_C there, no layer writes to it (row 0 of o_proj/down_proj is zero, biases of
    # the residual writers are none), so after the final RMSNorm h[0] > 0 and column 0 of lm_head is a
    # per-token logit bias: special tokens (incl. EOS <|im_end|>), non-UTF-8 byte tokens and control chars
    # get about -40 logits. Text is printable, EOS never comes by itself (finish_reason "length").
    with torch.no_grad():
        m = model.model
        embd = rnd(n_vocab, N_EMBD, scale=1.0)
        embd[:, 0] = BIAS_C
        m.embed_tokens.weight.copy_(embd)
        for layer in m.layers:
            a, f = layer.self_attn, layer.mlp
            for lin in (a.q_proj, a.k_proj, a.v_proj):
                lin.weight.copy_(rnd(*lin.weight.shape, scale=0.2))
                if lin.bias is not None:
                    lin.bias.zero_()
            o = rnd(*a.o_proj.weight.shape, scale=0.2)
            o[0, :] = 0.0
            a.o_proj.weight.copy_(o)
            f.gate_proj.weight.copy_(rnd(*f.gate_proj.weight.shape, scale=0.2))
            f.up_proj.weight.copy_(rnd(*f.up_proj.weight.shape, scale=0.2))
            d = rnd(*f.down_proj.weight.shape, scale=0.2)
            d[0, :] = 0.0
            f.down_proj.weight.copy_(d)
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        m.norm.weight.fill_(1.0)
        head = rnd(n_vocab, N_EMBD, scale=0.3)
        head[:, 0] = torch.tensor([(-SUPPRESS if suppressed_token(p) else 0.0) for p in pieces])
        model.lm_head.weight.copy_(head)

    # OpenAI's defaults: sampling at temperature 1, no top-k / top-p cut.
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, bos_token_id=pad, eos_token_id=eos,
        pad_token_id=pad,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.glob("model*.safetensors")):
        h.update(p.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT), help="output directory")
    ap.add_argument("--ctx", type=int, default=1024, help="max_position_embeddings (default 1024)")
    ap.add_argument("--seed", type=int, default=1234, help="weight RNG seed (default 1234)")
    args = ap.parse_args(argv)
    out = build(Path(args.out), ctx=args.ctx, seed=args.seed)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size} bytes, weights sha256 {digest(out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
