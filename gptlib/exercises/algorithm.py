"""Checkers for the exercises of chapter 3 (the algorithm): batches, attention, the learning-rate
schedule, weight-decay groups, perplexity and gradient accumulation.

Each ``check_*`` function takes the student's function, runs it on several inputs, compares the
result with ``gptlib``'s own answer (via :func:`gptlib.exercises.core.run_checks`), prints the
feedback and returns ``True`` or ``False``. When an answer is wrong, the feedback names the typical
mistake that explains it (:func:`gptlib.exercises.core.diagnose`, shared by every chapter): a
missing or off-by-one shift, a forgotten causal mask, a warmup that starts at zero, a perplexity
averaged the wrong way. Some checkers add *probes*, inputs built so that those mistakes are easy
to recognise (token ids equal to 100 + their position, a schedule with round numbers).

Two answers are judged rather than compared, because more than one form is right: the
weight-decay groups (any order of names; the feedback says which parameter is in the wrong group)
and gradient accumulation (the gradients left in ``p.grad``, and the micro-batch sizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptlib.exercises.core import Case, Mistake, check, summarize
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, decay_groups, lr_at


def _tiny_gpt(config: GPTConfig) -> GPT:
    """A GPT with the same weights every time; the student's random state is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return GPT(config)


# ---- 1. next-token batches ------------------------------------------------------------------


def shift_reference(tokens: torch.Tensor, starts: list[int], block_size: int):
    """x[b] = tokens[s_b : s_b + T] and y[b] = tokens[s_b + 1 : s_b + T + 1], as get_batch."""
    x = torch.stack([tokens[s : s + block_size] for s in starts])  # (B, T)
    y = torch.stack([tokens[s + 1 : s + block_size + 1] for s in starts])  # (B, T)
    return x, y


def _windows(dx: int, dy: int) -> Callable:
    """A wrong shift: x starts ``dx`` tokens after each start, y starts ``dy`` after it."""

    def shift(tokens, starts, block_size):
        x = torch.stack([tokens[s + dx : s + dx + block_size] for s in starts])
        return x, torch.stack([tokens[s + dy : s + dy + block_size] for s in starts])

    return shift


def _not_a_pair(case: Case, answer: object) -> bool:
    returned = not isinstance(answer, Exception)
    return returned and not (isinstance(answer, (tuple, list)) and len(answer) == 2)


def _wrong_shapes(case: Case, answer: object) -> bool:
    tokens, starts, block_size = case.args
    return (
        isinstance(answer, (tuple, list))
        and len(answer) == 2
        and all(isinstance(t, torch.Tensor) for t in answer)
        and any(tuple(t.shape) != (len(starts), block_size) for t in answer)
    )


_SHIFT_MISTAKES = [
    Mistake("return a pair (x, y) of tensors of shape (B, T)", symptom=_not_a_pair),
    Mistake(
        "x and y must both have shape (B, T); a window of T + 1 tokens gives x = its first "
        "T tokens and y = its last T",
        symptom=_wrong_shapes,
    ),
    Mistake(
        "your targets equal your inputs: the model would learn to copy its input and the "
        "loss would fall to almost zero. Shift by one: y = tokens[s + 1 : s + T + 1].",
        wrong=_windows(0, 0),
    ),
    Mistake(
        "your targets are shifted by two positions; the target of x[t] is the very next "
        "token, tokens[s + t + 1].",
        wrong=_windows(0, 2),
    ),
    Mistake(
        "your targets are the *previous* tokens: shift to the left, y = tokens[s+1 : s+T+1].",
        wrong=_windows(0, -1),
    ),
    Mistake(
        "both windows start one token late: x must begin at tokens[s], not tokens[s + 1].",
        wrong=_windows(1, 2),
    ),
    Mistake(
        "both windows start one token early: x must begin at tokens[s].", wrong=_windows(-1, 0)
    ),
    Mistake(
        "x and y are the same window starting at s + 1: x must be tokens[s : s + T].",
        wrong=_windows(1, 1),
    ),
]


