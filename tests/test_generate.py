"""Tests of gptlib.generate and gptlib.kv_cache: the sampling filters on hand-computable
logits, then generation on a seeded tiny model (cache vs no cache, streaming text, beam search
against exhaustive search)."""

import dataclasses
import itertools
import math

import pytest
import torch

from gptlib.bpe import BPETokenizer
from gptlib.generate import (
    SamplingConfig,
    apply_repetition_penalty,
    beam_search,
    decode_pieces,
    generate,
    sample_next,
    sequence_log_prob,
    stream,
    stream_text,
    top_k_mask,
    top_p_mask,
)
from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig

GREEDY = SamplingConfig(temperature=0)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny", block_size=32)).eval()


def prompt(B: int = 1, T: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))


# --- pure functions on logits --------------------------------------------------------------


def test_temperature_zero_is_argmax():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))


def test_low_temperature_approaches_argmax_and_sampling_follows_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(4000, 3)
    g = torch.Generator().manual_seed(0)
    assert (sample_next(logits, temperature=0.01, generator=g) == 2).all()
    draws = sample_next(logits, temperature=1.0, generator=g)
    freq = torch.bincount(draws, minlength=3) / 4000
    torch.testing.assert_close(freq, torch.softmax(logits[0], -1), atol=0.03, rtol=0)


@pytest.mark.parametrize("k", [1, 3, 7, 10, 20])
def test_top_k_keeps_exactly_k(k):
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(k))
    masked = top_k_mask(logits, k)
    kept = torch.isfinite(masked)
    assert (kept.sum(-1) == min(k, 10)).all()
    # the kept ones are the largest: every kept logit >= every dropped one
    lowest_kept = masked.masked_fill(~kept, math.inf).min(-1).values
    highest_dropped = logits.masked_fill(kept, -math.inf).max(-1).values
    assert (lowest_kept >= highest_dropped).all()
    assert torch.equal(masked[kept], logits[kept])


def test_top_k_with_ties_keeps_exactly_k():
    assert torch.isfinite(top_k_mask(torch.zeros(1, 6), 2)).sum() == 2


def test_top_p_keeps_the_smallest_set_with_enough_mass():
    """Probabilities 0.4, 0.3, 0.2, 0.1 (shuffled). Masses of the sorted prefixes:
    0.4, 0.7, 0.9, 1.0. p = 0.35 -> {0.4}; p = 0.5 -> {0.4, 0.3}; p = 0.75 -> three tokens;
    p = 0.95 -> all four."""
    probs = torch.tensor([[0.2, 0.4, 0.1, 0.3]])
    for p, expected in [(0.35, [1]), (0.5, [1, 3]), (0.75, [0, 1, 3]), (0.95, [0, 1, 2, 3])]:
        kept = torch.isfinite(top_p_mask(probs.log(), p))[0].nonzero().flatten().tolist()
        assert kept == expected, p


def test_top_p_one_keeps_all_and_tiny_p_keeps_the_argmax():
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top_p_mask(logits, 1.0), logits)
    tiny_p = top_p_mask(logits, 1e-6)
    assert (torch.isfinite(tiny_p).sum(-1) == 1).all()
    assert torch.equal(tiny_p.argmax(-1), logits.argmax(-1))


def test_sampling_never_picks_a_filtered_token():
    logits = torch.randn(2000, 10, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    draws = sample_next(logits, top_k=3, generator=g)
    allowed = logits.topk(3, dim=-1).indices
    assert (allowed == draws[:, None]).any(-1).all()


def test_repetition_penalty():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), penalty=2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0, 0.5]]  # positive halved, negative doubled
    assert logits.tolist() == [[2.0, -1.0, 3.0, 0.5]]  # the input is not modified
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([[0]]), 1.0), logits)


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 3), temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        top_k_mask(torch.zeros(1, 3), 0)
    with pytest.raises(ValueError, match="top_p"):
        top_p_mask(torch.zeros(1, 3), 1.5)


# --- the sampling config -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=-0.5), "temperature must be >= 0, got -0.5"),
        (dict(top_k=0), "top_k must be a positive integer or None, got 0"),
        (dict(top_k=2.5), "top_k must be a positive integer or None, got 2.5"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\] or None, got 0.0"),
        (dict(repetition_penalty=0), "repetition_penalty must be positive, got 0"),
    ],
)
def test_sampling_config_rejects_bad_values_when_it_is_made(options, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**options)


