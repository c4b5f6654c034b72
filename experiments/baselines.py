"""Count-based baselines for the book model, on exactly the book model's train/validation split.

``python -m gptlib train`` splits the corpus by characters before anything is fitted: the first
90% is the training text, the last 10% (whole plays the model never sees) the validation text
(``gptlib.data.train_val_split`` on the string). This script makes the same split and measures,
in bits per character of the validation text:

* character n-gram models (``gptlib.ngram``) fitted on the training text: unigram and bigram with
  add-one smoothing, interpolated Kneser-Ney of orders 1-8 and modified Kneser-Ney of orders 4-8;
* token n-gram models (interpolated Kneser-Ney, orders 1-4) over the book model's byte-level BPE,
  fitted, like the model's own tokenizer, on the training text only (vocabulary size from
  ``checkpoints/book-model.json``); bits per token are converted with the validation text's
  tokens per character.

Nothing here reads the trained model, so the baselines can be fitted before it exists;
``experiments/evaluate.py`` scores the model on the same validation text. The conversion from
nats (or bits) per token to bits per character is

    bits/char = (nats/token) / ln 2 * (validation tokens / validation characters).

Run from the repository root (a few minutes on a laptop CPU; the n-gram fits dominate):

    python experiments/baselines.py                 # writes experiments/results/baselines.json

Chapter 5.4 (``chapters/05-practice/04-results.ipynb``) reads the JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import bpe_corpus, write_json  # experiments/common.py

from gptlib.corpus import shakespeare_text
from gptlib.data import train_val_split
from gptlib.ngram import NGramModel

ROOT = Path(__file__).resolve().parents[1]


def ngram_row(name: str, order: int, smoothing: str, train, val, n_chars: int, vocab) -> dict:
    t0 = time.perf_counter()
    model = NGramModel(order, smoothing=smoothing, vocab=vocab).fit(train)
    bits = model.cross_entropy(val)
    stored = model.num_ngrams  # distinct m-grams, m = 1..n
    row = {
        "name": name,
        "order": order,
        "smoothing": smoothing,
        "stored_ngrams": stored,
        "bits_per_symbol": bits,
        "bits_per_char": bits * len(val) / n_chars,
    }
    print(
        f"{name:28s} {row['bits_per_char']:.4f} bits/char  ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "checkpoints" / "book-model.json"))
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "baselines.json"))
    args = parser.parse_args()

    run = json.loads(Path(args.recipe).read_text(encoding="utf-8"))
    val_fraction, vocab_size = run["val_fraction"], run["tokenizer"]["vocab_size"]
    text = shakespeare_text()
    train_text, val_text = train_val_split(text, val_fraction)
    tokenizer, train_ids, val_ids, n_val_chars = bpe_corpus(vocab_size, val_fraction)
    result = {
        "corpus_chars": len(text),
        "val_fraction": val_fraction,
        "vocab_size": vocab_size,
        "train": {"tokens": len(train_ids), "chars": len(train_text)},
        "val": {"tokens": len(val_ids), "chars": n_val_chars},
        "char_ngrams": [],
        "token_ngrams": [],
    }
    print(
        f"train {len(train_text):,} chars / {len(train_ids):,} tokens; "
        f"val {n_val_chars:,} chars / {len(val_ids):,} tokens"
    )

    chars = sorted(set(text))
    rows = result["char_ngrams"]
    rows.append(ngram_row("unigram, add-one", 1, "add-k", train_text, val_text, n_val_chars, chars))
    rows.append(ngram_row("bigram, add-one", 2, "add-k", train_text, val_text, n_val_chars, chars))
    for n in range(1, 9):
        rows.append(
            ngram_row(
                f"Kneser-Ney, order {n}", n, "kneser-ney", train_text, val_text, n_val_chars, chars
            )
        )
    for n in range(4, 9):
        rows.append(
            ngram_row(
                f"modified Kneser-Ney, order {n}",
                n,
                "modified-kneser-ney",
                train_text,
                val_text,
                n_val_chars,
                chars,
            )
        )

    vocab = range(tokenizer.vocab_size)
    for n in range(1, 5):
        result["token_ngrams"].append(
            ngram_row(
                f"token Kneser-Ney, order {n}",
                n,
                "kneser-ney",
                train_ids.numpy(),
                val_ids.numpy(),
                n_val_chars,
                vocab,
            )
        )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
