"""Self-checking exercises for chapter 4, the mathematics of a GPT.

Each ``check_*`` function takes the reader's function, runs it on a few cases against a reference
implementation (:func:`gptlib.exercises.core.run_checks`), prints feedback and returns ``True`` when
every case passed. When a case fails, the answer is also compared with the *typical wrong answers*
of that exercise (a softmax that overflows, a forgotten bias correction, a transposed score
matrix, an untied output layer, ...), and the feedback names the mistake that matches.

=======================  =========================================================  ==========
checker                  the reader writes                                          book
=======================  =========================================================  ==========
check_softmax            ``softmax(z)`` over the last dimension, stable             Ex. 4.2
check_xent_grad          ``xent_grad(logits, targets)``: d(mean loss)/d(logits)     Ex. 4.4
check_layer_norm         ``layer_norm(x, gamma, beta, eps)``                        Ex. 4.5
check_param_count        ``param_count(vocab_size, block_size, n_layer, n_embd)``   Ex. 4.6
check_adamw_step         ``adamw_step(theta, grad, m, v, t, lr, betas, eps, wd)``   Ex. 4.7
check_causal_attention   ``causal_attention(x, W_q, W_k, W_v)`` for one head        Ex. 4.8
=======================  =========================================================  ==========

The references are written out here, equation by equation, so that the feedback can be exact;
``tests/test_exercises_derivations.py`` checks them against PyTorch and ``gptlib``. The mistakes
are recognised by :func:`gptlib.exercises.core.diagnose`, shared by every chapter's checkers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptlib.exercises.core import Case, Mistake, check
from gptlib.model import GPTConfig, param_count


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _not_finite(case: Case, answer: object) -> bool:
    return isinstance(answer, torch.Tensor) and not bool(torch.isfinite(answer).all())


# --------------------------------------------------------------------------- softmax
def softmax_reference(z: torch.Tensor) -> torch.Tensor:
    """softmax over the last dimension, shifted by the row maximum (Eq. eq-4-softmax-shift)."""
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def check_softmax(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Exercise 4.2: a numerically stable softmax over the last dimension."""
    g = _gen(42)
    cases = [
        Case((torch.tensor([1.0, 2.0, 3.0]),), name="a small vector"),
        Case((torch.randn(4, 5, generator=g, dtype=torch.float64),), name="a (4, 5) batch"),
        Case(
            (torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]]),),
            name="very large and very negative logits",
            hint="exp(1000) is inf in floating point",
        ),
        Case((torch.full((2, 3), 7.0),), name="equal logits"),
    ]
    mistakes = [
        Mistake(
            "your softmax returns inf or nan for large logits: exp overflows. Subtract the "
            "row maximum before exponentiating; softmax(z - c) = softmax(z) for any "
            "constant c, so the answer does not change.",
            symptom=_not_finite,
        ),
        Mistake(
            "you normalise over the whole tensor: each row must sum to 1, so sum over the "
            "last dimension only (dim=-1, keepdim=True).",
            wrong=lambda z: torch.exp(z) / torch.exp(z).sum(),
        ),
        Mistake(
            "you normalise over the first dimension (dim=0): the softmax runs over the last "
            "one (dim=-1), the scores of one row.",
            wrong=lambda z: torch.softmax(z, dim=0),
        ),
        Mistake(
            "you subtract the maximum of the whole tensor: with rows on very different "
            "scales, a row far below it underflows to 0/0. Subtract each row's own maximum "
            "(z.max(dim=-1, keepdim=True).values).",
            wrong=lambda z: (z - z.max()).exp() / (z - z.max()).exp().sum(-1, keepdim=True),
        ),
        Mistake(
            "you divide the scores by their sum without exponentiating: scores can be "
            "negative or sum to zero; apply exp first.",
            wrong=lambda z: z / z.sum(dim=-1, keepdim=True),
        ),
    ]
    return check(fn, cases, softmax_reference, name="softmax", mistakes=mistakes)


