"""Tests for gptlib.exercises.algorithm: correct answers pass, typical mistakes are named.

Each wrong answer below is a mistake students really make; the test asserts that the checker
fails it *and* that its feedback names the mistake, so the hint stays specific. The references
the checkers compare with are checked first, against PyTorch or a hand-derived value.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.exercises import algorithm as ex

# ---- 0. the references are right -------------------------------------------------------------


def test_shift_reference_by_hand():
    """tokens 10, 11, ..., 19; windows of T=3 at 0 and 5: x = 10 11 12 / 15 16 17, y = x + 1."""
    x, y = ex.shift_reference(torch.arange(10, 20), [0, 5], 3)
    assert x.tolist() == [[10, 11, 12], [15, 16, 17]]
    assert y.tolist() == [[11, 12, 13], [16, 17, 18]]


def test_attention_reference_matches_sdpa():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(
        ex.attention_reference(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True)
    )


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),
        (9, 1.0),  # warmup: max_lr * (t + 1) / W with max_lr = 1, W = 10
        (10, 1.0),
        (20, 0.55),
        (30, 0.1),  # cosine from 1 to 0.1 over steps 10..30; 20 is halfway
        (45, 0.1),
    ],
)  # after max_steps: min_lr
def test_lr_schedule_reference_by_hand(step, expected):
    assert ex.lr_schedule_reference(step, 1.0, 0.1, 10, 30) == pytest.approx(expected)


def test_perplexity_reference_by_hand():
    """Two positions scored with p = 1/2 and 1/4 (the third is -100): exp of the mean of ln 2
    and ln 4 is exp(1.5 ln 2) = 2^1.5."""
    logits = torch.log(torch.tensor([[[0.5, 0.5, 1e-30], [0.25, 0.75, 1e-30], [1.0, 1.0, 1.0]]]))
    targets = torch.tensor([[0, 0, -100]])
    assert ex.perplexity_reference(logits, targets) == pytest.approx(2**1.5, rel=1e-5)


# ---- 1. the shift ---------------------------------------------------------------------------


def shift_ok(tokens, starts, T):
    windows = torch.stack([tokens[s : s + T + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]


def shift_none(tokens, starts, T):
    x = torch.stack([tokens[s : s + T] for s in starts])
    return x, x.clone()


def shift_by_two(tokens, starts, T):
    x = torch.stack([tokens[s : s + T] for s in starts])
    return x, torch.stack([tokens[s + 2 : s + T + 2] for s in starts])


def shift_late(tokens, starts, T):
    return shift_ok(tokens, [s + 1 for s in starts], T)


def shift_long(tokens, starts, T):
    windows = torch.stack([tokens[s : s + T + 1] for s in starts])
    return windows, windows


def shift_previous(tokens, starts, T):
    x = torch.stack([tokens[s : s + T] for s in starts])
    return x, torch.stack([tokens[s - 1 : s + T - 1] for s in starts])


def shift_x_only(tokens, starts, T):
    return torch.stack([tokens[s : s + T] for s in starts])


@pytest.mark.parametrize(
    "fn, words",
    [
        (shift_none, "targets equal your inputs"),
        (shift_by_two, "shifted by two"),
        (shift_late, "start one token late"),
        (shift_long, "must both have shape (B, T)"),
        (shift_previous, "the *previous* tokens"),
        (shift_x_only, "return a pair (x, y)"),
    ],
)
def test_shift_mistakes_are_named(fn, words, feedback_of):
    passed, out = feedback_of(ex.check_shift, fn)
    assert passed is False and words in out, out


def test_a_crashing_shift_gets_its_error_not_a_guess(feedback_of):
    def crashing(tokens, starts, T):
        raise IndexError("my bug")

    passed, out = feedback_of(ex.check_shift, crashing)
    assert not passed and "raised IndexError: my bug" in out
    assert "hint" not in out  # no mistake is guessed for a function that never returned


def test_shift_correct(feedback_of):
    assert feedback_of(ex.check_shift, shift_ok) == (True, "✅ shift_ok: all 3 cases passed.\n")


# ---- 2. causal attention --------------------------------------------------------------------


def attention_ok(q, k, v):
    T = q.size(-2)
    att = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return att.softmax(-1) @ v


def attention_sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention_no_mask(q, k, v):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1) @ v


def attention_no_diagonal(q, k, v):
    T = q.size(-2)
    att = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
    return att.softmax(-1) @ v


def attention_no_scale(q, k, v):
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)).masked_fill(
        torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")
    )
    return att.softmax(-1) @ v


@pytest.mark.parametrize("fn", [attention_ok, attention_sdpa])
def test_attention_correct(fn):
    assert ex.check_causal_attention(fn) is True


def attention_mask_upper(q, k, v):
    T = q.size(-2)
    att = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    att = att.masked_fill(torch.tril(torch.ones(T, T, dtype=torch.bool), -1), float("-inf"))
    return att.softmax(-1) @ v


@pytest.mark.parametrize(
    "fn, words",
    [
        (attention_mask_upper, "the mask is the wrong way round"),
        (attention_no_mask, "forgot the causal mask"),
        (attention_no_diagonal, "diagonal must stay allowed"),
        (attention_no_scale, "sqrt(d_k)"),
    ],
)
def test_attention_mistakes_are_named(fn, words, feedback_of):
    passed, out = feedback_of(ex.check_causal_attention, fn)
    assert passed is False and words in out, out


# ---- 3. learning-rate schedule --------------------------------------------------------------


def lr_ok(t, hi, lo, W, S):
    if t < W:
        return hi * (t + 1) / W
    if t >= S:
        return lo
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (t - W) / (S - W)))


def lr_warmup_from_zero(t, hi, lo, W, S):
    return hi * t / W if t < W else lr_ok(t, hi, lo, W, S)


def lr_to_zero(t, hi, lo, W, S):
    return lr_ok(t, hi, 0.0, W, S) if t < S else 0.0


def lr_no_floor_after_end(t, hi, lo, W, S):
    if t < W:
        return hi * (t + 1) / W
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (t - W) / (S - W)))


def test_lr_correct():
    assert ex.check_lr_schedule(lr_ok) is True


def lr_no_warmup(t, hi, lo, W, S):
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(t / S, 1)))


def lr_cosine_from_step_zero(t, hi, lo, W, S):
    return hi * (t + 1) / W if t < W else lr_no_warmup(t, hi, lo, W, S)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lr_no_warmup, "there is no warmup"),
        (lr_cosine_from_step_zero, "must start at the end of the warmup"),
        (lr_warmup_from_zero, "warmup starts at zero"),
        (lr_to_zero, "should end at min_lr"),
        (lr_no_floor_after_end, "after max_steps"),
    ],
)
def test_lr_mistakes_are_named(fn, words, feedback_of):
    passed, out = feedback_of(ex.check_lr_schedule, fn)
    assert passed is False and words in out, out


# ---- 4. weight-decay groups -----------------------------------------------------------------


def groups_ok(model):
    decay = [n for n, p in model.named_parameters() if p.dim() >= 2]
    return decay, [n for n, p in model.named_parameters() if p.dim() < 2]


def groups_all_decayed(model):
    return [n for n, _ in model.named_parameters()], []


def groups_ln_decayed(model):  # excludes biases but forgets the LayerNorm gains
    names = [n for n, _ in model.named_parameters()]
    return [n for n in names if not n.endswith("bias")], [n for n in names if n.endswith("bias")]


def groups_tied_twice(model):
    decay, no_decay = groups_ok(model)
    return decay + ["lm_head.weight"], no_decay


def test_groups_correct(feedback_of):
    assert feedback_of(ex.check_decay_groups, groups_ok) == (
        True,
        "✅ groups_ok: all 2 cases passed.\n",
    )


def groups_nothing_decayed(model):
    return [], [n for n, _ in model.named_parameters()]


def groups_one_missing(model):
    decay, no_decay = groups_ok(model)
    return decay[1:], no_decay


@pytest.mark.parametrize(
    "fn, words",
    [
        (groups_nothing_decayed, "matrices should be decayed"),
        (groups_one_missing, "1 parameters are in neither group"),
        (lambda model: groups_ok(model)[0], "return a pair (decay_names, no_decay_names)"),
        (groups_all_decayed, "biases should not be decayed"),
        (groups_ln_decayed, "LayerNorm gains should not be decayed: ['h.0.ln_1.weight'"),
        (groups_tied_twice, "not names of model.named_parameters()"),
    ],
)
def test_groups_mistakes_are_named(fn, words, feedback_of):
    passed, out = feedback_of(ex.check_decay_groups, fn)
    assert passed is False and words in out, out


# ---- 5. perplexity --------------------------------------------------------------------------


def ppl_ok(logits, targets):
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    return math.exp(loss.item())


def ppl_loss_only(logits, targets):
    return math.log(ppl_ok(logits, targets))


def ppl_gather_without_mask(logits, targets):
    logp = logits.log_softmax(-1).gather(-1, targets[..., None])
    return math.exp(-logp.mean().item())


def ppl_mean_of_exp(logits, targets):
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return nll[targets.flatten() != -100].exp().mean().item()


def test_perplexity_correct():
    assert ex.check_perplexity(ppl_ok) is True


def ppl_per_sequence(logits, targets):
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    kept = targets != -100
    return math.exp(((nll * kept).sum(1) / kept.sum(1)).mean().item())


def ppl_counting_ignored(logits, targets):
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum")
    return math.exp(nll.item() / targets.numel())


@pytest.mark.parametrize(
    "fn, words",
    [
        (ppl_per_sequence, "not over sequences first"),
        (ppl_counting_ignored, "must be left out of the mean"),
        (
            lambda z, y: math.exp(F.cross_entropy(z.transpose(1, 2), y, reduction="sum").item()),
            "not of the summed loss",
        ),
        (ppl_loss_only, "you returned the loss"),
        (ppl_gather_without_mask, "targets equal to -100"),
        (ppl_mean_of_exp, "exp(mean), not mean(exp)"),
    ],
)
def test_perplexity_mistakes_are_named(fn, words, feedback_of):
    passed, out = feedback_of(ex.check_perplexity, fn)
    assert passed is False and words in out, out


# ---- 6. gradient accumulation ---------------------------------------------------------------


def accumulate_ok(model, x, y, micro_batches):
    for xb, yb in zip(x.chunk(micro_batches), y.chunk(micro_batches), strict=True):
        _, loss = model(xb, yb)
        (loss / micro_batches).backward()


def accumulate_unscaled(model, x, y, micro_batches):
    for xb, yb in zip(x.chunk(micro_batches), y.chunk(micro_batches), strict=True):
        model(xb, yb)[1].backward()


def accumulate_zeroing(model, x, y, micro_batches):
    for xb, yb in zip(x.chunk(micro_batches), y.chunk(micro_batches), strict=True):
        model.zero_grad()
        (model(xb, yb)[1] / micro_batches).backward()


def accumulate_whole_batch(model, x, y, micro_batches):
    model(x, y)[1].backward()


def test_accumulation_correct(feedback_of):
    assert feedback_of(ex.check_accumulation, accumulate_ok) == (
        True,
        "✅ accumulate_ok: all 3 cases passed.\n",
    )


def accumulate_scaled_twice(model, x, y, micro_batches):
    for xb, yb in zip(x.chunk(micro_batches), y.chunk(micro_batches), strict=True):
        (model(xb, yb)[1] / micro_batches**2).backward()


@pytest.mark.parametrize(
    "fn, words",
    [
        (accumulate_scaled_twice, "4 times too small"),
        (accumulate_unscaled, "4 times too large: divide each micro-batch loss"),
        (accumulate_zeroing, "do not zero the gradients between micro-batches"),
        (accumulate_whole_batch, "expected 2 forward passes"),
    ],
)
def test_accumulation_mistakes_are_named(fn, words, feedback_of):
    passed, out = feedback_of(ex.check_accumulation, fn)
    assert passed is False and words in out, out


# ---- the checkers leave the student's random state alone --------------------------------------


@pytest.mark.parametrize(
    "checker, fn", [(ex.check_decay_groups, groups_ok), (ex.check_accumulation, accumulate_ok)]
)
def test_checkers_that_build_models_leave_the_random_state_alone(checker, fn, capsys):
    """A notebook's later cells draw the same random numbers whether or not it ran a check."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert checker(fn)
    assert torch.equal(torch.rand(3), expected)
