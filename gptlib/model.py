"""The GPT model: configuration, attention, MLP, transformer block, and the full network.

This is the decoder-only transformer of GPT-2 (Radford et al. 2019), itself the decoder of
Vaswani et al. (2017) with LayerNorm moved to the input of each sub-layer ("pre-LN").
Left out on purpose: dropout variants, rotary/ALiBi positions, grouped-query attention and every
other switch that would change the book's figure; extensions (LoRA, task heads) wrap the model.

Shape legend used in every comment:
    B  batch size          T  time (tokens in this call)    C  channels (n_embd)
    nh number of heads     hs head size (C // nh)           V  vocabulary size
    S  keys attended to (cached tokens + T)

GPT-2 parameter names and the book's notation:
    wte          token embedding E; lm_head, the output layer, is the same matrix (weight tying)
    wpe          learned position embedding P
    attn.c_attn  one Linear holding W_Q, W_K, W_V side by side, output (B, T, 3C)
    attn.c_proj  the output projection W_O
    mlp.c_fc     W_1 (C -> 4C), mlp.c_proj  W_2 (4C -> C)
    ln_1, ln_2, ln_f   LayerNorms before attention, before the MLP, and at the end

Attention has two code paths, one function: "explicit" writes softmax(Q K^T / sqrt(hs)) V out as
the book derives it; "sdpa" calls the fused `F.scaled_dot_product_attention` (faster, no stored
(T, T) weights). The path is set by `GPT(config, attention=...)` or `set_attention(model, ...)`,
not by `GPTConfig`: it changes speed and memory, never the model, so checkpoints fit either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.files import dataclass_from_dict

if TYPE_CHECKING:
    from gptlib.kv_cache import KVCache

_PRESETS: dict[str, dict[str, Any]] = {
    # tests and quick notebook demos: trains in seconds on a CPU
    "tiny": dict(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=64),
    # chapters that train live (byte-level vocabulary, a few minutes on a laptop)
    "small": dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128),
    # the book's pretrained model (make pretrain): 4.3M parameters with the book's BPE tokenizer;
    # shape, vocabulary and dropout chosen by experiments/recipe.py (chapter 5.4)
    "book": dict(vocab_size=4096, block_size=256, n_layer=4, n_head=4, n_embd=256, dropout=0.0),
    # GPT-2 small, 124M parameters (Radford et al. 2019, Table 2)
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT. Frozen: derive variants with `dataclasses.replace`."""

    vocab_size: int = 50257
    block_size: int = 1024  # context length: the most tokens the model sees at once
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as in GPT-2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "each head gets n_embd // n_head channels, so pick n_embd as a "
                "multiple of n_head"
            )
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {p!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named configuration ("tiny", "small", "book", "gpt2"), optionally with overrides."""
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls.from_dict({**_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        return dataclass_from_dict(cls, d)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017, Sec. 3.2). `layer_idx`: index of
    its block, the layer of a `KVCache` it uses; `attention`: the code path (module docstring)."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0, attention: str = "sdpa") -> None:
        super().__init__()
        self.n_head = config.n_head
        self.layer_idx = layer_idx
        set_attention(self, attention)  # sets self.attention after checking the name
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        # mask[i, j] is True where query position i may look at key position j <= i
        mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C): x W_Q, x W_K, x W_V
        shape = (B, T, self.n_head, C // self.n_head)  # (B, T, nh, hs)
        return (
            q.view(shape).transpose(1, 2),
            k.view(shape).transpose(1, 2),
            v.view(shape).transpose(1, 2),
        )  # 3 x (B, nh, T, hs)

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor, start: int = 0) -> torch.Tensor:
        """softmax(Q K^T / sqrt(hs)) with the causal mask (Vaswani et al. 2017, Eq. 1).

        q (B, nh, T, hs) holds queries for positions start .. start+T-1 and k (B, nh, S, hs) keys
        for positions 0 .. S-1 (S = start + T). Returns (B, nh, T, S) weights; rows sum to 1.
        """
        T, S = q.size(-2), k.size(-2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, S)
        # query at absolute position start+i sees keys 0..start+i: row start+i of the mask
        allowed = self.mask[start : start + T, :S]  # (T, S)
        att = att.masked_fill(~allowed, float("-inf"))  # (B, nh, T, S)
        return F.softmax(att, dim=-1)  # (B, nh, T, S)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C). With a KVCache, new queries also attend to cached keys."""
        B, T, C = x.size()
        q, k, v = self._qkv(x)  # 3 x (B, nh, T, hs)
        start = 0 if kv_cache is None else kv_cache.length  # positions already cached
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # 2 x (B, nh, S, hs), S = start + T
        if self.attention == "explicit":
            y = self.attn_dropout(self.attention_weights(q, k, start)) @ v  # (B, nh, T, hs)
        else:
            # no cache: the square causal mask, which the kernel builds itself (is_causal);
            # after a cache: rows start .. start+T-1 of the mask, all S cached + new keys
            mask = None if start == 0 else self.mask[start : start + T, : k.size(-2)]  # (T, S)
            p = self.attn_dropout.p if self.training else 0.0
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))  # W_O (Vaswani et al. 2017, Sec. 3.2.2)


