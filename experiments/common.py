"""What the experiment scripts share: corpus splits, whole-split losses, CSV and JSON output."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch

from gptlib.bpe import BPETokenizer
from gptlib.data import shakespeare_text, train_val_split
from gptlib.model import GPT
from gptlib.tokenizer import CharTokenizer


def char_corpus(n_chars: int = 1_000_000):
    """The first ``n_chars`` characters of the corpus, character-tokenised and split 90/10.

    Returns:
        (tokenizer, train_ids, val_ids), the ids as 1-D long tensors.
    """
    text = shakespeare_text()[:n_chars]
    tokenizer = CharTokenizer().train(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, 0.1)
    return tokenizer, train_ids, val_ids


def write_rows(path: str | Path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` as a CSV file with a header, creating the folder if needed."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows")


def bpe_corpus(vocab_size: int, val_fraction: float = 0.1):
    """The whole corpus split by characters, a BPE fitted on the training part, both parts encoded.

    This is what ``python -m gptlib train`` does: split first, so the tokenizer never sees the
    validation plays, and the validation characters are the same for every vocabulary size.

    Returns:
        (tokenizer, train_ids, val_ids, val_chars): ids as 1-D long tensors, ``val_chars`` the
        number of validation characters (for bits per character).
    """
    train_text, val_text = train_val_split(shakespeare_text(), val_fraction)
    tokenizer = BPETokenizer().train(train_text, vocab_size=vocab_size)
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    return tokenizer, train_ids, val_ids, len(val_text)


@torch.no_grad()
def split_loss(model: GPT, tokens: torch.Tensor, batch_size: int = 8) -> float:
    """Mean cross-entropy (nats/token) over non-overlapping windows that cover ``tokens``.

    Every window has the model's full ``block_size``, so each token is scored once, with between 0
    and ``block_size - 1`` tokens of context (the last ``len(tokens) % block_size`` are left out).
    """
    T = model.config.block_size
    n_windows = (len(tokens) - 1) // T
    x = tokens[: n_windows * T].view(n_windows, T)  # (W, T)
    y = tokens[1 : n_windows * T + 1].view(n_windows, T)  # (W, T)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, n_windows, batch_size):
        _, loss = model(x[i:i + batch_size], y[i:i + batch_size])
        total += loss.item() * x[i:i + batch_size].numel()
    model.train(was_training)
    return total / x.numel()


def bits_per_char(nats_per_token: float, n_tokens: int, n_chars: int) -> float:
    """Convert a loss in nats per token to bits per character of the same text.

    >>> round(bits_per_char(math.log(2), 10, 20), 3)   # 1 bit per token, 2 characters per token
    0.5
    """
    return nats_per_token / math.log(2) * n_tokens / n_chars


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON, creating the folder if needed."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
