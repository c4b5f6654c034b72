"""Score a trained checkpoint on its whole validation text, in bits per character.

The training log estimates the validation loss on a few random batches; this script scores every
validation token once. It rebuilds the run's split from its ``run.json`` exactly as
``python -m gptlib train`` made it (the corpus cut by characters, first ``1 - val_fraction`` for
training), encodes the validation text with the checkpoint's tokenizer, and cuts it into
consecutive windows of ``block_size`` tokens (``common.split_loss``). The result is converted to
bits per character of the validation text, the unit in which ``experiments/baselines.py``
reports the n-gram baselines, so the two files compare directly.

It also checks the tokenizer for a validation leak: every token a BPE learns is a merge of byte
pairs counted in its training text, so each token's bytes must occur somewhere in the training
text. A vocabulary entry that does not (a name that only the validation plays contain, say) can
only have come from validation text.

    python experiments/evaluate.py            # checkpoints/book-model -> results/book-model.json
    python experiments/evaluate.py --checkpoint runs/mine --out /tmp/mine.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import bits_per_char, split_loss, write_json  # experiments/common.py

from gptlib.checkpoint import load_checkpoint
from gptlib.corpus import load_text, shakespeare_text
from gptlib.data import train_val_split

ROOT = Path(__file__).resolve().parents[1]


def tokens_absent_from(tokenizer, text: str) -> list[str]:
    """Learned vocabulary entries whose bytes never occur in ``text``; [] for a clean tokenizer.

    For a BPE these are the merged tokens (the 256 single bytes exist whatever the text); for a
    character tokenizer, its characters.
    """
    data = text.encode("utf-8")
    merges = getattr(tokenizer, "merges", None)
    if merges is None:  # a character tokenizer: its entries are characters
        return [c for c in tokenizer.decode(range(tokenizer.vocab_size)) if c not in text]
    learned = (tokenizer.vocab[256 + rank] for rank in range(len(merges)))
    return [piece.decode("utf-8", "replace") for piece in learned if piece not in data]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "book-model"))
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "book-model.json"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path = Path(args.checkpoint)
    ck = load_checkpoint(path, load_optimizer=False)
    run = json.loads((path / "run.json").read_text(encoding="utf-8"))
    text = shakespeare_text() if run["data"] == "shakespeare" else load_text(run["data"])
    train_text, val_text = train_val_split(text, run["val_fraction"])
    val_ids = torch.tensor(ck.tokenizer.encode(val_text), dtype=torch.long)
    leaked = tokens_absent_from(ck.tokenizer, train_text)
    t0 = time.perf_counter()
    loss = split_loss(ck.model, val_ids)
    T = ck.model.config.block_size
    result = {
        "checkpoint": str(path.relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path),
        "step": ck.step,
        "tokens_seen": ck.extra.get("tokens_seen") if ck.extra else None,
        "params": ck.model.num_params(),
        "val_chars": len(val_text),
        "val_tokens": len(val_ids),
        "tokens_scored": (len(val_ids) - 1) // T * T,
        "val_loss": loss,
        "bits_per_char": bits_per_char(loss, len(val_ids), len(val_text)),
        "vocab_entries_absent_from_training_text": leaked,
    }
    print(
        f"{result['checkpoint']} (step {ck.step}): {loss:.4f} nats/token over "
        f"{result['tokens_scored']:,} validation tokens = {result['bits_per_char']:.4f} "
        f"bits/char ({time.perf_counter() - t0:.0f} s)"
    )
    print(
        f"vocabulary entries whose bytes never occur in the training text: {len(leaked)}"
        + (f" (e.g. {leaked[:5]})" if leaked else "")
    )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
