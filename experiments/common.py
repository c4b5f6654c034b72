"""What the experiment scripts share: the BPE split, whole-split losses, CSV and JSON output.

The character-level task of ablations.py and scaling.py is `gptlib.ablations.char_task`, which
chapter 5.4.2 imports too.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch

from gptlib.bpe import BPETokenizer
from gptlib.corpus import shakespeare_text
from gptlib.data import train_val_split
from gptlib.files import atomic_write
from gptlib.model import GPT, evaluating


def write_rows(path: str | Path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` as a CSV file with a header (atomically, creating the folder if needed)."""
    text = io.StringIO(newline="")  # csv writes its own "\r\n" line ends
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "wb") as f:
        f.write(text.getvalue().encode("utf-8"))
    print(f"wrote {len(rows)} rows")


def eval_rows(history: list[dict], **columns) -> list[dict]:
    """One CSV row per evaluation of a training ``history`` (``TrainResult.history``).

    Each row holds ``columns`` (what the run was), then the step and the training and validation
    losses rounded to 5 decimals; log lines without a validation loss are left out.

    >>> eval_rows([{"step": 50, "train_loss": 2.0, "val_loss": None},
    ...            {"step": 100, "train_loss": 1.234567, "val_loss": 1.5}], seed=0)
    [{'seed': 0, 'step': 100, 'train_loss': 1.23457, 'val_loss': 1.5}]
    """
    return [
        {
            **columns,
            "step": h["step"],
            "train_loss": round(h["train_loss"], 5),
            "val_loss": round(h["val_loss"], 5),
        }
        for h in history
        if h["val_loss"] is not None
    ]


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
    total = 0.0
    with evaluating(model):
        for i in range(0, n_windows, batch_size):
            _, loss = model(x[i : i + batch_size], y[i : i + batch_size])
            total += loss.item() * x[i : i + batch_size].numel()
    return total / x.numel()


def bits_per_char(nats_per_token: float, n_tokens: int, n_chars: int) -> float:
    """Convert a loss in nats per token to bits per character of the same text.

    >>> round(bits_per_char(math.log(2), 10, 20), 3)   # 1 bit per token, 2 characters per token
    0.5
    """
    return nats_per_token / math.log(2) * n_tokens / n_chars


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON (atomically, creating the folder if needed)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")
