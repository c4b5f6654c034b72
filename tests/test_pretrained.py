"""Parity with an independent implementation: Hugging Face `transformers` GPT-2.

The HF model is built from a small config with random weights (nothing is downloaded). Its
weights are scaled up and its LayerNorms randomised so that the logits are far from zero and
a wrong transpose or a missing bias would show. `transformers` is optional: the tests that need
it skip without it; the state-dict and config checks run either way."""

from types import SimpleNamespace

import pytest
import torch

from gptlib.generate import SamplingConfig, generate
from gptlib.model import GPT, GPTConfig, set_attention
from gptlib.pretrained import config_from_hf, from_hf_model, gptlib_to_hf, hf_to_gptlib, to_hf_model

HF_OPTIONS = dict(
    n_layer=2,
    n_head=2,
    n_embd=32,
    vocab_size=100,
    n_positions=64,
    activation_function="gelu_new",
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    layer_norm_epsilon=1e-5,
    bos_token_id=None,
    eos_token_id=None,
    initializer_range=0.2,
)


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_model(transformers):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_OPTIONS)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))  # LayerNorm 1/0 and zero biases hide bugs
    return model


def ids(B=2, T=20, seed=1):
    return torch.randint(0, 100, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_hf_to_gptlib_logits_match(hf_model, attention):
    ours = set_attention(from_hf_model(hf_model).eval(), attention)
    assert ours.config == GPTConfig(
        vocab_size=100, block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0
    )
    with torch.no_grad():
        expected = hf_model(ids()).logits
        logits, _ = ours(ids())
    assert expected.abs().max() > 1.0  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_greedy_generations_match(hf_model):
    ours = from_hf_model(hf_model)
    prompt = ids(B=2, T=6, seed=3)
    theirs = hf_model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=25,
        do_sample=False,
        pad_token_id=0,
    )
    assert torch.equal(generate(ours, prompt, 25, SamplingConfig(temperature=0)), theirs)


def test_gptlib_to_hf_logits_match(transformers):
    torch.manual_seed(4)
    ours = GPT(GPTConfig.preset("tiny", vocab_size=100)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf = to_hf_model(ours).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids()).logits, ours(ids())[0], atol=1e-5, rtol=0)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # still tied


def test_state_dict_round_trip_is_exact(hf_model):
    hf_sd = hf_model.state_dict()
    ours = hf_to_gptlib(hf_sd)
    assert ours["h.0.attn.c_attn.weight"].shape == (96, 32)  # nn.Linear: (out, in)
    assert hf_sd["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    back = gptlib_to_hf(ours)
    assert set(back) == set(hf_sd)
    for key, value in hf_sd.items():
        assert torch.equal(back[key], value), key
    model = GPT(config_from_hf(hf_model.config))
    model.load_state_dict(ours)  # strict: every key matches gptlib's names and shapes


def test_conversion_transposes_exactly_the_four_conv1d_weights():
    """No transformers needed: gptlib -> HF -> gptlib is the identity, the "transformer."
    prefix is added to all but lm_head, and only c_attn, c_proj (both) and c_fc are transposed."""
    ours = GPT(GPTConfig.preset("tiny", n_layer=1)).state_dict()
    hf = gptlib_to_hf(ours)
    assert set(hf) == {k if k == "lm_head.weight" else "transformer." + k for k in ours}
    transposed = {k for k in ours if not torch.equal(hf.get("transformer." + k, ours[k]), ours[k])}
    assert transposed == {
        "h.0.attn.c_attn.weight",
        "h.0.attn.c_proj.weight",
        "h.0.mlp.c_fc.weight",
        "h.0.mlp.c_proj.weight",
    }
    back = hf_to_gptlib(hf)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)


def hf_config(**overrides):
    """A stand-in for transformers.GPT2Config: config_from_hf reads only attributes."""
    options = dict(HF_OPTIONS, n_inner=None, scale_attn_weights=True)
    return SimpleNamespace(**{**options, **overrides})


def test_config_from_hf_reads_the_shape():
    assert config_from_hf(hf_config()) == GPTConfig(
        vocab_size=100, block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(activation_function="relu"), "activation_function='relu'"),
        (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon=1e-06"),
        (dict(n_inner=64), "n_inner=64"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings=False"),
        (dict(scale_attn_weights=False), "scale_attn_weights=False"),
        (dict(reorder_and_upcast_attn=True), "reorder_and_upcast_attn=True"),
    ],
)
def test_unsupported_hf_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf(hf_config(**overrides))
