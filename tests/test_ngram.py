"""Tests for gptlib.ngram: normalisation, hand-derived entropies, smoothing quality."""

import math

import numpy as np
import pytest
import torch

from gptlib.ngram import NGramModel, _discount_table, evaluate, sweep_orders

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat; "
    "the cat ran, the dog sat.\n"
) * 3
HELD_OUT = "the dog ran on the mat. a cat sat on a log.\n"
ALL_SMOOTHINGS = [
    ("add-k", {"k": 1.0}),
    ("add-k", {"k": 0.1}),
    ("kneser-ney", {}),
    ("modified-kneser-ney", {}),
    ("kneser-ney", {"discount": 0.9}),
]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("smoothing, kwargs", ALL_SMOOTHINGS)
@pytest.mark.parametrize("context", ["", "t", "the ", "zzz", "xq"])
def test_distribution_sums_to_one(order, smoothing, kwargs, context):
    """Also for unseen contexts ('zzz' has symbols never seen in training, via vocab)."""
    model = NGramModel(order, smoothing, vocab="xqz", **kwargs).fit(TEXT)
    p = model.distribution(context)
    assert p.shape == (len(model.vocab),)
    assert np.all(p > 0)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_unigram_entropy_matches_hand_formula():
    """ "aaab": P(a)=3/4, P(b)=1/4, so H = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.8113 bits."""
    model = NGramModel(1, "add-k", k=0).fit("aaab")
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert model.cross_entropy("aaab") == pytest.approx(expected)
    assert model.prob("", "a") == pytest.approx(0.75)


def test_add_one_bigram_by_hand():
    """Text "abab", vocab {a, b, c}: c(ab)=2, c(a.)=2, so P(b|a) = (2+1)/(2+3) = 3/5."""
    model = NGramModel(2, "add-k", k=1.0, vocab="c").fit("abab")
    assert model.prob("a", "b") == pytest.approx(3 / 5)
    assert model.prob("b", "b") == pytest.approx(1 / 4)  # c(ba)=1, c(b.)=1: (0+1)/(1+3)
    assert model.prob("c", "a") == pytest.approx(1 / 3)  # unseen context: uniform


def test_kneser_ney_bigram_by_hand():
    """Interpolated Kneser-Ney on "abab" with D = 0.5, vocab {a, b}:
    unigram continuation counts N1+(.a)=1 (ba), N1+(.b)=1 (ab); uniform interpolation gives
    P1(a) = (1-0.5)/2 + 0.5*2/2 * 1/2 = 1/2. Bigram context b: c(ba)=1, c(b.)=1, N1+(b.)=1,
    so P(a|b) = (1-0.5)/1 + 0.5*1/1 * 1/2 = 3/4."""
    model = NGramModel(2, "kneser-ney", discount=0.5).fit("abab")
    assert model.prob("", "a") == pytest.approx(0.5)
    assert model.prob("b", "a") == pytest.approx(0.75)
    assert model.prob("b", "b") == pytest.approx(0.25)


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney", "modified-kneser-ney"])
def test_fast_scoring_agrees_with_distribution(smoothing):
    """log2_probs (vectorised over positions) equals the per-context distribution() path."""
    model = NGramModel(4, smoothing).fit(TEXT)
    seq = HELD_OUT[:30]
    slow = [math.log2(model.prob(seq[max(0, i - 3) : i], seq[i])) for i in range(len(seq))]
    np.testing.assert_allclose(model.log2_probs(seq), slow, rtol=1e-12)


def test_kneser_ney_beats_add_k_on_held_out_text():
    kn = NGramModel(4, "kneser-ney").fit(TEXT).cross_entropy(HELD_OUT)
    add1 = NGramModel(4, "add-k", k=1.0).fit(TEXT).cross_entropy(HELD_OUT)
    assert kn < add1 - 0.3


