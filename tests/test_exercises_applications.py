"""Tests for gptlib.exercises.applications, the self-checking exercises of chapter 6.2.

The n-gram reference is checked against gptlib.generate.no_repeat_ngram_mask; every checker
passes its reference and fails each typical wrong answer with the feedback that names it.
"""

import random

import numpy as np
import pytest
import torch

from gptlib.exercises import applications as a
from gptlib.generate import no_repeat_ngram_mask


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_banned_next_reference_matches_gptlib(n):
    rng = random.Random(n)
    for _ in range(100):
        ids = [rng.randrange(5) for _ in range(rng.randrange(n, 14))]
        mask = no_repeat_ngram_mask(torch.zeros(1, 5), torch.tensor([ids]), n)
        assert a.banned_next_reference(ids, n) == set(mask[0].isinf().nonzero().flatten().tolist())


def test_calibration_reference_against_numpy():
    """A second, vectorised computation of the same ECE on random data."""
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 500)
    conf[:5] = 1.0
    ok = (rng.uniform(0, 1, 500) < conf**2).astype(int)
    which = np.minimum((conf * 10).astype(int), 9)
    expected = sum(
        np.mean(which == b) * abs(ok[which == b].mean() - conf[which == b].mean())
        for b in range(10)
        if np.any(which == b)
    )
    assert a.calibration_error_reference(conf.tolist(), ok.tolist(), 10) == pytest.approx(expected)


def test_checkers_pass_the_references(capsys):
    assert a.check_banned_next(a.banned_next_reference)
    assert a.check_calibration_error(a.calibration_error_reference)
    assert "all" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, words",
    [
        (a._tail_of_n, "last n - 1 ids"),
        (a._every_follower, "only the n-grams"),
        (lambda ids, n: sorted(a.banned_next_reference(ids, n)), "return a set"),
    ],
)
def test_banned_next_mistakes_are_named(wrong, words, capsys):
    assert not a.check_banned_next(wrong)
    assert words in capsys.readouterr().out


def _no_clamp(conf, correct, bins=10):
    sums = [[0.0, 0.0, 0] for _ in range(bins)]
    for c, ok in zip(conf, correct, strict=True):
        s = sums[int(c * bins)]  # IndexError at c = 1.0
        s[0] += c
        s[1] += ok
        s[2] += 1
    return sum(k / len(conf) * abs(o / k - c / k) for c, o, k in sums if k)


@pytest.mark.parametrize(
    "wrong, words",
    [(a._unweighted, "share of the answers"), (a._signed, "absolute gap"), (_no_clamp, "1.0")],
)
def test_calibration_mistakes_are_named(wrong, words, capsys):
    assert not a.check_calibration_error(wrong)
    assert words in capsys.readouterr().out
