"""Checkers for the exercises of chapter 2 (core concepts): bigram counts, scoring a text in bits,
how many n-grams of new text were never seen, nearest neighbours in an embedding space, and the
recurrence of a simple RNN.

Each ``check_*`` function takes the student's function, runs it on several inputs, compares the
answers with the reference written here (via :func:`gptlib.exercises.core.check`), prints the
feedback and returns ``True`` or ``False``. When an answer is wrong, the feedback names the typical
mistake that explains it: a transposed count table, natural logarithms instead of base 2, distinct
n-grams counted instead of occurrences, a dot product instead of the cosine, a recurrence that
forgets the previous state. The references are plain loops and tensor operations, written for
reading rather than speed; the chapter's pages do the same computations at corpus scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gptlib.exercises.core import Case, Mistake, check

# ---- 1. bigram counts -----------------------------------------------------------------------


def bigram_counts_reference(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """counts[a, b] = how often symbol b directly follows symbol a in ``ids``; shape (V, V).

    >>> bigram_counts_reference(torch.tensor([0, 1, 1, 0]), 2).tolist()
    [[0, 1], [1, 1]]
    """
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist(), strict=True):
        counts[a, b] += 1
    return counts


def _transposed_counts(ids, vocab_size):
    return bigram_counts_reference(ids, vocab_size).T


def _wrapped_counts(ids, vocab_size):  # also counts the pair (last, first), as if on a ring
    return bigram_counts_reference(torch.cat([ids, ids[:1]]), vocab_size)


def _row_probabilities(ids, vocab_size):
    counts = bigram_counts_reference(ids, vocab_size).double()
    return counts / counts.sum(1, keepdim=True).clamp(min=1)


_COUNT_MISTAKES = [
    Mistake(
        "your table is transposed: row a must hold the symbols that follow a, so the pair "
        "(ids[t], ids[t + 1]) adds one to counts[ids[t], ids[t + 1]].",
        wrong=_transposed_counts,
    ),
    Mistake(
        "you also counted the pair (last symbol, first symbol); a text of N symbols has N - 1 "
        "neighbouring pairs.",
        wrong=_wrapped_counts,
    ),
    Mistake(
        "you returned probabilities (rows divided by their sums); the exercise asks for the raw "
        "counts c(a b).",
        wrong=_row_probabilities,
    ),
]


def check_bigram_counts(fn: Callable) -> bool:
    """fn(ids, vocab_size) -> (V, V) tensor of pair counts, rows the previous symbol."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        Case(args=(torch.tensor([0, 1, 1, 0]), 2), name="hand example"),
        Case(args=(torch.tensor([2, 0, 2, 1, 2, 0]), 3)),
        Case(args=(torch.randint(0, 5, (200,), generator=gen), 6), name="a symbol never used"),
        Case(args=(torch.tensor([3]), 4), name="one symbol: no pairs"),
    ]
    return check(fn, cases, bigram_counts_reference, mistakes=_COUNT_MISTAKES, check_dtype=False)


# ---- 2. scoring a sequence in bits ----------------------------------------------------------


