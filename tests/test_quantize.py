"""gptlib.quantize: int8 per-channel weights, their error bound, and a quantized GPT."""

import pytest
import torch
import torch.nn as nn

from gptlib.model import GPT, GPTConfig
from gptlib.quantize import (
    Int8Embedding,
    Int8Linear,
    dequantize,
    model_bytes,
    quantize_model,
    quantize_per_channel,
)


def test_hand_example():
    """Row max 1.0 -> s = 1/127; 0.5 / s = 63.5 rounds to 64 (half to even: 64), -1 -> -127."""
    q, s = quantize_per_channel(torch.tensor([[0.5, -1.0, 0.25]]))
    assert q.dtype == torch.int8
    assert q.tolist() == [[64, -127, 32]]
    assert s.item() == pytest.approx(1 / 127)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 256), (768, 64)])
def test_error_at_most_half_a_step_per_channel(shape):
    """Rounding moves each weight by at most s_i / 2, row by row, and uses the full range."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * torch.rand(shape[0], 1)
    q, s = quantize_per_channel(w)
    err = (w - dequantize(q, s)).abs()  # (out, in)
    assert (err <= s[:, None] / 2 + 1e-7).all()
    assert (q.abs().amax(dim=1) == 127).all()  # the largest weight of each row maps to +-127
    assert q.abs().max() <= 127


def test_round_trip_is_a_fixed_point():
    """Quantizing a dequantized weight gives back the same integers and scales."""
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(1))
    q, s = quantize_per_channel(w)
    q2, s2 = quantize_per_channel(dequantize(q, s))
    assert torch.equal(q, q2)
    torch.testing.assert_close(s, s2)


def test_zero_row_and_bad_input():
    q, s = quantize_per_channel(torch.zeros(2, 3))
    assert torch.equal(dequantize(q, s), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="2-D"):
        quantize_per_channel(torch.zeros(3))
    with pytest.raises(TypeError, match="floating point"):
        quantize_per_channel(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        quantize_per_channel(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(TypeError, match="nn.Linear"):
        Int8Linear.from_linear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="does not have"):
        quantize_model(GPT(GPTConfig.preset("tiny")), skip=("lm_haed",))


def test_int8_linear_matches_dequantized_weight():
    lin = nn.Linear(32, 8)
    x = torch.randn(4, 5, 32)
    qlin = Int8Linear.from_linear(lin)
    q, s = quantize_per_channel(lin.weight)
    expected = torch.nn.functional.linear(x, dequantize(q, s), lin.bias)
    torch.testing.assert_close(qlin(x), expected, rtol=1e-5, atol=1e-5)


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny")).eval()


def test_gpt_quantized_copy_keeps_tie_outputs_and_original():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = quantize_model(model)
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    assert isinstance(qmodel.lm_head, Int8Linear) and isinstance(qmodel.wte, Int8Embedding)
    assert qmodel.wte.q is qmodel.lm_head.q  # the tie survives: one int8 matrix
    assert not any(isinstance(m, nn.Linear) for m in qmodel.modules())
    idx = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, loss = model(idx, idx)
        got, qloss = qmodel(idx, idx)
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert abs(qloss.item() - loss.item()) < 0.01 * loss.item()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_skip_keeps_a_layer_in_float_and_unties():
    qmodel = quantize_model(_model(), skip=("lm_head",))
    assert isinstance(qmodel.lm_head, nn.Linear)
    assert isinstance(qmodel.wte, nn.Embedding)  # its tied partner stays float too
    assert qmodel.wte.weight is qmodel.lm_head.weight


def test_size_ratio():
    """Int8 weights: 1 byte instead of 4, plus one 4-byte scale per row; the tie stored once."""
    model = _model()
    qmodel = quantize_model(model)
    assert model_bytes(model) == 4 * model.num_params()  # float32, the tied matrix once
    c, v, L = 64, 256, 2
    linear_w = L * (c * 3 * c + c * c + c * 4 * c + 4 * c * c)  # c_attn, c_proj, c_fc, c_proj
    linear_rows = L * (3 * c + c + 4 * c + c)  # one scale per output channel
    # each quantized weight saves 3 of its 4 bytes and each row adds a 4-byte scale
    expected = model_bytes(model) - 3 * (linear_w + v * c) + 4 * (linear_rows + v)
    assert model_bytes(qmodel) == expected
    assert 3.0 < model_bytes(model) / model_bytes(qmodel) < 4.0
