"""Tests for gptlib.exercises.derivations, the self-checking exercises of chapter 4.

For every checker: a correct answer passes, and each typical wrong answer fails with feedback that
names the mistake. The references themselves are checked against PyTorch and gptlib, so that the
feedback is measured against the right thing.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.exercises import derivations as d
from gptlib.model import GPT, GPTConfig


# ----------------------------------------------------------------- the references are right
def test_softmax_reference_matches_torch():
    z = torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(d.softmax_reference(z), torch.softmax(z, dim=-1))


def test_xent_grad_reference_matches_autograd():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 5, (6,))
    F.cross_entropy(logits, targets).backward()
    torch.testing.assert_close(d.xent_grad_reference(logits.detach(), targets), logits.grad)


def test_layer_norm_reference_matches_torch():
    x, gamma, beta = torch.randn(2, 3, 8), torch.randn(8), torch.randn(8)
    torch.testing.assert_close(
        d.layer_norm_reference(x, gamma, beta), F.layer_norm(x, (8,), gamma, beta, eps=1e-5)
    )


def test_param_count_reference_matches_a_real_model():
    model = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=12))
    assert d.param_count_reference(97, 16, 2, 12) == sum(p.numel() for p in model.parameters())
    assert d.param_count_reference(50257, 1024, 12, 768) == 124_439_808


def test_adamw_reference_matches_torch_optim_over_several_steps():
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    theta, m, v = (
        p.detach().clone(),
        torch.zeros(4, 3, dtype=torch.float64),
        torch.zeros(4, 3, dtype=torch.float64),
    )
    opt = torch.optim.AdamW([p], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for t in range(1, 6):
        grad = torch.randn(4, 3, dtype=torch.float64)
        theta, m, v = d.adamw_step_reference(theta, grad, m, v, t, lr=0.01, weight_decay=0.1)
        p.grad = grad
        opt.step()
        torch.testing.assert_close(theta, p.detach(), rtol=0, atol=1e-12)


def test_causal_attention_reference_matches_sdpa():
    x, W_q, W_k, W_v = (
        torch.randn(s, dtype=torch.float64) for s in ((5, 6), (6, 4), (6, 4), (6, 4))
    )
    expected = F.scaled_dot_product_attention(
        (x @ W_q)[None], (x @ W_k)[None], (x @ W_v)[None], is_causal=True
    )[0]
    torch.testing.assert_close(d.causal_attention_reference(x, W_q, W_k, W_v), expected)


# ----------------------------------------------------------------- softmax
def naive_softmax(z):
    return torch.exp(z) / torch.exp(z).sum(dim=-1, keepdim=True)


def test_softmax_correct_passes(feedback_of):
    passed, out = feedback_of(d.check_softmax, lambda z: torch.softmax(z, dim=-1))
    assert passed and out == "✅ softmax: all 4 cases passed.\n"


@pytest.mark.parametrize(
    "wrong, words",
    [
        (naive_softmax, "exp overflows"),
        (lambda z: torch.exp(z) / torch.exp(z).sum(), "whole tensor"),
        (lambda z: torch.softmax(z, dim=0), "first dimension (dim=0)"),
        (lambda z: z / z.sum(dim=-1, keepdim=True), "without exponentiating"),
    ],
)
def test_softmax_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(d.check_softmax, wrong)
    assert not passed and words in out, out


# ----------------------------------------------------------------- cross-entropy gradient
def autograd_xent_grad(logits, targets):
    logits = logits.detach().requires_grad_()
    F.cross_entropy(logits, targets).backward()
    return logits.grad


def test_xent_grad_correct_passes(feedback_of):
    passed, out = feedback_of(d.check_xent_grad, autograd_xent_grad)
    assert passed and "all 3 cases passed" in out


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda z, t: torch.softmax(z, -1) - F.one_hot(t, z.shape[1]), "divide p - y by N"),
        (
            lambda z, t: (F.one_hot(t, z.shape[1]) - torch.softmax(z, -1)) / len(z),
            "sign is flipped",
        ),
        (lambda z, t: (z - F.one_hot(t, z.shape[1])) / len(z), "from the logits"),
        (lambda z, t: torch.softmax(z, -1) / len(z), "forgot to subtract"),
    ],
)
def test_xent_grad_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(d.check_xent_grad, wrong)
    assert not passed and words in out, out


# ----------------------------------------------------------------- LayerNorm
def test_layer_norm_correct_passes(feedback_of):
    def mine(x, gamma, beta, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], gamma, beta, eps)

    passed, out = feedback_of(d.check_layer_norm, mine)
    assert passed, out


def unbiased_ln(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) + beta


def no_affine_ln(x, gamma, beta, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def eps_outside_ln(x, gamma, beta, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    return gamma * (x - mu) / (x.std(-1, unbiased=False, keepdim=True) + eps) + beta


@pytest.mark.parametrize(
    "wrong, words",
    [
        (unbiased_ln, "unbiased variance"),
        (no_affine_ln, "gain and bias"),
        (eps_outside_ln, "inside the square root"),
    ],
)
def test_layer_norm_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(d.check_layer_norm, wrong)
    assert not passed and words in out, out


# ----------------------------------------------------------------- parameter count
def formula(V, T, L, C):
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C


def test_param_count_correct_passes(feedback_of):
    passed, out = feedback_of(d.check_param_count, formula)
    assert passed and "all 4 cases passed" in out


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda V, T, L, C: formula(V, T, L, C) + V * C, "ties it"),
        (lambda V, T, L, C: formula(V, T, L, C) - T * C, "position embedding"),
        (lambda V, T, L, C: formula(V, T, L, C) - 2 * C, "ln_f"),
        (lambda V, T, L, C: V * C + T * C + L * (12 * C * C + 2 * C) + C, "no biases"),
        (lambda V, T, L, C: V * C + T * C + L * (8 * C * C + 13 * C) + 2 * C, "MLP is too small"),
    ],
)
def test_param_count_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(d.check_param_count, wrong)
    assert not passed and words in out, out


# ----------------------------------------------------------------- AdamW
def torch_adamw_step(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """The step torch.optim.AdamW takes from the state (m, v) after t - 1 steps."""
    p = torch.nn.Parameter(theta.clone())
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    opt.state[p] = {
        "step": torch.tensor(float(t - 1)),
        "exp_avg": m.clone(),
        "exp_avg_sq": v.clone(),
    }
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]


def test_adamw_correct_passes(feedback_of):
    passed, out = feedback_of(d.check_adamw_step, torch_adamw_step)
    assert passed and "all 3 cases passed" in out, out


def adamw_without_correction(
    theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1
):
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad**2
    return theta - lr * (m / (v.sqrt() + eps) + weight_decay * theta), m, v


def adamw_from_zero(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    return d.adamw_step_reference(theta, grad, m, v, t - 1, lr, betas, eps, weight_decay)


def adam_l2(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    return d.adamw_step_reference(theta, grad + weight_decay * theta, m, v, t, lr, betas, eps, 0.0)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (adamw_without_correction, "bias correction"),
        (adamw_from_zero, "count steps from 0"),
        (adam_l2, "L2 penalty"),
    ],
)
def test_adamw_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(d.check_adamw_step, wrong)
    assert not passed and words in out, out


# ----------------------------------------------------------------- causal attention
def attention(x, W_q, W_k, W_v, causal=True, transpose=False, scale=True):
    q, k, v = x @ W_q, x @ W_k, x @ W_v
    s = k @ q.T if transpose else q @ k.T
    if scale:
        s = s / math.sqrt(q.shape[1])
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def test_causal_attention_correct_passes(feedback_of):
    passed, out = feedback_of(d.check_causal_attention, attention)
    assert passed and "all 3 cases passed" in out


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(causal=False), "no causal mask"),
        (dict(transpose=True), "transposed"),
        (dict(scale=False), "not scaled"),
    ],
)
def test_causal_attention_mistakes_are_named(kwargs, words, feedback_of):
    passed, out = feedback_of(d.check_causal_attention, lambda *a: attention(*a, **kwargs))
    assert not passed and words in out, out


def test_wrong_weight_orientation_reports_the_shapes(feedback_of):
    passed, out = feedback_of(
        d.check_causal_attention, lambda x, W_q, W_k, W_v: attention(x, W_q.T, W_k.T, W_v.T)
    )
    assert not passed
    assert "raised RuntimeError" in out and "Q = x @ W_q" in out
