"""The key/value cache that makes token-by-token generation cheap.

When a GPT generates, step t needs the keys and values of every earlier position, in every
layer. Without a cache the model recomputes all of them each step, so generating n tokens costs
O(n^2) token passes; with one, each step runs only the new token through the network and reads
the stored keys and values: O(n) token passes (the attention itself still reads t keys).

The price is memory. A cache for L layers, B sequences and T positions stores a key and a
value vector of C = n_embd numbers per layer, sequence and position:

    bytes = 2 * L * B * T * C * bytes_per_number

(Pope et al. 2023, Sec. 2, discuss this cost at scale). For GPT-2 small in float32 with
B = 1 and T = 1024 that is 2 * 12 * 1 * 1024 * 768 * 4 bytes = 72 MiB.

Design: the tensors are allocated once, at full size (n_layer, B, nh, max_len, hs), so a step
writes in place and allocates nothing. Each `CausalSelfAttention` calls `update(layer_idx, k, v)`
with the index of its block, which writes the new keys and values after the `length` positions
already stored and returns everything stored so far; after the last layer the model calls
`advance(T)`, and only then does `length` grow. Left out on purpose: paged or sliding-window
caches, quantised caches.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class KVCache:
    """Preallocated keys and values for every layer of one model and one batch of sequences.

    Args:
        n_layer, batch_size, n_head, head_size: the cache holds tensors of shape
            (n_layer, batch_size, n_head, max_len, head_size).
        max_len: the most positions it can hold (usually the model's block_size).
        device, dtype: where and how to store them (take them from the model's parameters).
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        head_size: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (n_layer, batch_size, n_head, max_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, max_len, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, max_len, hs)
        self._length = 0

    @classmethod
    def for_model(cls, model: nn.Module, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache sized for `model` (a `gptlib.model.GPT`), on its device and dtype."""
        config = model.config
        max_len = config.block_size if max_len is None else max_len
        if not 0 < max_len <= config.block_size:
            raise ValueError(
                f"max_len={max_len} must be between 1 and the model's block_size="
                f"{config.block_size}: positions past the context have no position embedding"
            )
        p = next(model.parameters())
        return cls(
            config.n_layer,
            batch_size,
            config.n_head,
            config.head_size,
            max_len,
            device=p.device,
            dtype=p.dtype,
        )

    @property
    def length(self) -> int:
        """Number of positions stored (and seen by every layer) so far."""
        return self._length

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    @property
    def nbytes(self) -> int:
        """Memory held by the keys and values: 2 * L * B * max_len * C * bytes per number."""
        return self.k.nbytes + self.v.nbytes

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys and values of one layer and return all keys and values so far.

        Args:
            layer: index of the transformer block.
            k, v: (B, nh, T, hs) for the T new positions length .. length+T-1.
        Returns:
            keys and values (B, nh, length+T, hs), views into the cache.
        """
        B, _, T, _ = k.shape
        if B != self.batch_size:
            raise ValueError(f"the cache was made for batch_size={self.batch_size}, got {B}")
        end = self._length + T
        if end > self.max_len:
            raise ValueError(
                f"the KV cache is full: it holds {self._length} of {self.max_len} positions and "
                f"cannot take {T} more; call reset() or make a larger cache"
            )
        self.k[layer, :, :, self._length : end] = k
        self.v[layer, :, :, self._length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # 2 x (B, nh, end, hs)

    def advance(self, n: int) -> None:
        """Mark n more positions as stored; the model calls this after its last layer."""
        if self._length + n > self.max_len:
            raise ValueError(f"cannot advance {n} past max_len={self.max_len}")
        self._length += n

    def reset(self) -> None:
        """Forget everything stored (the memory stays allocated)."""
        self._length = 0

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep the sequences `indices` (B_new,) in that order; beam search uses this.

        An index may repeat (a beam that splits in two) or be missing (a beam that was dropped),
        so the batch size may change.
        """
        indices = indices.to(self.k.device)
        self.k = self.k.index_select(1, indices)  # (L, B_new, nh, max_len, hs)
        self.v = self.v.index_select(1, indices)  # (L, B_new, nh, max_len, hs)

    def __repr__(self) -> str:
        L, B, nh, T, hs = self.k.shape
        return (
            f"KVCache(n_layer={L}, batch_size={B}, n_head={nh}, head_size={hs}, "
            f"length={self._length}/{T}, {self.nbytes / 2**20:.1f} MiB)"
        )