def test_sampling_config_is_frozen_and_rejects_unknown_options():
    config = SamplingConfig(stop_tokens=[3, torch.tensor(5)])
    assert config.stop_tokens == (3, 5) and hash(config) == hash(SamplingConfig(stop_tokens=(3, 5)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.temperature = 0.5
    with pytest.raises(TypeError, match="topk"):
        SamplingConfig(topk=5)


def test_bad_max_new_tokens_fails_at_the_call(model):
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -1"):
        stream(model, prompt(), -1)  # not only when the first token is asked for


# --- generation with a model ---------------------------------------------------------------


@pytest.mark.parametrize(
    "sampling",
    [
        GREEDY,
        SamplingConfig(temperature=0.8, top_k=20),
        SamplingConfig(temperature=1.2, top_p=0.9, repetition_penalty=1.3),
    ],
)
def test_kv_cache_generation_equals_no_cache(model, sampling):
    """Also past block_size=32: 5 + 40 tokens, so the cache fills up and falls back."""
    idx = prompt(B=2)
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(7)
        runs.append(generate(model, idx, 40, sampling, generator=g, use_cache=use_cache))
    assert runs[0].shape == (2, 45)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :5], idx)


def test_prompt_longer_than_the_context_is_cropped_for_the_model_but_returned_whole(model):
    idx = prompt(T=40)  # block_size is 32
    out = generate(model, idx, 3, GREEDY)
    assert torch.equal(out[:, :40], idx)
    assert torch.equal(out, generate(model, idx, 3, GREEDY, use_cache=False))
    assert torch.equal(out[:, 40:], generate(model, idx[:, -32:], 3, GREEDY)[:, 32:])


def test_greedy_generation_takes_the_argmax_of_a_full_forward_pass(model):
    """Reference: one full forward pass per step, no cache, argmax of the last position."""
    seq = prompt(B=2)
    for _ in range(6):
        with torch.no_grad():
            logits, _ = model(seq)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate(model, prompt(B=2), 6, GREEDY), seq)


