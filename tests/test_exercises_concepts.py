"""Tests for gptlib.exercises.concepts: correct answers pass, typical mistakes are named.

The references are checked first, by hand or against an independent computation (``nn.RNN``,
``np.bincount``); then each checker must accept a correct answer written differently from the
reference and reject a typical wrong one with feedback that names the mistake.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlib.exercises import concepts as ex

# ---- 0. the references are right -------------------------------------------------------------


def test_bigram_reference_matches_bincount():
    ids = torch.randint(0, 7, (500,), generator=torch.Generator().manual_seed(0))
    a, b = ids[:-1].numpy(), ids[1:].numpy()
    expected = np.bincount(a * 7 + b, minlength=49).reshape(7, 7)
    assert ex.bigram_counts_reference(ids, 7).numpy().tolist() == expected.tolist()


def test_sequence_bits_reference_by_hand():
    """Transitions 0->1 (p = 1/2, 1 bit) and 1->0 (p = 1/4, 2 bits): mean 1.5 bits."""
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    assert ex.sequence_bits_reference(probs, torch.tensor([0, 1, 0])) == pytest.approx(1.5)


def test_unseen_share_reference_by_hand():
    """Windows of 'abab' with n = 2: ab, ba, ab; training 'abc' has ab, bc: 'ba' is new, 1/3."""
    assert ex.unseen_share_reference("abc", "abab", 2) == pytest.approx(1 / 3)


def test_nearest_reference_ignores_length():
    E = torch.tensor([[1.0, 0.0], [100.0, 1.0], [0.9, 0.1], [0.0, 1.0]])
    # cosine: row 1 (0.99995) before row 2 (0.9939); the dot product would also say 1, 2
    assert ex.nearest_reference(E, 0, 3) == [1, 2, 3]
    assert ex.nearest_reference(E, 3, 1) == [2]  # cos(3, 2) = 0.110 > cos(3, 1) = 0.010


def test_rnn_reference_matches_nn_rnn():
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 5, batch_first=True).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    ours = ex.rnn_reference(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0)
    torch.testing.assert_close(ours, rnn(x)[0].detach())


# ---- 1. correct answers pass ------------------------------------------------------------------


def counts_ok(ids, V):
    return torch.bincount(ids[:-1] * V + ids[1:], minlength=V * V).view(V, V)


def bits_ok(probs, ids):
    return (-torch.log2(probs[ids[:-1], ids[1:]]).mean()).item()


def unseen_ok(train, val, n):
    seen = set(zip(*(train[j:] for j in range(n)), strict=False))
    grams = list(zip(*(val[j:] for j in range(n)), strict=False))
    return float(np.mean([gram not in seen for gram in grams]))


def nearest_ok(E, i, k):
    sims = F.normalize(E, dim=1) @ F.normalize(E[i], dim=0)
    sims[i] = -math.inf
    return sims.topk(k).indices.tolist()


def rnn_ok(x, W_xh, W_hh, b):
    rnn = torch.nn.RNN(x.shape[-1], W_hh.shape[0], batch_first=True, bias=False).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(W_xh)
        rnn.weight_hh_l0.copy_(W_hh)
    h = torch.zeros(x.shape[0], W_hh.shape[0], dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_xh.T + h @ W_hh.T + b)
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize(
    "checker, answer",
    [
        (ex.check_bigram_counts, counts_ok),
        (ex.check_sequence_bits, bits_ok),
        (ex.check_unseen_share, unseen_ok),
        (ex.check_nearest, nearest_ok),
        (ex.check_rnn, rnn_ok),
    ],
)
def test_correct_answers_pass(checker, answer, capsys):
    assert checker(answer) is True
    assert "all" in capsys.readouterr().out


# ---- 2. typical mistakes fail, and are named --------------------------------------------------


def counts_transposed(ids, V):
    return counts_ok(ids, V).T


def counts_probabilities(ids, V):
    c = counts_ok(ids, V).double()
    return c / c.sum(1, keepdim=True).clamp(min=1)


def bits_in_nats(probs, ids):
    return (-torch.log(probs[ids[:-1], ids[1:]]).mean()).item()


def bits_summed(probs, ids):
    return (-torch.log2(probs[ids[:-1], ids[1:]]).sum()).item()


def unseen_distinct(train, val, n):
    seen = {train[i : i + n] for i in range(len(train) - n + 1)}
    grams = {val[i : i + n] for i in range(len(val) - n + 1)}
    return sum(g not in seen for g in grams) / len(grams)


def nearest_dot(E, i, k):
    s = E @ E[i]
    s[i] = -math.inf
    return s.topk(k).indices.tolist()


def nearest_with_self(E, i, k):
    sims = F.normalize(E, dim=1) @ F.normalize(E[i], dim=0)
    return sims.topk(k).indices.tolist()


def rnn_forgetful(x, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh.T + b)


def rnn_late(x, W_xh, W_hh, b):
    h = rnn_ok(x, W_xh, W_hh, b)
    return torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)


@pytest.mark.parametrize(
    "checker, answer, words",
    [
        (ex.check_bigram_counts, counts_transposed, "transposed"),
        (ex.check_bigram_counts, counts_probabilities, "raw counts"),
        (ex.check_sequence_bits, bits_in_nats, "nats"),
        (ex.check_sequence_bits, bits_summed, "summed"),
        (ex.check_unseen_share, unseen_distinct, "distinct"),
        (ex.check_nearest, nearest_dot, "dot product"),
        (ex.check_nearest, nearest_with_self, "itself"),
        (ex.check_rnn, rnn_forgetful, "ignore h_{t-1}"),
        (ex.check_rnn, rnn_late, "one step late"),
    ],
)
def test_typical_mistakes_are_named(checker, answer, words, capsys):
    assert checker(answer) is False
    out = capsys.readouterr().out
    assert "❌" in out and words in out, out


def test_unimplemented_stub_is_reported(capsys):
    def stub(ids, V):
        raise NotImplementedError

    assert ex.check_bigram_counts(stub) is False
    assert "not implemented yet" in capsys.readouterr().out
