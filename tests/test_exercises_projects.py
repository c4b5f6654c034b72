"""The longer exercises of chapters 3-5 (gptlib.exercises.projects): a correct answer written
from scratch passes every checker, and each typical mistake fails with its own diagnosis."""

from collections import Counter
from itertools import pairwise

import numpy as np
import regex
import torch

from gptlib.bpe import GPT2_SPLIT_PATTERN
from gptlib.exercises import backward, projects
from gptlib.exercises.backward import check_block_backward
from gptlib.exercises.projects import (
    _export_judge,
    check_bpe_from_scratch,
    check_gpt2_export,
    check_kv_cache_class,
    check_rope,
    check_top_p,
)
from gptlib.positions import rope_cos_sin


# ----------------------------------------------------------------------- answers from scratch
def merge(word, pair, new_id):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def bpe_train(text, n_merges):
    words = Counter(tuple(c.encode()) for c in regex.findall(GPT2_SPLIT_PATTERN, text))
    merges = []
    for r in range(n_merges):
        counts = Counter()
        for word, n in words.items():
            for pair in pairwise(word):
                counts[pair] += n
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        words = Counter({tuple(merge(list(w), pair, 256 + r)): n for w, n in words.items()})
    return merges


def bpe_encode(text, merges):
    rank = {pair: r for r, pair in enumerate(merges)}
    ids = []
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):
        word = list(chunk.encode())
        while len(word) > 1:
            pair = min(pairwise(word), key=lambda p: rank.get(p, len(rank)))
            if pair not in rank:
                break
            word = merge(word, pair, 256 + rank[pair])
        ids += word
    return ids


