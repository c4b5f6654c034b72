"""Checkers for the longer exercises (★★ and ★★★) of chapters 3 to 5: rebuild a part of gptlib.

(The backward pass of a whole block, the longest of them, has its own module,
:mod:`gptlib.exercises.backward`.)

Each exercise asks the reader to write, from scratch, a piece the library already has, then
checks it against the library on inputs chosen to expose the usual mistakes:

=======================  ===========================================================  ========
checker                  the reader writes                                            level
=======================  ===========================================================  ========
check_bpe_from_scratch   ``train(text, n_merges)`` -> merged pairs in order, and      ★★★ (3)
                         ``encode(text, merges)`` -> ids; byte-level, GPT-2 split
check_top_p              ``top_p_filter(logits, p)``: the nucleus filter              ★★ (3)
check_rope               ``apply_rope(x, cos, sin)``: rotary position embedding       ★★ (4)
check_kv_cache_class     a cache class with ``length``, ``update`` and ``advance``    ★★★ (5)
                         that ``GPT.forward`` can use
check_gpt2_export        ``to_hf(state_dict)``: gptlib names and layouts to GPT-2's   ★★ (5)
=======================  ===========================================================  ========

The references are gptlib's own code (``gptlib.bpe``, ``gptlib.generate.top_p_mask``,
``gptlib.positions``, ``GPT.forward`` without a cache, ``gptlib.pretrained.gptlib_to_hf``), so
an answer that passes agrees with the library. ``tests/test_exercises_projects.py`` checks that
the book's solutions pass and typical mistakes fail with the right diagnosis.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from itertools import pairwise

import regex
import torch

from gptlib.bpe import GPT2_SPLIT_PATTERN, BPETokenizer
from gptlib.exercises.core import Case, Mistake, check
from gptlib.generate import top_p_mask
from gptlib.model import GPT, GPTConfig
from gptlib.positions import apply_rope, rope_cos_sin
from gptlib.pretrained import gptlib_to_hf

BPE_TEXTS = [
    "aaabdaaabac",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer",
    "the thin thing then thought that the theatre's theme was there. Thou, thee, thy.",
    "naïve café, déjà vu 🎭🎭 — ünïcödé bytes merge too",
]


# --------------------------------------------------------------------------- BPE (chapter 3)
def bpe_train_reference(text: str, n_merges: int) -> list[tuple[int, int]]:
    """The pairs gptlib's BPE merges, in order (merge r creates id 256 + r).

    >>> bpe_train_reference("aaabdaaabac", 3)
    [(97, 97), (97, 98), (256, 257)]
    """
    with warnings.catch_warnings():  # a short text may allow fewer merges: that is fine here
        warnings.simplefilter("ignore")
        return list(BPETokenizer().train(text, vocab_size=256 + n_merges).merges)


def bpe_encode_reference(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """gptlib's encoding of ``text`` with the given merges (merge r creates id 256 + r).

    >>> bpe_encode_reference("aaabdaaabac", [(97, 97), (97, 98), (256, 257)])
    [258, 100, 258, 97, 99]
    """
    tokenizer = BPETokenizer.from_dict(
        {
            "pattern": GPT2_SPLIT_PATTERN,
            "byte_ids": list(range(256)),
            "merges": [[a, b, 256 + r] for r, (a, b) in enumerate(merges)],
            "special_tokens": {},
        }
    )
    return tokenizer.encode(text)


def _naive_bpe(text: str, n_merges: int, split: bool = True, largest_tie: bool = False):
    """Textbook BPE, recounting every pair each round; the knobs make two typical mistakes."""
    chunks = regex.findall(GPT2_SPLIT_PATTERN, text) if split else [text]
    words = Counter(tuple(c.encode("utf-8")) for c in chunks)
    merges = []
    for r in range(n_merges):
        pairs = Counter()
        for word, n in words.items():
            for pair in pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        top = max(pairs.values())
        tied = sorted(p for p, c in pairs.items() if c == top)
        pair = tied[-1] if largest_tie else tied[0]
        merges.append(pair)
        new_words = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    out.append(256 + r)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    return merges


def check_bpe_from_scratch(train: Callable, encode: Callable) -> bool:
    """Exercise: byte-level BPE training and encoding, matching gptlib.bpe merge for merge."""
    train_cases = [Case((t, n)) for t in BPE_TEXTS for n in (3, 12)]
    train_ok = check(
        train,
        train_cases,
        bpe_train_reference,
        name="train",
        mistakes=[
            Mistake(
                "your merges cross chunk boundaries: split the text with GPT2_SPLIT_PATTERN "
                "first and count pairs inside each chunk only.",
                wrong=lambda t, n: _naive_bpe(t, n, split=False),
            ),
            Mistake(
                "on a tie you take the largest pair; take the smallest (compare the pairs as "
                "tuples of ids).",
                wrong=lambda t, n: _naive_bpe(t, n, largest_tie=True),
            ),
        ],
        hint="merge r creates id 256 + r; return the pairs as tuples of two ints.",
    )
    encode_cases = [
        Case((t, bpe_train_reference(BPE_TEXTS[1] + BPE_TEXTS[2], 40))) for t in BPE_TEXTS
    ]
    encode_cases.append(Case(("", encode_cases[0].args[1]), name="the empty string"))
    encode_ok = check(
        encode,
        encode_cases,
        bpe_encode_reference,
        name="encode",
        hint="inside each chunk, repeatedly merge the adjacent pair with the lowest rank (the "
        "earliest learned), as training did; never merge across chunks.",
    )
    return train_ok and encode_ok


# --------------------------------------------------------------------------- top-p (chapter 3)
def top_p_reference(logits: torch.Tensor, p: float) -> torch.Tensor:
    """gptlib's nucleus filter: logits outside the nucleus become -inf."""
    return top_p_mask(logits, p)


