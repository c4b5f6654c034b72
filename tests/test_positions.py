"""gptlib.positions: each encoding has the property the book derives for it (chapter 4.2.1).

The oracles do not reuse the code under test: formulas written out with `math`, rotation
matrices built entry by entry, attention composed by hand from a layer's weights, and the
invariances themselves (a RoPE score depends on m - n only; a cached forward equals a full one).
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig, set_attention
from gptlib.positions import (
    ALiBiAttention,
    RotaryAttention,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_cos_sin,
    sinusoidal_table,
    with_alibi,
    with_rope,
)
from gptlib.train import TrainConfig, configure_optimizer, train_step

CONFIG = GPTConfig(vocab_size=13, block_size=24, n_layer=2, n_head=4, n_embd=32)
WRAPPERS = {"rope": with_rope, "alibi": with_alibi}
# rope_cos_sin computes the angles in float32, as a model does, so even float64 inputs carry
# their rounding (about 1e-7 of each entry): a tolerance for results of size about 1-10
ANGLE_TOL = 1e-5


def _model(kind: str, seed: int = 0, attention: str = "sdpa") -> GPT:
    torch.manual_seed(seed)
    return WRAPPERS[kind](GPT(CONFIG, attention=attention)).eval()


def _rotation_matrix(m: int, hs: int, base: float = 10000.0) -> torch.Tensor:
    """R_m of RoFormer Sec. 3.2.2, entry by entry: 2x2 blocks [[cos, -sin], [sin, cos]] of the
    angles m * base^(-2i/hs) on the diagonal, zeros elsewhere. float64, (hs, hs)."""
    R = torch.zeros(hs, hs, dtype=torch.float64)
    for i in range(hs // 2):
        a = m * base ** (-2 * i / hs)
        R[2 * i, 2 * i], R[2 * i, 2 * i + 1] = math.cos(a), -math.sin(a)
        R[2 * i + 1, 2 * i], R[2 * i + 1, 2 * i + 1] = math.sin(a), math.cos(a)
    return R


# --- sinusoidal table ----------------------------------------------------------------------


def test_sinusoidal_table_is_the_formula_of_vaswani_et_al():
    T, C = 7, 10
    expected = [
        [
            math.sin(t / 10000 ** (2 * (d // 2) / C))
            if d % 2 == 0
            else math.cos(t / 10000 ** (2 * (d // 2) / C))
            for d in range(C)
        ]
        for t in range(T)
    ]
    torch.testing.assert_close(sinusoidal_table(T, C), torch.tensor(expected))


def test_a_shift_of_the_sinusoidal_table_is_a_fixed_rotation():
    """PE[t + k] = M_k PE[t] for every t, M_k block-diagonal with the 2x2 blocks
    [[cos k w, sin k w], [-sin k w, cos k w]] (sin(a + b), cos(a + b) expanded)."""
    T, C, k = 50, 16, 9
    pe = sinusoidal_table(T + k, C).double()
    M = torch.zeros(C, C, dtype=torch.float64)
    for i in range(C // 2):
        a = k * 10000 ** (-2 * i / C)
        M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor(
            [[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]
        )
    torch.testing.assert_close(pe[k:], pe[:T] @ M.T, rtol=0, atol=1e-5)


def test_odd_widths_are_refused_with_a_message():
    with pytest.raises(ValueError, match="C=7 must be even"):
        sinusoidal_table(4, 7)
    with pytest.raises(ValueError, match="hs=5 must be even"):
        rope_cos_sin(4, 5)


# --- RoPE --------------------------------------------------------------------------------


def test_apply_rope_is_multiplication_by_the_block_diagonal_rotation():
    T, hs = 6, 8
    x = torch.randn(T, hs, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cos, sin = rope_cos_sin(T, hs)
    expected = torch.stack([_rotation_matrix(m, hs) @ x[m] for m in range(T)])
    torch.testing.assert_close(apply_rope(x, cos, sin), expected, rtol=0, atol=ANGLE_TOL)


def test_rope_score_depends_only_on_the_offset():
    """(R_m q) . (R_n k) = q . R_(n-m) k: shifting both positions by s changes nothing."""
    g = torch.Generator().manual_seed(1)
    hs, span = 16, 40
    q, k = torch.randn(2, 5, hs, generator=g, dtype=torch.float64)  # 5 random pairs
    cos, sin = rope_cos_sin(span + 60, hs)
    rq = torch.stack([apply_rope(q, cos[m : m + 1], sin[m : m + 1]) for m in range(span + 60)])
    rk = torch.stack([apply_rope(k, cos[n : n + 1], sin[n : n + 1]) for n in range(span + 60)])
    for m, n in [(0, 0), (7, 3), (3, 7), (20, 0), (39, 38)]:
        reference = (rq[m] * rk[n]).sum(-1)  # (5,) scores at positions (m, n)
        for s in (1, 13, 60):
            torch.testing.assert_close(
                (rq[m + s] * rk[n + s]).sum(-1), reference, rtol=0, atol=ANGLE_TOL
            )
    # and it does depend on the offset
    assert not torch.allclose((rq[5] * rk[0]).sum(-1), (rq[6] * rk[0]).sum(-1))


def test_rope_preserves_lengths():
    x = torch.randn(3, 2, 10, 32, generator=torch.Generator().manual_seed(2))
    cos, sin = rope_cos_sin(10, 32, start=100)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_rope_cos_sin_with_start_are_the_later_rows():
    cos, sin = rope_cos_sin(12, 8)
    cos5, sin5 = rope_cos_sin(7, 8, start=5)
    torch.testing.assert_close((cos5, sin5), (cos[5:], sin[5:]))


def test_rotary_attention_is_the_formula_written_out():
    """One RotaryAttention layer against q, k, v computed from its weights, rotated with the
    hand-built matrices, and attended to with an explicit causal softmax."""
    torch.manual_seed(3)
    attn = RotaryAttention(CONFIG).double().eval()
    B, T, C, nh = 2, 9, CONFIG.n_embd, CONFIG.n_head
    hs = C // nh
    x = torch.randn(B, T, C, dtype=torch.float64)
    q, k, v = F.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(C, dim=-1)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    R = torch.stack([_rotation_matrix(m, hs) for m in range(T)])  # (T, hs, hs)
    q, k = (torch.einsum("tij,bhtj->bhti", R, t) for t in (q, k))
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
    scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    expected = F.linear(y, attn.c_proj.weight, attn.c_proj.bias)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected)


def test_rotary_scores_do_not_change_when_every_position_moves_by_the_same_amount():
    torch.manual_seed(4)
    attn = RotaryAttention(CONFIG).double()
    x = torch.randn(1, 10, CONFIG.n_embd, dtype=torch.float64)
    with torch.no_grad():
        q0, k0, _ = attn._qkv(x, start=0)
        q9, k9, _ = attn._qkv(x, start=9)
    scores0, scores9 = q0 @ k0.transpose(-2, -1), q9 @ k9.transpose(-2, -1)
    torch.testing.assert_close(scores9, scores0, rtol=0, atol=ANGLE_TOL)
    assert not torch.allclose(q9, q0)  # the vectors themselves did move


# --- ALiBi -------------------------------------------------------------------------------


def test_alibi_slopes_for_8_heads_are_the_papers_example():
    """Press et al. 2022, Sec. 3: for 8 heads, 1/2^1, 1/2^2, ..., 1/2^8."""
    assert alibi_slopes(8).tolist() == [1 / 2**h for h in range(1, 9)]


def test_alibi_slopes_for_16_heads_interleave_the_square_roots():
    """Press et al.: for 16 heads, 1/2^0.5, 1/2^1, 1/2^1.5, ..., 1/2^8."""
    torch.testing.assert_close(
        alibi_slopes(16), torch.tensor([2 ** (-h / 2) for h in range(1, 17)])
    )


def test_alibi_slopes_for_other_head_counts_follow_the_authors_code():
    """12 heads: the 8-head slopes, then the 1st, 3rd, 5th and 7th of the 16-head sequence."""
    expected = [2.0**-h for h in range(1, 9)] + [2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected))
    assert alibi_slopes(1).tolist() == [2**-8]
    assert len(alibi_slopes(6)) == 6 and alibi_slopes(6).unique().numel() == 6


def test_alibi_bias_is_minus_slope_times_distance_below_the_diagonal():
    T, nh = 6, 4
    bias, slopes = alibi_bias(T, nh), alibi_slopes(nh)
    assert bias.shape == (nh, T, T)
    for h in range(nh):
        for i in range(T):
            for j in range(T):
                expected = -slopes[h].item() * (i - j) if j <= i else float("-inf")
                assert bias[h, i, j].item() == pytest.approx(expected), (h, i, j)


def test_alibi_bias_with_start_is_the_last_rows():
    torch.testing.assert_close(alibi_bias(3, 2, start=5), alibi_bias(8, 2)[:, 5:])


def test_alibi_attention_is_the_formula_written_out():
    torch.manual_seed(5)
    attn = ALiBiAttention(CONFIG).double().eval()
    B, T, C, nh = 2, 7, CONFIG.n_embd, CONFIG.n_head
    hs = C // nh
    x = torch.randn(B, T, C, dtype=torch.float64)
    q, k, v = F.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(C, dim=-1)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    slopes = torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8], dtype=torch.float64)  # 4 heads
    bias = -slopes[:, None, None] * (i - j)  # (nh, T, T)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(hs) + bias).masked_fill(j > i, float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    expected = F.linear(y, attn.c_proj.weight, attn.c_proj.bias)
    with torch.no_grad():
        for path in ("sdpa", "explicit"):
            torch.testing.assert_close(set_attention(attn, path)(x), expected)


# --- the wrapped models ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rope", "alibi"])
def test_both_attention_paths_give_the_same_logits(kind):
    idx = torch.randint(0, CONFIG.vocab_size, (2, 20), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        sdpa = _model(kind, attention="sdpa")(idx)[0]
        explicit = _model(kind, attention="explicit")(idx)[0]
    torch.testing.assert_close(sdpa, explicit)


@pytest.mark.parametrize("kind", ["rope", "alibi"])
@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_kv_cache_decoding_gives_the_same_logits_as_one_pass(kind, attention):
    """A prompt of 7 tokens, then one token at a time: positions come from the cache length."""
    model = _model(kind, attention=attention)
    idx = torch.randint(0, CONFIG.vocab_size, (2, 15), generator=torch.Generator().manual_seed(7))
    cache = KVCache.for_model(model, batch_size=2)
    with torch.no_grad():
        full = model(idx)[0]
        parts = [model(idx[:, :7], kv_cache=cache)[0]]
        parts += [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(7, 15)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full)


@pytest.mark.parametrize("kind", ["rope", "alibi"])
def test_wrapping_keeps_the_weights_and_freezes_only_the_position_table(kind):
    torch.manual_seed(8)
    plain = GPT(CONFIG)
    before = {name: p.detach().clone() for name, p in plain.named_parameters()}
    n_params = plain.num_params()
    model = WRAPPERS[kind](plain)
    assert model is plain
    assert model.num_params() == n_params
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == n_params - CONFIG.block_size * CONFIG.n_embd
    cls = RotaryAttention if kind == "rope" else ALiBiAttention
    assert all(type(block.attn) is cls for block in model.h)
    assert [block.attn.layer_idx for block in model.h] == list(range(CONFIG.n_layer))
    for name, p in model.named_parameters():
        if name == "wpe.weight":
            assert not p.any() and not p.requires_grad
        else:
            assert torch.equal(p, before[name]), name


def test_wrapping_leaves_the_random_stream_alone():
    torch.manual_seed(9)
    model = GPT(CONFIG)
    state = torch.random.get_rng_state()
    with_rope(model)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_rotary_model_trains_and_its_position_table_stays_zero():
    model = _model("rope").train()
    opt = configure_optimizer(model, TrainConfig())
    g = torch.Generator().manual_seed(10)
    x = torch.randint(0, CONFIG.vocab_size, (4, 16), generator=g)
    y = torch.randint(0, CONFIG.vocab_size, (4, 16), generator=g)
    losses = [train_step(model, opt, [(x, y)], lr=1e-2).loss for _ in range(15)]
    assert losses[-1] < losses[0] - 0.5
    assert not model.wpe.weight.any()


def test_the_rope_base_is_passed_on():
    model = with_rope(GPT(dataclasses.replace(CONFIG, n_layer=1)), base=500.0)
    assert model.h[0].attn.base == 500.0