def check_shift(fn: Callable) -> bool:
    """fn(tokens, starts, block_size) -> (x, y): inputs and next-token targets, shapes (B, T)."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        Case(args=(torch.randint(0, 50, (40,), generator=gen), [0, 7, 29], 10)),
        Case(args=(torch.arange(12), [0], 11), name="one window that uses every token"),
        Case(args=(torch.randint(0, 9, (100,), generator=gen), [3, 3, 60, 88], 5)),
    ]
    probes = [Case(args=(torch.arange(100, 200), [10, 40], 8))]  # token value = 100 + position
    return check(fn, cases, shift_reference, mistakes=_SHIFT_MISTAKES, probes=probes)


# ---- 2. causal attention --------------------------------------------------------------------


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) v with a causal mask; q, k, v (..., T, d) -> (..., T, d)."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (..., T, T)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v


def _attention(
    allowed: Callable | None = torch.tril, scaled: bool = True, dim: int = -1
) -> Callable:
    """Attention with a wrong mask (``allowed``: torch.tril is right), scale or softmax dim."""

    def attention(q, k, v):
        T = q.size(-2)
        scores = q @ k.transpose(-2, -1) / (math.sqrt(k.size(-1)) if scaled else 1.0)
        if allowed is not None:
            scores = scores.masked_fill(~allowed(torch.ones(T, T, dtype=torch.bool)), -math.inf)
        return scores.softmax(dim).nan_to_num() @ v

    return attention


_ATTENTION_MISTAKES = [
    Mistake(
        "the output contains NaN: some query has every key masked (a row of -inf). The "
        "diagonal must stay allowed: position i attends to itself",
        symptom=lambda case, answer: (
            isinstance(answer, torch.Tensor) and bool(torch.isnan(answer).any())
        ),
    ),
    Mistake(
        "the output at early positions depends on later ones: you forgot the causal mask "
        "(query i may only attend to keys j <= i)",
        wrong=_attention(allowed=None),
    ),
    Mistake(
        "the mask is the wrong way round: query i must see keys 0..i (torch.tril), not i..T-1",
        wrong=_attention(allowed=torch.triu),
    ),
    Mistake(
        "the scores are not divided by sqrt(d_k), the square root of the head size",
        wrong=_attention(scaled=False),
    ),
    Mistake(
        "the softmax runs over the queries (dim=-2); each query's weights over the keys "
        "must sum to 1 (dim=-1)",
        wrong=_attention(dim=-2),
    ),
]


def check_causal_attention(fn: Callable) -> bool:
    """fn(q, k, v) -> causal self-attention output, for inputs of shape (B, nh, T, d)."""
    gen = torch.Generator().manual_seed(1)
    cases = [
        Case(args=tuple(torch.randn(2, 3, 5, 4, generator=gen) for _ in range(3))),
        Case(
            args=tuple(torch.randn(1, 1, 1, 8, generator=gen) for _ in range(3)),
            name="a single position",
        ),
        Case(args=tuple(torch.randn(1, 2, 7, 16, generator=gen) for _ in range(3))),
    ]
    probes = [Case(args=tuple(torch.randn(1, 1, 6, 4, generator=gen) for _ in range(3)))]
    return check(
        fn,
        cases,
        attention_reference,
        rtol=1e-4,
        atol=1e-5,
        mistakes=_ATTENTION_MISTAKES,
        probes=probes,
    )


# ---- 3. the learning-rate schedule ----------------------------------------------------------


def lr_schedule_reference(
    step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int
) -> float:
    """gptlib.train.lr_at: linear warmup to max_lr, cosine decay to min_lr, then min_lr."""
    cfg = TrainConfig(max_steps=max_steps, lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps)
    return lr_at(step, cfg)


def _cosine(hi: float, lo: float, progress: float) -> float:
    """From hi at progress 0 down to lo at progress 1, along half a cosine."""
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * progress))


# The wrong schedules take (t, max_lr, min_lr, warmup_steps, max_steps) = (t, hi, lo, W, S).
_LR_MISTAKES = [
    Mistake(
        "the warmup starts at zero: use max_lr * (t + 1) / W, so that step 0 already moves "
        "the weights",
        wrong=lambda t, hi, lo, W, S: (
            hi * t / W if t < W else lr_schedule_reference(t, hi, lo, W, S)
        ),
    ),
    Mistake(
        "the cosine must start at the end of the warmup: progress = (t - W) / (S - W)",
        wrong=lambda t, hi, lo, W, S: hi * (t + 1) / W if t < W else _cosine(hi, lo, min(t / S, 1)),
    ),
    Mistake(
        "the cosine should end at min_lr, not 0: min_lr + 0.5 (max_lr - min_lr)(1 + cos(...))",
        wrong=lambda t, hi, lo, W, S: (
            hi * (t + 1) / W if t < W else _cosine(hi, 0.0, min((t - W) / (S - W), 1))
        ),
    ),
    Mistake(
        "there is no warmup: the rate must rise linearly over the first warmup_steps steps",
        wrong=lambda t, hi, lo, W, S: _cosine(hi, lo, min(t / S, 1)),
    ),
    Mistake(
        "after max_steps the rate must stay at min_lr (the cosine turns upwards again)",
        wrong=lambda t, hi, lo, W, S: (
            hi * (t + 1) / W if t < W else _cosine(hi, lo, (t - W) / (S - W))
        ),
    ),
]


def check_lr_schedule(fn: Callable) -> bool:
    """fn(step, max_lr, min_lr, warmup_steps, max_steps) -> the learning rate at that step."""
    configs = [(1e-3, 1e-4, 10, 110), (6e-4, 6e-5, 100, 1000), (0.5, 0.0, 1, 5)]
    cases = [
        Case(args=(t, *c))
        for c in configs
        for t in sorted({0, 1, c[2] - 1, c[2], (c[2] + c[3]) // 2, c[3] - 1, c[3], c[3] + 7})
    ]
    probes = [Case(args=(t, 1.0, 0.1, 10, 30)) for t in (0, 3, 9, 10, 17, 20, 29, 30, 40)]
    return check(
        fn,
        cases,
        lr_schedule_reference,
        rtol=1e-6,
        atol=1e-12,
        mistakes=_LR_MISTAKES,
        probes=probes,
    )


# ---- 4. weight-decay groups -----------------------------------------------------------------


def _decay_problem(case: Case, answer) -> str | None:
    """What is wrong with the groups ``answer`` for the model ``case.args[0]``; None if right."""
    model = case.args[0]
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return f"return a pair (decay_names, no_decay_names), got {summarize(answer)}"
    decay, no_decay = (list(g) for g in answer)
    want_decay, want_no_decay = decay_groups(model)
    params = dict(model.named_parameters())
    if any(not isinstance(n, str) for n in decay + no_decay):
        return "the groups must hold parameter *names* (strings from model.named_parameters())"
    if len(set(decay + no_decay)) != len(decay + no_decay):
        twice = sorted({n for n in decay + no_decay if (decay + no_decay).count(n) > 1})
        return f"{twice[:3]} listed twice: each parameter belongs to exactly one group"
    unknown = sorted(set(decay + no_decay) - set(params))
    if unknown:
        return (
            f"{unknown[:3]} are not names of model.named_parameters() (lm_head.weight is the "
            "same tensor as wte.weight and is listed once, as wte.weight)"
        )
    missing = sorted(set(params) - set(decay + no_decay))
    if missing:
        return f"{len(missing)} parameters are in neither group, e.g. {missing[:3]}"
    wrongly = sorted(set(decay) - set(want_decay), key=list(params).index)
    if wrongly:
        biases = [n for n in wrongly if n.endswith("bias")]
        gains = [n for n in wrongly if not n.endswith("bias")]
        parts = [
            f"{kind} should not be decayed: {names[:3]}" + (" ..." * (len(names) > 3))
            for kind, names in (("biases", biases), ("LayerNorm gains", gains))
            if names
        ]
        return "; ".join(parts) + " (only matrices, parameters with p.dim() >= 2, are decayed)"
    spared = sorted(set(no_decay) - set(want_no_decay))
    if spared:
        return (
            f"matrices should be decayed: {spared[:3]}; every parameter with p.dim() >= 2 "
            "(Linear weights, embeddings) goes in the decay group"
        )
    return None


def check_decay_groups(fn: Callable) -> bool:
    """fn(model) -> (decay_names, no_decay_names), names from model.named_parameters()."""
    models = {
        "tiny GPT": GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8),
        "GPT without biases": GPTConfig(
            vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4, bias=False
        ),
    }
    cases = [Case(args=(_tiny_gpt(config),), name=label) for label, config in models.items()]
    return check(fn, cases, judge=_decay_problem)


# ---- 5. perplexity --------------------------------------------------------------------------


def perplexity_reference(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """exp of the mean cross-entropy over the positions whose target is not -100."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
    )
    return math.exp(loss.item())