def test_token_ids_and_tensors():
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5] * 5
    a = NGramModel(3).fit(ids)
    b = NGramModel(3).fit(torch.tensor(ids))
    assert a.vocab == [1, 2, 3, 4, 5, 6, 9]
    assert a.cross_entropy(ids) == pytest.approx(b.cross_entropy(torch.tensor(ids)))
    full = NGramModel(2, vocab=range(12)).fit(ids)
    assert len(full.distribution([5])) == 12 and full.prob([5], 11) > 0


def test_evaluate_by_hand():
    """Unigram counts of 0 1 0 1: P = 1/2 each, so 1 bit per token and a perplexity of 2;
    four tokens that spell 8 characters carry 4 bits, 0.5 bits per character."""
    model = NGramModel(1, "add-k", k=0).fit([0, 1, 0, 1])
    out = evaluate(model, [0, 1, 0, 1], n_chars=8)
    assert out == pytest.approx({"bits_per_token": 1.0, "perplexity": 2.0, "bits_per_char": 0.5})
    assert "bits_per_char" not in evaluate(model, [0, 1])  # tokens without n_chars
    text_model = NGramModel(1, "add-k", k=0).fit("abab")
    assert evaluate(text_model, "aabb") == pytest.approx(
        {"bits_per_token": 1.0, "perplexity": 2.0, "bits_per_char": 1.0}
    )


def test_sizes_by_hand():
    """ "abab" with vocab {a, b, c}: V = 3; unigrams a, b and bigrams ab, ba are stored."""
    model = NGramModel(2, vocab="c").fit("abab")
    assert model.vocab_size == 3 and model.vocab == ["a", "b", "c"]
    assert model.num_ngrams == 4


def test_modified_kneser_ney_discounts_by_hand():
    """Counts 1 1 1 2 2 3 4: n1 = 3, n2 = 2, n3 = n4 = 1, so Y = n1 / (n1 + 2 n2) = 3/7 and
    (Chen & Goodman 1999) D1 = 1 - 2Y n2/n1 = 3/7, D2 = 2 - 3Y n3/n2 = 19/14, D3+ = 3 - 4Y n4/n3
    = 9/7; the plain Kneser-Ney discount is Y for every count."""
    counts = np.array([1, 1, 1, 2, 2, 3, 4], dtype=float)
    np.testing.assert_allclose(_discount_table(counts, modified=True), [0, 3 / 7, 19 / 14, 9 / 7])
    np.testing.assert_allclose(_discount_table(counts, modified=False), [0, 3 / 7, 3 / 7, 3 / 7])


def test_higher_order_fits_training_text_better():
    bits = sweep_orders(TEXT, TEXT, orders=[1, 2, 3])
    assert bits[1] > bits[2] > bits[3]


def test_generate_is_seeded_and_in_vocabulary():
    model = NGramModel(3).fit(TEXT)
    a = model.generate(40, context="the ", seed=1)
    assert a == model.generate(40, context="the ", seed=1) and len(a) == 40
    assert set(a) <= set(model.vocab)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"order": 0}, "order"),
        ({"order": 2, "smoothing": "witten-bell"}, "smoothing"),
        ({"order": 2, "k": -1}, "k must"),
        ({"order": 2, "discount": 1.5}, "discount"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NGramModel(**kwargs)


def test_errors_on_bad_sequences():
    with pytest.raises(ValueError, match="too short"):
        NGramModel(5).fit("abc")
    with pytest.raises(RuntimeError, match="fit"):
        NGramModel(2).cross_entropy("ab")
    model = NGramModel(2).fit("abcabc")
    with pytest.raises(ValueError, match="'z' at position 2 is not in the model's vocabulary"):
        model.cross_entropy("abz")
    with pytest.raises(ValueError, match="empty"):
        model.cross_entropy("")
    with pytest.raises(TypeError, match="integer ids"):
        NGramModel(2).fit([0.5, 1.5])