# --------------------------------------------------------------------------- cross-entropy
def xent_grad_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean cross-entropy over N rows: (softmax(logits) - one_hot) / N."""
    n, v = logits.shape
    return (softmax_reference(logits) - F.one_hot(targets, v).to(logits.dtype)) / n


def check_xent_grad(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Exercise 4.4: the gradient of the mean cross-entropy loss with respect to the logits."""
    g = _gen(7)
    cases = [
        Case(
            (torch.tensor([[2.0, 1.0, 0.1]], dtype=torch.float64), torch.tensor([0])),
            name="one row",
        ),
        Case(
            (
                torch.randn(5, 7, generator=g, dtype=torch.float64),
                torch.randint(0, 7, (5,), generator=g),
            ),
            name="a batch of 5 rows",
        ),
        Case(
            (
                torch.tensor([[50.0, 0.0, -50.0], [0.0, 0.0, 0.0]], dtype=torch.float64),
                torch.tensor([2, 1]),
            ),
            name="a confident wrong row and a uniform row",
        ),
    ]

    def one_hot(logits, targets):
        return F.one_hot(targets, logits.shape[1]).to(logits.dtype)

    mistakes = [
        Mistake(
            "your gradient contains inf or nan: compute the softmax stably (subtract the row max).",
            symptom=_not_finite,
        ),
        Mistake(
            "your gradient is N times too large: the loss is the MEAN over the N rows, so "
            "divide p - y by N.",
            wrong=lambda z, t: softmax_reference(z) - one_hot(z, t),
        ),
        Mistake(
            "the sign is flipped: the gradient of -log p_y is p - y, not y - p.",
            wrong=lambda z, t: (one_hot(z, t) - softmax_reference(z)) / z.shape[0],
        ),
        Mistake(
            "you subtracted the one-hot target from the logits; it must be subtracted from "
            "the probabilities softmax(logits).",
            wrong=lambda z, t: (z - one_hot(z, t)) / z.shape[0],
        ),
        Mistake(
            "you forgot to subtract the one-hot target y: the gradient is (p - y) / N.",
            wrong=lambda z, t: softmax_reference(z) / z.shape[0],
        ),
    ]
    return check(fn, cases, xent_grad_reference, name="xent_grad", mistakes=mistakes)


