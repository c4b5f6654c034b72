"""Sentence embeddings from a GPT's hidden states, and cosine search over them.

A causal language model was never trained to produce sentence vectors, but its residual stream
holds what it knows about the text; the mean over a text's tokens is the simplest embedding
(pooling as in Reimers and Gurevych 2019, Sec. 3, there on BERT). Those vectors are anisotropic
(chapter 3.4): they share one large common direction, so any two texts look alike by cosine.
Removing the mean, the first step of Mu and Viswanath's (2018) "all-but-the-top" (ICLR,
"All-but-the-Top: Simple and Effective Postprocessing for Word Representations", Algorithm 1),
takes most of it away.

Here: ``embed`` (ids -> (N, C) vectors, mean or last-token pooling at any depth),
``mean_centre``, ``CosineIndex`` (exact top-k search by cosine), and the retrieval metrics
``recall_at_k`` and ``mean_reciprocal_rank``. Left out on purpose: removing top principal
components and whitening (the rest of all-but-the-top), contrastive training of the encoder, and
approximate nearest-neighbour indexes (an exact matrix product is fast at the book's sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gptlib.model import GPT, evaluating


def _batches(ids_list: Sequence[Sequence[int]], block_size: int, batch_size: int):
    """Right-padded (B, T) batches with their lengths; texts longer than a context keep their
    first ``block_size`` tokens."""
    for start in range(0, len(ids_list), batch_size):
        chunk = [list(map(int, ids))[:block_size] for ids in ids_list[start : start + batch_size]]
        if min(map(len, chunk)) == 0:
            raise ValueError("cannot embed an empty text (zero tokens)")
        lengths = torch.tensor([len(ids) for ids in chunk])  # (B,)
        idx = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)  # (B, T)
        for b, ids in enumerate(chunk):
            idx[b, : len(ids)] = torch.tensor(ids)
        yield idx, lengths


@torch.no_grad()
def embed(
    model: GPT,
    ids: Sequence[Sequence[int]] | torch.Tensor,
    lengths: torch.Tensor | None = None,
    pool: str = "mean",
    layer: int = -1,
    batch_size: int = 32,
) -> torch.Tensor:
    """One vector per text: the hidden state at depth ``layer``, pooled over the real tokens.

    Args:
        model: a GPT; run in eval mode (its mode is restored afterwards).
        ids: a list of token-id lists (padded here, in batches of ``batch_size``; a text longer
            than ``block_size`` keeps its first ``block_size`` tokens), or a right-padded (B, T)
            tensor with ``lengths``.
        lengths: (B,) real tokens per row of a tensor ``ids`` (default: all T).
        pool: "mean" over the real tokens, or "last" (the last real token).
        layer: index into ``GPT.hidden_states`` (0: the embeddings, -1: the last block's output,
            before ``ln_f``).
    Returns:
        (N, C) float tensor on the model's device.
    """
    if pool not in ("mean", "last"):
        raise ValueError(f"pool must be 'mean' or 'last', got {pool!r}")
    device = model.wte.weight.device
    if isinstance(ids, torch.Tensor):
        B, T = ids.shape
        lengths = torch.full((B,), T) if lengths is None else lengths
        batches = [(ids, lengths)]
    else:
        batches = _batches(ids, model.config.block_size, batch_size)
    out = []
    with evaluating(model):
        for idx, lens in batches:
            idx, lens = idx.to(device), lens.to(device)
            h = model.hidden_states(idx)[layer]  # (B, T, C)
            if pool == "last":
                out.append(h[torch.arange(len(idx), device=device), lens - 1])  # (B, C)
            else:
                real = torch.arange(idx.shape[1], device=device)[None] < lens[:, None]  # (B, T)
                out.append((h * real[..., None]).sum(1) / lens[:, None].to(h.dtype))  # (B, C)
    return torch.cat(out)  # (N, C)


def mean_centre(
    E: torch.Tensor, mean: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract the common mean vector (Mu and Viswanath 2018, Algorithm 1, step 2).

    >>> centred, mean = mean_centre(torch.tensor([[3., 1.], [1., 1.]]))
    >>> centred, mean
    (tensor([[ 1.,  0.],
            [-1.,  0.]]), tensor([2., 1.]))

    Args:
        E: (N, C) embeddings.
        mean: (C,) a mean to subtract instead, e.g. the index's mean for queries.
    Returns:
        ``(E - mean, mean)``.
    """
    mean = E.mean(dim=0) if mean is None else mean  # (C,)
    return E - mean, mean