def sequence_bits_reference(probs: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean of -log2 probs[x_{t-1}, x_t] over the N - 1 transitions of ``ids``, in bits.

    >>> sequence_bits_reference(torch.tensor([[0.5, 0.5], [0.25, 0.75]]), torch.tensor([0, 1, 0]))
    1.5
    """
    total = 0.0
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist(), strict=True):
        total -= math.log2(float(probs[a, b]))
    return total / (len(ids) - 1)


def _nats(probs, ids):
    return sequence_bits_reference(probs, ids) * math.log(2)


def _summed(probs, ids):
    return sequence_bits_reference(probs, ids) * (len(ids) - 1)


def _over_n(probs, ids):
    return sequence_bits_reference(probs, ids) * (len(ids) - 1) / len(ids)


def _transposed_probs(probs, ids):
    return sequence_bits_reference(probs.T, ids)


_BITS_MISTAKES = [
    Mistake(
        "your answer is in nats: use log base 2 (torch.log2), or divide the natural log by "
        "ln 2, to get bits.",
        wrong=_nats,
    ),
    Mistake(
        "you summed the bits; the cross-entropy is the mean over the N - 1 predictions.",
        wrong=_summed,
    ),
    Mistake(
        "you divided by N; a text of N symbols has N - 1 predictions (the first symbol has no "
        "previous one).",
        wrong=_over_n,
    ),
    Mistake(
        "you read the table the wrong way round: the probability of b after a is probs[a, b] "
        "(row = previous symbol).",
        wrong=_transposed_probs,
    ),
]


def check_sequence_bits(fn: Callable) -> bool:
    """fn(probs, ids) -> float: bits per prediction of ``ids`` under a bigram table (V, V)."""
    gen = torch.Generator().manual_seed(1)
    table = torch.rand(4, 4, generator=gen, dtype=torch.float64) + 0.1
    table = table / table.sum(1, keepdim=True)
    cases = [
        Case(
            args=(
                torch.tensor([[0.5, 0.5], [0.25, 0.75]], dtype=torch.float64),
                torch.tensor([0, 1, 0]),
            ),
            name="hand example: (1 + 2) / 2 bits",
        ),
        Case(args=(table, torch.randint(0, 4, (50,), generator=gen))),
        Case(args=(table, torch.tensor([3, 3, 3, 3, 3, 3]))),
    ]
    return check(fn, cases, sequence_bits_reference, mistakes=_BITS_MISTAKES)


# ---- 3. unseen n-grams ------------------------------------------------------------------------


def unseen_share_reference(train: str, val: str, n: int) -> float:
    """Share of the len(val) - n + 1 windows of n characters of ``val`` absent from ``train``.

    >>> unseen_share_reference("abcab", "abx", 2)  # "ab" was seen, "bx" was not
    0.5
    """
    seen = {train[i : i + n] for i in range(len(train) - n + 1)}
    windows = [val[i : i + n] for i in range(len(val) - n + 1)]
    return sum(w not in seen for w in windows) / len(windows)


def _distinct_windows(train, val, n):
    seen = {train[i : i + n] for i in range(len(train) - n + 1)}
    distinct = {val[i : i + n] for i in range(len(val) - n + 1)}
    return sum(w not in seen for w in distinct) / len(distinct)


def _seen_share(train, val, n):
    return 1.0 - unseen_share_reference(train, val, n)


def _percent(train, val, n):
    return 100.0 * unseen_share_reference(train, val, n)


_UNSEEN_MISTAKES = [
    Mistake(
        "you counted distinct n-grams of the validation text; count every position (every "
        "window), so that an unseen n-gram that occurs three times counts three times.",
        wrong=_distinct_windows,
    ),
    Mistake(
        "you returned the share of n-grams that *were* seen; return 1 minus that.",
        wrong=_seen_share,
    ),
    Mistake("return a fraction between 0 and 1, not a percentage.", wrong=_percent),
]


def check_unseen_share(fn: Callable) -> bool:
    """fn(train, val, n) -> float: share of the n-grams of ``val`` never seen in ``train``."""
    train = "the cat sat on the mat. the dog sat on the log."
    cases = [
        Case(args=("abcab", "abx", 2), name="hand example"),
        Case(args=(train, "the cat sat on the log. a cat", 3)),
        Case(args=(train, "the rat sat on the rat", 4), name="an unseen n-gram repeated"),
        Case(args=(train, "tttt", 1)),
    ]
    return check(fn, cases, unseen_share_reference, mistakes=_UNSEEN_MISTAKES)


# ---- 4. nearest neighbours ------------------------------------------------------------------


def nearest_reference(E: torch.Tensor, i: int, k: int) -> list[int]:
    """The k rows of E (N, D) with the highest cosine similarity to row i, best first, not i.

    >>> nearest_reference(torch.tensor([[1.0, 0.0], [3.0, 0.1], [0.0, 1.0], [-1.0, 0.0]]), 0, 2)
    [1, 2]
    """
    sims = [
        (torch.nn.functional.cosine_similarity(E[i], E[j], dim=0).item(), j)
        for j in range(len(E))
        if j != i
    ]
    sims.sort(key=lambda s: -s[0])
    return [j for _, j in sims[:k]]


def _by_dot(E, i, k):
    scores = E @ E[i]
    scores[i] = -math.inf
    return scores.topk(k).indices.tolist()


def _with_self(E, i, k):
    return [i, *nearest_reference(E, i, k - 1)] if k > 0 else []


def _by_distance(E, i, k):
    dist = (E - E[i]).norm(dim=1)
    dist[i] = math.inf
    return (-dist).topk(k).indices.tolist()


def _worst_first(E, i, k):
    return nearest_reference(E, i, len(E) - 1)[::-1][:k]


_NEAREST_MISTAKES = [
    Mistake(
        "you ranked by the dot product; divide by both vectors' lengths (cosine similarity), "
        "or a long vector is 'near' everything.",
        wrong=_by_dot,
    ),
    Mistake(
        "row i itself is in your list; leave it out (it is always its own best match).",
        wrong=_with_self,
    ),
    Mistake(
        "you ranked by Euclidean distance; the exercise asks for cosine similarity, which "
        "ignores the vectors' lengths.",
        wrong=_by_distance,
    ),
    Mistake(
        "your list runs from the least similar; sort with the most similar first.",
        wrong=_worst_first,
    ),
]


def check_nearest(fn: Callable) -> bool:
    """fn(E, i, k) -> list of k row indices, most cosine-similar to row i first, i excluded."""
    gen = torch.Generator().manual_seed(2)
    E = torch.randn(12, 5, generator=gen)
    E[3] *= 10.0  # one long vector: the dot product and the cosine disagree about it
    cases = [
        Case(
            args=(torch.tensor([[1.0, 0.0], [3.0, 0.1], [0.0, 1.0], [-1.0, 0.0]]), 0, 2),
            name="hand example",
        ),
        Case(args=(E, 0, 4)),
        Case(args=(E, 3, 3), name="the long vector as the query"),
        Case(args=(E, 7, 11), name="every other row"),
    ]
    return check(fn, cases, nearest_reference, mistakes=_NEAREST_MISTAKES)


# ---- 5. the RNN recurrence ------------------------------------------------------------------


def rnn_reference(
    x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """h_t = tanh(W_xh x_t + W_hh h_{t-1} + b), h_0 = 0; x (B, T, D) -> states (B, T, H)."""
    B, T, _ = x.shape
    states = torch.empty(B, T, W_hh.shape[0], dtype=x.dtype)
    prev = torch.zeros(B, W_hh.shape[0], dtype=x.dtype)  # h_0
    for t in range(T):
        prev = torch.tanh(
            torch.einsum("hd,bd->bh", W_xh, x[:, t]) + torch.einsum("hk,bk->bh", W_hh, prev) + b
        )
        states[:, t] = prev
    return states


def _no_recurrence(x, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh.T + b)


def _relu_rnn(x, W_xh, W_hh, b):
    h, out = torch.zeros(x.shape[0], W_hh.shape[0], dtype=x.dtype), []
    for t in range(x.shape[1]):
        h = torch.relu(x[:, t] @ W_xh.T + h @ W_hh.T + b)
        out.append(h)
    return torch.stack(out, 1)


def _states_shifted(x, W_xh, W_hh, b):  # returns h_0 .. h_{T-1} instead of h_1 .. h_T
    states = rnn_reference(x, W_xh, W_hh, b)
    return torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], dim=1)


def _transposed_recurrent(x, W_xh, W_hh, b):
    return rnn_reference(x, W_xh, W_hh.T, b)


_RNN_MISTAKES = [
    Mistake(
        "your states ignore h_{t-1}: each step must add W_hh h_{t-1}, the previous state, "
        "or the network has no memory at all.",
        wrong=_no_recurrence,
    ),
    Mistake("use tanh as the non-linearity (equation eq-2-rnn), not ReLU.", wrong=_relu_rnn),
    Mistake(
        "your states are one step late: return h_1 .. h_T (the state after reading each "
        "input), not h_0 .. h_{T-1}.",
        wrong=_states_shifted,
    ),
    Mistake(
        "you multiplied by W_hh transposed: with row vectors h of shape (B, H), the term is "
        "h @ W_hh.T, as for W_xh.",
        wrong=_transposed_recurrent,
    ),
]


def check_rnn(fn: Callable) -> bool:
    """fn(x, W_xh, W_hh, b) -> (B, T, H) hidden states of equation eq-2-rnn."""
    gen = torch.Generator().manual_seed(3)

    def args(B, T, D, H):
        return (
            torch.randn(B, T, D, generator=gen, dtype=torch.float64),
            torch.randn(H, D, generator=gen, dtype=torch.float64) / math.sqrt(D),
            torch.randn(H, H, generator=gen, dtype=torch.float64) / math.sqrt(H),
            torch.randn(H, generator=gen, dtype=torch.float64) * 0.1,
        )

    cases = [
        Case(args=args(2, 5, 3, 4)),
        Case(args=args(3, 9, 2, 6)),
        Case(args=args(1, 1, 4, 3), name="a single step"),
    ]
    return check(fn, cases, rnn_reference, mistakes=_RNN_MISTAKES)
