"""Where attention learns the order of tokens: sinusoidal tables, rotary embeddings, ALiBi.

Scores q_i . k_j depend on what two tokens are, not on where they stand; order has to come from
somewhere else. gptlib's GPT keeps GPT-2's learned absolute table `wpe`, added to the token
embeddings (Radford et al. 2019). This module holds the alternatives that chapter 4.2.1
(chapters/04-math/02-attention.ipynb, section "Positions") derives:

    sinusoidal_table(T, C)      the fixed absolute encoding of Vaswani et al. (2017, Sec. 3.5)
    rope_cos_sin, apply_rope    rotary position embedding, RoPE (Su et al. 2021, Sec. 3.2):
                                each pair (2i, 2i+1) of a query or key at position m is rotated
                                by the angle m theta_i, so that a score depends on m - n only
    alibi_slopes, alibi_bias    ALiBi (Press et al. 2022, Sec. 3): no embedding at all, a bias
                                -m (i - j) added to the scores, one slope m per head
    RotaryAttention, ALiBiAttention, with_rope(model), with_alibi(model)
                                attention layers using them, and functions that swap them into
                                every block of a built GPT, keeping its weights

Like gptlib.ablations, these edit a built model instead of adding flags to GPTConfig: the core
model keeps matching the book's figure. `wpe` stays in the model, zeroed and frozen by
`without_positions`, so parameter names and checkpoints keep their layout.
Left out on purpose: the "half-split" pairing (i, i + hs/2) of GPT-NeoX and LLaMA code (the same
rotation with the dimensions in another order), partial rotation, and rescaling of positions or
frequencies for longer contexts (position interpolation, Chen et al. 2023; YaRN, Peng et al. 2024).

Shapes: B batch, T time (queries in this call), S keys (cached + T), C channels (n_embd),
nh heads, hs head size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptlib.ablations import without_positions
from gptlib.kv_cache import KVCache
from gptlib.model import GPT, CausalSelfAttention, GPTConfig


def _check_even(name: str, value: int) -> None:
    if value % 2:
        raise ValueError(f"{name}={value} must be even: the dimensions are used in pairs")


def sinusoidal_table(T: int, C: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal encodings of positions 0..T-1 (Vaswani et al. 2017, Sec. 3.5).

    PE[t, 2i] = sin(t w_i) and PE[t, 2i+1] = cos(t w_i), with frequencies w_i = base^(-2i/C).

    Returns:
        (T, C) float32.

    >>> sinusoidal_table(2, 4)
    tensor([[0.0000, 1.0000, 0.0000, 1.0000],
            [0.8415, 0.5403, 0.0100, 0.9999]])
    """
    _check_even("C", C)
    freqs = base ** (-torch.arange(0, C, 2, dtype=torch.float32) / C)  # (C/2,) w_i
    angles = torch.arange(T, dtype=torch.float32)[:, None] * freqs  # (T, C/2) t w_i
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # (T, C) interleaved


