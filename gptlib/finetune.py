"""Fine-tuning a pretrained GPT: chat turns with a loss mask, and a classification head.

Two ways to reuse the book's model for a task:

- **Supervised fine-tuning on conversations.** ``ChatFormat`` adds role tokens such as
  ``<|user|>`` and ``<|end|>`` as new ids after the tokenizer's vocabulary (the tokenizer classes
  stay untouched), renders a list of ``{"role", "content"}`` messages with them, and returns a
  loss mask that is 1 only on what the assistant says, so the model learns to answer, not to
  imitate the user (Ouyang et al. 2022, Sec. 3.5 and Appendix C: SFT on demonstrations; the
  role markers follow the chat templates of later open models). ``resize_vocab`` makes room for
  the new ids in the tied embedding/output matrix; ``sft_targets`` turns a mask into targets
  with -100 where ``GPT.forward`` must not count the loss; ``collate`` pads a batch.
- **A task head, GPT-1 style** (Radford et al. 2018, "Improving Language Understanding by
  Generative Pre-Training", Sec. 3.2): ``GPTClassifier`` reads the final hidden state after
  ``ln_f`` at the last real token (or its mean over the real tokens) and applies one linear
  layer; ``freeze`` chooses what trains (the head, the last k blocks too, or everything).

Training loops live elsewhere (plain AdamW or ``gptlib.train``); adapters live in
``gptlib.lora``. Left out on purpose: GPT-1's auxiliary language-model loss during fine-tuning,
multi-turn packing, and tokenizer-level special tokens.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.lora import count_trainable
from gptlib.model import GPT
from gptlib.tokenizer import Tokenizer

IGNORE = -100  # the target that F.cross_entropy (and so GPT.forward) leaves out of the loss
ROLES = ("system", "user", "assistant")


class ChatFormat:
    """Role tokens appended to a tokenizer's vocabulary, and conversations encoded with them.

    A conversation renders as ``<|user|>Hi<|end|><|assistant|>Hello<|end|>``: a role token,
    the content (encoded by the base tokenizer), an end-of-turn token.

    >>> from gptlib.bpe import BPETokenizer
    >>> fmt = ChatFormat(BPETokenizer())  # bytes only: ids 0-255, "H" is 72; specials 256-259
    >>> fmt.encode_conversation([{"role": "user", "content": "H"},
    ...                          {"role": "assistant", "content": "i"}])
    ([257, 72, 259, 258, 105, 259], [0, 0, 0, 0, 1, 1])

    Args:
        tokenizer: the base tokenizer; its ids keep their meaning.
        special_tokens: the strings for the system, user and assistant roles and end of turn;
            they get ids ``tokenizer.vocab_size``, ``+ 1``, ... in this order.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        special_tokens: Sequence[str] = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    ) -> None:
        if len(special_tokens) != 4 or len(set(special_tokens)) != 4:
            raise ValueError(
                "special_tokens needs four different strings: system, user, "
                f"assistant, end of turn; got {special_tokens}"
            )
        self.tokenizer = tokenizer
        self.base_vocab_size = tokenizer.vocab_size
        self.special = {t: self.base_vocab_size + k for k, t in enumerate(special_tokens)}
        self.role_token = dict(zip(ROLES, special_tokens[:3], strict=True))
        self.end_token = special_tokens[3]
        self.end_id = self.special[self.end_token]  # a stop token for generation
        self._strings = {i: t for t, i in self.special.items()}
        longest_first = sorted(special_tokens, key=len, reverse=True)
        self._splitter = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")

    @property
    def vocab_size(self) -> int:
        """The base vocabulary plus the four special tokens: what ``resize_vocab`` needs."""
        return self.base_vocab_size + len(self.special)

    def render(self, messages: Sequence[dict]) -> str:
        """The conversation as one string, special tokens written out."""
        return "".join(
            f"{self.role_token[m['role']]}{m['content']}{self.end_token}"
            for m in self._checked(messages)
        )

    def encode(self, text: str) -> list[int]:
        """Text in which special-token strings become their ids; the rest goes to the tokenizer.

        Use it on text you trust (a rendered conversation); user content goes through
        ``encode_conversation``, where a typed "<|end|>" stays ordinary text.
        """
        ids: list[int] = []
        for k, part in enumerate(self._splitter.split(text)):  # special strings at odd k
            if k % 2:
                ids.append(self.special[part])
            elif part:
                ids += self.tokenizer.encode(part)
        return ids

    def encode_conversation(
        self, messages: Sequence[dict], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[int]]:
        """Token ids of a conversation and its loss mask.

        Args:
            messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
            add_generation_prompt: end with ``<|assistant|>`` so the model writes the answer.
        Returns:
            ``(ids, mask)``, two lists of equal length; mask is 1 on the tokens of assistant
            content and on the ``<|end|>`` that closes each assistant turn (the model must learn
            to stop), 0 on role tokens, system and user turns.
        """
        ids: list[int] = []
        mask: list[int] = []
        for m in self._checked(messages):
            learn = int(m["role"] == "assistant")
            content = self.tokenizer.encode(m["content"])
            ids += [self.special[self.role_token[m["role"]]], *content, self.end_id]
            mask += [0, *[learn] * len(content), learn]
        if add_generation_prompt:
            ids.append(self.special[self.role_token["assistant"]])
            mask.append(0)
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text, special tokens written out as their strings."""
        out, run = [], []
        for i in [int(i) for i in ids]:
            if i in self._strings:
                out += [self.tokenizer.decode(run), self._strings[i]]
                run = []
            else:
                run.append(i)
        return "".join(out) + self.tokenizer.decode(run)

    @staticmethod
    def _checked(messages: Sequence[dict]) -> Sequence[dict]:
        for m in messages:
            if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError(
                    f"a message needs a role in {ROLES} and a string content, got {m!r}"
                )
        return messages


@torch.no_grad()
def resize_vocab(model: GPT, new_vocab_size: int) -> GPT:
    """A new GPT with ``new_vocab_size`` rows in its tied embedding/output matrix.

    Old rows are copied; each new row is the mean of the old rows. With tied weights a new row
    is also an output vector, so its logit is h . mean(E), the mean of the old logits: new
    tokens start with an average probability, not a random one, and the model's predictions
    move little until training teaches the new tokens (Hewitt 2021, "Initializing New Word
    Embeddings for Pretrained Language Models"). Every other weight is copied, so the logits of
    the old tokens are unchanged.

    Args:
        model: a GPT (unchanged); new_vocab_size: at least its ``config.vocab_size``.
    Returns:
        a new GPT on the same device and dtype, its config a ``dataclasses.replace`` of the old.
    """
    old = model.config.vocab_size
    if new_vocab_size < old:
        raise ValueError(
            f"new_vocab_size={new_vocab_size} is smaller than the model's "
            f"vocab_size={old}; resize_vocab only adds tokens"
        )
    w = model.wte.weight
    new = GPT(dataclasses.replace(model.config, vocab_size=new_vocab_size)).to(w.device, w.dtype)
    state = {
        k: v for k, v in model.state_dict().items() if k not in ("wte.weight", "lm_head.weight")
    }
    result = new.load_state_dict(state, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"wte.weight", "lm_head.weight"}:
        raise ValueError(
            "resize_vocab needs a plain GPT (call it before add_lora); unexpected "
            f"weights {result.unexpected_keys[:4]}"
        )
    new.wte.weight[:old] = w  # (V_old, C); lm_head is the same tensor
    new.wte.weight[old:] = w.mean(dim=0)  # (C,) broadcast over the new rows
    new.train(model.training)
    return new


def sft_targets(
    ids: Sequence[int] | torch.Tensor, mask: Sequence[int] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token inputs and targets, the target -100 wherever the mask is 0.

    The target at position t is ids[t + 1]; it counts only if mask[t + 1] is 1.

    >>> sft_targets([5, 6, 7, 8], [0, 0, 1, 1])
    (tensor([5, 6, 7]), tensor([-100,    7,    8]))

    Returns:
        ``(x, y)``, two (T - 1,) long tensors.
    """
    ids, mask = torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask)
    if ids.shape != mask.shape or ids.dim() != 1:
        raise ValueError(
            f"ids and mask must be 1-D and equally long, got {tuple(ids.shape)} "
            f"and {tuple(mask.shape)}"
        )
    y = ids[1:].masked_fill(mask[1:] == 0, IGNORE)  # (T-1,)
    return ids[:-1], y


