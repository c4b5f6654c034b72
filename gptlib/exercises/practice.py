"""Self-checking exercises for chapter 5, the project in practice: measuring a trained model.

Each ``check_*`` function takes the reader's function, runs it on a few cases against a reference
(:func:`gptlib.exercises.core.run_checks`), prints feedback and returns ``True`` when every case
passed. When a case fails, the answer is also compared with the *typical wrong answers* of that
exercise (a forgotten factor 3 for the backward pass, nats left unconverted, an n-gram count divided
by the wrong total, keys without values, ...), and the feedback names the mistake that matches.

=======================  ============================================================  ========
checker                  the reader writes                                             book
=======================  ============================================================  ========
check_mfu                ``mfu(tokens_per_s, n_params, n_layer, n_embd, seq_len,``     Ex. 5.5.1
                         ``peak_flops)``: model FLOPs utilisation of training
check_bits_per_char      ``bits_per_char(loss, n_tokens, n_chars)``: nats per token    Ex. 5.5.2
                         to bits per character
check_distinct_n         ``distinct_n(tokens, n)``: distinct n-grams / all n-grams     Ex. 5.5.4
check_kv_cache_bytes     ``kv_cache_bytes(config, batch_size, seq_len, dtype)``        Ex. 5.5.5
=======================  ============================================================  ========

``tests/test_exercises_practice.py`` checks the references against ``gptlib`` (the FLOP count of
``GPT.flops_per_token``, the tensors of a real ``KVCache``) and every diagnosis. The mistakes are
recognised by :func:`gptlib.exercises.core.diagnose`, shared by every chapter's checkers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from gptlib.exercises.core import Case, Mistake, check
from gptlib.model import GPTConfig


def _above_one(case: Case, answer: object) -> bool:
    """An MFU above 1 that is not a percentage (that mistake has its own message)."""
    if not isinstance(answer, (int, float)) or isinstance(answer, bool) or answer <= 1.0:
        return False
    return not math.isclose(answer, 100 * mfu_reference(*case.args), rel_tol=1e-6)


# --------------------------------------------------------------------------- MFU
def mfu_reference(
    tokens_per_s: float, n_params: int, n_layer: int, n_embd: int, seq_len: int, peak_flops: float
) -> float:
    """Model FLOPs utilisation of training, as a fraction in [0, 1].

    Training FLOPs per token are three forward passes (forward + a backward pass costing two),
    each 2 N + 2 n_layer seq_len n_embd (Kaplan et al. 2020, Table 1; ``GPT.flops_per_token``).

    >>> round(mfu_reference(1000.0, 10**6, 2, 64, 128, 1e12), 6)
    0.006098
    """
    per_token = 3 * (2 * n_params + 2 * n_layer * seq_len * n_embd)
    return per_token * tokens_per_s / peak_flops


def check_mfu(fn: Callable[..., float]) -> bool:
    """Exercise 5.5.1: the MFU of a training run from its throughput."""
    cases = [
        Case((460.0, 3_456_000, 6, 192, 256, 2.0e11), name="a 6 x 192 model, 2 CPU cores"),
        Case((180_000.0, 123_653_376, 12, 768, 1024, 312e12), name="GPT-2 small on an A100"),
        Case((5_000.0, 98_304, 2, 64, 64, 1.0e11), name="a tiny model"),
    ]

    def forward_only(t, n, L, C, T, peak):
        return (2 * n + 2 * L * T * C) * t / peak

    def no_attention(t, n, L, C, T, peak):
        return 6 * n * t / peak

    def percent(t, n, L, C, T, peak):
        return 100 * mfu_reference(t, n, L, C, T, peak)

    def attention_once(t, n, L, C, T, peak):
        return (6 * n + 2 * L * T * C) * t / peak

    mistakes = [
        Mistake(
            "an MFU above 1 means more FLOP/s than the hardware's peak: check the units "
            "(FLOP/s, tokens per second).",
            symptom=_above_one,
        ),
        Mistake(
            "you count only the forward pass: the backward pass costs about twice as much (a "
            "gradient for the activations and one for the weights), so training costs "
            "3 x (2N + 2 n_layer T C) FLOPs per token.",
            wrong=forward_only,
        ),
        Mistake(
            "you count 6N FLOPs per token but leave out attention: the scores and the "
            "weighted sum add 2 n_layer T C per token in the forward pass (times 3 for "
            "training), which matters when T is comparable to 12 n_embd.",
            wrong=no_attention,
        ),
        Mistake(
            "the attention term must be tripled for training as well: 3 x 2 n_layer T C, "
            "not 2 n_layer T C.",
            wrong=attention_once,
        ),
        Mistake(
            "you return a percentage: the checker expects a fraction (0.05, not 5).", wrong=percent
        ),
    ]
    return check(fn, cases, mfu_reference, name="mfu", rtol=1e-6, mistakes=mistakes)


# --------------------------------------------------------------------------- bits per character
def bits_per_char_reference(loss: float, n_tokens: int, n_chars: int) -> float:
    """Convert a loss in nats per token to bits per character of the same text.

    The total information is the same whatever the unit: loss * n_tokens nats for the whole
    text, that is loss * n_tokens / ln 2 bits, spread over n_chars characters.

    >>> round(bits_per_char_reference(math.log(2), 1, 1), 12)
    1.0
    """
    return loss / math.log(2) * n_tokens / n_chars


def check_bits_per_char(fn: Callable[[float, int, int], float]) -> bool:
    """Exercise 5.5.2: from nats per token to bits per character."""
    cases = [
        Case((math.log(2), 100, 100), name="1 bit per token, one character per token"),
        Case((4.0, 165_000, 508_000), name="a BPE model, about 3 characters per token"),
        Case((1.4697, 1, 1), name="a character-level model"),
        Case((2.0, 300, 1200), name="4 characters per token"),
    ]
    mistakes = [
        Mistake(
            "you forgot to convert nats to bits: divide by ln 2 (1 nat = 1/ln 2 = 1.443 bits).",
            wrong=lambda loss, t, c: loss * t / c,
        ),
        Mistake(
            "you multiplied by ln 2: a nat is more than a bit, so converting nats to bits "
            "divides by ln 2.",
            wrong=lambda loss, t, c: loss * math.log(2) * t / c,
        ),
        Mistake(
            "the ratio is upside down: a text of n_chars characters has n_tokens tokens, so "
            "bits/char = bits/token * n_tokens / n_chars, which is smaller than bits/token "
            "when tokens are longer than one character.",
            wrong=lambda loss, t, c: loss / math.log(2) * c / t,
        ),
        Mistake(
            "you return bits per token: multiply by n_tokens / n_chars to spread the bits "
            "over characters.",
            wrong=lambda loss, t, c: loss / math.log(2),
        ),
        Mistake(
            "you divided by ln 10: bits are base-2 units, so divide by ln 2.",
            wrong=lambda loss, t, c: loss / math.log(10) * t / c,
        ),
    ]
    return check(
        fn, cases, bits_per_char_reference, name="bits_per_char", rtol=1e-9, mistakes=mistakes
    )


# --------------------------------------------------------------------------- distinct-n
def distinct_n_reference(tokens: Sequence, n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams divided by all n-grams of ``tokens``.

    A sequence shorter than n has no n-grams; its distinct-n is defined as 0.0.

    >>> distinct_n_reference(["a", "b", "a", "b"], 2)  # ab, ba, ab: 2 distinct of 3
    0.6666666666666666
    """
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def check_distinct_n(fn: Callable[[Sequence, int], float]) -> bool:
    """Exercise 5.5.4: the diversity measure distinct-n."""
    cases = [
        Case((["a", "b", "a", "b"], 2), name="a repeated pair"),
        Case((["to", "be", "or", "not", "to", "be"], 2), name="to be or not to be, n=2"),
        Case((["to", "be", "or", "not", "to", "be"], 1), name="to be or not to be, n=1"),
        Case(([5, 5, 5, 5, 5], 3), name="one token repeated, n=3"),
        Case(([1, 2, 3, 1, 2, 3, 1], 3), name="a cycle of three, n=3"),
        Case(
            (["x"], 2),
            name="shorter than n",
            hint="a sequence with no n-grams has "
            "distinct-n 0.0 by definition; do not divide by zero",
        ),
    ]

    def by_tokens(tokens, n):
        grams = {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
        return len(grams) / len(tokens) if tokens else 0.0

    def unigrams(tokens, n):
        return len(set(tokens)) / len(tokens) if tokens else 0.0

    def count(tokens, n):
        return len({tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)})

    def bigrams_always(tokens, n):
        pairs = list(zip(tokens, tokens[1:], strict=False))
        return len(set(pairs)) / len(pairs) if pairs else 0.0

    def off_by_one(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n)]
        return len(set(grams)) / len(grams) if grams else 0.0

    mistakes = [
        Mistake(
            "you divide by the number of tokens: a sequence of L tokens has only L - n + 1 "
            "n-grams, so divide by that.",
            wrong=by_tokens,
        ),
        Mistake(
            "your loop misses the last n-gram: the n-grams start at positions 0 .. L - n, "
            "that is range(len(tokens) - n + 1).",
            wrong=off_by_one,
        ),
        Mistake(
            "you always count bigrams (zip(tokens, tokens[1:])): use the n you are given, "
            "tuple(tokens[i:i + n]).",
            wrong=bigrams_always,
        ),
        Mistake(
            "you count distinct tokens, not distinct n-grams: build the tuples "
            "tuple(tokens[i:i + n]) and count those.",
            wrong=unigrams,
        ),
        Mistake(
            "you return the number of distinct n-grams: divide it by the number of n-grams "
            "to get a ratio between 0 and 1.",
            wrong=count,
        ),
    ]
    return check(fn, cases, distinct_n_reference, name="distinct_n", mistakes=mistakes)


