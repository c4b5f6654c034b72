"""Tests of gptlib.embed: cosine search against brute force in NumPy, mean-centring of an
anisotropic set, pooling against a hand computation, and padding that changes nothing."""

import numpy as np
import pytest
import torch

from gptlib.embed import (
    CosineIndex,
    average_cosine,
    embed,
    mean_centre,
    mean_reciprocal_rank,
    recall_at_k,
)
from gptlib.model import GPT, GPTConfig


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny"))


def random_vectors(n: int, c: int, seed: int) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed))


# --- search and metrics ---------------------------------------------------------------------


def brute_force_top_k(E: np.ndarray, Q: np.ndarray, k: int, exclude=None):
    """Cosine by its definition, q . e / (|q| |e|), one pair at a time; then a full sort."""
    scores, indices = [], []
    for qi, q in enumerate(Q):
        sims = [float(q @ e / (np.linalg.norm(q) * np.linalg.norm(e))) for e in E]
        order = [j for j in np.argsort(sims)[::-1] if exclude is None or j != exclude[qi]]
        indices.append(order[:k])
        scores.append([sims[j] for j in order[:k]])
    return np.array(scores), np.array(indices)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_cosine_top_k_matches_brute_force(k):
    E, Q = random_vectors(40, 8, seed=0) * 3, random_vectors(6, 8, seed=1)
    scores, indices = CosineIndex(E).search(Q, k=k)
    ref_scores, ref_indices = brute_force_top_k(E.numpy(), Q.numpy(), k)
    assert indices.shape == (6, k)
    assert indices.tolist() == ref_indices.tolist()
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5, atol=1e-6)


def test_search_can_leave_out_each_querys_own_entry():
    E = random_vectors(30, 8, seed=2)
    exclude = [0, 5, -1]
    _, indices = CosineIndex(E).search(E[[0, 5, 7]], k=29, exclude=exclude)
    _, ref = brute_force_top_k(E.numpy(), E[[0, 5, 7]].numpy(), 29, exclude=exclude)
    assert indices.shape == (3, 29)
    assert indices[:2].tolist() == ref[:2].tolist()
    assert 0 not in indices[0].tolist() and 5 not in indices[1].tolist()
    assert indices[2, 0] == 7  # nothing excluded: a stored query finds itself first


def test_retrieval_metrics_on_a_hand_worked_case():
    """Query 1: relevant {2, 9}, retrieved [4, 2, 7]: recall@1 = 0, recall@3 = 1/2, RR = 1/2.
    Query 2: relevant {5}, retrieved [5, 1, 0]: recall@1 = recall@3 = 1, RR = 1."""
    retrieved, relevant = torch.tensor([[4, 2, 7], [5, 1, 0]]), [{2, 9}, {5}]
    assert recall_at_k(retrieved, relevant, k=1) == pytest.approx(0.5)
    assert recall_at_k(retrieved, relevant, k=3) == pytest.approx(0.75)
    assert mean_reciprocal_rank(retrieved, relevant) == pytest.approx(0.75)
    assert mean_reciprocal_rank([[1, 2]], [{3}]) == 0.0


# --- anisotropy and mean-centring ------------------------------------------------------------


def test_average_cosine_is_the_mean_over_distinct_pairs():
    E = random_vectors(12, 5, seed=3)
    U = E / E.norm(dim=1, keepdim=True)
    pairs = [float(U[i] @ U[j]) for i in range(12) for j in range(12) if i != j]
    assert average_cosine(E) == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)


def test_mean_centring_removes_the_common_direction():
    """Vectors 20 d + noise (|d| = 1, noise N(0, I) in 16 dimensions) share the direction d:
    cos(x, y) is about 400 / (400 + 16) = 0.96. Minus their mean they are the centred noise,
    isotropic, with an average cosine near 0."""
    d = torch.zeros(16)
    d[0] = 1.0
    E = 20 * d + random_vectors(300, 16, seed=4)
    assert average_cosine(E) > 0.95
    centred, mean = mean_centre(E)
    torch.testing.assert_close(centred.mean(0), torch.zeros(16), rtol=0, atol=1e-5)
    assert abs(average_cosine(centred)) < 0.02
    queries, same = mean_centre(E[:3], mean)  # queries move by the index's mean
    torch.testing.assert_close(queries, centred[:3])
    assert same is mean


# --- embeddings from the model --------------------------------------------------------------


@pytest.mark.parametrize("pool, layer", [("mean", -1), ("last", -1), ("mean", 0), ("mean", 1)])
def test_padding_does_not_change_an_embedding(pool, layer):
    model = tiny().eval()
    texts = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    alone = embed(model, texts[:1], pool=pool, layer=layer)
    together = embed(model, texts, pool=pool, layer=layer)  # the first text gets 6 pads
    padded = torch.tensor([[5, 6, 7, 200, 200], [9, 9, 9, 9, 9]])
    from_tensor = embed(model, padded, lengths=torch.tensor([3, 5]), pool=pool, layer=layer)
    assert together.shape == (2, 64)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(from_tensor[0], alone[0], rtol=1e-5, atol=1e-6)


def test_mean_pooling_is_the_mean_hidden_state_over_real_tokens():
    model = tiny()
    model.train()
    ids = [3, 1, 4, 1, 5]
    with torch.no_grad():
        h = model.eval().hidden_states(torch.tensor([ids]))  # list of (1, T, C)
    model.train()
    E = embed(model, [ids, [2, 7]], batch_size=1)
    torch.testing.assert_close(E[0], h[-1][0].mean(0))
    assert model.training  # embed ran in eval mode and restored the training mode
    long = list(range(100))  # longer than block_size = 64: the first 64 tokens are kept
    torch.testing.assert_close(embed(model, [long]), embed(model, [long[:64]]))