def top_p(logits, p):
    probs = logits.softmax(-1)
    sorted_p, order = probs.sort(-1, descending=True)
    keep_sorted = sorted_p.cumsum(-1) - sorted_p < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def rope(x, cos, sin):
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def _ln(x, g, b, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    xhat = (x - mu) / np.sqrt(var + eps)
    return xhat * g + b, (xhat, np.sqrt(var + eps))


def _ln_back(dy, g, cache):
    xhat, sigma = cache
    dxhat = dy * g
    dx = dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    return dx / sigma, (dy * xhat).sum(0), dy.sum(0)


def _gelu(x):
    k = np.sqrt(2 / np.pi)
    t = np.tanh(k * (x + 0.044715 * x**3))
    dt = (1 - t**2) * k * (1 + 3 * 0.044715 * x**2)
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * dt


def block_backward(x, P, n_head, dout, ln_full=True):
    T, C = x.shape
    hs = C // n_head
    h1, c1 = _ln(x, P["ln_1.weight"], P["ln_1.bias"])
    qkv = h1 @ P["attn.c_attn.weight"].T + P["attn.c_attn.bias"]
    q, k, v = (
        qkv[:, i * C : (i + 1) * C].reshape(T, n_head, hs).transpose(1, 0, 2) for i in range(3)
    )
    s = q @ k.transpose(0, 2, 1) / np.sqrt(hs) + np.triu(np.full((T, T), -np.inf), 1)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    y = (a @ v).transpose(1, 0, 2).reshape(T, C)
    x1 = x + y @ P["attn.c_proj.weight"].T + P["attn.c_proj.bias"]
    h2, c2 = _ln(x1, P["ln_2.weight"], P["ln_2.bias"])
    u = h2 @ P["mlp.c_fc.weight"].T + P["mlp.c_fc.bias"]
    gu, dgu = _gelu(u)
    G = {"mlp.c_proj.weight": dout.T @ gu, "mlp.c_proj.bias": dout.sum(0)}
    du = (dout @ P["mlp.c_proj.weight"]) * dgu
    G["mlp.c_fc.weight"], G["mlp.c_fc.bias"] = du.T @ h2, du.sum(0)
    dx1_ln, G["ln_2.weight"], G["ln_2.bias"] = _ln_back(
        du @ P["mlp.c_fc.weight"], P["ln_2.weight"], c2
    )
    dx1 = dout + (dx1_ln if ln_full else (du @ P["mlp.c_fc.weight"]) * P["ln_2.weight"] / c2[1])
    G["attn.c_proj.weight"], G["attn.c_proj.bias"] = dx1.T @ y, dx1.sum(0)
    dy = (dx1 @ P["attn.c_proj.weight"]).reshape(T, n_head, hs).transpose(1, 0, 2)
    da, dv = dy @ v.transpose(0, 2, 1), a.transpose(0, 2, 1) @ dy
    ds = a * (da - (da * a).sum(-1, keepdims=True)) / np.sqrt(hs)
    dq, dk = ds @ k, ds.transpose(0, 2, 1) @ q
    dqkv = np.concatenate([t.transpose(1, 0, 2).reshape(T, C) for t in (dq, dk, dv)], axis=1)
    G["attn.c_attn.weight"], G["attn.c_attn.bias"] = dqkv.T @ h1, dqkv.sum(0)
    dx_ln, G["ln_1.weight"], G["ln_1.bias"] = _ln_back(
        dqkv @ P["attn.c_attn.weight"], P["ln_1.weight"], c1
    )
    G["x"] = dx1 + dx_ln
    return G


class Cache:
    def __init__(self, n_layer):
        self.k, self.v, self.length = [None] * n_layer, [None] * n_layer, 0

    def update(self, layer, k, v):
        if self.k[layer] is not None:
            k, v = torch.cat([self.k[layer], k], 2), torch.cat([self.v[layer], v], 2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def advance(self, n):
        self.length += n


def to_hf(sd):
    out = {}
    for name, w in sd.items():
        conv = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        key = name if name.startswith("lm_head") else "transformer." + name
        out[key] = w.t() if conv else w
    return out


# ----------------------------------------------------------------------- the checks
def test_correct_answers_pass(capsys):
    assert check_bpe_from_scratch(bpe_train, bpe_encode)
    assert check_top_p(top_p)
    assert check_rope(rope)
    assert check_block_backward(block_backward)
    assert check_kv_cache_class(Cache)
    assert check_gpt2_export(to_hf)
    assert capsys.readouterr().out.count("✅") == 7  # BPE prints two lines


def test_stubs_are_not_implemented_yet(capsys):
    def stub(*args):
        raise NotImplementedError

    assert not check_rope(stub)
    assert "not implemented yet" in capsys.readouterr().out


def test_bpe_mistakes_are_named(capsys):
    assert not check_bpe_from_scratch(
        lambda t, n: projects._naive_bpe(t, n, split=False), bpe_encode
    )
    assert "cross chunk boundaries" in capsys.readouterr().out
    assert not check_bpe_from_scratch(
        lambda t, n: projects._naive_bpe(t, n, largest_tie=True), bpe_encode
    )
    assert "largest pair" in capsys.readouterr().out


def test_top_p_exclusive_cut_is_named(capsys):
    assert not check_top_p(projects._exclusive_top_p)
    assert "before* it" in capsys.readouterr().out


def test_rope_layouts_are_named(capsys):
    for wrong, words in [
        (projects._rope_halves, "GPT-NeoX"),
        (projects._rope_not_interleaved, "interleave"),
        (projects._rope_reverse, "-m theta_i"),
    ]:
        assert not check_rope(wrong)
        assert words in capsys.readouterr().out


def test_rope_answer_has_the_relative_position_property():
    """What the exercise asks the reader to show: <R_m q, R_n k> depends on m - n only."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)
    cos, sin = rope_cos_sin(60, 16)
    dots = [
        (
            rope(q, cos[m : m + 1], sin[m : m + 1])
            * rope(k, cos[m - 3 : m - 2], sin[m - 3 : m - 2])
        ).sum()
        for m in (3, 10, 50)
    ]
    assert torch.allclose(torch.stack(dots), dots[0].expand(3), atol=1e-5)


def test_block_backward_locates_a_layernorm_mistake(capsys):
    def affine_ln_only(x, P, n_head, dout):
        return block_backward(x, P, n_head, dout, ln_full=False)

    assert not check_block_backward(affine_ln_only)
    out = capsys.readouterr().out
    assert "reaches attn.c_proj.weight first" in out and "mean and variance" in out


def test_block_backward_reference_agrees_with_finite_differences():
    x, P, n_head, dout = backward.block_inputs(3, 4, 2, seed=3)
    grads = backward.block_backward_reference(x, P, n_head, dout)
    eps = 1e-6
    for i, j in [(0, 0), (2, 3), (1, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[i, j] += eps
        xm[i, j] -= eps
        f = _forward_sum(xp, P, n_head, dout) - _forward_sum(xm, P, n_head, dout)
        assert abs(f / (2 * eps) - grads["x"][i, j]) < 1e-6


def _forward_sum(x, P, n_head, dout):
    from gptlib.model import Block, GPTConfig

    T, C = x.shape
    block = Block(GPTConfig(vocab_size=1, block_size=T, n_layer=1, n_head=n_head, n_embd=C))
    block = block.double()
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(torch.from_numpy(P[name]))
        return float((block(torch.from_numpy(x)[None])[0].numpy() * dout).sum())


def test_kv_cache_that_forgets_to_append_is_caught(capsys):
    class Forgetful(Cache):
        def update(self, layer, k, v):
            return k, v

    assert not check_kv_cache_class(Forgetful)
    assert "generated step 1" in capsys.readouterr().out


def test_export_without_transpose_is_diagnosed():
    sd = projects._export_case(0)
    untransposed = {
        (k if k.startswith("lm_head") else "transformer." + k): v for k, v in sd.items()
    }
    problem = _export_judge(projects.Case((sd,)), untransposed)
    assert "transpose" in problem
    no_prefix = {k: v for k, v in to_hf(sd).items()}
    no_prefix = {k.removeprefix("transformer."): v for k, v in no_prefix.items()}
    assert "transformer." in _export_judge(projects.Case((sd,)), no_prefix)