# --------------------------------------------------------------------------- KV cache
def kv_cache_bytes_reference(
    config: GPTConfig, batch_size: int, seq_len: int, dtype: torch.dtype = torch.float32
) -> int:
    """Bytes of a KV cache: a key and a value of n_embd numbers per layer, sequence, position.

    >>> kv_cache_bytes_reference(GPTConfig.preset("gpt2"), 1, 1024) // 2**20  # MiB
    72
    """
    bytes_per_value = torch.finfo(dtype).bits // 8
    return 2 * config.n_layer * batch_size * seq_len * config.n_embd * bytes_per_value


def check_kv_cache_bytes(fn: Callable[..., int]) -> bool:
    """Exercise 5.5.5: the memory of a KV cache."""
    book = GPTConfig.preset("book")
    gpt2 = GPTConfig.preset("gpt2")
    cases = [
        Case((book, 1, 256, torch.float32), name="the book model, one sequence, float32"),
        Case((gpt2, 8, 1024, torch.float32), name="GPT-2 small, batch 8, float32"),
        Case(
            (gpt2, 8, 1024, torch.bfloat16),
            name="GPT-2 small, batch 8, bfloat16",
            hint="a bfloat16 number takes 2 bytes",
        ),
        Case(
            (
                GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64),
                3,
                10,
                torch.float16,
            ),
            name="a tiny model, 10 positions, float16",
        ),
    ]

    def keys_only(cfg, B, T, dtype):
        return kv_cache_bytes_reference(cfg, B, T, dtype) // 2

    def one_layer(cfg, B, T, dtype):
        return kv_cache_bytes_reference(cfg, B, T, dtype) // cfg.n_layer

    def one_sequence(cfg, B, T, dtype):
        return kv_cache_bytes_reference(cfg, 1, T, dtype)

    def always_fp32(cfg, B, T, dtype):
        return kv_cache_bytes_reference(cfg, B, T, torch.float32)

    def bits(cfg, B, T, dtype):
        return 8 * kv_cache_bytes_reference(cfg, B, T, dtype)

    def per_head(cfg, B, T, dtype):
        return kv_cache_bytes_reference(cfg, B, T, dtype) // cfg.n_head

    mistakes = [
        Mistake(
            "you count only the keys: every position stores a key and a value, a factor of 2.",
            wrong=keys_only,
        ),
        Mistake(
            "you count one layer: every layer keeps its own keys and values, so multiply by "
            "n_layer.",
            wrong=one_layer,
        ),
        Mistake(
            "you left out the batch: each of the batch_size sequences has its own cache.",
            wrong=one_sequence,
        ),
        Mistake(
            "you assume 4 bytes per number for every dtype: use torch.finfo(dtype).bits // 8 "
            "(2 bytes for float16 and bfloat16).",
            wrong=always_fp32,
        ),
        Mistake("you return bits: divide by 8 for bytes.", wrong=bits),
        Mistake(
            "you count one head's head_size channels: the heads together have n_head * "
            "head_size = n_embd channels.",
            wrong=per_head,
        ),
    ]
    return check(fn, cases, kv_cache_bytes_reference, name="kv_cache_bytes", mistakes=mistakes)
