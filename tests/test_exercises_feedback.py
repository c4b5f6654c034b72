"""Tests for gptlib.exercises.feedback, the self-checking exercises of chapter 6.3.

A correct answer passes, each typical wrong answer fails with feedback that names its mistake,
and the best-of-n KL reference agrees with a Monte Carlo estimate on a small discrete model.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.exercises import feedback as fb


def test_dpo_correct_passes(feedback_of):
    def mine(pc, pr, rc, rr, beta):
        margin = beta * ((pc - rc) - (pr - rr))
        return torch.log1p(torch.exp(-margin)).mean()  # -log sigma(m) = log(1 + e^-m)

    passed, out = feedback_of(fb.check_dpo_loss, mine)
    assert passed and "all 3 cases passed" in out


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda pc, pr, rc, rr, b: -F.logsigmoid((pc - rc) - (pr - rr)).mean(), "left out beta"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(), "reference model"),
        (
            lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc + rc) - (pr + rr))).mean(),
            "subtracted, not added",
        ),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean(), "swapped"),
        (lambda pc, pr, rc, rr, b: -torch.sigmoid(b * ((pc - rc) - (pr - rr))).mean(), "the log"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum(), "summed"),
    ],
)
def test_dpo_mistakes_are_named(feedback_of, wrong, words):
    passed, out = feedback_of(fb.check_dpo_loss, wrong)
    assert not passed and words in out


def test_dpo_stub_is_reported_as_not_implemented(feedback_of):
    def stub(pc, pr, rc, rr, beta):
        raise NotImplementedError

    passed, out = feedback_of(fb.check_dpo_loss, stub)
    assert not passed and "not implemented yet" in out


def test_best_of_n_kl(feedback_of):
    passed, out = feedback_of(fb.check_best_of_n_kl, lambda n: math.log(n) - 1 + 1 / n)
    assert passed
    passed, out = feedback_of(fb.check_best_of_n_kl, lambda n: math.log(n))
    assert not passed and "single best" in out
    passed, out = feedback_of(fb.check_best_of_n_kl, lambda n: math.log2(n) - (n - 1) / n)
    assert not passed and "nats" in out


def test_best_of_n_kl_reference_matches_the_exact_distribution():
    """Base model: uniform over 1000 completions with distinct rewards (rank = reward). Best-of-n
    picks rank k with probability (k/N)^n - ((k-1)/N)^n; its exact KL from the uniform model
    approaches log n - (n - 1)/n as N grows."""
    N, n = 1000, 4
    k = torch.arange(1, N + 1, dtype=torch.float64)
    p = (k / N) ** n - ((k - 1) / N) ** n
    kl = float((p * torch.log(p * N)).sum())
    assert kl == pytest.approx(fb.best_of_n_kl_reference(n), abs=2e-3)