def collate(
    examples: Sequence[tuple[torch.Tensor, torch.Tensor]],
    block_size: int,
    pad_id: int = 0,
    truncate: str = "left",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (x, y) pairs on the right to the longest one (at most ``block_size``) and stack them.

    Padding goes after the real tokens: the causal mask keeps it from changing them, and its
    targets are -100, so it adds nothing to the loss. An example longer than ``block_size`` loses
    its start (``truncate="left"``, keeping the answer at the end of a conversation) or its end
    (``"right"``).

    Returns:
        ``(X, Y)``, (B, T) long tensors with T = min(block_size, longest example).
    """
    if truncate not in ("left", "right"):
        raise ValueError(f"truncate must be 'left' or 'right', got {truncate!r}")
    if not examples:
        raise ValueError("collate needs at least one example")
    cut = [
        (x[-block_size:], y[-block_size:])
        if truncate == "left"
        else (x[:block_size], y[:block_size])
        for x, y in examples
    ]
    T = max(len(x) for x, _ in cut)
    X = torch.full((len(cut), T), pad_id, dtype=torch.long)  # (B, T)
    Y = torch.full((len(cut), T), IGNORE, dtype=torch.long)  # (B, T)
    for b, (x, y) in enumerate(cut):
        X[b, : len(x)], Y[b, : len(y)] = x, y
    return X, Y


class GPTClassifier(nn.Module):
    """A GPT body with a linear head on its final hidden state (Radford et al. 2018, Sec. 3.2).

    Args:
        model: the pretrained GPT (shared, not copied); its lm_head is not used.
        n_classes: number of labels.
        pool: "last" reads the last real token (GPT-1's choice: in a causal model only it has
            seen the whole input), "mean" averages over the real tokens.
    """

    def __init__(self, model: GPT, n_classes: int, pool: str = "last") -> None:
        super().__init__()
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
        self.gpt, self.pool = model, pool
        self.head = nn.Linear(model.config.n_embd, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)  # as gptlib.model.init_weights does
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        idx: torch.Tensor,
        lengths: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class logits for a right-padded batch.

        Args:
            idx: (B, T) token ids, each row's real tokens first, padding after.
            lengths: (B,) number of real tokens per row (default: all T).
            labels: optional (B,) class ids for a cross-entropy loss.
        Returns:
            logits (B, n_classes) and the mean loss or None.
        """
        B, T = idx.shape
        lengths = torch.full((B,), T, device=idx.device) if lengths is None else lengths
        h = self.gpt.ln_f(self.gpt.hidden_states(idx)[-1])  # (B, T, C)
        if self.pool == "last":
            pooled = h[torch.arange(B, device=idx.device), lengths - 1]  # (B, C)
        else:
            real = torch.arange(T, device=idx.device)[None, :] < lengths[:, None]  # (B, T)
            pooled = (h * real[..., None]).sum(1) / lengths[:, None].to(h.dtype)  # (B, C)
        logits = self.head(pooled)  # (B, n_classes)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return logits, loss


def freeze(classifier: GPTClassifier, mode: str = "head", k: int = 1) -> int:
    """Choose which parameters of a ``GPTClassifier`` train; the others are frozen.

    Args:
        mode: "head" (only the linear head: a linear probe), "last_k" (the head, ``ln_f`` and
            the last ``k`` blocks), or "all" (full fine-tuning).
        k: number of blocks for "last_k".
    Returns:
        the number of trainable parameters.
    """
    gpt = classifier.gpt
    if mode not in ("head", "last_k", "all"):
        raise ValueError(f"mode must be 'head', 'last_k' or 'all', got {mode!r}")
    if mode == "last_k" and not 1 <= k <= len(gpt.h):
        raise ValueError(f"k must be between 1 and n_layer={len(gpt.h)}, got {k}")
    classifier.requires_grad_(mode == "all")
    classifier.head.requires_grad_(True)
    if mode == "last_k":
        gpt.ln_f.requires_grad_(True)
        for block in gpt.h[len(gpt.h) - k :]:
            block.requires_grad_(True)
    return count_trainable(classifier)
