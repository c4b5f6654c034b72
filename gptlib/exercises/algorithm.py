"""Checkers for the exercises of chapter 3 (the algorithm): batches, attention, the learning-rate
schedule, weight-decay groups, perplexity and gradient accumulation.

Each ``check_*`` function takes the student's function, runs it on several inputs, compares the
result with ``gptlib``'s own answer (via :func:`gptlib.exercises.core.run_checks`), prints the
feedback and returns ``True`` or ``False``. When an answer is wrong, the checker also runs it on
a diagnostic input built so that the usual mistakes are recognisable (token ids equal to their
positions, a schedule with round numbers, ...) and names the mistake in the hint: a missing or
off-by-one shift, a forgotten causal mask, a warmup that starts at zero, biases in the decay
group, a loss that was not divided by the number of micro-batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptlib.exercises.core import Case, CaseResult, Feedback, run_checks, summarize
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, decay_groups, lr_at


def _report(feedback: Feedback, diagnosis: str | None) -> bool:
    if not feedback.passed and diagnosis:
        feedback.hint = diagnosis
    print(feedback)
    return feedback.passed


def _safe(fn: Callable, *args):
    """Call the student's function; None if it raises (the main check reports the error)."""
    try:
        return fn(*args)
    except Exception:
        return None


def _same(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.double(), b.double(), atol=1e-6, equal_nan=True)))


# ---- 1. next-token batches ------------------------------------------------------------------

def reference_shift(tokens: torch.Tensor, starts: list[int], block_size: int):
    """x[b] = tokens[s_b : s_b + T] and y[b] = tokens[s_b + 1 : s_b + T + 1], as get_batch."""
    x = torch.stack([tokens[s : s + block_size] for s in starts])  # (B, T)
    y = torch.stack([tokens[s + 1 : s + block_size + 1] for s in starts])  # (B, T)
    return x, y


_SHIFT_MISTAKES = {
    (0, 0): "your targets equal your inputs: the model would learn to copy its input and the "
            "loss would fall to almost zero. Shift by one: y = tokens[s + 1 : s + T + 1].",
    (0, 2): "your targets are shifted by two positions; the target of x[t] is the very next "
            "token, tokens[s + t + 1].",
    (0, -1): "your targets are the *previous* tokens: shift to the left, y = tokens[s+1 : s+T+1].",
    (1, 2): "both windows start one token late: x must begin at tokens[s], not tokens[s + 1].",
    (-1, 0): "both windows start one token early: x must begin at tokens[s].",
    (1, 1): "x and y are the same window starting at s + 1: x must be tokens[s : s + T].",
}


def check_shift(fn: Callable) -> bool:
    """fn(tokens, starts, block_size) -> (x, y): inputs and next-token targets, shapes (B, T)."""
    gen = torch.Generator().manual_seed(0)
    cases = [Case(args=(torch.randint(0, 50, (40,), generator=gen), [0, 7, 29], 10)),
             Case(args=(torch.arange(12), [0], 11), name="one window that uses every token"),
             Case(args=(torch.randint(0, 9, (100,), generator=gen), [3, 3, 60, 88], 5))]
    feedback = run_checks(fn, cases, reference_shift, name=getattr(fn, "__name__", "shift"))
    diagnosis = None
    tokens, starts, T = torch.arange(100, 200), [10, 40], 8  # token value = 100 + position
    got = _safe(fn, tokens, starts, T)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        diagnosis = "return a pair (x, y) of tensors of shape (B, T)"
    elif all(isinstance(t, torch.Tensor) for t in got):
        x_ref, _ = reference_shift(tokens, starts, T)
        if got[0].shape != x_ref.shape or got[1].shape != x_ref.shape:
            diagnosis = (f"x and y must both have shape (B, T) = {tuple(x_ref.shape)}; a window "
                         "of T + 1 tokens gives x = its first T tokens and y = its last T")
        else:
            dx, dy = (got[0] - x_ref).unique(), (got[1] - x_ref).unique()
            if len(dx) == 1 and len(dy) == 1:
                diagnosis = _SHIFT_MISTAKES.get((int(dx), int(dy)))
    return _report(feedback, diagnosis)


