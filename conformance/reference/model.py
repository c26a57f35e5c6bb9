"""A tiny deterministic language model for the embedded reference server (pure Python).

Vocabulary (``VOCAB``, 424 tokens):

* ids 0..2 are specials: ``<eos>`` (0), ``<think>`` (1), ``</think>`` (2);
* ids 3..99 are single characters: ``\\n``, ``\\t`` and printable ASCII (space .. ``~``);
* ids 100.. are word and sub-word pieces; **id 100 is ``" the"``**, an ordinary printable word;
* the last ids are byte-fallback tokens ``<0xNN>`` for every byte no character token covers, so any text
  tokenizes (greedy longest match, then UTF-8 bytes).

Logits are a deterministic function of the prompt (a salt), the last two token ids and the position: a fixed
base vector plus context-seeded boosts on a pool of 16 common words, so greedy output is peaked, repeats
tokens within 16 positions and changes under penalties; ``<eos>`` is unlikely before ~32 generated tokens
and becomes the greedy choice around position 55-65.

Sampling pipeline of :class:`Decoder.step` (one token):

1. raw logits; 2. repetition_penalty over prompt + generated tokens (positive logits divided, negative
multiplied); 3. frequency/presence penalties over generated tokens (OpenAI formula:
``l -= count * frequency_penalty + (count > 0) * presence_penalty``); 4. logit_bias (added);
5. constraint mask (tokens outside the allowed set lose ``MASK`` = 1e4).

The *reported* logprobs are the exact log-softmax of the logits after steps 1-5 ("processed" logits),
before temperature and before the truncation filters. The token is then chosen from the processed logits:
temperature 0 -> argmax; otherwise divide by temperature, softmax, keep top_k, top_p (smallest prefix whose
mass reaches top_p, at least one token), min_p (p >= min_p * p_max), renormalise and draw with the
decoder's ``random.Random``.

Near-tie noise (the ``near-tie-noise`` variant, :class:`Decoder` with a ``jitter`` source): GPU numerics that
are not batch-invariant. At about one generated position in ``NEAR_TIE_RATE`` (chosen by the context, so the
same positions in every request) the model's two most likely tokens are nearly tied: the runner-up sits
between ``0.6 * NOISE`` and ``1.6 * NOISE`` below the top. Every request then adds its own uniform noise in
``[-NOISE, NOISE]`` to every raw logit, so two identical requests can pick different tokens exactly there;
a position whose two best tokens are more than ``2 * NOISE`` apart can never flip.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "EOS_ID",
    "THINK_ID",
    "END_THINK_ID",
    "MASK",
    "Vocabulary",
    "VOCAB",
    "TinyModel",
    "MODEL",
    "SamplingParams",
    "Decoder",
    "Step",
    "log_softmax",
    "VALUE_WORD_IDS",
    "NOISE",
    "NEAR_TIE_RATE",
    "DRIFT",
]

EOS_ID = 0
THINK_ID = 1
END_THINK_ID = 2
MASK = 1e4
NOISE = 0.02  # amplitude of the per-request logit noise of the near-tie-noise variant (nats)
NEAR_TIE_RATE = 5  # about one position in this many has a near-tie under that variant
DRIFT = 0.4  # how far (nats) the seeded-draw-drift variant moves each temperature-scaled logit, per request

_SPECIALS = ["<eos>", "<think>", "</think>"]
_CHARS = ["\n", "\t"] + [chr(c) for c in range(32, 127)]
_WORDS = [
    " the",
    " cat",
    " dog",
    " sat",
    " on",
    " mat",
    " a",
    " and",
    " is",
    " was",
    " it",
    " of",
    " to",
    " in",
    " sun",
    " moon",
    " tree",
    " red",
    " blue",
    " green",
    " big",
    " small",
    " house",
    " river",
    " bird",
    " sings",
    " runs",
    " jumps",
    " over",
    " under",
    " quick",
    " brown",
    " fox",
    " lazy",
    " day",
    " night",
    " light",
    " dark",
    " cold",
    " warm",
    " rain",
    " snow",
    " wind",
    " sky",
    " star",
    " sea",
    " ship",
    " road",
    " city",
    " town",
    " weather",
    " today",
    " tomorrow",
    " hello",
    " world",
    " yes",
    " no",
    " maybe",
    " good",
    " bad",
    " happy",
    " sad",
    " one",
    " two",
    " three",
    " four",
    " five",
    " time",
    " place",
    " thing",
    " word",
    " book",
    " story",
    " song",
    " friend",
    " water",
    " fire",
    " stone",
    " bread",
    " apple",
    " The",
    " I",
    " you",
    " we",
    " they",
    " he",
    " she",
    " with",
    " from",
    " for",
    " at",
    " by",
    " as",
    " that",
    " this",
    " there",
    " here",
    " very",
    " more",
    " less",
    " all",
    " some",
    " many",
    " few",
    " every",
    " new",
    " old",
    " long",
    " short",
    " what",
    " how",
    " why",
    " when",
    " where",
    " who",
    " Paris",
    " London",
    " think",
    " answer",
    " question",
    " because",
    " so",
    " then",
    " now",
    " again",
]
_PIECES = [
    "ing",
    "ed",
    "er",
    "ly",
    "es",
    "the",
    "cat",
    "dog",
    "sun",
    "tree",
    "weather",
    "hello",
    "world",
    "user",
    "assistant",
    "system",
    "tool",
    "<|",
    "|>",
    '{"',
    '":',
    '"}',
    '", "',
    ': "',
    '": "',
    '",',
    '"]',
    '["',
    ", ",
    ": ",
    "{}",
    "[]",
    "true",
    "false",
    "null",
    "10",
    "00",
    "  ",
    "\n\n",
    "...",
]
_COVERED = {ord(c) for c in _CHARS}
_BYTES = [b for b in range(256) if b not in _COVERED]
_POOL_WORDS = [
    " the",
    " cat",
    " dog",
    " sat",
    " on",
    " mat",
    " a",
    " and",
    " sun",
    " tree",
    " red",
    " blue",
    " bird",
    " sings",
    " sky",
    " sea",
]


class Vocabulary:
    """A fixed vocabulary with greedy longest-match encoding and a byte fallback."""

    def __init__(self) -> None:
        tokens = _SPECIALS + _CHARS + _WORDS + _PIECES
        if len(set(tokens)) != len(tokens):
            raise AssertionError("duplicate vocabulary entries")
        self.byte_base = len(tokens)
        self.tokens: list[str] = tokens + [f"<0x{b:02X}>" for b in _BYTES]
        self._byte_of = {self.byte_base + i: b for i, b in enumerate(_BYTES)}
        self._id_of_byte = {b: i for i, b in self._byte_of.items()}
        # Text matches every token but <eos> and the byte tokens.
        self._index = {s: i for i, s in enumerate(tokens) if i != EOS_ID}
        self._max_len = max(len(s) for s in self._index)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def id_of(self, text: str) -> int:
        return self._index[text]

    def is_byte(self, token_id: int) -> bool:
        return token_id in self._byte_of

    def byte_value(self, token_id: int) -> int | None:
        """The byte a byte-fallback token stands for (None for any other token)."""
        return self._byte_of.get(token_id)

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        i, n = 0, len(text)
        while i < n:
            for length in range(min(self._max_len, n - i), 0, -1):
                tid = self._index.get(text[i : i + length])
                if tid is not None:
                    out.append(tid)
                    i += length
                    break
            else:
                out.extend(self._id_of_byte[b] for b in text[i].encode("utf-8"))
                i += 1
        return out

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._byte_of:
            return bytes([self._byte_of[token_id]])
        if token_id == EOS_ID:
            return b""
        return self.tokens[token_id].encode("utf-8")

    def token_str(self, token_id: int) -> str:
        """The text of one token as logprobs report it (a lone partial UTF-8 byte reads as U+FFFD)."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes(t) for t in ids).decode("utf-8", errors="replace")


