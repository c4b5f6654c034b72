"""Tests for gptlib.exercises.practice, the self-checking exercises of chapter 5.

For every checker: a correct answer passes, and each typical wrong answer fails with feedback that
names the mistake. The references are checked against gptlib itself (FLOPs per token, the tensors
of a real KV cache) so that the feedback is measured against the right thing.
"""

import math

import pytest
import torch

from gptlib.exercises import practice as p
from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig


# ----------------------------------------------------------------- the references are right
def test_mfu_reference_matches_gptlib_flops_per_token():
    model = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=3, n_head=2, n_embd=16))
    n = model.num_params(non_embedding=True)
    expected = model.flops_per_token(training=True, seq_len=32) * 1234.0 / 1e12
    assert math.isclose(p.mfu_reference(1234.0, n, 3, 16, 32, 1e12), expected, rel_tol=1e-12)


def test_bits_per_char_reference_is_a_change_of_units():
    """Two tokens of one character each, 1 nat each: 2 nats = 2/ln 2 bits over 2 characters."""
    assert math.isclose(p.bits_per_char_reference(1.0, 2, 2), 1 / math.log(2))
    # the same total information spread over twice the characters: half the bits per character
    assert math.isclose(p.bits_per_char_reference(1.0, 2, 4), 0.5 / math.log(2))


def test_distinct_n_reference_by_hand():
    assert p.distinct_n_reference("abcabc", 3) == 3 / 4  # abc, bca, cab, abc
    assert p.distinct_n_reference([], 1) == 0.0
    assert p.distinct_n_reference([7], 1) == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_reference_matches_a_real_cache(dtype):
    config = GPTConfig(vocab_size=50, block_size=24, n_layer=3, n_head=2, n_embd=8)
    cache = KVCache(config.n_layer, 5, config.n_head, config.head_size, 24, dtype=dtype)
    real = cache.k.nbytes + cache.v.nbytes
    assert p.kv_cache_bytes_reference(config, 5, 24, dtype) == real


# ----------------------------------------------------------------- MFU
def test_mfu_correct_passes(feedback_of):
    def mine(tokens_per_s, n_params, n_layer, n_embd, seq_len, peak_flops):
        return 6 * (n_params + n_layer * seq_len * n_embd) * tokens_per_s / peak_flops

    passed, out = feedback_of(p.check_mfu, mine)
    assert passed and "all 3 cases passed" in out


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda t, n, L, C, T, peak: (2 * n + 2 * L * T * C) * t / peak, "only the forward pass"),
        (lambda t, n, L, C, T, peak: 6 * n * t / peak, "leave out attention"),
        (lambda t, n, L, C, T, peak: (6 * n + 2 * L * T * C) * t / peak, "must be tripled"),
        (lambda t, n, L, C, T, peak: 600 * (n + L * T * C) * t / peak, "percentage"),
        (lambda t, n, L, C, T, peak: 6 * (n + L * T * C) * t / peak * 1e3, "above 1"),
    ],
)
def test_mfu_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(p.check_mfu, wrong)
    assert not passed and words in out, out


# ----------------------------------------------------------------- bits per character
def test_bits_per_char_correct_passes(feedback_of):
    passed, out = feedback_of(
        p.check_bits_per_char, lambda loss, t, c: loss * t / (c * math.log(2))
    )
    assert passed and "all 4 cases passed" in out


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda loss, t, c: loss * t / c, "convert nats to bits"),
        (lambda loss, t, c: loss * math.log(2) * t / c, "multiplied by ln 2"),
        (lambda loss, t, c: loss / math.log(2) * c / t, "upside down"),
        (lambda loss, t, c: loss / math.log(2), "bits per token"),
        (lambda loss, t, c: loss / math.log(10) * t / c, "ln 10"),
    ],
)
def test_bits_per_char_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(p.check_bits_per_char, wrong)
    assert not passed and words in out, out


# ----------------------------------------------------------------- distinct-n
def test_distinct_n_correct_passes(feedback_of):
    def mine(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return len(set(grams)) / max(len(grams), 1)

    passed, out = feedback_of(p.check_distinct_n, mine)
    assert passed and "all 6 cases passed" in out


def distinct_by_tokens(tokens, n):
    return len({tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}) / len(tokens)


def distinct_unigrams(tokens, n):
    return len(set(tokens)) / len(tokens)


def distinct_count(tokens, n):
    return len({tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)})


def distinct_bigrams(tokens, n):
    return len(set(zip(tokens, tokens[1:], strict=False))) / max(len(tokens) - 1, 1)


def distinct_zero_division(tokens, n):
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (distinct_by_tokens, "L - n + 1"),
        (distinct_unigrams, "distinct tokens, not distinct n-grams"),
        (distinct_count, "divide it by the number of n-grams"),
        (distinct_bigrams, "always count bigrams"),
        (distinct_zero_division, "ZeroDivisionError"),
    ],
)
def test_distinct_n_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(p.check_distinct_n, wrong)
    assert not passed and words in out, out


def test_distinct_n_zero_division_gets_the_hint(feedback_of):
    _, out = feedback_of(p.check_distinct_n, distinct_zero_division)
    assert "do not divide by zero" in out


# ----------------------------------------------------------------- KV cache
def test_kv_cache_bytes_correct_passes(feedback_of):
    def mine(config, batch_size, seq_len, dtype):
        nbytes = torch.tensor([], dtype=dtype).element_size()
        return 2 * config.n_layer * batch_size * seq_len * config.n_embd * nbytes

    passed, out = feedback_of(p.check_kv_cache_bytes, mine)
    assert passed and "all 4 cases passed" in out


def ref(cfg, B, T, dtype):
    return p.kv_cache_bytes_reference(cfg, B, T, dtype)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda cfg, B, T, dtype: ref(cfg, B, T, dtype) // 2, "only the keys"),
        (lambda cfg, B, T, dtype: ref(cfg, B, T, dtype) // cfg.n_layer, "multiply by n_layer"),
        (lambda cfg, B, T, dtype: ref(cfg, 1, T, dtype), "left out the batch"),
        (lambda cfg, B, T, dtype: ref(cfg, B, T, torch.float32), "4 bytes per number"),
        (lambda cfg, B, T, dtype: 8 * ref(cfg, B, T, dtype), "you return bits"),
        (lambda cfg, B, T, dtype: ref(cfg, B, T, dtype) // cfg.n_head, "one head"),
    ],
)
def test_kv_cache_bytes_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(p.check_kv_cache_bytes, wrong)
    assert not passed and words in out, out
