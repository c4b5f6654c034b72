"""Checker for the longest exercise of chapter 4 (★★★): the backward pass of a whole pre-LN block.

The reader writes ``block_backward(x, params, n_head, dout)`` in NumPy: the gradients of
``sum(dout * Block(x))`` with respect to the input and all twelve parameters of one transformer
block (two LayerNorms, attention with its causal mask and heads, the GELU MLP, two residual
connections), for one sequence ``x`` of shape (T, C). The reference is ``gptlib.model.Block``
differentiated by autograd in float64, which ``tests/test_exercises_projects.py`` also checks
against central finite differences. When an answer is wrong, the feedback names the first wrong
gradient in the order backpropagation reaches them: every gradient after it inherits its error,
so that is where the bug is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gptlib.exercises.core import Case, check
from gptlib.model import Block, GPTConfig

BLOCK_PARAMS = (
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)


def block_inputs(T: int = 5, C: int = 8, n_head: int = 2, seed: int = 0):
    """A random input x (T, C), the parameters of one block as float64 NumPy arrays (gptlib's
    names and layouts: a Linear weight is (out, in)), n_head, and an upstream gradient (T, C)."""
    rng = np.random.default_rng(seed)
    shapes = {
        "ln_1.weight": (C,),
        "ln_1.bias": (C,),
        "attn.c_attn.weight": (3 * C, C),
        "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C),
        "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,),
        "ln_2.bias": (C,),
        "mlp.c_fc.weight": (4 * C, C),
        "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (C, 4 * C),
        "mlp.c_proj.bias": (C,),
    }
    params = {k: rng.normal(0, 0.4, s) for k, s in shapes.items()}
    params["ln_1.weight"] += 1.0  # LayerNorm gains near one, as at initialisation
    params["ln_2.weight"] += 1.0
    return rng.normal(size=(T, C)), params, n_head, rng.normal(size=(T, C))


def block_backward_reference(x, params, n_head, dout) -> dict[str, np.ndarray]:
    """Gradients of sum(dout * Block(x)) for gptlib's Block, by autograd in float64.

    Returns a dict with "x" and every name of ``BLOCK_PARAMS``, each the shape of its input.
    """
    T, C = x.shape
    config = GPTConfig(vocab_size=1, block_size=T, n_layer=1, n_head=n_head, n_embd=C)
    block = Block(config, attention="explicit").double()
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(params[name])))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = block(xt[None])[0]  # (T, C)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    grads = {"x": xt.grad.numpy()}
    grads.update({name: p.grad.numpy() for name, p in block.named_parameters()})
    return grads


# The order in which backpropagation reaches each gradient, and what the first wrong one means.
_BACKWARD_ORDER = [
    ("mlp.c_proj.weight", "the MLP's output layer: dW = dout^T gelu(u), db = dout summed over T"),
    ("mlp.c_proj.bias", "the MLP's output bias: dout summed over positions"),
    ("mlp.c_fc.weight", "the MLP's first layer: multiply by GELU's derivative (tanh form) first"),
    ("mlp.c_fc.bias", "the MLP's first bias"),
    ("ln_2.weight", "ln_2's gain: sum over positions of dy * x_hat"),
    ("ln_2.bias", "ln_2's bias: sum over positions of dy"),
    (
        "attn.c_proj.weight",
        "the gradient reaching the attention's output x1: it is dout (the residual) plus the "
        "gradient through ln_2's input, whose mean and variance depend on every input (not "
        "only the division by sigma)",
    ),
    ("attn.c_proj.bias", "the attention's output bias"),
    (
        "attn.c_attn.weight",
        "the attention backward: the softmax Jacobian row by row, the causal mask, the "
        "1/sqrt(hs) scale, and splitting c_attn into q, k, v per head",
    ),
    ("attn.c_attn.bias", "the q, k, v biases: the rows of dqkv summed over positions"),
    ("ln_1.weight", "ln_1's gain"),
    ("ln_1.bias", "ln_1's bias"),
    (
        "x",
        "the path back to the input: dx = dx1 (the residual) plus the gradient through ln_1's "
        "input, with its mean and variance terms",
    ),
]


def _block_judge(case: Case, answer) -> str | None:
    expected = block_backward_reference(*case.args)
    if not isinstance(answer, dict):
        return f"return a dict of gradients, got {type(answer).__name__}"
    missing = [k for k in expected if k not in answer]
    if missing:
        return f"missing gradients: {missing}"
    for key, value in expected.items():
        got = np.asarray(answer[key])
        if got.shape != value.shape:
            return f"the gradient of {key} has shape {got.shape}, expected {value.shape}"
    wrong = [
        key
        for key, _ in _BACKWARD_ORDER
        if not np.allclose(np.asarray(answer[key]), expected[key], rtol=1e-6, atol=1e-9)
    ]
    if not wrong:
        return None
    first, meaning = next((k, m) for k, m in _BACKWARD_ORDER if k == wrong[0])
    return (
        f"wrong: {wrong}. Backpropagation reaches {first} first of these, and everything after "
        f"it inherits its error, so start there: {meaning}."
    )


def check_block_backward(fn: Callable) -> bool:
    """Exercise: the backward pass of a pre-LN transformer block, in NumPy (float64)."""
    cases = [
        Case(block_inputs(5, 8, 2, seed=0), name="T=5, C=8, 2 heads"),
        Case(block_inputs(3, 12, 3, seed=1), name="T=3, C=12, 3 heads"),
        Case(block_inputs(1, 4, 1, seed=2), name="a single position"),
    ]
    return check(fn, cases, judge=_block_judge)
