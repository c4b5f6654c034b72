"""Tests of gptlib.model: config validation, the two attention paths, causality, the loss,
parameter and FLOP counts, and attention maps. Every model here is a seeded small preset."""

import dataclasses
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig, param_count, set_attention


def tiny(seed: int = 0, attention: str = "sdpa", **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny", **overrides), attention=attention).eval()


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


def test_the_saved_config_holds_no_code_path_switch():
    """The attention path is not a hyper-parameter: it is not in the config a checkpoint saves."""
    assert set(GPTConfig().to_dict()) == {
        "vocab_size",
        "block_size",
        "n_layer",
        "n_head",
        "n_embd",
        "dropout",
        "bias",
    }


def test_presets():
    gpt2 = GPTConfig.preset("gpt2")
    assert (gpt2.n_layer, gpt2.n_head, gpt2.n_embd, gpt2.block_size, gpt2.vocab_size) == (
        12,
        12,
        768,
        1024,
        50257,
    )
    assert GPTConfig.preset("tiny", n_layer=3).n_layer == 3
    assert 1_000_000 < param_count(GPTConfig.preset("book")) < 10_000_000  # "a few million"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        GPTConfig.preset("huge")
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig.preset("tiny", n_head=5)


# --- attention -----------------------------------------------------------------------------


def test_one_state_dict_gives_the_same_logits_on_both_paths():
    sdpa = tiny()
    explicit = GPT(sdpa.config, attention="explicit").eval()
    assert explicit.state_dict().keys() == sdpa.state_dict().keys()  # no path-specific tensor
    explicit.load_state_dict(sdpa.state_dict())  # strict: every name and shape matches
    idx = tokens(3, 40)
    expected = sdpa(idx)[0]
    torch.testing.assert_close(explicit(idx)[0], expected, atol=1e-6, rtol=0)
    # switching a built model changes the path, not the function
    assert set_attention(sdpa, "explicit") is sdpa
    assert {block.attn.attention for block in sdpa.h} == {"explicit"}
    torch.testing.assert_close(sdpa(idx)[0], expected, atol=1e-6, rtol=0)


def test_an_unknown_attention_path_is_rejected():
    with pytest.raises(ValueError, match="attention must be 'sdpa' or 'explicit', got 'flash'"):
        GPT(GPTConfig.preset("tiny"), attention="flash")
    with pytest.raises(ValueError, match="got 'fused'"):
        set_attention(tiny(), "fused")


def test_each_attention_knows_its_layer():
    model = tiny(n_layer=3)
    assert [block.attn.layer_idx for block in model.h] == [0, 1, 2]


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


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_attention_maps_match_a_computation_by_hand(attention):
    """Reference: from each block's input h (a hidden state), Q and K are the first two thirds
    of ln_1(h) W_attn^T + b, split into heads; A = softmax(Q K^T / sqrt(hs) + M), where M is 0
    on and below the diagonal and -inf above it (Vaswani et al. 2017, Eq. 1)."""
    model = tiny(attention=attention, dropout=0.5).train()  # dropout must be off for the maps
    idx = tokens(2, 12)
    maps = model.attention_maps(idx)
    assert model.training  # mode restored
    assert all(not block.attn._forward_hooks for block in model.h)  # hooks removed
    with torch.no_grad():
        states = model.eval().hidden_states(idx)
    B, T, C, nh = 2, 12, model.config.n_embd, model.config.n_head
    above_diagonal = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)  # (T, T)
    assert len(maps) == model.config.n_layer
    for block, h, got in zip(model.h, states[:-1], maps, strict=True):
        qkv = torch.nn.functional.linear(
            block.ln_1(h), block.attn.c_attn.weight, block.attn.c_attn.bias
        )  # (B, T, 3C)
        q = qkv[..., :C].reshape(B, T, nh, C // nh).permute(0, 2, 1, 3)  # (B, nh, T, hs)
        k = qkv[..., C : 2 * C].reshape(B, T, nh, C // nh).permute(0, 2, 1, 3)
        expected = torch.softmax(
            q @ k.transpose(-1, -2) / math.sqrt(C // nh) + above_diagonal, dim=-1
        )  # (B, nh, T, T)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        assert (got.triu(diagonal=1) == 0).all()
        torch.testing.assert_close(got.sum(-1), torch.ones(B, nh, T))


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
    expected = torch.nn.functional.cross_entropy(
        logits[:, 6:].reshape(-1, 256), targets[:, 6:].reshape(-1)
    )
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
    with pytest.raises(
        ValueError,
        match="sequence of length 65 exceeds the context length "
        r"block_size=64; crop the prompt \(generate",
    ):
        model(tokens(1, 65))
    cache = KVCache.for_model(model, 1)
    model(tokens(1, 60), kv_cache=cache)
    with pytest.raises(ValueError, match=r"length 65 \(60 cached \+ 5 new\)"):
        model(tokens(1, 5), kv_cache=cache)
    assert cache.length == 60  # the failed call left the cache as it was
    with pytest.raises(ValueError, match="add a batch dimension"):
        model(torch.tensor([1, 2, 3]))


# --- counting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("tiny", {}),
        ("small", {}),
        ("book", {}),
        ("gpt2", {}),
        ("tiny", dict(bias=False)),
        ("tiny", dict(n_layer=5, n_head=4, vocab_size=1000)),
    ],
)
def test_param_count_formula_matches_the_model(name, overrides):
    cfg = GPTConfig.preset(name, **overrides)
    with torch.device("meta"):  # no memory, no init time, even for GPT-2's 124M
        model = GPT(cfg)
    counted = sum(p.numel() for p in model.parameters())  # tied weights appear once
    assert param_count(cfg) == counted == model.num_params()
    assert model.num_params(non_embedding=True) == counted - cfg.block_size * cfg.n_embd
    breakdown = model.param_breakdown()
    assert breakdown.pop("total") == counted == sum(breakdown.values())


def test_param_breakdown_by_hand():
    """tiny: V = 256, block_size = 64, L = 2, C = 64. Attention per block 4C^2 + 4C, MLP
    8C^2 + 5C, LayerNorms 2 per block and ln_f, 2C each."""
    C, L = 64, 2
    assert tiny().param_breakdown() == dict(
        token_embedding=256 * C,
        position_embedding=64 * C,
        attention=L * (4 * C * C + 4 * C),
        mlp=L * (8 * C * C + 5 * C),
        layernorm=(2 * L + 1) * 2 * C,
        total=param_count(GPTConfig.preset("tiny")),
    )


def test_gpt2_numbers():
    with torch.device("meta"):
        model = GPT(GPTConfig.preset("gpt2"))
    assert model.num_params() == 124_439_808
    assert model.lm_head.weight is model.wte.weight


@pytest.mark.parametrize(
    "overrides, T",
    [
        ({}, 64),
        ({}, 17),
        (dict(bias=False), 30),
        (dict(n_layer=3, n_head=4, n_embd=32, vocab_size=100), 20),
    ],
)
def test_flops_per_token_against_a_flop_counter(overrides, T):
    """Independent oracle: torch's FlopCounterMode counts the matrix products that really run.

    On the explicit attention path it sees, per token, 2 FLOPs for each weight of a matmul
    (12 L C^2 in the blocks, V C in lm_head) and, per layer, Q K^T and A V over the T x T
    square: 4 L T C. `flops_per_token` (its docstring) counts 2 FLOPs for every parameter
    but wpe, the biases and LayerNorm weights included (13 L C + 2 C of them with biases,
    2 L C + C without), and Kaplan's 2 L T C for attention. Hence

        counted = flops_per_token - 2 * (biases and LayerNorm weights) + 2 L T C,

    and for forward + backward, where every matmul runs once forward and twice backward
    (the gradients of both operands), three times each of those terms.
    """
    model = tiny(attention="explicit", **overrides)
    cfg = model.config
    L, C, B = cfg.n_layer, cfg.n_embd, 2
    not_matmul = L * 13 * C + 2 * C if cfg.bias else L * 2 * C + C
    idx, targets = tokens(B, T, cfg.vocab_size), tokens(B, T, cfg.vocab_size, seed=2)
    with FlopCounterMode(display=False) as counter:
        model(idx)
    expected = model.flops_per_token(seq_len=T) - 2 * not_matmul + 2 * L * T * C
    assert counter.get_total_flops() == B * T * expected
    with FlopCounterMode(display=False) as counter:
        model(idx, targets)[1].backward()
    expected = model.flops_per_token(training=True, seq_len=T) + 3 * (
        2 * L * T * C - 2 * not_matmul
    )
    assert counter.get_total_flops() == B * T * expected


def test_flops_per_token_uses_block_size_by_default():
    model = tiny()
    assert model.flops_per_token() == model.flops_per_token(seq_len=64)
    assert model.flops_per_token(seq_len=64) - model.flops_per_token(seq_len=32) == (
        2 * 2 * 32 * 64
    )  # 2 L (64 - 32) C: only the attention term depends on T


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