def _exclusive_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    order = probs.argsort(dim=-1, descending=True)
    cum = probs.gather(-1, order).cumsum(-1)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, cum <= p)
    return logits.masked_fill(~keep, float("-inf"))


def check_top_p(fn: Callable) -> bool:
    """Exercise: the nucleus (top-p) filter, for a (V,) or (B, V) tensor of logits."""
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    cases = [
        Case((probs.log(), 0.7), name="p reached exactly inside the 2nd token"),
        Case((probs.log(), 0.5), name="p equal to the first probability"),
        Case((probs.log(), 1.0), name="p = 1 keeps every token"),
        Case((torch.randn(3, 50, generator=g) * 3, 0.9), name="a batch of 3 rows"),
        Case((torch.tensor([2.0, 2.0, 0.0]), 0.3), name="the top token alone exceeds p"),
    ]
    return check(
        fn,
        cases,
        top_p_reference,
        mistakes=[
            Mistake(
                "you keep tokens while the cumulative mass *including* the token is <= p, so the "
                "token that crosses p is dropped (and sometimes every token): keep a token when "
                "the mass *before* it is below p.",
                wrong=_exclusive_top_p,
            ),
        ],
    )


# --------------------------------------------------------------------------- RoPE (chapter 4)
def rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """gptlib's rotary embedding: rows ``x`` (..., T, hs), angles cos, sin (T, hs/2)."""
    return apply_rope(x, cos, sin)


def _rope_halves(x, cos, sin):  # GPT-NeoX layout: dimension i paired with i + hs/2
    a, b = x[..., : x.size(-1) // 2], x[..., x.size(-1) // 2 :]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def _rope_not_interleaved(x, cos, sin):  # right pairs, results stored as [firsts, seconds]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def _rope_reverse(x, cos, sin):
    return apply_rope(x, cos, -sin)


def check_rope(fn: Callable) -> bool:
    """Exercise: rotate each pair (x_2i, x_2i+1) of every row by its angle m theta_i."""
    g = torch.Generator().manual_seed(11)
    cases = [
        Case(
            (torch.randn(2, 3, 6, 8, generator=g), *rope_cos_sin(6, 8, start=5)),
            name="(B, nh, T, hs)",
        ),
        Case((torch.randn(4, 16, generator=g), *rope_cos_sin(4, 16)), name="positions 0..3"),
        Case((torch.randn(3, 4, generator=g), *rope_cos_sin(3, 4, base=100.0)), name="base 100"),
    ]
    return check(
        fn,
        cases,
        rope_reference,
        rtol=1e-5,
        atol=1e-5,
        mistakes=[
            Mistake(
                "you pair dimension i with i + hs/2 (the GPT-NeoX and LLaMA layout). It is a "
                "rotation too, with the same relative-position property, but this book pairs "
                "neighbours (x_2i, x_2i+1), as Su et al. write it.",
                wrong=_rope_halves,
            ),
            Mistake(
                "the pairs are right, but the results come back as [all first members, all "
                "second members]; interleave them.",
                wrong=_rope_not_interleaved,
            ),
            Mistake(
                "you rotate by -m theta_i: the first output of a pair is x1 cos - x2 sin and the "
                "second x1 sin + x2 cos.",
                wrong=_rope_reverse,
            ),
        ],
    )


# --------------------------------------------------------------------------- KV cache (chapter 5)
def _kv_model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=16)
    return GPT(config).eval()