VOCAB = Vocabulary()
VALUE_WORD_IDS: frozenset[int] = frozenset(
    VOCAB.id_of(w) for w in _WORDS if w[1:].isalpha() and w[1:].islower()
)


def log_softmax(logits: Sequence[float]) -> list[float]:
    m = max(logits)
    s = math.fsum(math.exp(v - m) for v in logits)
    lse = m + math.log(s)
    return [v - lse for v in logits]


COPY_EVERY = 3  # a model copies the prompt's non-ASCII characters: one starts at positions 1, 4, 7, ...
COPY_MARGIN = 3.0  # nats above the best other token: a confident pick, never a near-tie


def prompt_chars(vocab: Vocabulary, prompt_ids: Sequence[int]) -> list[tuple[int, ...]]:
    """The multi-byte UTF-8 characters of a prompt, as runs of byte tokens, each once, in order."""
    out: list[tuple[int, ...]] = []
    i = 0
    while i < len(prompt_ids):
        run: tuple[int, ...] = ()
        for n in (2, 3, 4):
            ids = tuple(prompt_ids[i : i + n])
            values = [vocab.byte_value(t) for t in ids]
            if len(ids) < n or any(v is None for v in values):
                break
            try:
                if len(bytes(v for v in values if v is not None).decode("utf-8")) == 1:
                    run = ids
                    break
            except UnicodeDecodeError:
                continue
        if run and run not in out:
            out.append(run)
        i += len(run) or 1
    return out


