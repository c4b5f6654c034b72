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
``tests/test_exercises_derivations.py`` checks them against PyTorch and ``gptlib``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptlib.exercises.core import Case, Feedback, compare, run_checks
from gptlib.model import GPTConfig, param_count

# a wrong answer that the feedback can recognise: (wrong function or predicate, explanation)
Mistake = tuple[Callable[..., object], str]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _diagnose(fn: Callable, feedback: Feedback, mistakes: list[Mistake],
              predicates: list[Mistake] = ()) -> str | None:
    """The explanation of the first known mistake that the reader's answers reproduce."""
    for result in feedback.results:
        if result.problem is None:
            continue
        case = result.case
        try:
            got = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        except Exception:  # the error is already in the feedback
            continue
        for predicate, message in predicates:
            if predicate(case, got):
                return message
        for wrong, message in mistakes:
            try:
                expected_wrong = wrong(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
            except Exception:  # this mistake cannot happen on this case
                continue
            if compare(expected_wrong, got, rtol=1e-6, atol=1e-9) is None:
                return message
    return None


def _report(fn: Callable, feedback: Feedback, mistakes: list[Mistake],
            predicates: list[Mistake] = ()) -> bool:
    if not feedback.passed:
        diagnosis = _diagnose(fn, feedback, mistakes, predicates)
        if diagnosis:
            feedback.hint = diagnosis + (f" {feedback.hint}" if feedback.hint else "")
    print(feedback)
    return feedback.passed


def _not_finite(case: Case, got: object) -> bool:
    return isinstance(got, torch.Tensor) and not bool(torch.isfinite(got).all())


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
        Case((torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]]),),
             name="very large and very negative logits",
             hint="exp(1000) is inf in floating point"),
        Case((torch.full((2, 3), 7.0),), name="equal logits"),
    ]
    mistakes = [
        (lambda z: torch.exp(z) / torch.exp(z).sum(), "you normalise over the whole tensor: "
         "each row must sum to 1, so sum over the last dimension only (dim=-1, keepdim=True)."),
        (lambda z: torch.softmax(z, dim=0), "you normalise over the first dimension (dim=0): "
         "the softmax runs over the last one (dim=-1), the scores of one row."),
        (lambda z: torch.exp(z - z.max()) / torch.exp(z - z.max()).sum(dim=-1, keepdim=True),
         "you subtract the maximum of the whole tensor: with rows on very different scales, a "
         "row far below it underflows to 0/0. Subtract each row's own maximum "
         "(z.max(dim=-1, keepdim=True).values)."),
        (lambda z: z / z.sum(dim=-1, keepdim=True), "you divide the scores by their sum without "
         "exponentiating: scores can be negative or sum to zero; apply exp first."),
    ]
    predicates = [(_not_finite, "your softmax returns inf or nan for large logits: exp overflows. "
                   "Subtract the row maximum before exponentiating; softmax(z - c) = softmax(z) "
                   "for any constant c, so the answer does not change.")]
    feedback = run_checks(fn, cases, softmax_reference, name="softmax")
    return _report(fn, feedback, mistakes, predicates)


# --------------------------------------------------------------------------- cross-entropy
def xent_grad_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean cross-entropy over N rows: (softmax(logits) - one_hot) / N."""
    n, v = logits.shape
    return (softmax_reference(logits) - F.one_hot(targets, v).to(logits.dtype)) / n


def check_xent_grad(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Exercise 4.4: the gradient of the mean cross-entropy loss with respect to the logits."""
    g = _gen(7)
    cases = [
        Case((torch.tensor([[2.0, 1.0, 0.1]], dtype=torch.float64), torch.tensor([0])),
             name="one row"),
        Case((torch.randn(5, 7, generator=g, dtype=torch.float64),
              torch.randint(0, 7, (5,), generator=g)), name="a batch of 5 rows"),
        Case((torch.tensor([[50.0, 0.0, -50.0], [0.0, 0.0, 0.0]], dtype=torch.float64),
              torch.tensor([2, 1])), name="a confident wrong row and a uniform row"),
    ]

    def one_hot(logits, targets):
        return F.one_hot(targets, logits.shape[1]).to(logits.dtype)

    mistakes = [
        (lambda z, t: softmax_reference(z) - one_hot(z, t), "your gradient is N times too large: "
         "the loss is the MEAN over the N rows, so divide p - y by N."),
        (lambda z, t: (one_hot(z, t) - softmax_reference(z)) / z.shape[0],
         "the sign is flipped: the gradient of -log p_y is p - y, not y - p."),
        (lambda z, t: (z - one_hot(z, t)) / z.shape[0], "you subtracted the one-hot target from "
         "the logits; it must be subtracted from the probabilities softmax(logits)."),
        (lambda z, t: softmax_reference(z) / z.shape[0], "you forgot to subtract the one-hot "
         "target y: the gradient is (p - y) / N."),
    ]
    feedback = run_checks(fn, cases, xent_grad_reference, name="xent_grad")
    return _report(fn, feedback, mistakes, [(_not_finite, "your gradient contains inf or nan: "
                                             "compute the softmax stably (subtract the row max).")])


