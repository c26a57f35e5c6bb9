#!/usr/bin/env python3
"""Build the tiny, reproducible chat model that `vllm serve` runs in conformance runs (targets/vllm/).

It is the model of targets/transformers/build_model.py (random-weight 2-layer Qwen2ForCausalLM, a Llama-family
decoder, fixed seed; 768-token byte-level BPE trained locally; the ChatML + Hermes tools template of
targets/chatml_tools.jinja) with one change: 2 attention heads of 32 instead of 4 of 16, because vLLM's CPU
attention kernels take head sizes 32, 64, 80, ... only ("Unsupported CPU attention configuration:
head_dim=16"). Nothing is downloaded (HF_HUB_OFFLINE=1); ~0.7 MB, a few seconds.

Usage: python targets/vllm/build_model.py [OUT_DIR] [--ctx 1024] [--seed 1234]
Requires: torch, transformers, tokenizers (the vLLM virtual environment has them).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "build" / "tiny-chat"
HEADS = 2  # 64 wide / 2 heads = head_dim 32, the smallest vLLM's CPU backend supports


def _transformers_builder():
    path = HERE.parent / "transformers" / "build_model.py"
    spec = importlib.util.spec_from_file_location("transformers_target_build_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE before torch is imported
    module.N_HEAD = module.N_HEAD_KV = HEADS
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT), help="output directory")
    ap.add_argument("--ctx", type=int, default=1024, help="max_position_embeddings (default 1024)")
    ap.add_argument("--seed", type=int, default=1234, help="weight RNG seed (default 1234)")
    args = ap.parse_args(argv)
    builder = _transformers_builder()
    out = builder.build(Path(args.out), ctx=args.ctx, seed=args.seed)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size} bytes, weights sha256 {builder.digest(out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