def rope_cos_sin(
    T: int,
    hs: int,
    base: float = 10000.0,
    start: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles m theta_i for positions m = start .. start+T-1.

    theta_i = base^(-2i/hs), i = 0 .. hs/2-1 (Su et al. 2021, Sec. 3.2.2; their i counts from 1).

    Returns:
        cos, sin: (T, hs/2) float32 each.

    >>> cos, sin = rope_cos_sin(3, 4, base=100.0)
    >>> torch.atan2(sin, cos)  # the angles m theta_i, with theta = (1, 0.1)
    tensor([[0.0000, 0.0000],
            [1.0000, 0.1000],
            [2.0000, 0.2000]])
    """
    _check_even("hs", hs)
    theta = base ** (-torch.arange(0, hs, 2, dtype=torch.float32, device=device) / hs)  # (hs/2,)
    m = torch.arange(start, start + T, dtype=torch.float32, device=device)  # (T,)
    angles = m[:, None] * theta  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_2i, x_2i+1) of every vector in x by its angle (Su et al. 2021, Sec. 3.2).

    Args:
        x: (..., T, hs) queries or keys, row t at the position whose angles are row t of cos/sin.
        cos, sin: (T, hs/2) from `rope_cos_sin`.
    Returns:
        (..., T, hs), same dtype as x; every pair is multiplied by the 2x2 rotation matrix
        [[cos, -sin], [sin, cos]], so lengths are unchanged.

    >>> cos, sin = torch.tensor([[0.0]]), torch.tensor([[1.0]])  # one pair, angle pi/2
    >>> apply_rope(torch.tensor([[1.0, 0.0]]), cos, sin).tolist()  # (1, 0) turns to (0, 1)
    [[0.0, 1.0]]
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, hs/2) each: the two members of every pair
    y1 = x1 * cos - x2 * sin  # first row of the 2x2 rotation
    y2 = x1 * sin + x2 * cos  # second row
    return torch.stack((y1, y2), dim=-1).flatten(-2)  # (..., T, hs): pairs back in place


def alibi_slopes(n_head: int) -> torch.Tensor:
    """One slope per head (Press et al. 2022, Sec. 3).

    For n heads, n a power of two: the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8).
    Otherwise the rule of the authors' code: the slopes of the largest power of two p < n, then
    every other slope of the sequence for 2p (1st, 3rd, ...) until there are n.

    Returns:
        (n_head,) float32.

    >>> (alibi_slopes(4) * 256).tolist()
    [64.0, 16.0, 4.0, 1.0]
    """
    if n_head < 1:
        raise ValueError(f"n_head must be a positive integer, got {n_head}")
    p = 2 ** math.floor(math.log2(n_head))  # the largest power of two <= n_head
    slopes = [2 ** (-8 * h / p) for h in range(1, p + 1)]
    slopes += [2 ** (-8 * h / (2 * p)) for h in range(1, 2 * p, 2)][: n_head - p]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(
    T: int, n_head: int, start: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """ALiBi's additive term, causal mask included, for queries start .. start+T-1.

    bias[h, i, j] = -m_h (start + i - j) where key j is not after the query, -inf where it is.

    Returns:
        (nh, T, start+T) float32: add it to the scaled scores q.k / sqrt(hs) before the softmax.

    >>> alibi_bias(3, 1)[0] * 256  # one head: slope 1/256
    tensor([[ 0., -inf, -inf],
            [-1.,  0., -inf],
            [-2., -1.,  0.]])
    """
    i = torch.arange(start, start + T, device=device)[:, None]  # (T, 1) query positions
    j = torch.arange(start + T, device=device)[None, :]  # (1, S) key positions
    slopes = alibi_slopes(n_head).to(device)[:, None, None]  # (nh, 1, 1)
    bias = slopes * (j - i).float()  # (nh, T, S): -m (i - j), written so that 0 is not -0
    return bias.masked_fill(j > i, float("-inf"))  # (nh, T, S): the future stays masked


class PositionalAttention(CausalSelfAttention):
    """CausalSelfAttention whose forward tells `_qkv` and the SDPA mask the absolute position of
    its first query (0, or the KV cache's length): the hooks RotaryAttention and ALiBiAttention
    override. With neither overridden it computes what CausalSelfAttention does."""

    def _qkv(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, ...]:
        return super()._qkv(x)  # 3 x (B, nh, T, hs)

    def _sdpa_mask(self, start: int, T: int, S: int, q: torch.Tensor) -> torch.Tensor | None:
        """attn_mask for the SDPA path; None: the kernel's own square causal mask."""
        return None if start == 0 else self.mask[start : start + T, :S]  # (T, S)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); as CausalSelfAttention.forward."""
        B, T, C = x.size()
        start = 0 if kv_cache is None else kv_cache.length  # positions already cached
        q, k, v = self._qkv(x, start)  # 3 x (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # 2 x (B, nh, S, hs)
        if self.attention == "explicit":
            y = self.attn_dropout(self.attention_weights(q, k, start)) @ v  # (B, nh, T, hs)
        else:
            mask = self._sdpa_mask(start, T, k.size(-2), q)  # (T, S), (nh, T, S) or None
            p = self.attn_dropout.p if self.training else 0.0
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class RotaryAttention(PositionalAttention):
    """Attention with RoPE (Su et al. 2021): q and k are rotated by the angles of their absolute
    positions, so the score of query m and key n depends on m - n only; v is left alone.
    Keys enter the KV cache already rotated. `base`: theta_i = base^(-2i/hs)."""

    def __init__(
        self, config: GPTConfig, layer_idx: int = 0, attention: str = "sdpa", base: float = 1e4
    ) -> None:
        super().__init__(config, layer_idx, attention)
        self.base = base

    def _qkv(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, ...]:
        """q, k, v (3 x (B, nh, T, hs)) of x (B, T, C) at positions start..start+T-1."""
        q, k, v = super()._qkv(x)  # 3 x (B, nh, T, hs)
        cos, sin = rope_cos_sin(x.size(1), q.size(-1), self.base, start, x.device)  # (T, hs/2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


class ALiBiAttention(PositionalAttention):
    """Attention with linear biases (Press et al. 2022): -m_h (i - j) added to the scaled scores
    of head h, query i and key j; no position enters q, k or v."""

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor, start: int = 0) -> torch.Tensor:
        """softmax(Q K^T / sqrt(hs) + bias), the bias of `alibi_bias`: (B, nh, T, S) weights."""
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, S)
        bias = alibi_bias(q.size(-2), self.n_head, start, q.device).to(q.dtype)  # (nh, T, S)
        return F.softmax(att + bias, dim=-1)  # (B, nh, T, S)

    def _sdpa_mask(self, start: int, T: int, S: int, q: torch.Tensor) -> torch.Tensor:
        return alibi_bias(T, self.n_head, start, q.device).to(q.dtype)  # (nh, T, S), float


def _swap_attention(model: GPT, make: Callable[..., CausalSelfAttention]) -> GPT:
    """Give every block of `model` the attention `make(config, layer_idx, attention)`, holding
    the old one's weights, device, dtype and mode; then remove the absolute positions."""
    for block in model.h:
        old = block.attn
        with torch.random.fork_rng(devices=[]):  # building draws weights: leave the RNG be
            new = make(model.config, old.layer_idx, old.attention)
        new.to(next(old.parameters())).train(old.training)
        new.load_state_dict(old.state_dict())
        block.attn = new
    return without_positions(model)


def with_rope(model: GPT, base: float = 10000.0) -> GPT:
    """Switch a built GPT to rotary positions, in place: every block's attention becomes a
    RotaryAttention with the same weights, and `wpe` is zeroed and frozen (`without_positions`).

    Returns:
        the same ``model``. Parameter count and names are unchanged; wpe no longer trains.
    """
    return _swap_attention(model, lambda *args: RotaryAttention(*args, base=base))


def with_alibi(model: GPT) -> GPT:
    """Switch a built GPT to ALiBi, in place, as `with_rope` does; returns the same ``model``."""
    return _swap_attention(model, ALiBiAttention)