def _cached_logits(cache_class: Callable, n_new: int = 8) -> list[torch.Tensor]:
    """Greedy generation with a student cache: the logits of the last position at each step."""
    model = _kv_model()
    idx = torch.tensor([[3, 14, 15, 9, 2]])
    cache = cache_class(model.config.n_layer)
    rows = []
    with torch.no_grad():
        logits, _ = model(idx, kv_cache=cache)
        for _ in range(n_new):
            rows.append(logits[0, -1])
            nxt = logits[0, -1].argmax().view(1, 1)
            idx = torch.cat([idx, nxt], dim=1)
            logits, _ = model(nxt, kv_cache=cache)
    rows.append(logits[0, -1])
    return rows


def kv_cache_reference(n_new: int = 8) -> list[torch.Tensor]:
    """The same greedy generation without a cache: the whole sequence every step."""
    model = _kv_model()
    idx = torch.tensor([[3, 14, 15, 9, 2]])
    rows = []
    with torch.no_grad():
        for _ in range(n_new + 1):
            logits, _ = model(idx)
            rows.append(logits[0, -1])
            idx = torch.cat([idx, logits[0, -1].argmax().view(1, 1)], dim=1)
    return rows


def _kv_judge(case: Case, answer) -> str | None:
    expected = kv_cache_reference()
    for step, (want, got) in enumerate(zip(expected, answer, strict=True)):
        if not torch.allclose(want, got, rtol=1e-5, atol=1e-5):
            if step == 0:
                return (
                    "the logits differ already for the prompt: `update` must store the keys "
                    "and values and return them (all positions so far) for that layer."
                )
            return (
                f"the prompt is right but generated step {step} differs: after each forward "
                "pass the cache must hold every earlier position (update appends, returns the "
                "concatenation; advance(n) adds n to length, so the next token gets the right "
                "position embedding)."
            )
    return None


def check_kv_cache_class(cache_class: Callable) -> bool:
    """Exercise: a KV cache class, ``cache_class(n_layer)``, that ``GPT.forward`` can use."""
    return check(
        lambda: _cached_logits(cache_class),
        [Case(name="greedy, 5 prompt tokens + 8 new, 2 layers")],
        judge=_kv_judge,
        name=getattr(cache_class, "__name__", "cache_class"),
    )


# --------------------------------------------------------------------------- GPT-2 export (5)
def _export_case(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=8)
    return {k: v.detach().clone() for k, v in GPT(config).state_dict().items()}


def gpt2_export_reference(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """gptlib's conversion to the keys and layouts of Hugging Face's GPT2LMHeadModel."""
    return gptlib_to_hf(state_dict)


def _export_judge(case: Case, answer) -> str | None:
    expected = gpt2_export_reference(*case.args)
    if not isinstance(answer, dict):
        return f"return a dict name -> tensor, got {type(answer).__name__}"
    missing = sorted(set(expected) - set(answer))
    extra = sorted(set(answer) - set(expected))
    if missing:
        hint = (
            " (GPT-2's blocks live under 'transformer.')"
            if not any(k.startswith("transformer.") for k in answer)
            else ""
        )
        return f"missing keys, e.g. {missing[:3]}{hint}" + (
            f"; unexpected: {extra[:3]}" if extra else ""
        )
    for key, want in expected.items():
        got = answer[key]
        if tuple(got.shape) != tuple(want.shape):
            return (
                f"{key} has shape {tuple(got.shape)}, expected {tuple(want.shape)}: transpose it?"
            )
        if not torch.equal(got, want):
            if torch.equal(got.t(), want) if got.dim() == 2 else False:
                return (
                    f"{key} has the right shape but is not transposed: it is square, so the "
                    "shapes cannot tell you; GPT-2 stores every Conv1D weight as (in, out)."
                )
            return f"{key} has the right shape but different values"
    return None


def check_gpt2_export(fn: Callable) -> bool:
    """Exercise: convert a gptlib state dict to Hugging Face GPT-2's names and layouts."""
    cases = [Case((_export_case(0),), name="2 layers, C = 8")]
    return check(fn, cases, judge=_export_judge)