# --------------------------------------------------------------------------- LayerNorm
def layer_norm_reference(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                         eps: float = 1e-5) -> torch.Tensor:
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
        return gamma * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) \
            + beta

    def eps_outside(x, gamma, beta, eps=1e-5):
        mu = x.mean(-1, keepdim=True)
        sd = ((x - mu) ** 2).mean(-1, keepdim=True).sqrt()
        return gamma * (x - mu) / (sd + eps) + beta

    def first_dim(x, gamma, beta, eps=1e-5):
        mu = x.mean(0, keepdim=True)
        return gamma * (x - mu) / torch.sqrt(((x - mu) ** 2).mean(0, keepdim=True) + eps) + beta

    mistakes = [
        (unbiased, "you used the unbiased variance (x.var() divides by C - 1 by default); "
         "LayerNorm divides by C: use ((x - mu) ** 2).mean(-1) or x.var(-1, unbiased=False)."),
        (eps_outside, "eps belongs inside the square root: (x - mu) / sqrt(var + eps)."),
        (lambda x, gamma, beta, eps=1e-5: layer_norm_reference(x, 1.0, 0.0, eps),
         "you normalised correctly but did not apply the gain and bias: "
         "return gamma * x_hat + beta."),
        (lambda x, gamma, beta, eps=1e-5: (layer_norm_reference(x, 1.0, 0.0, eps) + beta) * gamma,
         "the bias is added after the gain: gamma * x_hat + beta, not (x_hat + beta) * gamma."),
        (first_dim, "you normalised over the first dimension; LayerNorm normalises each vector "
         "over its own channels, the last dimension (dim=-1, keepdim=True)."),
    ]
    feedback = run_checks(fn, cases, layer_norm_reference, name="layer_norm")
    return _report(fn, feedback, mistakes)


# --------------------------------------------------------------------------- parameter count
def param_count_reference(vocab_size: int, block_size: int, n_layer: int, n_embd: int) -> int:
    """Parameters of a GPT-2-style model with biases and tied embeddings (Eq. eq-4-param-count)."""
    return param_count(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                                 n_head=1, n_embd=n_embd))


def check_param_count(fn: Callable[[int, int, int, int], int]) -> bool:
    """Exercise 4.6: the closed-form parameter count of a GPT with biases and weight tying."""
    cases = [Case((50257, 1024, 12, 768), name="GPT-2 small"),
             Case((4096, 256, 6, 192), name="the book's model"),
             Case((65, 8, 1, 4), name="a tiny model"),
             Case((50257, 1024, 24, 1024), name="GPT-2 medium")]

    def ref_plus(delta):
        return lambda V, T, L, C: param_count_reference(V, T, L, C) + delta(V, T, L, C)

    mistakes = [
        (ref_plus(lambda V, T, L, C: V * C), "you counted the output layer lm_head as a separate "
         "V x C matrix: GPT-2 ties it to the token embedding wte, so it is stored only once."),
        (ref_plus(lambda V, T, L, C: -T * C), "you left out the position embedding wpe "
         "(block_size x n_embd)."),
        (ref_plus(lambda V, T, L, C: -2 * C), "you left out the final LayerNorm ln_f "
         "(a gain and a bias: 2 n_embd)."),
        (ref_plus(lambda V, T, L, C: -4 * C * L), "you left out the two LayerNorms inside each "
         "block (ln_1 and ln_2: 4 n_embd per block)."),
        (ref_plus(lambda V, T, L, C: -11 * C * L - C), "you counted no biases: GPT-2 has 9 n_embd "
         "Linear biases and 2 n_embd LayerNorm biases per block, and n_embd more in ln_f."),
        (ref_plus(lambda V, T, L, C: -4 * C * C * L), "your MLP is too small by 4 n_embd^2 per "
         "block: c_fc maps C -> 4C and c_proj maps 4C -> C, 8 C^2 weights in all."),
        (ref_plus(lambda V, T, L, C: -C * C * L - C * L), "you forgot the attention's output "
         "projection c_proj (C x C weights and C biases per block)."),
    ]
    feedback = run_checks(fn, cases, param_count_reference, name="param_count")
    return _report(fn, feedback, mistakes)


# --------------------------------------------------------------------------- AdamW
def adamw_step_reference(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                         weight_decay=0.1):
    """One AdamW step (Eqs. eq-4-adam-m to eq-4-adamw-update); t counts from 1.

    Returns the new (theta, m, v); the inputs are not modified.
    """
    b1, b2 = betas
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    theta = theta - lr * (m_hat / (v_hat.sqrt() + eps) + weight_decay * theta)
    return theta, m, v


