"""Learning from preferences: a Bradley-Terry reward model and the DPO loss.

People find it easier to say which of two answers they prefer than to write the best answer.
Two ways to use such comparisons:

- **A reward model** (Christiano et al. 2017; Ouyang et al. 2022, Sec. 3.5). The Bradley-Terry
  model (Bradley & Terry 1952) says that y_w is preferred to y_l with probability
  sigma(r(x, y_w) - r(x, y_l)) for some score r; ``RewardModel`` is the GPT with a scalar head on
  its last token (``gptlib.finetune.GPTClassifier`` with one output), trained by
  ``reward_model_loss``, the negative log-likelihood of the observed choices
  (``bradley_terry_loss``). Its score can then rank samples (best-of-n) or serve as the reward
  of reinforcement learning (PPO).
- **Direct preference optimisation** (Rafailov et al. 2023). The policy that maximises the
  reward minus beta times its KL divergence from a reference model is known in closed form, so
  the reward is beta log(pi / pi_ref) up to a term that cancels in a comparison; putting that
  into the Bradley-Terry likelihood gives a loss on the policy itself (``dpo_loss``, a pure
  function of four log-probability tensors, Eq. 7 of the paper). ``dpo_batch_loss`` computes
  those log-probabilities for a batch of pairs with ``completion_log_probs``.

Pairs are lists of token ids: the prompt, then the completion; ``batch_sequences`` pads them on
the right and marks which tokens belong to the completion. Left out on purpose: PPO itself
(the book explains it and measures best-of-n and DPO instead), reward-model ensembles, the
IPO/KTO variants of DPO, and label smoothing for noisy preferences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.finetune import GPTClassifier
from gptlib.model import GPT


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigma(r_chosen - r_rejected): the Bradley-Terry negative log-likelihood.

    Equal rewards give log 2 (a coin flip); the loss falls to 0 as the chosen reward pulls ahead.

    >>> round(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), 4)
    0.6931
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(
            f"r_chosen and r_rejected must have one shape, got {tuple(r_chosen.shape)} "
            f"and {tuple(r_rejected.shape)}"
        )
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss on sequence log-probabilities (Rafailov et al. 2023, Eq. 7).

    All four arguments are (B,) sums of log pi(y | x) over the completion tokens. The implicit
    reward of a completion is beta (log pi(y|x) - log pi_ref(y|x)); the loss is the
    Bradley-Terry negative log-likelihood of the chosen one winning under that reward.

    >>> loss, rc, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]),
    ...                         torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    >>> round(loss.item(), 4), rc.item(), rr.item()   # -log sigma(0.5 * (1 - (-1)))
    (0.3133, 0.5, -0.5)

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``: the mean loss, and the (B,) implicit
        rewards, detached (for logging: how often the chosen one scores higher).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta!r}")
    chosen_logratio = policy_chosen - reference_chosen  # (B,) log pi/pi_ref of y_w
    rejected_logratio = policy_rejected - reference_rejected  # (B,) log pi/pi_ref of y_l
    # Eq. 7: L = -E log sigma(beta log pi(y_w|x)/pi_ref(y_w|x) - beta log pi(y_l|x)/pi_ref(y_l|x))
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def batch_sequences(
    sequences: Sequence[Sequence[int]], prompt_lengths: Sequence[int], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad prompt+completion id lists and mark the completion tokens.

    >>> X, mask, lengths = batch_sequences([[5, 6, 7], [5, 8]], [2, 1])
    >>> X.tolist(), mask.tolist(), lengths.tolist()
    ([[5, 6, 7], [5, 8, 0]], [[0, 0, 1], [0, 1, 0]], [3, 2])

    Returns:
        ``(X, mask, lengths)``: (B, T) long ids, (B, T) long mask that is 1 on completion
        tokens, (B,) number of real tokens per row.
    """
    if len(sequences) != len(prompt_lengths) or not sequences:
        raise ValueError("need one prompt length per sequence, and at least one sequence")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)  # (B,)
    for s, p in zip(sequences, prompt_lengths, strict=True):
        if not 1 <= p < len(s):
            raise ValueError(
                f"a sequence of {len(s)} tokens needs a prompt of 1 to {len(s) - 1} tokens "
                f"and a completion, got prompt length {p}"
            )
    T = int(lengths.max())
    X = torch.full((len(sequences), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)  # (B, T)
    for b, (s, p) in enumerate(zip(sequences, prompt_lengths, strict=True)):
        X[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[b, p : len(s)] = 1
    return X, mask, lengths


def completion_log_probs(model: GPT, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the completion of log p(token | the tokens before it); X, mask (B, T) -> (B,).

    Keeps the graph (unlike ``gptlib.generate.sequence_log_prob``), so DPO can train through it;
    wrap it in ``torch.no_grad()`` for a frozen reference model.
    """
    logits, _ = model(X[:, :-1])  # (B, T-1, V): the prediction of tokens 1..T-1
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T-1, V)
    token_logp = logp.gather(-1, X[:, 1:, None])[..., 0]  # (B, T-1)
    return (token_logp * mask[:, 1:].to(token_logp.dtype)).sum(dim=-1)  # (B,)


def _pairs(
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen rows first, then rejected rows, in one padded batch of 2B sequences."""
    if not len(prompts) == len(chosen) == len(rejected):
        raise ValueError("prompts, chosen and rejected must have one length")
    seqs = [[*p, *c] for p, c in zip(prompts, chosen, strict=True)]
    seqs += [[*p, *r] for p, r in zip(prompts, rejected, strict=True)]
    return batch_sequences(seqs, [len(p) for p in prompts] * 2)


def dpo_batch_loss(
    policy: GPT,
    reference: GPT,
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dpo_loss`` of a batch of (prompt, chosen completion, rejected completion) id lists.

    The reference model runs without gradients; the policy keeps its graph.

    Returns:
        ``(loss, reward_accuracy)``: the mean loss and the fraction of pairs whose chosen
        completion has the higher implicit reward.
    """
    X, mask, _ = _pairs(prompts, chosen, rejected)  # (2B, T)
    B = len(prompts)
    logps = completion_log_probs(policy, X, mask)  # (2B,)
    with torch.no_grad():
        ref = completion_log_probs(reference, X, mask)  # (2B,)
    loss, rc, rr = dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:], beta)
    return loss, (rc > rr).float().mean()


class RewardModel(nn.Module):
    """The GPT with a scalar head: r(x, y) read at the last real token of prompt + completion.

    A ``GPTClassifier`` with one output (Ouyang et al. 2022, Sec. 3.5: the supervised model
    with its unembedding layer replaced by a projection to a scalar).

    Args:
        model: the GPT body (shared, not copied); its lm_head is not used.
    """

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.classifier = GPTClassifier(model, n_classes=1, pool="last")

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) right-padded, lengths (B,) -> rewards (B,)."""
        logits, _ = self.classifier(idx, lengths)  # (B, 1)
        return logits[:, 0]

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Rewards (B,) of prompt + completion id lists (padded for you)."""
        seqs = [[*p, *c] for p, c in zip(prompts, completions, strict=True)]
        X, _, lengths = batch_sequences(seqs, [len(p) for p in prompts])
        return self(X, lengths)


def reward_model_loss(
    reward_model: RewardModel,
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry loss of the reward model on a batch of preference pairs.

    Returns:
        ``(loss, accuracy)``: the mean loss and the fraction of pairs the model ranks right.
    """
    X, _, lengths = _pairs(prompts, chosen, rejected)  # (2B, T)
    B = len(prompts)
    r = reward_model(X, lengths)  # (2B,)
    return bradley_terry_loss(r[:B], r[B:]), (r[:B] > r[B:]).float().mean()