# --------------------------------------------------------------------------- LayerNorm
def layer_norm_reference(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Eq. (eq-4-layernorm): normalise over the last dimension with the biased variance."""
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


def check_layer_norm(fn: Callable[..., torch.Tensor]) -> bool:
    """Exercise 4.5: LayerNorm forward over the last dimension, with gain, bias and eps."""
    g = _gen(3)

    def args(shape, eps=1e-5):
        c = shape[-1]
        x = 3 * torch.randn(*shape, generator=g, dtype=torch.float64) + 1
        gamma = 1 + 0.5 * torch.randn(c, generator=g, dtype=torch.float64)
        beta = 0.5 * torch.randn(c, generator=g, dtype=torch.float64)
        return Case((x, gamma, beta), {"eps": eps}, name=f"x of shape {shape}, eps={eps}")

    cases = [args((4,)), args((3, 5)), args((2, 3, 8)), args((2, 6), eps=0.5)]

    def unbiased(x, gamma, beta, eps=1e-5):
        return (
            gamma * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps)
            + beta
        )

    def eps_outside(x, gamma, beta, eps=1e-5):
        mu = x.mean(-1, keepdim=True)
        sd = ((x - mu) ** 2).mean(-1, keepdim=True).sqrt()
        return gamma * (x - mu) / (sd + eps) + beta

    def first_dim(x, gamma, beta, eps=1e-5):
        mu = x.mean(0, keepdim=True)
        return gamma * (x - mu) / torch.sqrt(((x - mu) ** 2).mean(0, keepdim=True) + eps) + beta

    mistakes = [
        Mistake(
            "you used the unbiased variance (x.var() divides by C - 1 by default); LayerNorm "
            "divides by C: use ((x - mu) ** 2).mean(-1) or x.var(-1, unbiased=False).",
            wrong=unbiased,
        ),
        Mistake(
            "eps belongs inside the square root: (x - mu) / sqrt(var + eps).", wrong=eps_outside
        ),
        Mistake(
            "you normalised correctly but did not apply the gain and bias: "
            "return gamma * x_hat + beta.",
            wrong=lambda x, gamma, beta, eps=1e-5: layer_norm_reference(x, 1.0, 0.0, eps),
        ),
        Mistake(
            "the bias is added after the gain: gamma * x_hat + beta, not (x_hat + beta) * gamma.",
            wrong=lambda x, gamma, beta, eps=1e-5: (
                (layer_norm_reference(x, 1.0, 0.0, eps) + beta) * gamma
            ),
        ),
        Mistake(
            "you normalised over the first dimension; LayerNorm normalises each vector over "
            "its own channels, the last dimension (dim=-1, keepdim=True).",
            wrong=first_dim,
        ),
    ]
    return check(fn, cases, layer_norm_reference, name="layer_norm", mistakes=mistakes)


# --------------------------------------------------------------------------- parameter count
def param_count_reference(vocab_size: int, block_size: int, n_layer: int, n_embd: int) -> int:
    """Parameters of a GPT-2-style model with biases and tied embeddings (Eq. eq-4-param-count)."""
    return param_count(
        GPTConfig(
            vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=1, n_embd=n_embd
        )
    )


def _off_by(delta: Callable[[int, int, int, int], int]) -> Callable[[int, int, int, int], int]:
    """A parameter count that is off from the right one by ``delta(V, T, L, C)``."""
    return lambda V, T, L, C: param_count_reference(V, T, L, C) + delta(V, T, L, C)


def check_param_count(fn: Callable[[int, int, int, int], int]) -> bool:
    """Exercise 4.6: the closed-form parameter count of a GPT with biases and weight tying."""
    cases = [
        Case((50257, 1024, 12, 768), name="GPT-2 small"),
        Case((4096, 256, 6, 192), name="the book's model"),
        Case((65, 8, 1, 4), name="a tiny model"),
        Case((50257, 1024, 24, 1024), name="GPT-2 medium"),
    ]

    mistakes = [
        Mistake(
            "you counted the output layer lm_head as a separate V x C matrix: GPT-2 ties it "
            "to the token embedding wte, so it is stored only once.",
            wrong=_off_by(lambda V, T, L, C: V * C),
        ),
        Mistake(
            "you left out the position embedding wpe (block_size x n_embd).",
            wrong=_off_by(lambda V, T, L, C: -T * C),
        ),
        Mistake(
            "you left out the final LayerNorm ln_f (a gain and a bias: 2 n_embd).",
            wrong=_off_by(lambda V, T, L, C: -2 * C),
        ),
        Mistake(
            "you left out the two LayerNorms inside each block (ln_1 and ln_2: 4 n_embd per "
            "block).",
            wrong=_off_by(lambda V, T, L, C: -4 * C * L),
        ),
        Mistake(
            "you counted no biases: GPT-2 has 9 n_embd Linear biases and 2 n_embd LayerNorm "
            "biases per block, and n_embd more in ln_f.",
            wrong=_off_by(lambda V, T, L, C: -11 * C * L - C),
        ),
        Mistake(
            "your MLP is too small by 4 n_embd^2 per block: c_fc maps C -> 4C and c_proj "
            "maps 4C -> C, 8 C^2 weights in all.",
            wrong=_off_by(lambda V, T, L, C: -4 * C * C * L),
        ),
        Mistake(
            "you forgot the attention's output projection c_proj (C x C weights and C biases "
            "per block).",
            wrong=_off_by(lambda V, T, L, C: -C * C * L - C * L),
        ),
    ]
    return check(fn, cases, param_count_reference, name="param_count", mistakes=mistakes)


# --------------------------------------------------------------------------- AdamW
def adamw_step_reference(
    theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1
):
    """One AdamW step (Eqs. eq-4-adam-m to eq-4-adamw-update); t counts from 1.

    Returns the new (theta, m, v); the inputs are not modified.
    """
    b1, b2 = betas
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    theta = theta - lr * (m_hat / (v_hat.sqrt() + eps) + weight_decay * theta)
    return theta, m, v


def _adam_state(g: torch.Generator, shape: tuple, t: int, fresh: bool) -> tuple:
    """(theta, grad, m, v, t) for step t; ``fresh``: the moments are still zero."""
    theta = torch.randn(*shape, generator=g, dtype=torch.float64)
    grad = torch.randn(*shape, generator=g, dtype=torch.float64)
    m = (
        torch.zeros(shape, dtype=torch.float64)
        if fresh
        else 0.1 * torch.randn(*shape, generator=g, dtype=torch.float64)
    )
    v = (
        torch.zeros(shape, dtype=torch.float64)
        if fresh
        else 0.01 * torch.rand(*shape, generator=g, dtype=torch.float64)
    )
    return theta, grad, m, v, t


def _first_step_not_finite(case: Case, answer: object) -> bool:
    return (
        isinstance(answer, tuple)
        and case.args[4] == 1
        and any(_not_finite(case, x) for x in answer)
    )


def check_adamw_step(fn: Callable) -> bool:
    """Exercise 4.7: one AdamW update with bias correction and decoupled weight decay."""
    g = _gen(11)
    cases = [
        Case(_adam_state(g, (3,), 1, True), dict(lr=0.01), name="the first step, t=1"),
        Case(_adam_state(g, (2, 4), 5, False), dict(lr=3e-3, betas=(0.9, 0.999)), name="step t=5"),
        Case(
            _adam_state(g, (4,), 2, False), dict(lr=0.1, weight_decay=0.5), name="strong decay, t=2"
        ),
    ]

    def no_correction(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        th, m2, v2 = adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, weight_decay)
        return theta - lr * (m2 / (v2.sqrt() + eps) + weight_decay * theta), m2, v2

    def l2(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        return adamw_step_reference(
            theta, grad + weight_decay * theta, m, v, t, lr, betas, eps, 0.0
        )

    def decay_after(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        th, m2, v2 = adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, 0.0)
        return th - lr * weight_decay * th, m2, v2

    def eps_inside(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        th, m2, v2 = adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, weight_decay)
        m_hat, v_hat = m2 / (1 - betas[0] ** t), v2 / (1 - betas[1] ** t)
        return theta - lr * (m_hat / (v_hat + eps).sqrt() + weight_decay * theta), m2, v2

    def no_decay(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        return adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, 0.0)

    mistakes = [
        Mistake(
            "your first step (t=1) returns inf or nan: did you count steps from 0? With t=0 "
            "the correction divides by 1 - beta**0 = 0; Adam's t starts at 1.",
            symptom=_first_step_not_finite,
        ),
        Mistake(
            "you forgot the bias correction: divide m by (1 - beta1**t) and v by "
            "(1 - beta2**t) before the update (Eq. eq-4-adam-bias-correction).",
            wrong=no_correction,
        ),
        Mistake(
            "you added weight_decay * theta to the gradient (an L2 penalty, i.e. Adam with "
            "L2): AdamW decays outside the normalisation, theta -= lr * weight_decay * theta.",
            wrong=l2,
        ),
        Mistake(
            "you applied the decay to the already-updated parameter; AdamW decays the old "
            "value: theta_new = theta - lr * (m_hat / (sqrt(v_hat) + eps) + wd * theta).",
            wrong=decay_after,
        ),
        Mistake("eps goes outside the square root: m_hat / (sqrt(v_hat) + eps).", wrong=eps_inside),
        Mistake(
            "your update has no weight decay: subtract lr * weight_decay * theta.", wrong=no_decay
        ),
    ]
    return check(
        fn, cases, adamw_step_reference, name="adamw_step", rtol=1e-9, atol=1e-12, mistakes=mistakes
    )


# --------------------------------------------------------------------------- attention
def causal_attention_reference(x, W_q, W_k, W_v):
    """One causal attention head: softmax(mask(Q K^T / sqrt(d_k))) V for x of shape (T, C)."""
    q, k, v = x @ W_q, x @ W_k, x @ W_v  # (T, d) each
    T, d = q.shape
    scores = q @ k.T / math.sqrt(d)  # (T, T)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v  # (T, d)


def check_causal_attention(fn: Callable) -> bool:
    """Exercise 4.8: causal self-attention for one head, x (T, C) and W_* (C, d) -> (T, d)."""
    g = _gen(5)

    def args(T, C, d):
        x = torch.randn(T, C, generator=g, dtype=torch.float64)
        return tuple(
            [x]
            + [torch.randn(C, d, generator=g, dtype=torch.float64) / math.sqrt(C) for _ in range(3)]
        )

    cases = [
        Case(args(1, 6, 4), name="a single token"),
        Case(args(3, 6, 4), name="T=3, C=6, d=4"),
        Case(args(5, 8, 2), name="T=5, C=8, d=2"),
    ]
    hint = (
        "shapes: x is (T, C), W_q (C, d), so Q = x @ W_q is (T, d) and the scores Q K^T are (T, T)."
    )

    def variant(mask_fn=None, scale=None, transpose=False, dim=-1):
        def f(x, W_q, W_k, W_v):
            q, k, v = x @ W_q, x @ W_k, x @ W_v
            T, d = q.shape
            s = (k @ q.T if transpose else q @ k.T) / (math.sqrt(d) if scale is None else scale(d))
            if mask_fn is not None:
                s = s.masked_fill(~mask_fn(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
            return torch.softmax(s, dim=dim) @ v

        return f

    mistakes = [
        Mistake(
            "there is no causal mask: every position attends to later tokens too. Set the "
            "scores above the diagonal to -inf before the softmax (torch.tril).",
            wrong=variant(),
        ),
        Mistake(
            "the mask points the wrong way: position i may attend to keys j <= i (the lower "
            "triangle, torch.tril), not to the future.",
            wrong=variant(torch.triu),
        ),
        Mistake(
            "the scores are not scaled: divide Q K^T by sqrt(d_k) (d_k = d, the head size).",
            wrong=variant(torch.tril, scale=lambda d: 1.0),
        ),
        Mistake(
            "you divided by d_k; the scale is sqrt(d_k).",
            wrong=variant(torch.tril, scale=lambda d: d),
        ),
        Mistake(
            "your score matrix is transposed (K Q^T instead of Q K^T): row i must hold query "
            "i's scores against every key.",
            wrong=variant(torch.tril, transpose=True),
        ),
        Mistake(
            "the softmax runs over the wrong dimension: each ROW (one query) must sum to 1, "
            "so use dim=-1.",
            wrong=variant(torch.tril, dim=0),
        ),
    ]
    return check(
        fn, cases, causal_attention_reference, name="causal_attention", hint=hint, mistakes=mistakes
    )