def check_adamw_step(fn: Callable) -> bool:
    """Exercise 4.7: one AdamW update with bias correction and decoupled weight decay."""
    g = _gen(11)

    def state(shape, t, fresh):
        theta = torch.randn(*shape, generator=g, dtype=torch.float64)
        grad = torch.randn(*shape, generator=g, dtype=torch.float64)
        m = torch.zeros(shape, dtype=torch.float64) if fresh else 0.1 * torch.randn(
            *shape, generator=g, dtype=torch.float64)
        v = torch.zeros(shape, dtype=torch.float64) if fresh else 0.01 * torch.rand(
            *shape, generator=g, dtype=torch.float64)
        return theta, grad, m, v, t

    cases = [Case(state((3,), 1, True), dict(lr=0.01), name="the first step, t=1"),
             Case(state((2, 4), 5, False), dict(lr=3e-3, betas=(0.9, 0.999)), name="step t=5"),
             Case(state((4,), 2, False), dict(lr=0.1, weight_decay=0.5), name="strong decay, t=2")]

    def no_correction(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                      weight_decay=0.1):
        th, m2, v2 = adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, weight_decay)
        return theta - lr * (m2 / (v2.sqrt() + eps) + weight_decay * theta), m2, v2

    def l2(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        return adamw_step_reference(theta, grad + weight_decay * theta, m, v, t, lr, betas, eps,
                                    0.0)

    def decay_after(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                    weight_decay=0.1):
        th, m2, v2 = adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, 0.0)
        return th - lr * weight_decay * th, m2, v2

    def eps_inside(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                   weight_decay=0.1):
        th, m2, v2 = adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, weight_decay)
        m_hat, v_hat = m2 / (1 - betas[0] ** t), v2 / (1 - betas[1] ** t)
        return theta - lr * (m_hat / (v_hat + eps).sqrt() + weight_decay * theta), m2, v2

    def no_decay(theta, grad, m, v, t, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        return adamw_step_reference(theta, grad, m, v, t, lr, betas, eps, 0.0)

    mistakes = [
        (no_correction, "you forgot the bias correction: divide m by (1 - beta1**t) and v by "
         "(1 - beta2**t) before the update (Eq. eq-4-adam-bias-correction)."),
        (l2, "you added weight_decay * theta to the gradient (an L2 penalty, i.e. Adam with L2): "
         "AdamW decays outside the normalisation, theta -= lr * weight_decay * theta."),
        (decay_after, "you applied the decay to the already-updated parameter; AdamW decays the "
         "old value: theta_new = theta - lr * (m_hat / (sqrt(v_hat) + eps) + wd * theta)."),
        (eps_inside, "eps goes outside the square root: m_hat / (sqrt(v_hat) + eps)."),
        (no_decay, "your update has no weight decay: subtract lr * weight_decay * theta."),
    ]

    def zero_division(case: Case, got: object) -> bool:
        return isinstance(got, tuple) and case.args[4] == 1 and any(
            isinstance(x, torch.Tensor) and not bool(torch.isfinite(x).all()) for x in got)

    predicates = [(zero_division, "your first step (t=1) returns inf or nan: did you count steps "
                   "from 0? With t=0 the correction divides by 1 - beta**0 = 0; Adam's t starts "
                   "at 1.")]
    feedback = run_checks(fn, cases, adamw_step_reference, name="adamw_step", rtol=1e-9,
                          atol=1e-12)
    return _report(fn, feedback, mistakes, predicates)


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
        return tuple([x] + [torch.randn(C, d, generator=g, dtype=torch.float64) / math.sqrt(C)
                            for _ in range(3)])

    cases = [Case(args(1, 6, 4), name="a single token"),
             Case(args(3, 6, 4), name="T=3, C=6, d=4"),
             Case(args(5, 8, 2), name="T=5, C=8, d=2")]
    hint = ("shapes: x is (T, C), W_q (C, d), so Q = x @ W_q is (T, d) and the scores Q K^T "
            "are (T, T).")

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
        (variant(), "there is no causal mask: every position attends to later tokens too. Set the "
         "scores above the diagonal to -inf before the softmax (torch.tril)."),
        (variant(torch.triu), "the mask points the wrong way: position i may attend to keys "
         "j <= i (the lower triangle, torch.tril), not to the future."),
        (variant(torch.tril, scale=lambda d: 1.0), "the scores are not scaled: divide Q K^T by "
         "sqrt(d_k) (d_k = d, the head size)."),
        (variant(torch.tril, scale=lambda d: d), "you divided by d_k; the scale is sqrt(d_k)."),
        (variant(torch.tril, transpose=True), "your score matrix is transposed (K Q^T instead of "
         "Q K^T): row i must hold query i's scores against every key."),
        (variant(torch.tril, dim=0), "the softmax runs over the wrong dimension: each ROW (one "
         "query) must sum to 1, so use dim=-1."),
    ]
    feedback = run_checks(fn, cases, causal_attention_reference, name="causal_attention",
                          hint=hint)
    return _report(fn, feedback, mistakes)