def set_attention(model: nn.Module, attention: str) -> nn.Module:
    """Switch every `CausalSelfAttention` in `model` to one code path; returns `model`.

    >>> set_attention(GPT(GPTConfig.preset("tiny")), "explicit").h[1].attn.attention
    'explicit'
    """
    if attention not in ("sdpa", "explicit"):
        raise ValueError(f"attention must be 'sdpa' or 'explicit', got {attention!r}")
    for module in model.modules():
        if isinstance(module, CausalSelfAttention):
            module.attention = attention
    return model


class MLP(nn.Module):
    """Position-wise feed-forward network (Vaswani et al. 2017, Sec. 3.3) with GELU."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GELU, tanh form (Hendrycks & Gimpel 2016)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """One transformer block: pre-LayerNorm attention and MLP, each inside a residual."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0, attention: str = "sdpa") -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)  # Ba et al. 2016
        self.attn = CausalSelfAttention(config, layer_idx, attention)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); the attention reads and extends its layer of `kv_cache`."""
        x = x + self.attn(self.ln_1(x), kv_cache)  # residual (He et al. 2016)
        x = x + self.mlp(self.ln_2(x))  # LayerNorm first: GPT-2 (Radford et al. 2019, Sec. 2.3)
        return x  # (B, T, C)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Switch ``model`` to eval mode (dropout off) for a block, then restore its previous mode.

    >>> m = nn.Dropout(0.5)
    >>> with evaluating(m): print(m.training)
    False
    >>> m.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside ``torch.compile`` and ``DistributedDataParallel`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def init_weights(model: GPT) -> None:
    """Initialise every parameter of `model`; the only place where weights get their start.

    ======================================  ===================================  ========
    parameter                               init                                 why
    ======================================  ===================================  ========
    Linear weights (c_attn, c_fc)           normal(0, 0.02)                      GPT-2
    residual projections (c_proj, both)     normal(0, 0.02 / sqrt(2 * n_layer))  note 1
    Linear biases                           0                                    GPT-2
    wte, wpe (lm_head shares wte)           normal(0, 0.02)                      GPT-2
    LayerNorm weight / bias                 1 / 0                                identity
    ======================================  ===================================  ========

    Note 1: the residual stream ends as a sum of 2 * n_layer block outputs; shrinking each by
    1/sqrt(2 * n_layer) keeps its variance independent of depth (Radford et al. 2019, Sec. 2.3).
    """
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layer)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and module is not model.lm_head:
            std = residual_std if name.endswith("c_proj") else 0.02  # lm_head is wte (tied)
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
        if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
            nn.init.zeros_(module.bias)


class GPT(nn.Module):
    """A GPT language model: token ids in, next-token logits out; `attention`, "sdpa" or
    "explicit", is the code path of every block (module docstring)."""

    def __init__(self, config: GPTConfig, attention: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i, attention) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        init_weights(self)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and the mean cross-entropy loss (a scalar, or None without targets).

        Args:
            idx: (B, T) token ids. With `kv_cache`, the tokens that follow the cached ones.
            targets: optional (B, T) next-token ids; positions equal to -100 are ignored.
            kv_cache: optional `gptlib.kv_cache.KVCache`; it is read, extended and advanced by T.
        """
        x = self.ln_f(self.hidden_states(idx, kv_cache)[-1])  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        # one row per position: (B*T, V) logits against (B*T,) targets
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)

    def hidden_states(
        self, idx: torch.Tensor, kv_cache: KVCache | None = None
    ) -> list[torch.Tensor]:
        """The residual stream at every depth, before the final LayerNorm; arguments as `forward`.

        Returns n_layer + 1 tensors (B, T, C): the embeddings, then the output of each block;
        ``ln_f`` of the last one is what the output layer (or a task head) reads.
        """
        start = 0 if kv_cache is None else kv_cache.length  # tokens already in the cache
        if idx.dim() != 2:
            raise ValueError(
                f"idx must have shape (B, T), got {tuple(idx.shape)}; "
                "add a batch dimension with idx[None]"
            )
        T = idx.size(1)
        if start + T > self.config.block_size:
            cached = f" ({start} cached + {T} new)" if start else ""
            raise ValueError(
                f"sequence of length {start + T}{cached} exceeds the context length "
                f"block_size={self.config.block_size}; crop the prompt (generate() "
                "does this for you)"
            )
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)
        states = [x]
        for block in self.h:
            x = block(x, kv_cache)  # (B, T, C)
            states.append(x)
        if kv_cache is not None:
            kv_cache.advance(T)  # every layer has stored its T new keys and values
        return states

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for idx (B, T), with dropout off.

        Returns n_layer tensors (B, nh, T, T); row i is how position i spreads its attention over
        positions 0..i. Forward hooks recompute them from each attention's input, on any path.
        """
        maps: list[torch.Tensor] = []

        def record(attn: CausalSelfAttention, args: tuple[torch.Tensor, ...], _: object) -> None:
            q, k, _v = attn._qkv(args[0])  # 3 x (B, nh, T, hs)
            maps.append(attn.attention_weights(q, k))  # (B, nh, T, T)

        handles = [
            m.register_forward_hook(record)
            for m in self.modules()
            if isinstance(m, CausalSelfAttention)
        ]
        try:
            with evaluating(self):
                self.hidden_states(idx)
        finally:
            for handle in handles:
                handle.remove()
        return maps

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters, the tied wte/lm_head matrix counted once; non_embedding=True
        leaves out wpe (a lookup, no compute), not wte (as the output layer it is a matmul)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def kaplan_params(self) -> int:
        """Kaplan et al.'s N (2020, Sec. 2.1), of L(N) = (N_c / N) ** alpha_N: blocks and ln_f.
        Unlike ``num_params(non_embedding=True)`` it leaves out the tied wte/lm_head matrix too,
        which costs compute (the right count for FLOPs, the wrong one for this fit)."""
        return sum(p.numel() for part in (self.h, self.ln_f) for p in part.parameters())

    def param_breakdown(self) -> dict[str, int]:
        """Parameters by component, for the book's tables; the values add up to "total"."""
        bins = dict(
            token_embedding=".wte.", position_embedding=".wpe.", attention=".attn.", mlp=".mlp."
        )  # bin -> what the names of its parameters contain
        parts = dict.fromkeys([*bins, "layernorm"], 0)  # layernorm: everything else
        for name, p in self.named_parameters():  # tied lm_head.weight is listed once, as wte
            part = next((b for b, key in bins.items() if key in "." + name), "layernorm")
            parts[part] += p.numel()
        return {**parts, "total": sum(parts.values())}

    def flops_per_token(self, training: bool = False, seq_len: int | None = None) -> int:
        """Approximate FLOPs per token, after Kaplan et al. (2020), Table 1.

        Forward: 2 N + 2 n_layer T C. N = num_params(non_embedding=True), a multiply and an add
        per weight; unlike Kaplan's N it keeps the tied wte/lm_head matrix (a V x C matmul) and
        the biases (chapter 4.2.4 reconciles the two). 2 n_layer T C is Q K^T over T = seq_len
        (default block_size) keys. training=True: 3x that (the backward pass costs ~2x forward).
        A counter of matrix products (`torch.utils.flop_counter`, explicit path) finds 2 n_layer
        T C more (A V, left out by Kaplan) and 2 less per bias and LayerNorm weight (no matmul).
        """
        T = self.config.block_size if seq_len is None else seq_len
        L, C = self.config.n_layer, self.config.n_embd
        forward = 2 * self.num_params(non_embedding=True) + 2 * L * T * C
        return 3 * forward if training else forward


def param_count(config: GPTConfig) -> int:
    """Closed-form parameter count of GPT(config), with wte and lm_head tied.

    Per block: attention 4C^2 (+4C biases), MLP 8C^2 (+5C biases), two LayerNorms 2C (+2C).
    Total: V C + block_size C + n_layer (12 C^2 + 13 C) + 2 C with biases,
    and V C + block_size C + n_layer (12 C^2 + 2 C) + C without.

    >>> param_count(GPTConfig.preset("gpt2"))
    124439808
    """
    C, L = config.n_embd, config.n_layer
    embeddings = config.vocab_size * C + config.block_size * C
    if config.bias:
        return embeddings + L * (12 * C * C + 13 * C) + 2 * C
    return embeddings + L * (12 * C * C + 2 * C) + C
