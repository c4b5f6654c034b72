"""Self-checking exercise for section 6.4, future directions: what a mixture of experts costs.

A mixture-of-experts layer (Shazeer et al. 2017) replaces the one MLP of a transformer block by
``n_experts`` MLPs of the same shape and a router, a linear map without bias from the residual
stream to one score per expert. Each token is sent to its ``top_k`` best-scoring experts only, so
the layer *stores* every expert but *runs* only ``top_k`` of them (and the router) per token.

=================  =============================================================  =========
checker            the reader writes                                              book
=================  =============================================================  =========
check_moe_params   ``moe_params(n_embd, d_ff, n_experts, top_k, bias)``: the      Ex. 6.4.1
                   parameters of the layer, stored and used per token
=================  =============================================================  =========

Each expert is the book's MLP (:class:`gptlib.model.MLP`): ``Linear(n_embd, d_ff)`` then
``Linear(d_ff, n_embd)``, with biases when ``bias`` is true. ``tests/test_exercises_outlook.py``
checks the reference against parameter counts of real ``torch`` modules and every diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable

from gptlib.exercises.core import Case, Mistake, check


def expert_params(n_embd: int, d_ff: int, bias: bool = True) -> int:
    """Parameters of one expert: two linear maps, n_embd -> d_ff -> n_embd.

    >>> expert_params(4, 16)  # 4*16 + 16 + 16*4 + 4
    148
    """
    return 2 * n_embd * d_ff + ((d_ff + n_embd) if bias else 0)


def moe_params_reference(
    n_embd: int, d_ff: int, n_experts: int, top_k: int, bias: bool = True
) -> tuple[int, int]:
    """(stored, active per token) parameters of one mixture-of-experts MLP layer.

    Stored: every expert and the router (``n_embd * n_experts`` weights, no bias). Active: the
    ``top_k`` experts a token is sent to, and the router, which scores every token.

    >>> moe_params_reference(4, 16, n_experts=8, top_k=2)
    (1216, 328)
    """
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"top_k must be between 1 and n_experts, got {top_k} of {n_experts}")
    expert = expert_params(n_embd, d_ff, bias)
    router = n_embd * n_experts
    return n_experts * expert + router, top_k * expert + router


def check_moe_params(fn: Callable[..., tuple[int, int]]) -> bool:
    """Exercise 6.4.1: stored and active parameters of a mixture-of-experts layer."""
    cases = [
        Case((4, 16, 8, 2), {"bias": True}, name="a toy layer, 8 experts, top-2"),
        Case((192, 768, 8, 2), {"bias": True}, name="the book's model's MLP as 8 experts"),
        Case((192, 768, 4, 1), {"bias": True}, name="switch routing: top-1 of 4"),
        Case((4096, 14336, 8, 2), {"bias": False}, name="a large layer without biases"),
    ]

    def no_router(C, F, E, k, bias=True):
        e = expert_params(C, F, bias)
        return E * e, k * e

    def all_active(C, F, E, k, bias=True):
        total, _ = moe_params_reference(C, F, E, k, bias)
        return total, total

    def one_active(C, F, E, k, bias=True):
        total, _ = moe_params_reference(C, F, E, k, bias)
        return total, expert_params(C, F, bias) + C * E

    def no_bias(C, F, E, k, bias=True):
        return moe_params_reference(C, F, E, k, bias=False)

    def router_per_expert(C, F, E, k, bias=True):
        e = expert_params(C, F, bias)
        return E * (e + C), k * (e + C)

    mistakes = [
        Mistake(
            "you leave out the router: a linear map from the residual stream (n_embd) to one "
            "score per expert, n_embd * n_experts weights, stored and run for every token.",
            wrong=no_router,
        ),
        Mistake(
            "your active count is the stored count: a token runs only its top_k experts, which "
            "is the whole point of the layer (plus the router, which scores every expert).",
            wrong=all_active,
        ),
        Mistake(
            "your active count has one expert: a token runs top_k of them, and their outputs "
            "are mixed with the router's weights.",
            wrong=one_active,
        ),
        Mistake(
            "you leave out the biases: with bias=True each expert's two linear maps add d_ff + "
            "n_embd bias parameters.",
            wrong=no_bias,
        ),
        Mistake(
            "you give each expert its own router row and count it with the expert: the router "
            "is one n_embd x n_experts matrix, counted once, and the active count includes all "
            "of it (every expert is scored before the top_k are chosen).",
            wrong=router_per_expert,
        ),
    ]
    return check(fn, cases, moe_params_reference, name="moe_params", mistakes=mistakes)