class TinyModel:
    """Deterministic next-token logits over :data:`VOCAB`."""

    def __init__(self, vocab: Vocabulary = VOCAB) -> None:
        self.vocab = vocab
        rng = random.Random(20240601)
        base: list[float] = []
        word_lo = len(_SPECIALS) + len(_CHARS)
        for tid in range(len(vocab)):
            if tid < len(_SPECIALS) or vocab.is_byte(tid):
                base.append(-30.0)
            elif tid < word_lo:
                base.append(-6.0 + rng.random() * 2.0)
            elif tid < word_lo + len(_WORDS):
                base.append(-3.0 + rng.random() * 3.0)
            else:
                base.append(-7.0 + rng.random() * 2.0)
        self._base = base
        self._pool = [vocab.id_of(w) for w in _POOL_WORDS]
        self._words = list(range(word_lo, word_lo + len(_WORDS)))

    @staticmethod
    def salt(prompt_ids: Sequence[int]) -> int:
        return zlib.crc32(",".join(map(str, prompt_ids)).encode())

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - the model is a process-wide singleton
    def _boosts(self, salt: int, a: int, b: int) -> tuple[tuple[int, float], ...]:
        rng = random.Random((salt * 1_000_003 + a * 10_007 + b) & 0xFFFFFFFFFFFF)
        out: dict[int, float] = {}
        for tid in rng.sample(self._words, 3):
            out[tid] = 2.0 + rng.random() * 2.0
        for tid in rng.sample(self._pool, 4):
            out[tid] = 4.0 + rng.random() * 3.0
        return tuple(out.items())

    def logits(self, salt: int, context: Sequence[int], pos: int) -> list[float]:
        """Raw logits for the next token after ``context``; ``pos`` counts the tokens generated so far."""
        a = context[-2] if len(context) >= 2 else -1
        b = context[-1] if context else -1
        out = list(self._base)
        for tid, boost in self._boosts(salt, a, b):
            out[tid] += boost
        out[EOS_ID] = -12.0 + max(0, pos - 32) * 0.6
        return out

    def near_ties(self, salt: int, context: Sequence[int], pos: int, logits: list[float]) -> list[float]:
        """``logits`` with the runner-up pulled to just below the top at about one position in
        :data:`NEAR_TIE_RATE` (chosen by the prompt, the last two tokens and the position)."""
        a = context[-2] if len(context) >= 2 else -1
        b = context[-1] if context else -1
        rng = random.Random(f"near-tie/{salt}/{a}/{b}/{pos}")
        if rng.randrange(NEAR_TIE_RATE):
            return logits
        top, second = heapq.nlargest(2, range(len(logits)), key=logits.__getitem__)
        out = list(logits)
        out[second] = out[top] - (0.6 + rng.random()) * NOISE
        return out


MODEL = TinyModel()


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    # fault modes: the filters named here pick their candidates from the second most likely token on
    skip_top: frozenset[str] = frozenset()
    # variant default-repeat-penalty: a server's own repeat penalty, applied to the pick (times
    # repetition_penalty) but left out of the reported logprobs (llama.cpp reports them before its samplers)
    unreported_repetition_penalty: float = 1.0
    # how confident the model is: its raw logits times this (a large model is surer of its next token than
    # this tiny one: wider margins between its candidates)
    logit_scale: float = 1.0


@dataclass
class Step:
    token: int
    logprobs: list[float] | None  # the full processed log-softmax vector, when asked for


