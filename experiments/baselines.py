"""Count-based baselines for the book model, on exactly the book model's train/validation split.

The book model (``checkpoints/book-model``) was trained on the Shakespeare corpus encoded with its
byte-level BPE tokenizer; its validation split is the last 10% of that token stream
(``gptlib.data.train_val_split``). This script rebuilds the split, decodes each side back to text
(``train_text + val_text`` is the corpus, character for character) and measures, in bits per
character of ``val_text``:

* character n-gram models (``gptlib.ngram``) fitted on ``train_text``: unigram and bigram with
  add-one smoothing, interpolated Kneser-Ney of orders 1-8 and modified Kneser-Ney of orders 4-8;
* token n-gram models (interpolated Kneser-Ney, orders 1-4) fitted on the training tokens, whose
  bits per token are converted with the validation split's tokens per character;
* the book model itself, on every validation token (non-overlapping windows of ``block_size``
  tokens, the same distribution of context lengths as the random windows of the training-time
  estimate, which only looks at ``eval_iters`` batches).

The conversion from a model's loss in nats per token to bits per character is

    bits/char = (nats/token) / ln 2 * (validation tokens / validation characters).

Run from the repository root (a few minutes on a laptop CPU; the n-gram fits dominate):

    python experiments/baselines.py                 # writes experiments/results/baselines.json
    python experiments/baselines.py --threads 1     # on a busy machine

Chapter 5.4 (``chapters/05-practice/04-results.ipynb``) reads the JSON file.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from gptlib.checkpoint import load_checkpoint
from gptlib.data import shakespeare_text, train_val_split
from gptlib.ngram import NGramModel

ROOT = Path(__file__).resolve().parents[1]


def book_split(text: str, tokenizer, val_fraction: float) -> dict:
    """The book model's split as token tensors and the exact texts they decode to."""
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, val_fraction)
    train_text, val_text = tokenizer.decode(train_ids.tolist()), tokenizer.decode(val_ids.tolist())
    if train_text + val_text != text:
        raise RuntimeError("the split does not fall on a character boundary")
    return {"train_ids": train_ids, "val_ids": val_ids, "train_text": train_text,
            "val_text": val_text}


@torch.no_grad()
def model_loss(model, tokens: torch.Tensor, batch_size: int = 8) -> tuple[float, int]:
    """Mean cross-entropy (nats/token) over non-overlapping windows covering ``tokens``."""
    T = model.config.block_size
    n_windows = (len(tokens) - 1) // T
    x = tokens[: n_windows * T].view(n_windows, T)  # (W, T)
    y = tokens[1 : n_windows * T + 1].view(n_windows, T)  # (W, T)
    model.eval()
    total = 0.0
    for i in range(0, n_windows, batch_size):
        _, loss = model(x[i:i + batch_size], y[i:i + batch_size])
        total += loss.item() * x[i:i + batch_size].numel()
    return total / x.numel(), x.numel()


def ngram_row(name: str, order: int, smoothing: str, train, val, n_chars: int,
              vocab) -> dict:
    t0 = time.perf_counter()
    model = NGramModel(order, smoothing=smoothing, vocab=vocab).fit(train)
    bits = model.cross_entropy(val)
    stored = sum(len(keys) for keys in model._keys[1:])  # distinct m-grams, m = 1..n
    row = {"name": name, "order": order, "smoothing": smoothing, "stored_ngrams": stored,
           "bits_per_symbol": bits, "bits_per_char": bits * len(val) / n_chars}
    print(f"{name:28s} {row['bits_per_char']:.4f} bits/char  ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "book-model"))
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "baselines.json"))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-model", action="store_true", help="only the n-gram baselines")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ck = load_checkpoint(args.checkpoint, load_optimizer=False)
    run = json.loads((Path(args.checkpoint) / "run.json").read_text(encoding="utf-8"))
    val_fraction = run["val_fraction"]
    text = shakespeare_text()
    split = book_split(text, ck.tokenizer, val_fraction)
    train_text, val_text = split["train_text"], split["val_text"]
    n_val_chars = len(val_text)
    result = {
        "corpus_chars": len(text), "val_fraction": val_fraction,
        "train": {"tokens": len(split["train_ids"]), "chars": len(train_text)},
        "val": {"tokens": len(split["val_ids"]), "chars": n_val_chars},
        "char_ngrams": [], "token_ngrams": [],
    }
    print(f"train {len(train_text):,} chars / {len(split['train_ids']):,} tokens; "
          f"val {n_val_chars:,} chars / {len(split['val_ids']):,} tokens")

    chars = sorted(set(text))
    rows = result["char_ngrams"]
    rows.append(ngram_row("unigram, add-one", 1, "add-k", train_text, val_text, n_val_chars,
                          chars))
    rows.append(ngram_row("bigram, add-one", 2, "add-k", train_text, val_text, n_val_chars,
                          chars))
    for n in range(1, 9):
        rows.append(ngram_row(f"Kneser-Ney, order {n}", n, "kneser-ney", train_text, val_text,
                              n_val_chars, chars))
    for n in range(4, 9):
        rows.append(ngram_row(f"modified Kneser-Ney, order {n}", n, "modified-kneser-ney",
                              train_text, val_text, n_val_chars, chars))

    vocab = range(ck.tokenizer.vocab_size)
    train_ids, val_ids = split["train_ids"].numpy(), split["val_ids"].numpy()
    for n in range(1, 5):
        result["token_ngrams"].append(ngram_row(
            f"token Kneser-Ney, order {n}", n, "kneser-ney", train_ids, val_ids, n_val_chars,
            vocab))

    if not args.skip_model:
        t0 = time.perf_counter()
        loss, n_tokens = model_loss(ck.model, split["val_ids"])
        result["book_model"] = {
            "step": ck.step, "val_loss": loss, "tokens_evaluated": n_tokens,
            "bits_per_char": loss / math.log(2) * len(split["val_ids"]) / n_val_chars}
        print(f"book model (step {ck.step}): {loss:.4f} nats/token, "
              f"{result['book_model']['bits_per_char']:.4f} bits/char "
              f"({time.perf_counter() - t0:.0f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