# ---- 2. causal attention --------------------------------------------------------------------

def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) v with a causal mask; q, k, v (..., T, d) -> (..., T, d)."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (..., T, T)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v


def _attention_variants(q, k, v) -> dict[str, torch.Tensor]:
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))
    tril = torch.tril(torch.ones(T, T, dtype=torch.bool))
    raw = q @ k.transpose(-2, -1)
    return {
        "the output at early positions depends on later ones: you forgot the causal mask (query "
        "i may only attend to keys j <= i)": scores.softmax(-1) @ v,
        "the mask is the wrong way round: query i must see keys 0..i (torch.tril), not i..T-1":
            scores.masked_fill(~tril.T, float("-inf")).softmax(-1) @ v,
        "the scores are not divided by sqrt(d_k), the square root of the head size":
            raw.masked_fill(~tril, float("-inf")).softmax(-1) @ v,
        "the softmax runs over the queries (dim=-2); each query's weights over the keys must sum "
        "to 1 (dim=-1)": scores.masked_fill(~tril, float("-inf")).softmax(-2).nan_to_num() @ v,
    }


def check_causal_attention(fn: Callable) -> bool:
    """fn(q, k, v) -> causal self-attention output, for inputs of shape (B, nh, T, d)."""
    gen = torch.Generator().manual_seed(1)
    cases = [Case(args=tuple(torch.randn(2, 3, 5, 4, generator=gen) for _ in range(3))),
             Case(args=tuple(torch.randn(1, 1, 1, 8, generator=gen) for _ in range(3)),
                  name="a single position"),
             Case(args=tuple(torch.randn(1, 2, 7, 16, generator=gen) for _ in range(3)))]
    feedback = run_checks(fn, cases, reference_attention, rtol=1e-4, atol=1e-5,
                          name=getattr(fn, "__name__", "attention"))
    q, k, v = (torch.randn(1, 1, 6, 4, generator=gen) for _ in range(3))
    got, diagnosis = _safe(fn, q, k, v), None
    if isinstance(got, torch.Tensor) and torch.isnan(got).any():
        diagnosis = ("the output contains NaN: some query has every key masked (a row of -inf). "
                     "The diagonal must stay allowed: position i attends to itself")
    for message, wrong in _attention_variants(q, k, v).items():
        if diagnosis is None and _same(got, wrong):
            diagnosis = message
    return _report(feedback, diagnosis)


# ---- 3. the learning-rate schedule ----------------------------------------------------------

def reference_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int,
                 max_steps: int) -> float:
    """gptlib.train.lr_at: linear warmup to max_lr, cosine decay to min_lr, then min_lr."""
    cfg = TrainConfig(max_steps=max_steps, lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps)
    return lr_at(step, cfg)


def _lr_variants(t: int, hi: float, lo: float, W: int, S: int) -> dict[str, float]:
    cos = lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(max(t - W, 0) / (S - W), 1)))
    return {
        "the warmup starts at zero: use max_lr * (t + 1) / W, so that step 0 already moves "
        "the weights": hi * t / W if t < W else cos,
        "the cosine must start at the end of the warmup: progress = (t - W) / (S - W)":
            hi * (t + 1) / W if t < W else
            lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(t / S, 1))),
        "the cosine should end at min_lr, not 0: min_lr + 0.5 (max_lr - min_lr)(1 + cos(...))":
            hi * (t + 1) / W if t < W else
            0.5 * hi * (1 + math.cos(math.pi * min((t - W) / (S - W), 1))),
        "there is no warmup: the rate must rise linearly over the first warmup_steps steps":
            lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(t / S, 1))),
        "after max_steps the rate must stay at min_lr (the cosine turns upwards again)":
            hi * (t + 1) / W if t < W else
            lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (t - W) / (S - W))),
    }


