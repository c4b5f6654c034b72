"""Ablations of the architecture: a built GPT with one part taken out, and the task they share.

An ablation removes one component and keeps everything else (data, seed, budget, the initial
weights of what is left) the same, so that the change in loss is what the component was worth.
Following the rule that extensions wrap the model instead of adding flags to it, each ablation is
a function that edits a built `gptlib.model.GPT`; the core model keeps matching the book's figure.

    without_positions(model)   the position table zeroed and frozen: attention is blind to order,
                               except for what the causal mask leaks into deeper layers
    without_residuals(model)   every Block replaced by a BlockWithoutResidual with the same
                               weights, whose forward drops the two "x +" (He et al. 2016)
    char_task(n_chars)         the small character-level task the ablation and scaling studies
                               train on: the first n_chars characters of the corpus, the
                               character tokenizer, the first 90 % for training

Changes that are configuration fields (the number of heads, depth against width) need no code
here: derive them with `dataclasses.replace(config, ...)`. Left out on purpose: post-LN, which
chapter 4.2.3 wires by hand because the rewiring is what its section teaches.

Used by experiments/ablations.py and experiments/scaling.py, chapter 4.2.3
(chapters/04-math/04-normalisation-and-optimisation.ipynb) and chapter 5.4.2
(chapters/05-practice/05-ablations-and-scaling.ipynb).

Shapes: B batch, T time, C channels (n_embd).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from gptlib.corpus import shakespeare_text
from gptlib.data import train_val_split
from gptlib.kv_cache import KVCache
from gptlib.model import GPT, Block, set_attention
from gptlib.tokenizer import CharTokenizer


def without_positions(model: GPT) -> GPT:
    """Zero the position table and freeze it: the model no longer knows where a token is.

    The input of the first block becomes E[w_t] alone instead of E[w_t] + P[t]. The table is
    frozen (``requires_grad`` False), so `gptlib.train.configure_optimizer` leaves it out and no
    gradient can bring it back.

    Args:
        model: a built GPT; it is changed in place.
    Returns:
        the same ``model``, so that ``without_positions(GPT(config))`` reads as one expression.

    >>> from gptlib.model import GPTConfig
    >>> m = without_positions(GPT(GPTConfig.preset("tiny", n_layer=1)))
    >>> m.wpe.weight.abs().max().item(), m.wpe.weight.requires_grad
    (0.0, False)
    """
    with torch.no_grad():
        model.wpe.weight.zero_()
    model.wpe.weight.requires_grad_(False)  # configure_optimizer skips frozen parameters
    return model


class BlockWithoutResidual(Block):
    """gptlib's Block with its two skip connections removed; the sub-layers are unchanged.

    Block:  x + Attn(LN_1(x)) = a, then a + MLP(LN_2(a)).
    Here:   Attn(LN_1(x)) = a, then MLP(LN_2(a)).
    """

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); the attention reads and extends its layer of `kv_cache`."""
        x = self.attn(self.ln_1(x), kv_cache)  # was: x = x + self.attn(...)
        return self.mlp(self.ln_2(x))  # was: x = x + self.mlp(...)


def without_residuals(model: GPT) -> GPT:
    """Replace every block of ``model`` by a BlockWithoutResidual holding the same weights.

    The new blocks get the old blocks' parameters (copied, on the same device and dtype), layer
    index, attention path and training mode, so the ablated model starts from exactly the weights
    of the original, and the parameter names (``h.0.attn.c_attn.weight`` ...) are unchanged.

    Args:
        model: a built GPT whose ``model.h`` holds `Block` modules; it is changed in place.
    Returns:
        the same ``model``.
    """
    for i, block in enumerate(model.h):
        # building a Block draws initial weights: fork_rng leaves the caller's random stream be
        with torch.random.fork_rng(devices=[]):
            plain = BlockWithoutResidual(model.config, block.attn.layer_idx)
        set_attention(plain, block.attn.attention).to(next(block.parameters()))
        plain.train(block.training)
        plain.load_state_dict(block.state_dict())
        model.h[i] = plain
    return model


class CharTask(NamedTuple):
    """A character-level training task: the tokenizer and the two parts of the encoded text."""

    tokenizer: CharTokenizer
    train_ids: torch.Tensor  # (N_train,) long
    val_ids: torch.Tensor  # (N_val,) long


def char_task(
    n_chars: int = 1_000_000, val_fraction: float = 0.1, text: str | None = None
) -> CharTask:
    """The small character-level task of the ablation and scaling studies (chapter 5.4.2).

    The first ``n_chars`` characters of the text, a `CharTokenizer` whose vocabulary is every
    character of that slice, and the ids split contiguously (`gptlib.data.train_val_split`): the
    first ``1 - val_fraction`` for training, the rest for validation.

    Args:
        n_chars: how many characters to take from the start of the text.
        val_fraction: the share of the ids, at the end, kept for validation.
        text: the text to cut; by default the Shakespeare corpus (`shakespeare_text()`).
    Returns:
        CharTask(tokenizer, train_ids, val_ids), the ids 1-D long tensors (N_train,), (N_val,).

    >>> tok, train, val = char_task(20, text="abc" * 10)
    >>> tok.decode(train.tolist()), tok.decode(val.tolist())
    ('abcabcabcabcabcabc', 'ab')
    """
    text = (shakespeare_text() if text is None else text)[:n_chars]
    tokenizer = CharTokenizer().train(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (n_chars,)
    train_ids, val_ids = train_val_split(ids, val_fraction)
    return CharTask(tokenizer, train_ids, val_ids)
