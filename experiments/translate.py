"""Translation from Early Modern to Modern English word forms by fine-tuning (chapter 6.1.5).

Pairs come from ``gptlib.tasks.modernisation_examples``: every speech line that the rule table
(thou -> you, hath -> has, -eth -> -s, ...) changes, with the rule's output as the reference.
Two rules are held out of fine-tuning altogether, ``doth -> does`` and ``'twas -> it was``, each
with a close relative that stays in (``hath -> has``, ``'tis -> it is``); the three works of the
validation split are held out too (``split_examples(test_works=..., test_tags=...)``). The book's
model, grown by ChatFormat's role tokens, is fine-tuned on ``<|user|>In modern English: LINE
<|end|><|assistant|>MODERN LINE<|end|>`` with the loss on the answer only: 600 updates of 16
pairs, AdamW at 3e-4, warmup and cosine decay.

Test sets (up to 300 lines each, drawn with seed 0):

* **unseen lines**: held-out plays, every change made by a rule and a word seen in fine-tuning;
* **unseen words**: lines of held-out plays or of held-out speeches of training plays with a word
  that no fine-tuning line changes, under a rule that fine-tuning did show (mostly -est, -eth);
* **held-out rule**: lines that need ``doth`` or ``'twas`` changed (any play);
* **nothing to change**: lines of the held-out plays that no rule touches (the reference is the
  line itself): does the model leave them alone?

Systems: the copy baseline (output = input); the rule set (it wrote the references, so it is
perfect by construction: the ceiling); the rule set without the two held-out rules (exactly the
knowledge the fine-tuning data shows); the pre-trained model with a 3-shot prompt; the
fine-tuned model (greedy). Metrics: exact match (Wilson 95 % interval) and sentence-level chrF
(Popovic 2015: character 1- to 6-grams, spaces removed, beta = 2, averaged over lines, with a
bootstrap 95 % interval over lines, 1,000 resamples).

Run from the repository root (about 6 minutes at one thread on an idle CPU):

    python experiments/translate.py   # writes results/translate-scores.csv,
                                      # translate-predictions.csv and translate-run.json

Chapter 6.1.5 (``chapters/06-applications/05-translation.ipynb``) reads them.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from common import write_json, write_rows  # experiments/common.py
from instruct import (
    RESULTS,
    all_speeches,
    finetune,
    greedy,
    load_base_model,
    load_book_model,
    newline_tokens,
    wilson,
)

from gptlib import tasks
from gptlib.finetune import ChatFormat
from gptlib.model import GPT

HELD_RULES = ("rule:doth", "rule:'twas")
PROMPT = "In modern English: "


def char_ngrams(text: str, n: int) -> Counter:
    """Character n-grams of ``text`` with whitespace removed (as chrF counts them).

    >>> sorted(char_ngrams("ab c", 2).items())
    [('ab', 1), ('bc', 1)]
    """
    s = "".join(text.split())
    return Counter(s[i : i + n] for i in range(len(s) - n + 1))


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF in [0, 100] (Popovic 2015): precision and recall averaged over n, then F-beta.

    >>> chrf("you are", "you are"), round(chrf("thou art", "you are"), 1)
    (100.0, 33.5)
    """
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        hyp, ref = char_ngrams(hypothesis, n), char_ngrams(reference, n)
        if not hyp or not ref:  # a line too short for this n: skip the order, as sacrebleu does
            continue
        match = sum((hyp & ref).values())
        precisions.append(match / sum(hyp.values()))
        recalls.append(match / sum(ref.values()))
    if not precisions:
        return 100.0 if hypothesis.split() == reference.split() else 0.0
    p, r = float(np.mean(precisions)), float(np.mean(recalls))
    if p + r == 0:
        return 0.0
    return 100.0 * (1 + beta**2) * p * r / (beta**2 * p + r)