def check_lr_schedule(fn: Callable) -> bool:
    """fn(step, max_lr, min_lr, warmup_steps, max_steps) -> the learning rate at that step."""
    configs = [(1e-3, 1e-4, 10, 110), (6e-4, 6e-5, 100, 1000), (0.5, 0.0, 1, 5)]
    cases = [Case(args=(t, *c)) for c in configs
             for t in sorted({0, 1, c[2] - 1, c[2], (c[2] + c[3]) // 2, c[3] - 1, c[3], c[3] + 7})]
    feedback = run_checks(fn, cases, reference_lr, rtol=1e-6, atol=1e-12,
                          name=getattr(fn, "__name__", "lr_schedule"))
    hi, lo, W, S = 1.0, 0.1, 10, 30
    steps = [0, 3, 9, 10, 17, 20, 29, 30, 40]
    got = [_safe(fn, t, hi, lo, W, S) for t in steps]
    diagnosis = None
    if all(isinstance(g, (int, float)) for g in got):
        for message, _ in _lr_variants(0, hi, lo, W, S).items():
            wrong = [_lr_variants(t, hi, lo, W, S)[message] for t in steps]
            pairs = zip(got, wrong, strict=True)
            if all(math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-12) for g, w in pairs):
                diagnosis = message
                break
    return _report(feedback, diagnosis)


# ---- 4. weight-decay groups -----------------------------------------------------------------

def _decay_problem(model: torch.nn.Module, got) -> str | None:
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"return a pair (decay_names, no_decay_names), got {summarize(got)}"
    decay, no_decay = (list(g) for g in got)
    want_decay, want_no_decay = decay_groups(model)
    params = dict(model.named_parameters())
    for names in (decay, no_decay):
        if any(not isinstance(n, str) for n in names):
            return "the groups must hold parameter *names* (strings from model.named_parameters())"
    if len(set(decay + no_decay)) != len(decay + no_decay):
        twice = sorted({n for n in decay + no_decay if (decay + no_decay).count(n) > 1})
        return f"{twice[:3]} listed twice: each parameter belongs to exactly one group"
    unknown = sorted(set(decay + no_decay) - set(params))
    if unknown:
        return (f"{unknown[:3]} are not names of model.named_parameters() (lm_head.weight is the "
                "same tensor as wte.weight and is listed once, as wte.weight)")
    missing = sorted(set(params) - set(decay + no_decay))
    if missing:
        return f"{len(missing)} parameters are in neither group, e.g. {missing[:3]}"
    wrongly = sorted(set(decay) - set(want_decay), key=list(params).index)
    if wrongly:
        biases = [n for n in wrongly if n.endswith("bias")]
        gains = [n for n in wrongly if not n.endswith("bias")]
        parts = [f"{kind} should not be decayed: {names[:3]}" + (" ..." * (len(names) > 3))
                 for kind, names in (("biases", biases), ("LayerNorm gains", gains)) if names]
        return "; ".join(parts) + " (only matrices, parameters with p.dim() >= 2, are decayed)"
    spared = sorted(set(no_decay) - set(want_no_decay))
    if spared:
        return (f"matrices should be decayed: {spared[:3]}; every parameter with p.dim() >= 2 "
                "(Linear weights, embeddings) goes in the decay group")
    return None


def check_decay_groups(fn: Callable) -> bool:
    """fn(model) -> (decay_names, no_decay_names), names from model.named_parameters()."""
    models = {"tiny GPT": GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8),
              "GPT without biases": GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1,
                                              n_embd=4, bias=False)}
    results = []
    for label, config in models.items():
        torch.manual_seed(0)
        model = GPT(config)
        try:
            problem = _decay_problem(model, fn(model))
        except Exception as err:  # the student's bug is reported, never raised
            problem = f"your function raised {type(err).__name__}: {err}"
        results.append(CaseResult(Case(args=(model,), name=label), problem, f"model={label}"))
    feedback = Feedback(getattr(fn, "__name__", "decay_groups"), results)
    return _report(feedback, None)


# ---- 5. perplexity --------------------------------------------------------------------------

def reference_perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """exp of the mean cross-entropy over the positions whose target is not -100."""
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=-100)
    return math.exp(loss.item())