def _token_losses(logits: torch.Tensor, targets: torch.Tensor):
    """Cross-entropy at each position (B, T), 0 where the target is -100, and the scored mask."""
    nll = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none"
    )
    return nll.view(targets.shape), targets != -100


def _ignored_targets_raise(case: Case, answer: object) -> bool:
    return isinstance(answer, Exception) and bool((case.args[1] == -100).any())


def _mean_loss(logits, targets) -> float:
    nll, scored = _token_losses(logits, targets)
    return (nll.sum() / scored.sum()).item()


def _mean_of_exp(logits, targets) -> float:
    nll, scored = _token_losses(logits, targets)
    return nll[scored].exp().mean().item()


def _per_sequence_first(logits, targets) -> float:
    nll, scored = _token_losses(logits, targets)
    return math.exp((nll.sum(1) / scored.sum(1)).mean().item())


_PERPLEXITY_MISTAKES = [
    Mistake(
        "your function fails on targets equal to -100: leave those positions out",
        symptom=_ignored_targets_raise,
    ),
    Mistake("you returned the loss (nats per token); perplexity is exp(loss)", wrong=_mean_loss),
    Mistake(
        "perplexity is exp of the *mean* loss, not of the summed loss",
        wrong=lambda z, y: math.exp(_token_losses(z, y)[0].sum().item()),
    ),
    Mistake(
        "average the loss first, then exponentiate: exp(mean), not mean(exp)", wrong=_mean_of_exp
    ),
    Mistake(
        "average over all scored tokens of the batch, not over sequences first",
        wrong=_per_sequence_first,
    ),
    Mistake(
        "positions whose target is -100 must be left out of the mean",
        wrong=lambda z, y: math.exp(_token_losses(z, y)[0].sum().item() / y.numel()),
    ),
]


