"""LoRA: fine-tune a frozen GPT through small low-rank updates of chosen Linear layers.

Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
A frozen weight W (out x in) gets a trainable update of rank r,

    h = W x + (alpha / r) * B A x,        A: (r x in),  B: (out x r)            (Eq. 3)

with A random Gaussian and B zero, so training starts from the pretrained model exactly (Sec. 4.1).
Only A and B train: r * (in + out) numbers per layer instead of in * out. After training,
``merge_lora`` folds (alpha / r) B A into W, so inference costs nothing extra (Sec. 4.1,
"No additional inference latency"); ``unmerge_lora`` takes it out again.

Here ``LoRALinear`` wraps an ``nn.Linear`` (the GPT class is untouched, STYLE item 11),
``add_lora`` wraps the layers named by ``targets`` and freezes everything else, ``merge_lora``,
``unmerge_lora``, ``remove_lora`` (merge and unwrap: a plain GPT again), ``lora_state_dict`` and
``load_lora_state_dict`` (only the adapters, a few kilobytes), ``count_trainable``.

Names follow GPT-2 (``attn.c_attn`` holds W_Q, W_K, W_V side by side): the paper adapts W_Q and
W_V (Sec. 7.1); wrapping ``attn.c_attn`` adapts all three at once. Left out on purpose: dropout
on the LoRA path, LoRA for embeddings, rank-stabilised or DoRA variants, and quantised bases.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * x A^T B^T`` with ``base`` frozen and A, B trainable.

    Args:
        base: the Linear layer to adapt, (in_features -> out_features); its weight is frozen.
        r: the rank of the update. alpha: its scale numerator; the update is scaled by alpha / r,
            so changing r does not change the size of the update at the start of training.
        generator: an optional ``torch.Generator`` for A's initialisation.
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int = 8,
        alpha: float = 16.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"rank r must be a positive integer, got {r!r}")
        self.base, self.r, self.alpha, self.scaling = base, r, alpha, alpha / r
        self.merged = False
        base.requires_grad_(False)
        w = base.weight
        # A random Gaussian, B zero (Hu et al. 2021, Sec. 4.1), so B A = 0 at the start. The paper
        # gives no variance; 1/in_features makes A x as large as x, like a fresh Linear layer.
        a = torch.randn(r, base.in_features, generator=generator)  # (r, in), on the CPU
        self.lora_A = nn.Parameter((a / math.sqrt(base.in_features)).to(w.device, w.dtype))
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device)
        )  # (out, r)

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, the update of the weight, (out_features, in_features)."""
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, r) @ (r, in) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        y = self.base(x)
        if self.merged:  # the update already sits in base.weight
            return y
        return y + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling  # (..., r) -> (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) B A: one Linear again, as fast as the base model."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (alpha / r) B A: back to the base weights (up to float rounding)."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _shared_weights(model: nn.Module) -> set[int]:
    """ids of parameters that appear under more than one name (tied weights)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


def add_lora(
    model: nn.Module,
    targets: Iterable[str] = ("attn.c_attn",),
    r: int = 8,
    alpha: float = 16.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Wrap every Linear whose name ends with one of ``targets`` and freeze the rest of ``model``.

    Args:
        model: a GPT (or any module); changed in place.
        targets: name endings such as "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj".
        r, alpha: rank and scale of every adapter (see ``LoRALinear``).
        generator: seeds the A matrices, layer after layer in module order.
    Returns:
        the names of the wrapped layers, e.g. ["h.0.attn.c_attn", "h.1.attn.c_attn"].
    Raises:
        ValueError: no Linear matches, or a match shares its weight (the tied lm_head: merging
            an update into it would also change the token embedding).
    """
    targets = tuple(targets)
    shared = _shared_weights(model)
    chosen = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]
    if not chosen:
        raise ValueError(
            f"no nn.Linear in the model has a name ending with {targets}; "
            "GPT's are attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj"
        )
    for name, m in chosen:
        if id(m.weight) in shared:
            raise ValueError(
                f"{name} shares its weight with another layer (weight tying); "
                "LoRA cannot adapt it without changing the other one"
            )
    model.requires_grad_(False)
    for name, m in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(m, r=r, alpha=alpha, generator=generator))
    return [name for name, _ in chosen]


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """``{name: LoRALinear}`` for every adapter in ``model``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (``LoRALinear.merge``); outputs stay the same."""
    for m in lora_layers(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Take every merged adapter out of its base weight again."""
    for m in lora_layers(model).values():
        m.unmerge()


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace each ``LoRALinear`` by its base Linear, merged first unless ``merge=False``.

    The result has the original parameter names again, so ``save_checkpoint`` writes a plain
    GPT checkpoint. Parameters are left frozen; call ``model.requires_grad_(True)`` to train on.
    """
    for name, m in lora_layers(model).items():
        if merge:
            m.merge()
        else:
            m.unmerge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.base)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' A and B matrices, e.g. ``h.0.attn.c_attn.lora_A``."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapters saved by ``lora_state_dict`` into a model prepared with the same ``add_lora``.

    Raises:
        ValueError: an adapter of the model is missing from ``state`` or the other way round.
    """
    expected = set(lora_state_dict(model))
    if expected != set(state):
        raise ValueError(
            f"adapters do not match: missing {sorted(expected - set(state))[:4]}, "
            f"unexpected {sorted(set(state) - expected)[:4]}"
        )
    if any(m.merged for m in lora_layers(model).values()):
        raise ValueError("unmerge the adapters before loading new ones into them")
    model.load_state_dict(state, strict=False)


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad``, each shared tensor counted once.

    >>> count_trainable(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