def average_cosine(E: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows of E (N, C); near 1: anisotropic.

    >>> round(average_cosine(torch.tensor([[1., 0.], [0., 1.], [1., 1.]])), 6)  # (0 + 2/sqrt 2) / 3
    0.471405
    """
    U = F.normalize(E.double(), dim=1)  # (N, C)
    n = len(U)
    total = (U.sum(0) @ U.sum(0)) - n  # sum over i != j of cos(i, j): all pairs minus diagonal
    return float(total / (n * (n - 1)))


class CosineIndex:
    """Exact nearest-neighbour search by cosine similarity.

    >>> index = CosineIndex(torch.tensor([[1., 0.], [0., 2.], [1., 1.]]))
    >>> index.search(torch.tensor([[0., 1.]]), k=2)[1]
    tensor([[1, 2]])
    """

    def __init__(self, embeddings: torch.Tensor) -> None:
        """embeddings: (N, C); stored normalised to unit length."""
        if embeddings.dim() != 2 or len(embeddings) == 0:
            raise ValueError(f"embeddings must be (N, C) with N > 0, got {tuple(embeddings.shape)}")
        self.vectors = F.normalize(embeddings.float(), dim=1)  # (N, C)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        exclude: Sequence[int] | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most similar stored vectors for each query.

        Args:
            queries: (Q, C).
            k: results per query (at most the number of candidates).
            exclude: (Q,) one stored index per query to leave out, e.g. the query itself when
                the queries are stored too; -1 leaves nothing out.
        Returns:
            ``(scores, indices)``, both (Q, k), best first.
        """
        q = F.normalize(queries.float().to(self.vectors.device), dim=1)  # (Q, C)
        sims = q @ self.vectors.T  # (Q, N)
        if exclude is not None:
            ex = torch.as_tensor(exclude, device=sims.device).long()  # (Q,)
            rows = torch.nonzero(ex >= 0).squeeze(1)
            sims[rows, ex[rows]] = float("-inf")
        k = min(k, len(self) - (exclude is not None))
        return sims.topk(k, dim=1)


def recall_at_k(
    retrieved: Sequence[Sequence[int]] | torch.Tensor, relevant: Sequence[set[int]], k: int
) -> float:
    """Fraction of each query's relevant items found in its top k, averaged over queries.

    >>> recall_at_k([[3, 1, 2], [0, 5, 6]], [{1, 4}, {7}], k=2)
    0.25
    """
    scores = []
    for r, rel in zip(_lists(retrieved), relevant, strict=True):
        if not rel:
            raise ValueError("every query needs at least one relevant item")
        scores.append(len(set(r[:k]) & rel) / len(rel))
    return sum(scores) / len(scores)


def mean_reciprocal_rank(
    retrieved: Sequence[Sequence[int]] | torch.Tensor, relevant: Sequence[set[int]]
) -> float:
    """Mean over queries of 1 / (rank of the first relevant item), 0 when none was retrieved.

    >>> mean_reciprocal_rank([[3, 1, 2], [0, 5, 6]], [{1, 4}, {7}])
    0.25
    """
    scores = []
    for r, rel in zip(_lists(retrieved), relevant, strict=True):
        rank = next((i + 1 for i, j in enumerate(r) if j in rel), None)
        scores.append(0.0 if rank is None else 1.0 / rank)
    return sum(scores) / len(scores)


def _lists(retrieved: Sequence[Sequence[int]] | torch.Tensor) -> list[list[int]]:
    return (
        retrieved.tolist()
        if isinstance(retrieved, torch.Tensor)
        else [[int(i) for i in r] for r in retrieved]
    )
