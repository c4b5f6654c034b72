"""Tests for gptlib.exercises.algorithm: correct answers pass, typical mistakes are named.

Each wrong answer below is a mistake students really make; the test asserts that the checker
fails it *and* that its feedback names the mistake, so the hint stays specific.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.exercises import algorithm as ex

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


@pytest.mark.parametrize("fn, words", [
    (shift_none, "targets equal your inputs"),
    (shift_by_two, "shifted by two"),
    (shift_late, "start one token late"),
    (shift_long, "must both have shape (B, T)"),
])
def test_shift_mistakes_are_named(fn, words, capsys):
    assert ex.check_shift(fn) is False
    assert words in capsys.readouterr().out


def test_shift_correct(capsys):
    assert ex.check_shift(shift_ok) is True
    assert capsys.readouterr().out.startswith("✅")


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
        torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return att.softmax(-1) @ v


@pytest.mark.parametrize("fn", [attention_ok, attention_sdpa])
def test_attention_correct(fn):
    assert ex.check_causal_attention(fn) is True


@pytest.mark.parametrize("fn, words", [
    (attention_no_mask, "forgot the causal mask"),
    (attention_no_diagonal, "diagonal must stay allowed"),
    (attention_no_scale, "sqrt(d_k)"),
])
def test_attention_mistakes_are_named(fn, words, capsys):
    assert ex.check_causal_attention(fn) is False
    assert words in capsys.readouterr().out


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


@pytest.mark.parametrize("fn, words", [
    (lr_warmup_from_zero, "warmup starts at zero"),
    (lr_to_zero, "should end at min_lr"),
    (lr_no_floor_after_end, "after max_steps"),
])
def test_lr_mistakes_are_named(fn, words, capsys):
    assert ex.check_lr_schedule(fn) is False
    assert words in capsys.readouterr().out


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


def test_groups_correct(capsys):
    assert ex.check_decay_groups(groups_ok) is True
    assert "all 2 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, words", [
    (groups_all_decayed, "biases should not be decayed"),
    (groups_ln_decayed, "LayerNorm gains should not be decayed: ['h.0.ln_1.weight'"),
    (groups_tied_twice, "not names of model.named_parameters()"),
])
def test_groups_mistakes_are_named(fn, words, capsys):
    assert ex.check_decay_groups(fn) is False
    assert words in capsys.readouterr().out


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


@pytest.mark.parametrize("fn, words", [
    (ppl_loss_only, "you returned the loss"),
    (ppl_gather_without_mask, "targets equal to -100"),
    (ppl_mean_of_exp, "exp(mean), not mean(exp)"),
])
def test_perplexity_mistakes_are_named(fn, words, capsys):
    assert ex.check_perplexity(fn) is False
    assert words in capsys.readouterr().out


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


def test_accumulation_correct(capsys):
    assert ex.check_accumulation(accumulate_ok) is True
    assert "all 3 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, words", [
    (accumulate_unscaled, "4 times too large: divide each micro-batch loss"),
    (accumulate_zeroing, "do not zero the gradients between micro-batches"),
    (accumulate_whole_batch, "expected 2 forward passes"),
])
def test_accumulation_mistakes_are_named(fn, words, capsys):
    assert ex.check_accumulation(fn) is False
    assert words in capsys.readouterr().out
