"""Genre classification (comedy, history, tragedy) of passages from held-out plays, six ways.

Data (``gptlib.tasks``): passages of 8 consecutive speech lines, labelled with the First Folio
group of their play (``GENRES``). The last three plays of each genre in corpus order are the test
plays, 100 passages each (900 in all); the other 27 plays give 60 passages each for training
(1,620). No test play contributes a training passage. The three plays the book model never saw
in pre-training (``validation_works``) are comedies, so they are all test plays; the six
histories and tragedies of the test set were part of the pre-training text, though never with a
label.

Methods, each trained for the same ``--steps`` steps of ``--batch`` passages where it trains
(the probe: full-batch steps on its stored features):

* ``majority``: the most frequent training label;
* ``naive-bayes``: multinomial naive Bayes over lower-cased words, add-one smoothing (NumPy);
* ``probe``: a linear head on frozen, mean-pooled final hidden states of the book model
  (``GPTClassifier`` with ``freeze(mode="head")``); the features are computed once;
* ``lora``: LoRA adapters of rank 8 on the four Linear layers of every block, and the head;
* ``full``: every weight (``freeze(mode="all")``);
* ``scratch``: the same network from a random initialisation, every weight trained;
* ``last-block`` (only with ``--methods``; not in the committed results): the head, ``ln_f`` and
  the last block trained (``freeze(mode="last_k", k=1)``).

Learning rates are the usual ones for each kind of run and were not tuned on the test plays.
Each training method runs with ``--seeds`` seeds (head initialisation, adapters, batch order).

Writes ``results/classification-runs.csv`` (accuracy per method and seed) and
``results/classification-predictions.csv`` (the predicted label of every test passage, per method
and seed), which chapter 6.1.2 reads.

    python experiments/classification.py   # about 15 minutes of CPU time with one thread

Every run depends only on its method and seed, so the sweep can be split over processes with
``--methods`` and ``--prefix`` and the rows concatenated: the committed files were made that way,
``--methods scratch`` in a second process.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from common import write_rows  # experiments/common.py

from gptlib.checkpoint import load_checkpoint
from gptlib.corpus import shakespeare_works
from gptlib.finetune import GPTClassifier, freeze
from gptlib.lora import add_lora
from gptlib.model import GPT, evaluating
from gptlib.tasks import GENRES, parse_speeches, passage_examples
from gptlib.train import TrainConfig, configure_optimizer, lr_at

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
LABELS = ("comedy", "history", "tragedy")
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
PEAK_LR = {"probe": 1e-2, "last-block": 3e-4, "lora": 1e-3, "full": 3e-4, "scratch": 1e-3}


def genre_data() -> tuple[list, list]:
    """(train, test) lists of ``gptlib.tasks.Example``; test = last three plays of each genre."""
    works = shakespeare_works()
    plays = [w for w in works if GENRES.get(w) in LABELS]
    test_plays = {w for g in LABELS for w in [p for p in plays if GENRES[p] == g][-3:]}
    speeches = {w: parse_speeches(works[w], w) for w in plays}
    train = passage_examples(
        [s for w in plays if w not in test_plays for s in speeches[w]],
        label="genre",
        n_lines=8,
        max_per_work=60,
        seed=0,
    )
    test = passage_examples(
        [s for w in plays if w in test_plays for s in speeches[w]],
        label="genre",
        n_lines=8,
        max_per_work=100,
        seed=0,
    )
    return train, test


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def naive_bayes(train: list, test: list) -> list[str]:
    """Multinomial naive Bayes with add-one smoothing: argmax_c log P(c) + sum_w log P(w | c)."""
    vocab = {w: i for i, w in enumerate(sorted({w for e in train for w in words(e.text)}))}
    counts = np.zeros((len(LABELS), len(vocab)))
    for e in train:
        for w in words(e.text):
            counts[LABELS.index(e.target), vocab[w]] += 1
    log_pw = np.log((counts + 1) / (counts + 1).sum(axis=1, keepdims=True))  # (3, V)
    prior = np.log(np.bincount([LABELS.index(e.target) for e in train], minlength=3) / len(train))
    preds = []
    for e in test:
        ids = [vocab[w] for w in words(e.text) if w in vocab]  # unseen words are skipped
        preds.append(LABELS[int(np.argmax(prior + log_pw[:, ids].sum(axis=1)))])
    return preds


def batch(examples: list, tok, block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T), lengths (B,) and labels (B,) of ``examples``."""
    ids = [tok.encode(e.text)[:block_size] for e in examples]
    x = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)  # (B, T), pad id 0
    for b, row in enumerate(ids):
        x[b, : len(row)] = torch.tensor(row)
    lengths = torch.tensor([len(r) for r in ids])
    labels = torch.tensor([LABELS.index(e.target) for e in examples])
    return x, lengths, labels


@torch.no_grad()
def predict(clf: GPTClassifier, data: list, tok) -> list[str]:
    out = []
    with evaluating(clf):
        for i in range(0, len(data), 32):
            x, lengths, _ = batch(data[i : i + 32], tok, clf.gpt.config.block_size)
            out += [LABELS[k] for k in clf(x, lengths)[0].argmax(-1).tolist()]
    return out


