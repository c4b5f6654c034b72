"""Decoding strategies compared on the book's model: quality and diversity over 200 prompts.

Set-up. The prompts come from the three plays the book's model never saw (the validation works
of ``gptlib.tasks.validation_works``). For each of 200 speeches drawn with seed 0 (not among the
first three of a play, with a long enough continuation), the prompt is the play text that comes
before the speech, formatted as in the corpus and ending with the speaker's name (``VIOLA.``
and a newline), cut to its last 96 tokens; the *human* continuation is the first 96 tokens of
the text that follows in the play. Every strategy continues every prompt by 96 tokens (no stop
token, so all samples have the same number of tokens); the sampling strategies draw from one
``torch.Generator`` seeded with 0, one sample per prompt.

Scores of each continuation (one CSV row per strategy and prompt):

* ``model_logp``: mean log-probability per token under the book's model, untempered (nats).
* ``model_bpc`` and ``ngram_bpc``: bits per character of the continuation under the book's model
  and under an *independent* scorer, the modified Kneser-Ney 7-gram over characters fitted on the
  training text (the best n-gram of ``experiments/results/baselines.json``), so that the model
  does not grade its own text alone.
* ``distinct_1``..``distinct_3``: distinct word n-grams / all word n-grams of the sample (Li et
  al. 2016); ``rep_4``: the share of word 4-grams that repeat an earlier 4-gram of the sample.
* ``n_chars``, ``n_words`` and ``speech_words`` (words before the first blank line, the length
  of the speech the prompt asked for).

    python experiments/decoding.py     # 11 minutes at one thread on a shared 2-core CPU

Writes ``results/decoding-samples.csv`` (all rows) and ``results/decoding-texts.json`` (the
prompts, the human continuations and every strategy's text for the first 40 prompts).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from common import write_rows  # experiments/common.py

from gptlib.checkpoint import load_checkpoint
from gptlib.corpus import shakespeare_text, shakespeare_works
from gptlib.data import train_val_split
from gptlib.exercises.practice import distinct_n_reference as distinct_n  # Li et al. 2016
from gptlib.files import atomic_write
from gptlib.generate import SamplingConfig, beam_search, generate, sequence_log_prob
from gptlib.ngram import NGramModel
from gptlib.tasks import parse_speeches, validation_works

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
N_PROMPTS, PROMPT_TOKENS, NEW_TOKENS, N_TEXTS = 200, 96, 96, 40

# name -> SamplingConfig, or "beam" for beam search with 4 beams
STRATEGIES: dict[str, SamplingConfig | str] = {
    "greedy": SamplingConfig(temperature=0.0),
    "greedy, penalty 1.2": SamplingConfig(temperature=0.0, repetition_penalty=1.2),
    "beam search, 4 beams": "beam",
    "temperature 0.5": SamplingConfig(temperature=0.5),
    "temperature 0.7": SamplingConfig(temperature=0.7),
    "temperature 1.0": SamplingConfig(temperature=1.0),
    "temperature 1.3": SamplingConfig(temperature=1.3),
    "top-k 10": SamplingConfig(top_k=10),
    "top-k 40": SamplingConfig(top_k=40),
    "top-p 0.8": SamplingConfig(top_p=0.8),
    "top-p 0.95": SamplingConfig(top_p=0.95),
    "T 0.8, top-k 50": SamplingConfig(temperature=0.8, top_k=50),
    "top-p 0.95, penalty 1.2": SamplingConfig(top_p=0.95, repetition_penalty=1.2),
}


def repetition_rate(words: list[str], n: int = 4) -> float:
    """Share of the n-grams that repeat an earlier n-gram of the same text: 1 - distinct-n.

    >>> repetition_rate("to be or not to be or not".split())  # 5 4-grams, 4 distinct
    0.2
    """
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def fit_scorer(train_text: str, alphabet: str) -> NGramModel:
    """The independent scorer: a modified Kneser-Ney 7-gram over the characters of the training
    text (the best count-based model of experiments/results/baselines.json); ``alphabet`` holds
    every character it may be asked about (U+FFFD stands in for any other)."""
    vocab = sorted(set(alphabet) | {"\ufffd"})
    return NGramModel(7, smoothing="modified-kneser-ney", vocab=vocab).fit(train_text)


def ngram_bits_per_char(scorer: NGramModel, context: str, text: str) -> float:
    """Bits per character of ``text`` after ``context`` under ``scorer``; characters the scorer
    does not know count as U+FFFD."""
    known = set(scorer.vocab)
    scored = "".join(c if c in known else "\ufffd" for c in text)
    return float(-scorer.log2_probs(context + scored)[len(context) :].sum() / len(scored))


def text_scores(text: str) -> dict[str, float]:
    """The diversity and length columns of one continuation."""
    words = text.split()
    return {
        **{f"distinct_{n}": distinct_n(words, n) for n in (1, 2, 3)},
        "rep_4": repetition_rate(words, 4),
        "n_chars": len(text),
        "n_words": len(words),
        "speech_words": len(text.split("\n\n")[0].split()),
    }


def prompts_and_references(tokenizer, seed: int = 0) -> list[dict]:
    """Prompts (96 tokens ending with a speaker's name) and the play's own continuations."""
    works = shakespeare_works()
    candidates = []
    for work in validation_works(works):
        speeches = parse_speeches(works[work], work)
        blocks = [f"{s.speaker}.\n{s.text}\n\n" for s in speeches]
        for i in range(3, len(speeches) - 1):
            before = "".join(blocks[max(0, i - 12) : i]) + f"{speeches[i].speaker}.\n"
            after = "".join(blocks[i : i + 12])[len(speeches[i].speaker) + 2 :]
            candidates.append((work, i, before, after))
    picked = random.Random(seed).sample(candidates, 4 * N_PROMPTS)
    out = []
    for work, i, before, after in picked:
        p_ids, r_ids = tokenizer.encode(before), tokenizer.encode(after)
        if len(p_ids) >= PROMPT_TOKENS and len(r_ids) >= NEW_TOKENS:
            out.append(
                {
                    "work": work,
                    "speech": i,
                    "prompt_ids": p_ids[-PROMPT_TOKENS:],
                    "human_ids": r_ids[:NEW_TOKENS],
                }
            )
        if len(out) == N_PROMPTS:
            return out
    raise RuntimeError("not enough prompts with 96 tokens of context and continuation")


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ck = load_checkpoint(ROOT / "checkpoints" / "book-model", load_optimizer=False)
    model, tok = ck.model.eval(), ck.tokenizer
    text = shakespeare_text()
    train_text, _ = train_val_split(text, 0.1)
    scorer = fit_scorer(train_text, text)
    print(f"n-gram fitted ({time.perf_counter() - t0:.0f} s)", flush=True)

    items = prompts_and_references(tok)
    prompts = torch.tensor([it["prompt_ids"] for it in items])  # (N, 96)
    outputs = {"human": torch.cat([prompts, torch.tensor([it["human_ids"] for it in items])], 1)}
    for name, how in STRATEGIES.items():
        t1 = time.perf_counter()
        if how == "beam":
            outputs[name] = torch.cat(
                [beam_search(model, p[None], NEW_TOKENS, beam_size=4) for p in prompts]
            )
        else:
            gen = torch.Generator().manual_seed(0)
            outputs[name] = generate(model, prompts, NEW_TOKENS, how, generator=gen)
        print(f"{name:26s} {time.perf_counter() - t1:5.0f} s", flush=True)

    rows, texts = [], {"prompts": [], "strategies": {}}
    for it in items[:N_TEXTS]:
        texts["prompts"].append(
            {"work": it["work"], "speech": it["speech"], "text": tok.decode(it["prompt_ids"])}
        )
    for name, seqs in outputs.items():
        logp = sequence_log_prob(model, seqs, PROMPT_TOKENS)  # (N,) nats, summed
        conts = [tok.decode(row[PROMPT_TOKENS:].tolist()) for row in seqs]
        texts["strategies"][name] = conts[:N_TEXTS]
        for k, (it, cont) in enumerate(zip(items, conts, strict=True)):
            context = tok.decode(it["prompt_ids"])[-20:]
            n_new = seqs.size(1) - PROMPT_TOKENS
            rows.append(
                {
                    "strategy": name,
                    "prompt": k,
                    "work": it["work"],
                    "model_logp": round(logp[k].item() / n_new, 5),
                    "model_bpc": round(-logp[k].item() / math.log(2) / len(cont), 5),
                    "ngram_bpc": round(ngram_bits_per_char(scorer, context, cont), 5),
                    **{c: round(v, 5) for c, v in text_scores(cont).items()},
                }
            )
    columns = list(rows[0])
    write_rows(RESULTS / "decoding-samples.csv", columns, rows)
    texts["seconds"] = round(time.perf_counter() - t0)
    with atomic_write(RESULTS / "decoding-texts.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(texts, indent=1) + "\n")
    print(f"done in {texts['seconds']} s")


if __name__ == "__main__":
    main()
