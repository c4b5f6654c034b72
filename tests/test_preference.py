"""Tests of gptlib.preference: the DPO loss against its closed form and its gradient signs, the
Bradley-Terry loss, padding of pairs, log-probabilities of completions, DPO steps that move the
policy the right way, and a reward model that separates a toy preference set.
Every model is the seeded "tiny" preset (C = 64, 2 layers)."""

import copy
import math

import pytest
import torch

from gptlib.generate import sequence_log_prob
from gptlib.model import GPT, GPTConfig
from gptlib.preference import (
    RewardModel,
    batch_sequences,
    bradley_terry_loss,
    completion_log_probs,
    dpo_batch_loss,
    dpo_loss,
    reward_model_loss,
)


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny")).eval()


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_dpo_loss_equals_its_closed_form():
    pc, pr = torch.tensor([-4.0, -10.0]), torch.tensor([-6.0, -7.0])
    rc, rr = torch.tensor([-5.0, -9.0]), torch.tensor([-5.5, -8.0])
    beta = 0.2
    # by hand: margins beta * ((pc - rc) - (pr - rr)) = 0.2 * (1 - (-0.5)) and 0.2 * (-1 - 1)
    expected = -(math.log(sigmoid(0.3)) + math.log(sigmoid(-0.4))) / 2
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.2, -0.2])
    assert rejected.tolist() == pytest.approx([-0.1, 0.2])


def test_dpo_loss_is_log2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -8.0])
    loss, _, _ = dpo_loss(logps, logps + 1, logps, logps + 1)
    assert loss.item() == pytest.approx(math.log(2))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-4.0], requires_grad=True)
    pr = torch.tensor([-6.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # gradient descent raises pc, lowers pr
    # d/d pc of -log sigma(beta m) is -beta sigma(-beta m), with m = 2
    assert pc.grad.item() == pytest.approx(-0.5 * sigmoid(-1.0))
    assert pr.grad.item() == pytest.approx(0.5 * sigmoid(-1.0))


def test_dpo_loss_rejects_bad_beta():
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.0)


def test_bradley_terry_loss():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert loss.item() == pytest.approx(-(math.log(sigmoid(2)) + math.log(sigmoid(-1))) / 2)
    with pytest.raises(ValueError, match="shape"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def test_batch_sequences_pads_and_masks():
    X, mask, lengths = batch_sequences([[1, 2, 3, 4], [7, 8]], [3, 1], pad_id=9)
    assert X.tolist() == [[1, 2, 3, 4], [7, 8, 9, 9]]
    assert mask.tolist() == [[0, 0, 0, 1], [0, 1, 0, 0]]
    assert lengths.tolist() == [4, 2]
    with pytest.raises(ValueError, match="completion"):
        batch_sequences([[1, 2]], [2])


def test_completion_log_probs_match_generate_and_ignore_padding():
    model = tiny()
    seq = [5, 17, 30, 2, 99, 41]
    X, mask, _ = batch_sequences([seq, seq[:4]], [3, 3])
    got = completion_log_probs(model, X, mask)
    full = sequence_log_prob(model, torch.tensor([seq]), 3)
    short = sequence_log_prob(model, torch.tensor([seq[:4]]), 3)
    assert got[0].item() == pytest.approx(full.item(), abs=1e-5)
    assert got[1].item() == pytest.approx(short.item(), abs=1e-5)  # padding adds nothing
    assert got.requires_grad


def test_dpo_steps_move_the_policy_towards_the_chosen_completions():
    reference = tiny()
    policy = copy.deepcopy(reference)
    prompts = [[3, 4, 5], [6, 7], [8, 9, 10, 11]]
    chosen = [[20, 21], [20, 22], [20]]
    rejected = [[30, 31], [30], [30, 32]]
    loss0, acc0 = dpo_batch_loss(policy, reference, prompts, chosen, rejected, beta=0.5)
    assert loss0.item() == pytest.approx(math.log(2), abs=1e-5)  # identical models
    assert acc0.item() == 0.0  # no pair has a strictly higher implicit reward yet
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(10):
        loss, acc = dpo_batch_loss(policy, reference, prompts, chosen, rejected, beta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 < loss0.item()
    assert acc.item() == 1.0
    for p in reference.parameters():  # the reference is frozen: no gradient ever reached it
        assert p.grad is None


def test_reward_model_separates_a_toy_preference_set():
    torch.manual_seed(0)
    rm = RewardModel(tiny())
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 200, (5,), generator=g).tolist() for _ in range(16)]
    chosen = [[1, 1] for _ in prompts]  # the rater always prefers the completion "1 1"
    rejected = [[2, 2] for _ in prompts]
    loss0, _ = reward_model_loss(rm, prompts, chosen, rejected)
    opt = torch.optim.AdamW(rm.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(30):
        loss, acc = reward_model_loss(rm, prompts, chosen, rejected)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss0.item() == pytest.approx(math.log(2), abs=0.05)
    assert loss.item() < 0.01
    assert acc.item() == 1.0
    rewards = rm.score([[50, 60], [70]], [[1, 1], [2, 2]])
    assert rewards.shape == (2,) and rewards[0] > rewards[1]
