"""Tests of gptlib.model: config validation, the two attention paths, causality, the loss,
parameter counts and attention maps. Every model here is the seeded "tiny" preset."""

import dataclasses
import math

import pytest
import torch

from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig, param_count


def tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny", **overrides)).eval()


def tokens(B: int, T: int, V: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=100, n_head=3), "n_embd=100 is not divisible by n_head=3"),
        (dict(n_layer=0), "n_layer must be a positive integer, got 0"),
        (dict(vocab_size=-5), "vocab_size must be a positive integer, got -5"),
        (dict(block_size=64.0), "block_size must be a positive integer, got 64.0"),
        (dict(n_head=True), "n_head must be a positive integer, got True"),
        (dict(dropout=1.0), "dropout must be a number in [0, 1), got 1.0"),
        (dict(dropout=-0.1), "dropout must be a number in [0, 1), got -0.1"),
        (dict(attention="flash"), "attention must be 'sdpa' or 'explicit', got 'flash'"),
        (dict(bias="yes"), "bias must be True or False"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError) as excinfo:
        GPTConfig(**{**GPTConfig.preset("tiny").to_dict(), **overrides})
    assert message in str(excinfo.value)


def test_config_is_frozen_and_round_trips_through_a_dict():
    cfg = GPTConfig.preset("book")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_layer = 3
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    n_layer = cfg.n_layer
    assert dataclasses.replace(cfg, n_layer=n_layer + 1).n_layer == n_layer + 1
    assert cfg.n_layer == n_layer  # the original is untouched


def test_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown GPTConfig field\(s\) \['n_heads'\]"):
        GPTConfig.from_dict({**GPTConfig().to_dict(), "n_heads": 4})


def test_presets():
    gpt2 = GPTConfig.preset("gpt2")
    assert (gpt2.n_layer, gpt2.n_head, gpt2.n_embd, gpt2.block_size, gpt2.vocab_size) == (
        12, 12, 768, 1024, 50257)
    assert GPTConfig.preset("tiny", n_layer=3).n_layer == 3
    assert 1_000_000 < param_count(GPTConfig.preset("book")) < 10_000_000  # "a few million"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        GPTConfig.preset("huge")
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig.preset("tiny", n_head=5)


# --- attention -----------------------------------------------------------------------------


def test_explicit_attention_equals_sdpa():
    sdpa = tiny(attention="sdpa")
    explicit = GPT(dataclasses.replace(sdpa.config, attention="explicit")).eval()
    explicit.load_state_dict(sdpa.state_dict())
    idx = tokens(3, 40)
    torch.testing.assert_close(explicit(idx)[0], sdpa(idx)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize("chunks", [(40,), (25, 15), (10, 1, 1, 28), (1,) * 40])
def test_kv_cache_forward_equals_full_forward(attention, chunks):
    """Feeding the sequence in chunks through a cache gives the logits of one full pass; a
    chunk of T_new > 1 after the cache checks the offset causal mask."""
    model = tiny(attention=attention)
    idx = tokens(2, 40)
    full, _ = model(idx)
    cache = KVCache.for_model(model, batch_size=2)
    parts, start = [], 0
    for n in chunks:
        parts.append(model(idx[:, start : start + n], kv_cache=cache)[0])
        start += n
    assert cache.length == 40
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_causality_future_tokens_do_not_change_past_logits(attention):
    model = tiny(attention=attention)
    idx = tokens(1, 30)
    changed = idx.clone()
    t = 17
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % 256
    a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=0, rtol=0)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # and later positions do change


def test_attention_maps_are_causal_distributions():
    model = tiny()
    maps = model.attention_maps(tokens(2, 12))
    assert len(maps) == 2 and all(m.shape == (2, 2, 12, 12) for m in maps)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 2, 12))
        assert (m.triu(diagonal=1) == 0).all()
        lower = torch.tril(torch.ones(12, 12, dtype=torch.bool))
        assert (m[..., lower] > 0).all()  # softmax gives every allowed position some weight


# --- loss and training ---------------------------------------------------------------------


def test_initial_loss_is_about_log_vocab():
    """At init the logits are small, the prediction is nearly uniform: loss ~ ln V."""
    model = tiny()
    _, loss = model(tokens(4, 64), tokens(4, 64, seed=2))
    assert abs(loss.item() - math.log(256)) < 0.1


def test_positions_with_target_minus_100_are_ignored():
    model = tiny()
    idx, targets = tokens(2, 10), tokens(2, 10, seed=3)
    masked = targets.clone()
    masked[:, :6] = -100
    _, loss = model(idx, masked)
    logits, _ = model(idx)
    expected = torch.nn.functional.cross_entropy(logits[:, 6:].reshape(-1, 256),
                                                 targets[:, 6:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", block_size=32))
    idx = tokens(4, 33)
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_too_long_input_raises_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="sequence of length 65 exceeds the context length "
                                         r"block_size=64; crop the prompt \(generate"):
        model(tokens(1, 65))
    cache = KVCache.for_model(model, 1)
    model(tokens(1, 60), kv_cache=cache)
    with pytest.raises(ValueError, match=r"length 65 \(60 cached \+ 5 new\)"):
        model(tokens(1, 5), kv_cache=cache)
    assert cache.length == 60  # the failed call left the cache as it was
    with pytest.raises(ValueError, match="add a batch dimension"):
        model(torch.tensor([1, 2, 3]))


# --- counting ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, overrides", [
    ("tiny", {}), ("small", {}), ("book", {}), ("gpt2", {}),
    ("tiny", dict(bias=False)), ("tiny", dict(n_layer=5, n_head=4, vocab_size=1000)),
])
def test_param_count_formula_matches_the_model(name, overrides):
    cfg = GPTConfig.preset(name, **overrides)
    with torch.device("meta"):  # no memory, no init time, even for GPT-2's 124M
        model = GPT(cfg)
    counted = sum(p.numel() for p in model.parameters())  # tied weights appear once
    assert param_count(cfg) == counted == model.num_params()
    assert model.num_params(non_embedding=True) == counted - cfg.block_size * cfg.n_embd
    breakdown = model.param_breakdown()
    assert breakdown.pop("total") == counted == sum(breakdown.values())



def test_gpt2_numbers():
    with torch.device("meta"):
        model = GPT(GPTConfig.preset("gpt2"))
    assert model.num_params() == 124_439_808
    assert model.lm_head.weight is model.wte.weight
    n = model.num_params(non_embedding=True)
    assert model.flops_per_token() == 2 * n + 2 * 12 * 1024 * 768
    assert model.flops_per_token(training=True) == 3 * model.flops_per_token()


def test_residual_projections_get_the_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("small", n_layer=8))
    std = model.h[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 5e-4
    assert abs(model.h[0].mlp.c_fc.weight.std().item() - 0.02) < 5e-4
    assert (model.h[0].attn.c_attn.bias == 0).all() and (model.ln_f.weight == 1).all()


@pytest.mark.parametrize("preset", ["tiny", "small", "book", "gpt2"])
def test_kaplan_params_is_blocks_and_final_layernorm(preset):
    """Kaplan et al.'s N by hand: per block 12C^2 (four C x C attention matrices plus the 4C-wide
    MLP) and 13C biases and LayerNorm weights, then 2C for ln_f; no embedding at all."""
    cfg = GPTConfig.preset(preset)
    with torch.device("meta"):
        model = GPT(cfg)
    L, C = cfg.n_layer, cfg.n_embd
    assert model.kaplan_params() == L * (12 * C * C + 13 * C) + 2 * C
    assert model.kaplan_params() < model.num_params(non_embedding=True) < model.num_params()