def _perplexity_variants(logits, targets) -> dict[str, float]:
    per_token = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                ignore_index=-100, reduction="none")
    kept = targets.reshape(-1) != -100
    nll = per_token[kept]
    seq = (per_token.view(targets.shape) * kept.view(targets.shape)).sum(1) / \
        kept.view(targets.shape).sum(1)
    return {
        "you returned the loss (nats per token); perplexity is exp(loss)": nll.mean().item(),
        "perplexity is exp of the *mean* loss, not of the summed loss": math.exp(nll.sum().item()),
        "average the loss first, then exponentiate: exp(mean), not mean(exp)":
            nll.exp().mean().item(),
        "average over all scored tokens of the batch, not over sequences first":
            math.exp(seq.mean().item()),
        "positions whose target is -100 must be left out of the mean":
            math.exp(nll.sum().item() / targets.numel()),
    }


def check_perplexity(fn: Callable) -> bool:
    """fn(logits (B, T, V), targets (B, T)) -> perplexity (a float); targets -100 are ignored."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 7, generator=gen)
    targets = torch.randint(0, 7, (2, 6), generator=gen)
    masked = targets.clone()
    masked[0, :2], masked[1, :5] = -100, -100
    cases = [Case(args=(logits, targets)), Case(args=(logits, masked), name="with -100 targets"),
             Case(args=(torch.zeros(1, 3, 5), torch.tensor([[0, 4, 2]])),
                  name="uniform logits: perplexity = V = 5")]
    feedback = run_checks(fn, cases, reference_perplexity, rtol=1e-5,
                          name=getattr(fn, "__name__", "perplexity"))
    got, diagnosis = _safe(fn, logits, masked), None
    if got is None and _safe(fn, logits, targets) is not None:
        diagnosis = "your function fails on targets equal to -100: leave those positions out"
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, (int, float)):
        for message, wrong in _perplexity_variants(logits, masked).items():
            if math.isclose(got, wrong, rel_tol=1e-5):
                diagnosis = message
                break
    return _report(feedback, diagnosis)


# ---- 6. gradient accumulation ---------------------------------------------------------------

def _grads(model: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _accumulation_problem(fn: Callable, A: int) -> str | None:
    config = GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8)
    gen = torch.Generator().manual_seed(A)
    x, y = torch.randint(0, 13, (2, 4 * A, 6), generator=gen)
    torch.manual_seed(0)
    model = GPT(config)
    model(x, y)[1].backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    sizes = []
    hook = model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].size(0)))
    try:
        fn(model, x, y, A)
    except Exception as err:
        return f"your function raised {type(err).__name__}: {err}"
    finally:
        hook.remove()
    got = _grads(model)
    if any(g is None for g in got):
        return "some parameters have no gradient: call loss.backward() for every micro-batch"
    if sizes != [x.size(0) // A] * A:
        return (f"expected {A} forward passes of {x.size(0) // A} sequences each, got batch sizes "
                f"{sizes}: split x and y into micro-batches, e.g. with x.chunk({A})")
    ratio = (torch.cat([g.flatten() for g in got]).norm()
             / torch.cat([g.flatten() for g in want]).norm()).item()
    if all(torch.allclose(g, w, rtol=1e-4, atol=1e-7) for g, w in zip(got, want, strict=True)):
        return None
    if math.isclose(ratio, A, rel_tol=1e-3):
        return (f"the gradients are {A} times too large: divide each micro-batch loss by the "
                f"number of micro-batches ({A}) before backward()")
    if math.isclose(ratio, 1 / A, rel_tol=1e-3):
        return f"the gradients are {A} times too small: divide each loss by {A} only once"
    return ("the accumulated gradients differ from those of the whole batch; do not zero the "
            "gradients between micro-batches (they must add up)")


def check_accumulation(fn: Callable) -> bool:
    """fn(model, x, y, micro_batches): leave in p.grad the gradient of the mean loss over x."""
    results = [CaseResult(Case(name=f"{A} micro-batch" + "es" * (A > 1)),
                          _accumulation_problem(fn, A), f"micro_batches={A}") for A in (1, 2, 4)]
    feedback = Feedback(getattr(fn, "__name__", "accumulate"), results)
    return _report(feedback, None)
