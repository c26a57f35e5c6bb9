"""What the tiny chat models of the real targets share: the special tokens, the ChatML + tools template, the
byte-level alphabet, which tokens the models must never emit, and the launchers' signal handling.

Imported by ``targets/*/build_model.py`` and ``targets/*/serve.py`` (they put ``targets/`` on ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

# Special tokens. Ids follow this order (0..6).
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TEXT_SPECIALS = ["<tool_call>", "</tool_call>", "<think>", "</think>"]
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, *TEXT_SPECIALS]

# Qwen2.5-style ChatML template with a Hermes tools section and <tool_call> blocks.
CHAT_TEMPLATE = (Path(__file__).resolve().parent / "chatml_tools.jinja").read_text(encoding="utf-8")


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level alphabet: printable char -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER = _byte_decoder()


def suppressed_token(piece: str) -> bool:
    """True for special tokens and for pieces that are not printable UTF-8 text."""
    if piece in SPECIAL_TOKENS:
        return True
    try:
        text = bytes(_BYTE_DECODER[ch] for ch in piece).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return True
    return any(ord(ch) < 32 and ch != "\n" for ch in text) or "\x7f" in text


def stop_on_signals() -> threading.Event:
    """An event set by the first SIGTERM/SIGINT; a second one exits at once."""
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if stop.is_set():  # second signal: leave at once
            os._exit(0)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stop