@torch.no_grad()
def features(gpt: GPT, data: list, tok) -> torch.Tensor:
    """Mean-pooled ``ln_f`` outputs (N, C): what ``GPTClassifier(pool="mean")`` feeds its head."""
    clf, out = GPTClassifier(gpt, len(LABELS), pool="mean"), []
    clf.head = torch.nn.Identity()
    with evaluating(clf):
        for i in range(0, len(data), 32):
            x, lengths, _ = batch(data[i : i + 32], tok, gpt.config.block_size)
            out.append(clf(x, lengths)[0])
    return torch.cat(out)


def train_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, steps: int, seed: int
) -> torch.nn.Linear:
    """A linear head on fixed features, full-batch AdamW (the probe costs nothing per step)."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(train_x.size(1), len(LABELS))
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=PEAK_LR["probe"], weight_decay=0.01)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(train_x), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def fine_tune(method: str, base: GPT, train: list, tok, args, seed: int) -> GPTClassifier:
    """Train a ``GPTClassifier`` by ``method`` for ``args.steps`` steps of ``args.batch``."""
    torch.manual_seed(seed)
    gpt = GPT(base.config) if method == "scratch" else copy.deepcopy(base)
    clf = GPTClassifier(gpt, len(LABELS), pool="mean")
    if method == "lora":
        add_lora(
            clf.gpt, LORA_TARGETS, r=8, alpha=16.0, generator=torch.Generator().manual_seed(seed)
        )
    else:
        freeze(clf, "last_k" if method == "last-block" else "all", k=1)
    cfg = TrainConfig(
        max_steps=args.steps,
        lr=PEAK_LR[method],
        min_lr=PEAK_LR[method] / 10,
        warmup_steps=min(30, args.steps),
        weight_decay=0.01,
    )
    opt = configure_optimizer(clf, cfg)
    order = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train), generator=order).tolist()
    clf.train()
    for step in range(args.steps):
        k = (step * args.batch) % len(train)
        if k + args.batch > len(train):  # a new epoch, a new order
            perm = torch.randperm(len(train), generator=order).tolist()
        chosen = [train[perm[(k + j) % len(train)]] for j in range(args.batch)]
        x, lengths, y = batch(chosen, tok, base.config.block_size)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        _, loss = clf(x, lengths, labels=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
        opt.step()
    return clf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="probe,lora,full,scratch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--prefix", default="classification", help="start of the file names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ck = load_checkpoint(ROOT / "checkpoints" / "book-model", load_optimizer=False)
    base, tok = ck.model.eval(), ck.tokenizer
    train, test = genre_data()
    gold = [e.target for e in test]
    print(
        f"{len(train)} training passages {dict(Counter(e.target for e in train))}, "
        f"{len(test)} test passages from {sorted({e.work for e in test})}",
        flush=True,
    )

    runs, preds = [], []

    def record(method: str, seed: int, pred: list[str], seconds: float, params: int) -> None:
        correct = sum(p == g for p, g in zip(pred, gold, strict=True))
        runs.append(
            {
                "method": method,
                "seed": seed,
                "n_test": len(gold),
                "correct": correct,
                "accuracy": round(correct / len(gold), 5),
                "trainable_params": params,
                "seconds": round(seconds, 1),
            }
        )
        preds.extend(
            {
                "method": method,
                "seed": seed,
                "example": i,
                "work": e.work,
                "label": e.target,
                "pred": p,
            }
            for i, (e, p) in enumerate(zip(test, pred, strict=True))
        )
        print(runs[-1], flush=True)
        write_rows(RESULTS / f"{args.prefix}-runs.csv", list(runs[0]), runs)  # after every run
        write_rows(RESULTS / f"{args.prefix}-predictions.csv", list(preds[0]), preds)

    majority = Counter(e.target for e in train).most_common(1)[0][0]
    record("majority", 0, [majority] * len(test), 0.0, 0)
    t0 = time.perf_counter()
    record("naive-bayes", 0, naive_bayes(train, test), time.perf_counter() - t0, 0)
    methods = args.methods.split(",")
    if "probe" in methods:
        t0 = time.perf_counter()
        fx_train, fx_test = features(base, train, tok), features(base, test, tok)
        y_train = torch.tensor([LABELS.index(e.target) for e in train])
        feature_seconds = time.perf_counter() - t0
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            head = train_probe(fx_train, y_train, args.steps, seed)
            pred = [LABELS[k] for k in head(fx_test).argmax(-1).tolist()]
            record(
                "probe",
                seed,
                pred,
                feature_seconds + time.perf_counter() - t0,
                sum(p.numel() for p in head.parameters()),
            )
    for method in [m for m in methods if m != "probe"]:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            clf = fine_tune(method, base, train, tok, args, seed)
            params = sum(p.numel() for p in clf.parameters() if p.requires_grad)
            record(method, seed, predict(clf, test, tok), time.perf_counter() - t0, params)
    print(f"chance: {1 / len(LABELS):.3f}, log 3 = {math.log(3):.3f} nats")


if __name__ == "__main__":
    main()