def check_perplexity(fn: Callable) -> bool:
    """fn(logits (B, T, V), targets (B, T)) -> perplexity (a float); targets -100 are ignored."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 7, generator=gen)
    targets = torch.randint(0, 7, (2, 6), generator=gen)
    masked = targets.clone()
    masked[0, :2], masked[1, :5] = -100, -100
    cases = [
        Case(args=(logits, targets)),
        Case(args=(logits, masked), name="with -100 targets"),
        Case(
            args=(torch.zeros(1, 3, 5), torch.tensor([[0, 4, 2]])),
            name="uniform logits: perplexity = V = 5",
        ),
    ]
    return check(fn, cases, perplexity_reference, rtol=1e-5, mistakes=_PERPLEXITY_MISTAKES)


# ---- 6. gradient accumulation ---------------------------------------------------------------


def _accumulation_setup(micro_batches: int):
    """A tiny GPT (the same weights every time) and a batch of 4 sequences per micro-batch."""
    config = GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8)
    gen = torch.Generator().manual_seed(micro_batches)
    x, y = torch.randint(0, 13, (2, 4 * micro_batches, 6), generator=gen)
    return _tiny_gpt(config), x, y


def _grads(model: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _accumulated(fn: Callable) -> Callable:
    """Run fn(model, x, y, micro_batches); return the gradients it leaves and its batch sizes."""

    def accumulate(micro_batches: int):
        model, x, y = _accumulation_setup(micro_batches)
        sizes = []
        hook = model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].size(0)))
        try:
            fn(model, x, y, micro_batches)
        finally:
            hook.remove()
        return _grads(model), sizes

    return accumulate


def _accumulation_problem(case: Case, answer) -> str | None:
    (A,), (got, sizes) = case.args, answer
    model, x, y = _accumulation_setup(A)
    model(x, y)[1].backward()  # the whole batch at once: the gradients to reproduce
    want = _grads(model)
    if any(g is None for g in got):
        return "some parameters have no gradient: call loss.backward() for every micro-batch"
    if sizes != [x.size(0) // A] * A:
        return (
            f"expected {A} forward passes of {x.size(0) // A} sequences each, got batch sizes "
            f"{sizes}: split x and y into micro-batches, e.g. with x.chunk({A})"
        )
    if all(torch.allclose(g, w, rtol=1e-4, atol=1e-7) for g, w in zip(got, want, strict=True)):
        return None
    ratio = (
        torch.cat([g.flatten() for g in got]).norm() / torch.cat([g.flatten() for g in want]).norm()
    ).item()
    if math.isclose(ratio, A, rel_tol=1e-3):
        return (
            f"the gradients are {A} times too large: divide each micro-batch loss by the "
            f"number of micro-batches ({A}) before backward()"
        )
    if math.isclose(ratio, 1 / A, rel_tol=1e-3):
        return f"the gradients are {A} times too small: divide each loss by {A} only once"
    return (
        "the accumulated gradients differ from those of the whole batch; do not zero the "
        "gradients between micro-batches (they must add up)"
    )


def check_accumulation(fn: Callable) -> bool:
    """fn(model, x, y, micro_batches): leave in p.grad the gradient of the mean loss over x."""
    cases = [Case(args=(A,), name=f"{A} micro-batch" + "es" * (A > 1)) for A in (1, 2, 4)]
    return check(
        _accumulated(fn),
        cases,
        judge=_accumulation_problem,
        name=getattr(fn, "__name__", "accumulate"),
    )