class Decoder:
    """Generation state of one choice: context, penalties and the sampler's random source."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        rng: random.Random,
        model: TinyModel = MODEL,
        salt: int | None = None,
        jitter: random.Random | None = None,
        drift: random.Random | None = None,
    ) -> None:
        self.model = model
        self.jitter = jitter  # per-request logit noise (near-tie-noise variant), None for exact numerics
        self.drift = drift  # per-request drift of the sampler's draw (seeded-draw-drift variant), or None
        self.params = params
        self.rng = rng
        self.context = list(prompt_ids)
        self.salt = model.salt(prompt_ids) if salt is None else salt
        self.counts: Counter[int] = Counter()
        self.seen = set(prompt_ids)
        self.pos = 0
        # copying: a prompt's non-ASCII characters come back in the answer (a language model copies what it
        # read), one every COPY_EVERY positions; only prompts that hold such characters see this
        self._chars = prompt_chars(model.vocab, prompt_ids)
        self._copying: list[int] = []  # the bytes still to come of the character being copied

    def processed_logits(
        self, allowed: frozenset[int] | None = None, *, unreported: bool = False
    ) -> list[float]:
        """The logits after steps 1-5; ``unreported``: with the server's own unreported repeat penalty too
        (what the pick uses)."""
        return self._process(self._raw_logits(), allowed, unreported=unreported)

    def _raw_logits(self) -> list[float]:
        logits = self.model.logits(self.salt, self.context, self.pos)
        if self.params.logit_scale != 1.0:
            logits = [v * self.params.logit_scale for v in logits]
        if self.jitter is not None:
            jit = self.jitter
            logits = self.model.near_ties(self.salt, self.context, self.pos, logits)
            logits = [v + jit.uniform(-NOISE, NOISE) for v in logits]
        nxt = self._copy_next()
        if nxt is not None:
            logits[nxt] = max(logits) + COPY_MARGIN
        return logits

    def _copy_start(self) -> tuple[int, ...] | None:
        if not self._chars or self.pos % COPY_EVERY != 1:
            return None
        return self._chars[(self.pos // COPY_EVERY) % len(self._chars)]

    def _copy_next(self) -> int | None:
        """The byte token copying asks for at this position (None: no copy here)."""
        if self._copying:
            return self._copying[0]
        start = self._copy_start()
        return start[0] if start else None

    def _process(
        self, logits: list[float], allowed: frozenset[int] | None, *, unreported: bool
    ) -> list[float]:
        p = self.params
        logits = list(logits)
        rep = p.repetition_penalty * (p.unreported_repetition_penalty if unreported else 1.0)
        if rep != 1.0:
            r = max(rep, 1e-6)
            for tid in self.seen:
                v = logits[tid]
                logits[tid] = v / r if v > 0 else v * r
        if p.frequency_penalty or p.presence_penalty:
            for tid, c in self.counts.items():
                logits[tid] -= c * p.frequency_penalty + p.presence_penalty
        for tid, bias in p.logit_bias.items():
            logits[tid] += bias
        if allowed is not None:
            logits = [v if i in allowed else v - MASK for i, v in enumerate(logits)]
        return logits

    def full_logprobs(self, allowed: frozenset[int] | None = None) -> list[float]:
        """The distribution logprobs are reported from, at the current position (sums to 1 in exp)."""
        return log_softmax(self.processed_logits(allowed))

    def _choose(self, logits: list[float]) -> int:
        p = self.params
        if p.temperature <= 0:
            return max(range(len(logits)), key=lambda i: (logits[i], -i))
        scaled = [v / p.temperature for v in logits]
        m = max(scaled)
        probs = [math.exp(v - m) for v in scaled]
        filtering = (p.top_k is not None and p.top_k < len(probs)) or p.top_p < 1.0 or p.min_p > 0.0
        if filtering:
            order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
            if p.top_k is not None:
                order = order[1:] if "top_k" in p.skip_top else order
                order = order[: max(1, p.top_k)]
            if p.top_p < 1.0:
                order = order[1:] if "top_p" in p.skip_top else order
                total = math.fsum(probs)
                kept, cum = [], 0.0
                for i in order:
                    kept.append(i)
                    cum += probs[i] / total
                    if cum >= p.top_p:
                        break
                order = kept
            if p.min_p > 0.0:
                order = order[1:] if "min_p" in p.skip_top else order
                pmax = probs[order[0]]
                order = [i for i in order if probs[i] >= p.min_p * pmax] or order[:1]
            candidates = order
        else:
            candidates = list(range(len(probs)))
        if self.drift is not None:
            # seeded-draw-drift: an exponential race as GPU samplers run it (vLLM: probs / Exp(1) noise, the
            # largest wins), its noise drawn from the seed; this request's numerics move every scaled logit by
            # up to DRIFT, so where the race's two leaders nearly tie the other one may win
            drift = self.drift
            return max(candidates, key=lambda i: scaled[i] - math.log(-math.log(self.rng.random() or 1e-300))
                       + drift.uniform(-DRIFT, DRIFT))
        total = math.fsum(probs[i] for i in candidates)
        r = self.rng.random() * total
        acc = 0.0
        for i in candidates:
            acc += probs[i]
            if r < acc:
                return i
        return candidates[-1]

    def step(
        self,
        *,
        allowed: frozenset[int] | None = None,
        forced: int | None = None,
        want_logprobs: bool = False,
        advance: bool = True,
    ) -> Step:
        """Choose (or force) the next token and, when ``advance``, append it to the context."""
        if forced is not None:
            allowed = frozenset((forced,))
        raw = self._raw_logits()
        logits = self._process(raw, allowed, unreported=True)
        token = forced if forced is not None else self._choose(logits)
        if self.params.unreported_repetition_penalty != 1.0:  # reported without the server's own penalty
            logits = self._process(raw, allowed, unreported=False)
        lps = log_softmax(logits) if want_logprobs else None
        if advance:
            self.push(token)
        return Step(token, lps)

    def push(self, token: int) -> None:
        if self._copying:
            self._copying = self._copying[1:] if token == self._copying[0] else []
        else:
            start = self._copy_start()
            if start and token == start[0]:
                self._copying = list(start[1:])
        self.context.append(token)
        self.counts[token] += 1
        self.seen.add(token)
        self.pos += 1
