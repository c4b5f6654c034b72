"""Ablations of a small character-level GPT: what each part of the architecture is worth.

Every variant is trained with the same data, recipe and budget, for three seeds (the seed sets the
initial weights and the order of the batches), so that a difference can be compared with the
spread between seeds:

    baseline                 2 layers, 4 heads of size 16, n_embd 64, learned positions
    no position embeddings   the position table zeroed and frozen (requires_grad False)
    no residual connections  every Block replaced by one whose forward drops the two "x +"
    one head of size 64      n_head = 1 (the same parameters as the baseline)
    16 heads of size 4       n_head = 16 (the same parameters as the baseline)
    depth 1, width 96        about the same number of non-embedding parameters as the baseline
    depth 4, width 48        likewise

The two changes that are not configuration fields come from ``gptlib.ablations``, the functions
chapter 5.4.2 (``chapters/05-practice/05-ablations-and-scaling.ipynb``) imports and explains:
``without_positions`` edits a built ``gptlib.model.GPT``, ``without_residuals`` swaps its blocks
for a subclass of ``gptlib.model.Block`` that overrides ``forward``; the model itself has no flag
for either. The data is ``gptlib.ablations.char_task``.

Setup: the first 1,000,000 characters of the Shakespeare corpus, character tokenizer, first 90%
for training; context 32, batches of 32, 1000 AdamW steps (peak learning rate 1e-2 after 20 warmup
steps, cosine decay to 1e-3), validation loss on 20 fixed batches every 100 steps; one thread.

Run from the repository root (about 10 minutes on an idle laptop CPU):

    python experiments/ablations.py        # writes experiments/results/ablations.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from common import eval_rows, write_rows  # experiments/common.py

from gptlib.ablations import char_task, without_positions, without_residuals
from gptlib.device import set_seed
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["variant", "seed", "non_embedding_params", "step", "train_loss", "val_loss"]


def variants(base: GPTConfig) -> dict:
    """name -> (config, change applied to the built model or None)."""
    return {
        "baseline": (base, None),
        "no position embeddings": (base, without_positions),
        "no residual connections": (base, without_residuals),
        "one head of size 64": (dataclasses.replace(base, n_head=1), None),
        "16 heads of size 4": (dataclasses.replace(base, n_head=16), None),
        "depth 1, width 96": (dataclasses.replace(base, n_layer=1, n_embd=96), None),
        "depth 4, width 48": (dataclasses.replace(base, n_layer=4, n_embd=48), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "ablations.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    tokenizer, train_ids, val_ids = char_task(1_000_000)
    base = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=64)
    recipe = TrainConfig(
        max_steps=args.steps,
        batch_size=32,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=20,
        eval_interval=100,
        eval_iters=20,
        log_interval=args.steps,
        checkpoint_interval=0,
        device="cpu",
    )
    rows = []
    for name, (config, change) in variants(base).items():
        for seed in args.seeds:
            set_seed(seed)
            model = GPT(config)
            if change is not None:
                change(model)
            t0 = time.perf_counter()
            result = train(
                model, train_ids, val_ids, dataclasses.replace(recipe, seed=seed), progress=False
            )
            rows += eval_rows(
                result.history, variant=name, seed=seed, non_embedding_params=model.kaplan_params()
            )
            print(
                f"{name:26s} seed {seed}: val loss {result.val_loss:.4f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    write_rows(args.out, COLUMNS, rows)


if __name__ == "__main__":
    main()
