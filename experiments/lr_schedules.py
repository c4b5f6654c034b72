"""Short runs over a grid of learning-rate schedules, for the explorer of chapter 3.2.4.

The model, data and batches are those of ``chapters/03-algorithm/05-optimizer.ipynb``: a 2-layer
character-level GPT (62,208 parameters, context 32) on the first 600,000 characters of the
corpus, 80 AdamW updates of 16 sequences, clipping at 1, the same initial weights (seed 0) and
batch order in every run. Only the schedule of `gptlib.train.lr_at` changes:

* warmup steps: 0, 10, 40;
* peak learning rate: 1e-3, 3e-3, 1e-2, 3e-2;
* decay: none (min_lr = peak) or cosine down to a tenth of the peak.

That is 24 runs, about 2 minutes on one idle CPU core. Run from the repository root:

    python experiments/lr_schedules.py        # writes results/lr-schedules.json

The page reads the file with `gptlib.explorers.lr_schedule_explorer`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import torch

from gptlib.corpus import shakespeare_text
from gptlib.data import train_val_split
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer
from gptlib.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
WARMUPS = (0, 10, 40)
PEAKS = (1e-3, 3e-3, 1e-2, 3e-2)
DECAYS = (1.0, 0.1)  # min_lr / peak
BASE = TrainConfig(
    max_steps=80,
    batch_size=16,
    lr=3e-3,
    min_lr=3e-4,
    warmup_steps=10,
    grad_clip=1.0,
    eval_interval=80,
    eval_iters=8,
    log_interval=1,
    seed=0,
    device="cpu",
)


def setup() -> tuple[GPTConfig, torch.Tensor, torch.Tensor]:
    """The page's model configuration and character split."""
    text = shakespeare_text()
    tok = CharTokenizer().train(text)
    data = torch.tensor(tok.encode(text[:600_000]))
    train_ids, val_ids = train_val_split(data, val_fraction=0.1)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=48)
    return config, train_ids, val_ids


def run(
    config: GPTConfig,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    warmup: int,
    peak: float,
    decay: float,
) -> tuple[list[float], float]:
    """Training loss at every step and the final validation loss of one schedule."""
    torch.manual_seed(0)  # the same initial weights as the page's fresh_model()
    cfg = dataclasses.replace(BASE, warmup_steps=warmup, lr=peak, min_lr=peak * decay)
    result = train(GPT(config), train_ids, val_ids, cfg, progress=False)
    return [r["train_loss"] for r in result.history], float(result.val_loss)


def main() -> None:
    torch.set_num_threads(1)
    config, train_ids, val_ids = setup()
    rows = []
    for warmup, peak, decay in itertools.product(WARMUPS, PEAKS, DECAYS):
        losses, val = run(config, train_ids, val_ids, warmup, peak, decay)
        print(f"warmup {warmup:3d}  peak {peak:.0e}  decay {decay:.1f}: val {val:.3f}")
        rows.append(
            {
                "warmup": warmup,
                "peak": peak,
                "decay": decay,
                "train_loss": [round(x, 5) for x in losses],
                "val_loss": round(val, 5),
            }
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"config": BASE.to_dict(), "runs": rows}
    (RESULTS / "lr-schedules.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
