"""A small scaling study: validation loss against model size at a fixed token budget.

Seven character-level GPTs, from about 3 thousand to about 800 thousand non-embedding parameters,
are trained on the same data, in the same order, for the same number of tokens. The script
records the validation loss every ``--eval-every`` steps, so the page can draw both the learning
curves and the final loss against size, and fit the power law of Kaplan et al. (2020),
L(N) = (N_c / N) ** alpha_N.

Setup (every model):
    data       the first 1,000,000 characters of the Shakespeare corpus, character tokenizer,
               first 90% for training, last 10% for validation (gptlib.ablations.char_task)
    budget     --steps updates of 32 sequences of 64 characters (default 800 steps, 1.6M tokens,
               about 1.8 passes over the training text)
    optimiser  AdamW (gptlib.train), peak learning rate 1e-2 * sqrt(64 / n_embd) (wider models
               take smaller steps), 40 warmup steps, cosine decay to a tenth, weight decay 0.1
    seed       0 for initialisation and batch order; the validation batches are the same for all
    threads    1 (deterministic, and the fastest setting on a machine shared with other work)

N counts the parameters of the transformer blocks and the final LayerNorm, Kaplan et al.'s
"non-embedding" parameters; the token embedding (tied to the output layer) and the position
embedding are left out. (``GPT.num_params(non_embedding=True)`` keeps the tied matrix, because it
costs compute as the output layer; for a FLOP count that is the right choice, for this fit it
is not.)

Run from the repository root (about 20 minutes on an idle laptop CPU):

    python experiments/scaling.py          # writes experiments/results/scaling.csv

A learning curve read off one run is not the loss of shorter runs: at step 200 of an 800-step
cosine run the learning rate is still high, where a 200-step run would have decayed it to its
minimum (Hoffmann et al. 2022, Sec. 3.1 and Fig. A1; one reason Kaplan et al.'s allocation
differs from theirs). To fit a loss surface L(N, D), every token budget D needs runs of its own,
each with its schedule ending at D:

    python experiments/scaling.py --budgets 200 400 --out experiments/results/scaling_budgets.csv

(about 20 minutes more). Every row records its run's ``max_steps``; a row is the loss of a
finished run of ``tokens`` tokens only where ``step == max_steps``.

Chapter 5.4.2 (``chapters/05-practice/05-ablations-and-scaling.ipynb``) reads the CSV file.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from common import eval_rows, write_rows  # experiments/common.py

from gptlib.ablations import char_task
from gptlib.device import set_seed
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SIZES = [  # (n_layer, n_embd, n_head): depth and width grow together, as in Kaplan et al.
    (1, 16, 2),
    (2, 24, 2),
    (2, 32, 4),
    (2, 48, 4),
    (3, 64, 4),
    (4, 96, 4),
    (4, 128, 4),
]
COLUMNS = [
    "n_layer",
    "n_embd",
    "n_head",
    "non_embedding_params",
    "total_params",
    "lr",
    "max_steps",
    "step",
    "tokens",
    "train_loss",
    "val_loss",
    "seconds",
]


def run_one(
    n_layer, n_embd, n_head, steps, eval_every, tokenizer, train_ids, val_ids, block, batch
) -> list[dict]:
    """Train one size for ``steps`` updates (its own cosine schedule); one row per evaluation."""
    lr = 1e-2 * math.sqrt(64 / n_embd)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        block_size=block,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
    )
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=batch,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=40,
        eval_interval=eval_every,
        eval_iters=20,
        log_interval=steps,
        checkpoint_interval=0,
        seed=0,
        device="cpu",
    )
    set_seed(0)
    model = GPT(config)
    t0 = time.perf_counter()
    result = train(model, train_ids, val_ids, cfg, progress=False)
    seconds = time.perf_counter() - t0
    n = model.kaplan_params()
    print(
        f"L={n_layer} C={n_embd:3d} steps={steps}: N={n:7,d}  val loss {result.val_loss:.4f}  "
        f"({seconds:.0f} s)",
        flush=True,
    )
    return [
        {**row, "tokens": row["step"] * batch * block}
        for row in eval_rows(
            result.history,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            non_embedding_params=n,
            total_params=model.num_params(),
            lr=lr,
            max_steps=steps,
            seconds=round(seconds, 1),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=None,
        help="run every size once per step budget (default: once, with --steps)",
    )
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "scaling.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    tokenizer, train_ids, val_ids = char_task(1_000_000)
    block, batch = 64, 32
    rows = []
    for steps in args.budgets or [args.steps]:
        for n_layer, n_embd, n_head in SIZES:
            rows += run_one(
                n_layer,
                n_embd,
                n_head,
                steps,
                args.eval_every,
                tokenizer,
                train_ids,
                val_ids,
                block,
                batch,
            )
    write_rows(args.out, COLUMNS, rows)


if __name__ == "__main__":
    main()