def bootstrap_mean(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> tuple:
    """95 % percentile bootstrap interval of a mean."""
    v = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def rule_set_without(held: Sequence[str]) -> Callable[[str, dict], str]:
    """``modernise`` with some word rules switched off (the rules fine-tuning showed)."""
    words = [t.split(":", 1)[1] for t in held]

    def apply(line: str, vocabulary: dict) -> str:
        saved = dict(tasks.WORD_RULES)
        try:
            for w in words:
                tasks.WORD_RULES.pop(w, None)
            return tasks.modernise(line, vocabulary)[0]
        finally:
            tasks.WORD_RULES.clear()
            tasks.WORD_RULES.update(saved)

    return apply


def build_sets(n: int = 300, seed: int = 0) -> dict:
    speeches, held, _ = all_speeches()
    vocabulary = Counter(w for s in speeches for w in re.findall(r"[a-z']+", s.text.lower()))
    examples = tasks.modernisation_examples(speeches, vocabulary)
    split = tasks.split_examples(examples, seed=seed, test_works=tuple(held), test_tags=HELD_RULES)
    train = split["train"]
    seen_words = {t for e in train for t in e.tags if t.startswith("word:")}
    seen_rules = {t for e in train for t in e.tags if t.startswith("rule:")}
    test = split["test"]

    def words_seen(e):
        return all(t in seen_words for t in e.tags if t.startswith("word:"))

    def rules_seen(e):
        return all(t in seen_rules for t in e.tags if t.startswith("rule:"))

    rng = random.Random(seed)
    pools = {
        "unseen lines": [e for e in test if e.work in held and rules_seen(e) and words_seen(e)],
        "unseen words": [e for e in test if rules_seen(e) and not words_seen(e)],
        "held-out rule": [e for e in test if set(e.tags) & set(HELD_RULES)],
    }
    plain = [
        tasks.Example(line, line, s.work, f"{s.work}:{s.index}")
        for s in speeches
        if s.work in held
        for line in s.text.split("\n")
        if len(line.split()) >= 4 and not tasks.modernise(line, vocabulary)[1]
    ]
    pools["nothing to change"] = plain
    sets = {k: rng.sample(v, min(n, len(v))) for k, v in pools.items()}
    return dict(
        train=train,
        dev=split["dev"],
        sets=sets,
        vocabulary=vocabulary,
        pool_sizes={k: len(v) for k, v in pools.items()},
        held=held,
    )


def translate_chat(model: GPT, fmt: ChatFormat, lines: Sequence[str]) -> list[str]:
    prompts = [
        fmt.encode_conversation(
            [{"role": "user", "content": PROMPT + line}], add_generation_prompt=True
        )[0]
        for line in lines
    ]
    limit = max(len(fmt.tokenizer.encode(line)) for line in lines) + 12
    return [fmt.decode(new).strip() for new, _ in greedy(model, prompts, limit, [fmt.end_id])]


def translate_plain(model: GPT, tokenizer, lines: Sequence[str], shots) -> list[str]:
    head = "".join(f"Early Modern: {e.text}\nModern: {e.target}\n\n" for e in shots)
    prompts = [tokenizer.encode(f"{head}Early Modern: {line}\nModern:") for line in lines]
    limit = max(len(tokenizer.encode(line)) for line in lines) + 12
    outs = greedy(model, prompts, limit, newline_tokens(tokenizer))
    return [tokenizer.decode(new).split("\n")[0].strip() for new, _ in outs]


def main(steps: int = 600) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    d = build_sets()
    outputs: dict[str, dict[str, list[str]]] = {}
    partial = rule_set_without(HELD_RULES)
    for name, fn in (
        ("copy (output = input)", lambda line: line),
        ("rule set (wrote the references)", lambda line: tasks.modernise(line, d["vocabulary"])[0]),
        ("rule set without the held-out rules", lambda line: partial(line, d["vocabulary"])),
    ):
        outputs[name] = {k: [fn(e.text) for e in ex] for k, ex in d["sets"].items()}

    base, tokenizer = load_base_model()
    shots = random.Random(0).sample(d["train"], 3)
    outputs["pre-trained, 3-shot"] = {
        k: translate_plain(base, tokenizer, [e.text for e in ex], shots)
        for k, ex in d["sets"].items()
    }
    print("3-shot", f"{time.perf_counter() - t0:.0f}s", flush=True)

    model, fmt = load_book_model()
    data = [
        fmt.encode_conversation(
            [
                {"role": "user", "content": PROMPT + e.text},
                {"role": "assistant", "content": e.target},
            ]
        )
        for e in d["train"]
    ]
    t1 = time.perf_counter()
    losses = finetune(model, data, steps)
    ft_seconds = time.perf_counter() - t1
    outputs["fine-tuned"] = {
        k: translate_chat(model, fmt, [e.text for e in ex]) for k, ex in d["sets"].items()
    }
    print("fine-tuned", f"{time.perf_counter() - t0:.0f}s", flush=True)

    rows = []
    for system, by_set in outputs.items():
        for k, ex in d["sets"].items():
            exact = [o.strip() == e.target.strip() for o, e in zip(by_set[k], ex, strict=True)]
            scores = [chrf(o, e.target) for o, e in zip(by_set[k], ex, strict=True)]
            lo, hi = wilson(sum(exact), len(exact))
            c_lo, c_hi = bootstrap_mean(scores)
            rows.append(
                dict(
                    system=system,
                    test=k,
                    n=len(ex),
                    exact=sum(exact),
                    exact_match=round(sum(exact) / len(ex), 4),
                    em_low=round(lo, 4),
                    em_high=round(hi, 4),
                    chrf=round(float(np.mean(scores)), 2),
                    chrf_low=round(c_lo, 2),
                    chrf_high=round(c_hi, 2),
                )
            )
    write_rows(RESULTS / "translate-scores.csv", list(rows[0]), rows)
    preds = [
        dict(
            test=k,
            work=e.work,
            tags=" ".join(e.tags),
            source=e.text,
            reference=e.target,
            **{s: outputs[s][k][i] for s in outputs},
        )
        for k, ex in d["sets"].items()
        for i, e in enumerate(ex)
    ]
    write_rows(RESULTS / "translate-predictions.csv", list(preds[0]), preds)
    write_json(
        RESULTS / "translate-run.json",
        dict(
            steps=steps,
            batch_size=16,
            lr=3e-4,
            held_out_rules=list(HELD_RULES),
            held_out_works=d["held"],
            train_pairs=len(d["train"]),
            pool_sizes=d["pool_sizes"],
            final_train_loss=round(float(np.mean(losses[-20:])), 4),
            fine_tune_seconds=round(ft_seconds, 1),
            total_seconds=round(time.perf_counter() - t0, 1),
            threads=torch.get_num_threads(),
        ),
    )


if __name__ == "__main__":
    main()
