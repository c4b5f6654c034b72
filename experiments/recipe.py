"""Short seeded runs that choose the book model's recipe, before the long run that trains it.

The book's model must beat the best n-gram baseline within a 2-hour CPU budget, so each choice
(learning rate, width and depth, vocabulary size, dropout) is measured here on short runs rather
than guessed. Every run uses the real split: the whole corpus cut by characters (first 90% train,
last 10% validation), a BPE fitted on the training characters only, and is scored on *every*
validation token in bits per character, so runs with different vocabularies compare fairly.

Two regimes:

* **fresh data** (``train_frac`` 1.0): 240 updates of 16 x 256 tokens, about 1M tokens, less than
  one pass over the 1.5M training tokens. This ranks learning rates and shapes.
* **repeated data** (``train_frac`` 0.125): the same 1M tokens drawn from the first eighth of the
  training tokens, about 5 passes over it. The long run will pass over the whole training split
  10 to 15 times, so overfitting, and therefore dropout, can only be judged where data repeats.
  The proxy is rough (a model also overfits a small set faster than a large one) and the page
  says so.

Every run: seed 0 for initialisation and batch order, AdamW (gptlib.train) with betas
(0.9, 0.95), weight decay 0.1, clipping at 1.0, 24 warmup updates, cosine decay to a tenth of the
peak, context 256, one CPU thread; ``--jobs 2`` runs two at a time on a 2-core machine (each
run's ``tokens_per_s`` is then that of one thread sharing memory bandwidth with the other).

Run from the repository root (about 30 minutes with ``--jobs 2`` on an idle 2-core CPU):

    python experiments/recipe.py --jobs 2     # writes results/recipe.csv and recipe-curves.csv

Chapter 5.4 (``chapters/05-practice/04-results.ipynb``) reads both files.
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import bits_per_char, bpe_corpus, split_loss, write_rows  # experiments/common.py

from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(vocab_size=4096, n_layer=6, n_head=6, n_embd=192, dropout=0.0, lr=2e-3, train_frac=1.0)
RUNS = [  # (name, changes to BASE)
    ("lr 1e-3", dict(lr=1e-3)),
    ("lr 2e-3 (base)", dict()),
    ("lr 4e-3", dict(lr=4e-3)),
    ("4 layers x 256", dict(n_layer=4, n_head=4, n_embd=256)),
    ("8 layers x 192", dict(n_layer=8)),
    ("vocab 2048", dict(vocab_size=2048)),
    ("vocab 8192", dict(vocab_size=8192)),
    ("dropout 0.1", dict(dropout=0.1)),
    ("repeated, dropout 0", dict(train_frac=0.125)),
    ("repeated, dropout 0.1", dict(train_frac=0.125, dropout=0.1)),
]
COLUMNS = [
    "name",
    "vocab_size",
    "n_layer",
    "n_embd",
    "dropout",
    "lr",
    "train_frac",
    "params",
    "train_tokens",
    "tokens_seen",
    "passes",
    "train_loss",
    "val_loss",
    "val_tokens",
    "val_chars",
    "bits_per_char",
    "seconds",
    "tokens_per_s",
]


def run_one(name: str, changes: dict, steps: int) -> tuple[dict, list[dict]]:
    torch.set_num_threads(1)
    spec = {**BASE, **changes}
    _, train_ids, val_ids, val_chars = bpe_corpus(spec["vocab_size"])
    train_ids = train_ids[: int(len(train_ids) * spec["train_frac"])]
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=spec["vocab_size"],
            block_size=256,
            n_layer=spec["n_layer"],
            n_head=spec["n_head"],
            n_embd=spec["n_embd"],
            dropout=spec["dropout"],
        )
    )
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=16,
        lr=spec["lr"],
        min_lr=spec["lr"] / 10,
        warmup_steps=min(24, steps // 10),
        eval_interval=max(1, steps // 4),
        eval_iters=10,
        log_interval=steps,
        seed=0,
        device="cpu",
    )
    t0 = time.perf_counter()
    result = train(model, train_ids, val_ids, cfg, progress=False)
    seconds = time.perf_counter() - t0
    loss = split_loss(model, val_ids)
    # the same number of training tokens, from the start of what the run trained on: the gap to
    # the validation loss shows memorisation where data repeats
    train_loss = split_loss(model, train_ids[: len(val_ids)])
    n_scored = (len(val_ids) - 1) // 256 * 256
    seen = steps * 16 * 256
    row = {
        "name": name,
        **{k: spec[k] for k in ("vocab_size", "n_layer", "n_embd", "dropout", "lr", "train_frac")},
        "params": model.num_params(),
        "train_tokens": len(train_ids),
        "tokens_seen": seen,
        "passes": round(seen / len(train_ids), 2),
        "train_loss": round(train_loss, 4),
        "val_loss": round(loss, 4),
        "val_tokens": len(val_ids),
        "val_chars": val_chars,
        "bits_per_char": round(bits_per_char(loss, len(val_ids), val_chars), 4),
        "seconds": round(seconds),
        "tokens_per_s": round(seen / seconds),
    }
    curve = [
        {
            "name": name,
            "step": h["step"],
            "train_loss": h["train_loss"],
            "val_loss": h["val_loss"],
            "val_bits_per_char": bits_per_char(h["val_loss"], len(val_ids), val_chars),
        }
        for h in result.history
        if h.get("val_loss") not in (None, "")
    ]
    print(
        f"{name:24s} {row['bits_per_char']:.4f} bits/char ({n_scored:,} tokens scored), "
        f"{row['seconds']} s",
        flush=True,
    )
    return row, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one thread each")
    parser.add_argument("--only", help="comma-separated run names (default: all)")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "recipe.csv"))
    args = parser.parse_args()
    runs = [r for r in RUNS if not args.only or r[0] in args.only.split(",")]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        done = list(
            pool.map(run_one, [r[0] for r in runs], [r[1] for r in runs], [args.steps] * len(runs))
        )
    out = Path(args.out)
    write_rows(out, COLUMNS, [row for row, _ in done])
    write_rows(
        out.with_name(out.stem + "-curves.csv"),
        ["name", "step", "train_loss", "val_loss", "val_bits_per_char"],
        [point for _, curve in done for point in curve],
    )
    assert all(math.isfinite(row["val_loss"]) for row, _ in done), "a run diverged"


if __name__ == "__main__":
    main()
