"""Self-checking exercises for chapter 6.3, learning from user feedback.

=======================  ============================================================  ========
checker                  the reader writes                                             book
=======================  ============================================================  ========
check_dpo_loss           ``dpo_loss(policy_chosen, policy_rejected, reference_chosen,``  Ex. 6.3.1
                         ``reference_rejected, beta)``: the mean DPO loss of a batch
check_best_of_n_kl       ``best_of_n_kl(n)``: the KL divergence of best-of-n from the    Ex. 6.3.2
                         model it samples, log n - (n - 1) / n
=======================  ============================================================  ========

The reference of the first is :func:`gptlib.preference.dpo_loss` itself (Rafailov et al. 2023,
Eq. 7); ``tests/test_exercises_feedback.py`` checks that every typical wrong answer below is
recognised.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptlib.exercises.core import Case, Mistake, check
from gptlib.preference import dpo_loss


# --------------------------------------------------------------------------- the DPO loss
def dpo_loss_reference(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """The mean DPO loss, a scalar tensor: ``gptlib.preference.dpo_loss(...)[0]``."""
    return dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)[0]


def _logps(seed: int, n: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(-torch.rand(n, generator=g, dtype=torch.float64) * 20 for _ in range(4))


def check_dpo_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Exercise 6.3.1: the DPO loss from four (B,) tensors of sequence log-probabilities."""
    t = torch.tensor
    cases = [
        Case((t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), 0.5), name="one pair, by hand"),
        Case((*_logps(0, 5), 0.1), name="five pairs, beta 0.1"),
        Case((*_logps(1, 3), 2.0), name="three pairs, beta 2"),
    ]

    def no_beta(pc, pr, rc, rr, beta):
        return -F.logsigmoid((pc - rc) - (pr - rr)).mean()

    def no_reference(pc, pr, rc, rr, beta):
        return -F.logsigmoid(beta * (pc - pr)).mean()

    def reference_added(pc, pr, rc, rr, beta):
        return -F.logsigmoid(beta * ((pc + rc) - (pr + rr))).mean()

    def swapped(pc, pr, rc, rr, beta):
        return -F.logsigmoid(beta * ((pr - rr) - (pc - rc))).mean()

    def no_log(pc, pr, rc, rr, beta):
        return -torch.sigmoid(beta * ((pc - rc) - (pr - rr))).mean()

    def summed(pc, pr, rc, rr, beta):
        return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).sum()

    mistakes = [
        Mistake("you left out beta: the implicit reward is beta log(pi / pi_ref).", wrong=no_beta),
        Mistake(
            "you left out the reference model: DPO compares log pi - log pi_ref of each "
            "completion, so a completion the reference already liked earns no reward.",
            wrong=no_reference,
        ),
        Mistake(
            "the reference log-probability is subtracted, not added: log(pi / pi_ref) = "
            "log pi - log pi_ref.",
            wrong=reference_added,
        ),
        Mistake(
            "chosen and rejected are swapped: the loss must fall as the chosen completion's "
            "implicit reward pulls ahead.",
            wrong=swapped,
        ),
        Mistake(
            "the loss is -log sigma(...), the negative log-likelihood of the choice; you "
            "returned -sigma(...) without the log.",
            wrong=no_log,
        ),
        Mistake("you summed over the batch: the checker expects the mean.", wrong=summed),
    ]
    return check(fn, cases, dpo_loss_reference, name="dpo_loss", rtol=1e-5, mistakes=mistakes)


# --------------------------------------------------------------------------- best-of-n KL
def best_of_n_kl_reference(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1) / n, in nats, for n >= 1.

    >>> best_of_n_kl_reference(1)
    0.0
    """
    return math.log(n) - (n - 1) / n


def check_best_of_n_kl(fn: Callable[[int], float]) -> bool:
    """Exercise 6.3.2: the KL divergence of best-of-n sampling from the base model."""
    cases = [Case((1,), name="n = 1"), Case((2,), name="n = 2"), Case((16,), name="n = 16")]
    mistakes = [
        Mistake(
            "log n is the KL divergence only if best-of-n always returned the single best "
            "completion; the answer is log n - (n - 1) / n.",
            wrong=lambda n: math.log(n),
        ),
        Mistake(
            "you used log base 2: the book measures KL in nats (natural log).",
            wrong=lambda n: math.log2(n) - (n - 1) / n,
        ),
    ]
    return check(
        fn, cases, best_of_n_kl_reference, name="best_of_n_kl", rtol=1e-9, mistakes=mistakes
    )
