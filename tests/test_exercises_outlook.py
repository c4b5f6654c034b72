"""Tests for gptlib.exercises.outlook, the self-checking exercise of section 6.4.

The reference is checked against parameter counts of real modules (the book's MLP as an expert,
a linear router without bias); a correct answer passes; each typical wrong answer fails with
feedback that names the mistake.
"""

import pytest
from torch import nn

from gptlib.exercises import outlook as o
from gptlib.model import MLP, GPTConfig


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("bias", [True, False])
def test_reference_matches_real_modules(bias):
    C, E, k = 16, 6, 2
    expert = MLP(GPTConfig(n_embd=C, n_head=2, bias=bias))  # d_ff = 4 C
    router = nn.Linear(C, E, bias=False)
    experts = nn.ModuleList(MLP(GPTConfig(n_embd=C, n_head=2, bias=bias)) for _ in range(E))
    total, active = o.moe_params_reference(C, 4 * C, E, k, bias=bias)
    assert total == count(experts) + count(router)
    assert active == k * count(expert) + count(router)
    assert active < total


def test_reference_rejects_impossible_top_k():
    with pytest.raises(ValueError, match="top_k"):
        o.moe_params_reference(8, 32, n_experts=4, top_k=5)


def test_correct_answer_passes(feedback_of):
    def mine(n_embd, d_ff, n_experts, top_k, bias=True):
        expert = 2 * n_embd * d_ff + (d_ff + n_embd if bias else 0)
        router = n_embd * n_experts
        return n_experts * expert + router, top_k * expert + router

    passed, out = feedback_of(o.check_moe_params, mine)
    assert passed and "all 4 cases passed" in out, out


def _expert(C, F, bias):
    return 2 * C * F + (F + C if bias else 0)


def no_router(C, F, E, k, bias=True):
    return E * _expert(C, F, bias), k * _expert(C, F, bias)


def all_active(C, F, E, k, bias=True):
    total = E * _expert(C, F, bias) + C * E
    return total, total


def one_active(C, F, E, k, bias=True):
    return E * _expert(C, F, bias) + C * E, _expert(C, F, bias) + C * E


def no_bias(C, F, E, k, bias=True):
    return E * _expert(C, F, False) + C * E, k * _expert(C, F, False) + C * E


def router_per_expert(C, F, E, k, bias=True):
    return E * (_expert(C, F, bias) + C), k * (_expert(C, F, bias) + C)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (no_router, "leave out the router"),
        (all_active, "active count is the stored count"),
        (one_active, "has one expert"),
        (no_bias, "leave out the biases"),
        (router_per_expert, "counted once"),
    ],
)
def test_mistakes_are_named(wrong, words, feedback_of):
    passed, out = feedback_of(o.check_moe_params, wrong)
    assert not passed and words in out, out


def test_a_stub_is_not_implemented_yet(feedback_of):
    def stub(n_embd, d_ff, n_experts, top_k, bias=True):
        raise NotImplementedError

    passed, out = feedback_of(o.check_moe_params, stub)
    assert not passed and "not implemented" in out.lower(), out