def test_seeded_generation_is_reproducible_and_seeds_matter(model):
    def run(seed):
        return generate(model, prompt(), 20, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_generation_restores_training_mode(model):
    model.train()
    try:
        generate(model, prompt(), 2, GREEDY)
        assert model.training
        tokens = stream(model, prompt(), 5, GREEDY)
        next(tokens)
        assert not model.training  # eval mode (no dropout) while the stream is open
        tokens.close()
        assert model.training
    finally:
        model.eval()


def test_stop_tokens_end_generation(model):
    greedy = generate(model, prompt(), 10, GREEDY)
    stop = greedy[0, 5 + 3].item()  # the 4th new token
    first = (greedy[0, 5:] == stop).nonzero()[0].item()
    out = generate(model, prompt(), 10, SamplingConfig(temperature=0, stop_tokens=[stop]))
    assert torch.equal(out, greedy[:, : 5 + first + 1])  # ends right after the stop token


def test_stop_tokens_in_a_batch_pad_finished_rows(model):
    """Reference: the unconstrained greedy rows, each cut after its first stop token and padded
    with it; generation runs until the last row stops (or max_new_tokens)."""
    idx, n = prompt(B=3, seed=5), 12
    greedy = generate(model, idx, n, GREEDY)[:, 5:]  # (3, 12) new tokens
    stop = greedy[0, 0].item()  # row 0 stops at once
    expected = []
    for row in greedy.tolist():
        cut = row.index(stop) + 1 if stop in row else n
        expected.append(row[:cut] + [stop] * (n - cut))
    steps = max(row.index(stop) + 1 if stop in row else n for row in greedy.tolist())
    assert steps > 1  # the fixed inputs do test padding: some row runs on after row 0 stops
    out = generate(model, idx, n, SamplingConfig(temperature=0, stop_tokens=[stop]))
    assert out[:, 5:].tolist() == [row[:steps] for row in expected]


def test_stream_yields_the_tokens_of_generate(model):
    sampling = SamplingConfig(temperature=0.9, top_k=50)
    streamed = list(
        stream(model, prompt(), 15, sampling, generator=torch.Generator().manual_seed(2))
    )
    generated = generate(model, prompt(), 15, sampling, generator=torch.Generator().manual_seed(2))
    assert all(isinstance(t, int) for t in streamed)
    assert streamed == generated[0, 5:].tolist()
    with pytest.raises(ValueError, match=r"one prompt of shape \(1, T\)"):
        stream(model, prompt(B=2), 3)
    tokens = stream(model, prompt(), 3)
    next(tokens)
    assert torch.is_grad_enabled()  # no_grad does not leak into the caller between tokens


# --- streaming text ------------------------------------------------------------------------


class ChunkTokenizer:
    """A tokenizer whose tokens are byte strings that cut through characters: "é" is C3 A9,
    "€" is E2 82 AC, "😀" is F0 9F 98 80. Decoding joins the bytes, as byte-level BPE does."""

    vocab = [b"a", b"\xc3", b"\xa9\xe2", b"\x82", b"\xac\xf0\x9f", b"\x98\x80b"]

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


def test_decode_pieces_holds_back_split_characters():
    """Token by token: a | C3 | A9 E2 | 82 | AC F0 9F | 98 80 b. A character is out as soon as
    its last byte is: after tokens 0 ("a"), 2 ("é"; E2 waits), 4 ("€"; F0 9F waits) and 5."""
    pieces = list(decode_pieces(ChunkTokenizer(), [0, 1, 2, 3, 4, 5]))
    assert pieces == ["a", "é", "€", "😀b"]
    assert "".join(pieces) == ChunkTokenizer().decode(range(6))


@pytest.mark.parametrize("text", ["", "a", "né", "€uro", "😀😀", "aé€😀b"])
def test_decode_pieces_byte_by_byte_gives_one_piece_per_character(text):
    pieces = list(decode_pieces(BPETokenizer(), text.encode()))  # untrained: a token per byte
    assert pieces == list(text)


def test_decode_pieces_flushes_an_unfinished_character_at_the_end():
    """C3 alone never completes: it is decoded as it is, as `decode` of all the ids would."""
    tok = BPETokenizer()
    ids = list(b"ab") + [0xC3]
    assert list(decode_pieces(tok, ids)) == ["a", "b", "\ufffd"]
    assert "".join(decode_pieces(tok, [0x80, 0x41])) == tok.decode([0x80, 0x41])  # "\ufffdA"


class Scripted(torch.nn.Module):
    """A stand-in model whose greedy continuation spells `script`, one byte per step: the
    logits of the last position peak at the next byte of the script."""

    def __init__(self, script: bytes, prompt_len: int) -> None:
        super().__init__()
        self.config = GPTConfig.preset("tiny")
        self.script, self.prompt_len = list(script), prompt_len
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device and dtype

    def forward(self, idx, targets=None, kv_cache=None):
        logits = torch.zeros(idx.size(0), idx.size(1), 256)  # (B, T, V)
        logits[:, -1, self.script[idx.size(1) - self.prompt_len]] = 10.0
        return logits, None


def test_stream_text_yields_whole_characters_as_they_are_sampled():
    script = "aé€😀!".encode()  # 1 + 2 + 3 + 4 + 1 bytes
    model = Scripted(script, prompt_len=1)
    pieces = stream_text(
        model, BPETokenizer(), torch.tensor([[ord("x")]]), len(script), GREEDY, use_cache=False
    )
    assert list(pieces) == ["a", "é", "€", "😀", "!"]


def test_stream_text_joins_to_the_decoded_generation(model):
    """A random tiny model over bytes produces plenty of broken UTF-8: the pieces still join to
    exactly the decoded tokens of `generate`, and no piece but the last ends inside one."""
    tok = BPETokenizer()
    idx = torch.tensor([tok.encode("né")])
    sampling = SamplingConfig(temperature=1.0)
    pieces = list(
        stream_text(model, tok, idx, 25, sampling, generator=torch.Generator().manual_seed(3))
    )
    out = generate(model, idx, 25, sampling, generator=torch.Generator().manual_seed(3))
    assert "".join(pieces) == tok.decode(out[0, idx.size(1) :].tolist())
    assert not any(piece.endswith("\ufffd") for piece in pieces[:-1])


# --- beam search ---------------------------------------------------------------------------


def test_beam_search_with_one_beam_is_greedy(model):
    assert torch.equal(
        beam_search(model, prompt(), 12, beam_size=1), generate(model, prompt(), 12, GREEDY)
    )


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(model):
    for seed in range(3):
        idx = prompt(seed=seed)
        beam = beam_search(model, idx, 10, beam_size=4)
        greedy = generate(model, idx, 10, GREEDY)
        assert beam.shape == greedy.shape == (1, 15)
        beam_lp, greedy_lp = sequence_log_prob(model, torch.cat([beam, greedy]), 5).tolist()
        assert beam_lp >= greedy_lp - 1e-5


def exhaustive_search(model, idx, n, stops, length_penalty):
    """Every finished continuation of idx (1, T) with at most n tokens, scored as beam_search
    scores them: one that stops early ends in its first stop token; one of n tokens may end
    anywhere. Returns the best one, (1, T + length)."""
    V, best = model.config.vocab_size, (-math.inf, None)
    for length in range(1, n + 1):
        conts = [
            c
            for c in itertools.product(range(V), repeat=length)
            if not set(c[:-1]) & stops and (length == n or c[-1] in stops)
        ]
        if not conts:
            continue
        seqs = torch.cat([idx.expand(len(conts), -1), torch.tensor(conts)], dim=1)
        scores = sequence_log_prob(model, seqs, idx.size(1)) / length**length_penalty
        i = scores.argmax().item()
        if scores[i] > best[0]:
            best = (scores[i].item(), seqs[i : i + 1])
    return best[1]


@pytest.mark.parametrize(
    "stops, length_penalty", [((), 1.0), ((3,), 0.5), ((7,), 0.0), ((2,), 1.0), ((2, 5), 2.0)]
)
def test_beam_search_with_a_wide_beam_is_exhaustive_search(stops, length_penalty):
    """With V = 8 and 3 new tokens, a beam of 64 = V^2 keeps every live prefix, so beam search
    must return the best of all finished continuations, found by enumerating them. On these
    fixed inputs greedy decoding (one beam) misses that best one, so the check has teeth."""
    torch.manual_seed(0)
    tiny = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in tiny.parameters():
            p.add_(0.1 * torch.randn_like(p))  # less uniform than at initialisation
    idx = torch.tensor([[1, 4]])
    expected = exhaustive_search(tiny, idx, 3, set(stops), length_penalty)
    options = dict(length_penalty=length_penalty, stop_tokens=stops)
    assert torch.equal(beam_search(tiny, idx, 3, beam_size=64, **options), expected)
    assert not torch.equal(beam_search(tiny, idx, 3, beam_size=1, **options), expected)


def test_beam_search_stops_at_stop_tokens(model):
    stops = [int(t) for t in generate(model, prompt(), 3, GREEDY)[0, 5:]]
    out = beam_search(model, prompt(), 10, beam_size=3, stop_tokens=stops)
    assert out.size(1) < 15 and out[0, -1].item() in stops


# --- the cache object ----------------------------------------------------------------------


def test_cache_memory_and_overflow(model):
    cache = KVCache.for_model(model, batch_size=3, max_len=8)
    c = model.config
    assert cache.nbytes == 2 * c.n_layer * 3 * 8 * c.n_embd * 4  # 2 L B T C bytes (float32)
    model(prompt(B=3, T=6), kv_cache=cache)
    assert cache.length == 6
    with pytest.raises(ValueError, match="the KV cache is full: it holds 6 of 8 positions"):
        model(prompt(B=3, T=3), kv_cache=cache)
    assert cache.length == 6
    cache.reset()
    assert cache.length == 0
    with pytest.raises(ValueError, match="max_len=33"):
        KVCache.for_model(model, 1, max_len=33)
    with pytest.raises(ValueError, match="batch_size=3, got 2"):
        model(prompt(B=2), kv_cache=cache)


def test_cache_reorder_follows_the_chosen_rows(model):
    idx = prompt(B=3, T=4)
    cache = KVCache.for_model(model, batch_size=3)
    model(idx, kv_cache=cache)
    order = torch.tensor([2, 2, 0])
    cache.reorder(order)
    nxt = prompt(B=3, T=1, seed=9)
    logits, _ = model(nxt, kv_cache=cache)
    expected, _ = model(torch.cat([idx[order], nxt], dim=1))
    torch.testing.assert_close(logits[:, 0], expected[:, -1], atol=1e-6, rtol=0)
