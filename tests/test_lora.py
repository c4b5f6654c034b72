"""Tests of gptlib.lora: an untrained adapter changes nothing, merging changes no output,
unmerging restores the base weights, only A and B train, and the parameter count is r(in + out).
Every model is the seeded "tiny" preset (C = 64, 2 layers)."""

import pytest
import torch
import torch.nn as nn

from gptlib.lora import (
    LoRALinear,
    add_lora,
    count_trainable,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    remove_lora,
    unmerge_lora,
)
from gptlib.model import GPT, GPTConfig


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny")).eval()


def tokens(B: int = 2, T: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))


def trained(targets=("attn.c_attn", "mlp.c_fc"), steps: int = 3) -> GPT:
    """A tiny GPT whose adapters took a few AdamW steps on random tokens (B != 0)."""
    model = tiny()
    add_lora(model, targets, r=4, alpha=8, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = tokens(4, 32)
    for _ in range(steps):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_an_untrained_adapter_leaves_the_outputs_exactly_unchanged():
    """B = 0 at the start, so the LoRA path adds exactly zero (Hu et al. 2021, Sec. 4.1)."""
    model, x = tiny(), tokens()
    before, _ = model(x)
    add_lora(model, ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"), r=4)
    after, _ = model(x)
    assert torch.equal(before, after)


def test_the_merged_model_computes_what_the_adapted_model_computes():
    model, x = trained(), tokens()
    assert any(m.lora_B.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))
    adapted, _ = model(x)
    merge_lora(model)
    merged, _ = model(x)
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)
    base, _ = tiny()(x)
    assert not torch.allclose(merged, base, atol=1e-4)  # the adapters did change the model


def test_unmerge_restores_the_base_weights():
    model = trained()
    reference = tiny()  # same seed: the weights before LoRA
    merge_lora(model)
    w = model.h[0].attn.c_attn.base.weight
    assert not torch.allclose(w, reference.h[0].attn.c_attn.weight, atol=1e-6)
    unmerge_lora(model)
    for name in ("h.0.attn.c_attn", "h.1.mlp.c_fc"):
        torch.testing.assert_close(
            model.get_submodule(name).base.weight,
            reference.get_submodule(name).weight,
            rtol=0,
            atol=1e-6,
        )


def test_remove_lora_gives_a_plain_gpt_with_the_merged_weights():
    model, x = trained(), tokens()
    adapted, _ = model(x)
    remove_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(tiny().state_dict())  # GPT-2 names again
    torch.testing.assert_close(model(x)[0], adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "targets, r", [(("attn.c_attn",), 4), (("attn.c_attn", "mlp.c_proj"), 2), (("mlp.c_fc",), 8)]
)
def test_trainable_parameters_are_r_times_in_plus_out_per_layer(targets, r):
    """A is (r x in) and B is (out x r): r * (in + out) numbers per wrapped layer.

    Tiny preset, C = 64: c_attn is 64 -> 192, mlp.c_fc 64 -> 256, mlp.c_proj 256 -> 64.
    c_attn with r = 4 in both layers: 2 * 4 * (64 + 192) = 2048.
    """
    shapes = {"attn.c_attn": (64, 192), "mlp.c_fc": (64, 256), "mlp.c_proj": (256, 64)}
    model = tiny()
    names = add_lora(model, targets, r=r)
    assert len(names) == 2 * len(targets)  # every block has each target once
    expected = 2 * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)
    assert count_trainable(model) == expected
    if targets == ("attn.c_attn",):
        assert expected == 2048


def test_gradients_reach_only_A_and_B():
    model = tiny()
    add_lora(model, ("attn.c_attn",), r=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a non-zero B, so A gets a gradient too
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_()
    x = tokens()
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {f"h.{i}.attn.c_attn.lora_{ab}" for i in (0, 1) for ab in "AB"}
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in with_grad)


def test_lora_state_dict_round_trips_into_a_fresh_adapted_model():
    model, x = trained(), tokens()
    state = lora_state_dict(model)
    assert set(state) == {
        f"h.{i}.{t}.lora_{ab}" for i in (0, 1) for t in ("attn.c_attn", "mlp.c_fc") for ab in "AB"
    }
    fresh = tiny()
    add_lora(fresh, ("attn.c_attn", "mlp.c_fc"), r=4, alpha=8)
    load_lora_state_dict(fresh, state)
    torch.testing.assert_close(fresh(x)[0], model(x)[0])
    with pytest.raises(ValueError, match="adapters do not match"):
        load_lora_state_dict(fresh, {k: v for k, v in state.items() if "mlp" not in k})


def test_the_tied_output_layer_cannot_be_adapted():
    with pytest.raises(ValueError, match="weight tying"):
        add_lora(tiny(), ("lm_head",))
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(tiny(), ("attn.q_proj",))


def test_lora_linear_is_the_formula_of_the_paper():
    """h = W x + b + (alpha / r) B A x (Hu et al. 2021, Eq. 3), computed here by hand."""
    torch.manual_seed(0)
    base = nn.Linear(5, 3)
    layer = LoRALinear(base, r=2, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 5)
    by_hand = x @ base.weight.T + base.bias + 3.0 * (x @ (layer.lora_B @ layer.lora_A).T)
    torch.testing.assert_close(layer(x), by_hand)
    assert not base.weight.requires_grad and layer.lora_A.requires_grad
