"""What the experiment scripts share: the character-level corpus slice, Kaplan's N, CSV output."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

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


def non_embedding_params(model: GPT) -> int:
    """Parameters of the blocks and ln_f (Kaplan et al. 2020, Sec. 2.1: N excludes embeddings)."""
    return sum(p.numel() for p in model.h.parameters()) + sum(
        p.numel() for p in model.ln_f.parameters())


def write_rows(path: str | Path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` as a CSV file with a header, creating the folder if needed."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows")
