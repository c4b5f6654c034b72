"""Question answering by instruction tuning the book's model (chapter 6.1.4), and the helpers
that the translation and dialogue experiments (``translate.py``, ``dialogue.py``) share.

Questions come from ``gptlib.tasks.qa_examples``: for one line of each speech, who says it,
which play it is from, and what line follows. They are rendered in ``gptlib.finetune.ChatFormat``
(``<|user|>question<|end|><|assistant|>answer<|end|>``) and the book's model, its vocabulary
grown by the four role tokens (``resize_vocab``), is fine-tuned on questions about the training
plays. Two test sets, 250 questions of each kind in each (drawn with seed 0):

* **held-out plays**: the three works of the validation split (``validation_works``), which the
  model never saw, in pre-training or fine-tuning;
* **seen plays, unseen questions**: lines of the training plays whose speech (``group``) went to
  the test part of ``split_examples``; pre-training saw the text, fine-tuning never saw the
  question. The work that straddles the 90 % cut is left out of this set.

Every method answers by greedy decoding and is scored by exact match (case and runs of spaces
ignored), with Wilson 95 % intervals:

* the pre-trained model, zero-shot and 3-shot, in plain text ("Q: ...\\nA: ..."), the answer
  read up to the first newline;
* supervised fine-tuning (SFT), 400 updates of 16 conversations, AdamW at 3e-4 with warmup and
  cosine decay, with the loss on the answer only (prompt masked) and on every token (no mask);
* baselines: the most frequent answer of each kind in the fine-tuning set; the most frequent
  speaker of the line's own play (an oracle: it is told the play); and a lookup of the line in
  the pre-training text, which answers from the script when it finds the line and falls back
  to the most frequent answer when it does not.

Run from the repository root (about 10 minutes at one thread on an idle CPU):

    python experiments/instruct.py   # writes results/instruct-qa.csv, instruct-curves.csv,
                                     # instruct-predictions.csv and instruct-run.json

Chapter 6.1.4 (``chapters/06-applications/04-question-answering.ipynb``) reads them.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from common import write_json, write_rows  # experiments/common.py

from gptlib import tasks
from gptlib.checkpoint import load_checkpoint
from gptlib.corpus import shakespeare_works
from gptlib.finetune import ChatFormat, collate, resize_vocab, sft_targets
from gptlib.generate import SamplingConfig, generate
from gptlib.model import GPT, evaluating
from gptlib.train import TrainConfig, lr_at, train_step

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CHECKPOINT = ROOT / "checkpoints" / "book-model"
KINDS = ("who", "work", "next")


# ---------------------------------------------------------------- shared by the chapter 6 scripts
def load_book_model() -> tuple[GPT, ChatFormat]:
    """The book's model with its vocabulary grown by ChatFormat's four role tokens."""
    ck = load_checkpoint(CHECKPOINT, load_optimizer=False)
    fmt = ChatFormat(ck.tokenizer)
    return resize_vocab(ck.model, fmt.vocab_size), fmt


def load_base_model() -> tuple[GPT, object]:
    """The book's model as pre-trained, and its tokenizer."""
    ck = load_checkpoint(CHECKPOINT, load_optimizer=False)
    return ck.model, ck.tokenizer


def all_speeches() -> tuple[list[tasks.Speech], list[str], str | None]:
    """Every speech of the corpus, the held-out works, and the work cut by the 90 % split."""
    works = shakespeare_works()
    held = tasks.validation_works(works)
    names = list(works)
    straddling = names[names.index(held[0]) - 1] if held else None
    speeches = [s for name, text in works.items() for s in tasks.parse_speeches(text, name)]
    return speeches, held, straddling


def finetune(
    model: GPT,
    data: Sequence[tuple[list[int], list[int]]],
    steps: int,
    batch_size: int = 16,
    lr: float = 3e-4,
    seed: int = 0,
    log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Supervised fine-tuning on (ids, mask) pairs; returns the loss of every update.

    Batches are drawn without replacement from a seeded shuffle (a new shuffle each pass);
    AdamW (no weight decay), 10 % linear warmup, cosine decay to lr / 10, clipping at 1.0.
    """
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=max(1, steps // 10),
    )
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    order: list[int] = []
    losses = []
    model.train()
    for step in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(data)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = order[:batch_size], order[batch_size:]
        x, y = collate([sft_targets(*data[i]) for i in batch], model.config.block_size)
        stats = train_step(model, opt, [(x, y)], lr=lr_at(step, cfg), grad_clip=1.0)
        losses.append(stats.loss)
        if log is not None:
            log(step, stats.loss)
    model.eval()
    return losses


@torch.no_grad()
def greedy(
    model: GPT,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    stop_tokens: Sequence[int],
    batch_size: int = 64,
) -> list[tuple[list[int], bool]]:
    """Greedy continuations of many prompts; prompts of one length share a batch (no padding).

    Returns:
        for each prompt, (new tokens up to the first stop token, whether a stop token came).
    """
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_length[len(p)].append(i)
    out: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
    sampling = SamplingConfig(temperature=0.0, stop_tokens=tuple(stop_tokens))
    stops = set(stop_tokens)
    with evaluating(model):
        for length, rows in by_length.items():
            for k in range(0, len(rows), batch_size):
                chunk = rows[k : k + batch_size]
                x = torch.tensor([prompts[i] for i in chunk], dtype=torch.long)
                y = generate(model, x, max_new_tokens, sampling)[:, length:].tolist()
                for i, new in zip(chunk, y, strict=True):
                    cut = next((j for j, t in enumerate(new) if t in stops), None)
                    out[i] = (new, False) if cut is None else (new[:cut], True)
    return out


def newline_tokens(tokenizer) -> list[int]:
    """Ids whose text holds a newline: where a plain-text answer ends."""
    return [i for i in range(tokenizer.vocab_size) if "\n" in tokenizer.decode([i])]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (Wilson 1927).

    >>> [round(v, 4) for v in wilson(5, 10)]
    [0.2366, 0.7634]
    """
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def normalise(answer: str) -> str:
    """What exact match compares: lower case, runs of whitespace as one space, no ends."""
    return " ".join(answer.split()).lower()


# ------------------------------------------------------------------------------ the QA experiment
def qa_sets(n_per_kind: int = 250, seed: int = 0) -> dict:
    """Fine-tuning questions and the two test sets (module docstring)."""
    speeches, held, straddling = all_speeches()
    examples = tasks.qa_examples(speeches, seed=seed)
    split = tasks.split_examples(examples, seed=seed, test_works=tuple(held))
    rng = random.Random(seed)

    def sample(pool: list[tasks.Example]) -> list[tasks.Example]:
        out = []
        for kind in KINDS:
            of_kind = [e for e in pool if e.tags[0] == f"qa:{kind}"]
            out += rng.sample(of_kind, min(n_per_kind, len(of_kind)))
        return out

    heldout = sample([e for e in split["test"] if e.work in held])
    seen = sample([e for e in split["test"] if e.work not in held and e.work != straddling])
    return dict(
        speeches=speeches,
        held=held,
        straddling=straddling,
        train=split["train"],
        tests={"held-out plays": heldout, "seen plays": seen},
    )


def baselines(sets: dict) -> dict[str, Callable[[tasks.Example], str]]:
    """Answerers that need no network: most frequent answer, the play's top speaker, lookup."""
    majority = {
        k: Counter(e.target for e in sets["train"] if e.tags[0] == f"qa:{k}").most_common(1)[0][0]
        for k in KINDS
    }
    top_speaker = {
        w: Counter(s.speaker for s in sets["speeches"] if s.work == w).most_common(1)[0][0]
        for w in {s.work for s in sets["speeches"]}
    }
    index = {}  # line -> (speaker, play, next line): the script of the pre-training plays
    for s in sets["speeches"]:
        if s.work in sets["held"]:
            continue
        lines = s.text.split("\n")
        for k, line in enumerate(lines):
            index[line] = (
                s.speaker,
                s.work.replace("_", " "),
                lines[k + 1] if k + 1 < len(lines) else "",
            )

    def kind(e):
        return e.tags[0][3:]

    def line(e):
        return e.text.split('"', 1)[1].rsplit('"', 1)[0]

    def lookup(e):
        hit = index.get(line(e))
        return majority[kind(e)] if hit is None else hit[KINDS.index(kind(e))]

    return {
        "most frequent answer": lambda e: majority[kind(e)],
        "play's top speaker (oracle)": lambda e: (
            top_speaker[e.work] if kind(e) == "who" else majority[kind(e)]
        ),
        "lookup in the pre-training text": lookup,
    }


def plain_prompt(e: tasks.Example, shots: Sequence[tasks.Example]) -> str:
    """Q/A in plain text, for the model before fine-tuning."""
    return "".join(f"Q: {s.text}\nA: {s.target}\n\n" for s in shots) + f"Q: {e.text}\nA:"


def answer_plain(model: GPT, tokenizer, examples, shots_of) -> list[str]:
    prompts = [tokenizer.encode(plain_prompt(e, shots_of(e))) for e in examples]
    outs = greedy(model, prompts, 24, newline_tokens(tokenizer))
    return [tokenizer.decode(new).split("\n")[0].strip() for new, _ in outs]


def answer_chat(model: GPT, fmt: ChatFormat, examples) -> list[str]:
    prompts = [
        fmt.encode_conversation([{"role": "user", "content": e.text}], add_generation_prompt=True)[
            0
        ]
        for e in examples
    ]
    outs = greedy(model, prompts, 24, [fmt.end_id])
    return [fmt.decode(new).strip() for new, _ in outs]


def qa_conversation(e: tasks.Example, fmt: ChatFormat, masked: bool) -> tuple[list[int], list]:
    ids, mask = fmt.encode_conversation(
        [{"role": "user", "content": e.text}, {"role": "assistant", "content": e.target}]
    )
    return ids, mask if masked else [1] * len(ids)


def score_rows(method: str, answers: dict[str, list[str]], tests: dict) -> list[dict]:
    rows = []
    for test, examples in tests.items():
        for kind in KINDS:
            pairs = [
                (a, e)
                for a, e in zip(answers[test], examples, strict=True)
                if e.tags[0] == f"qa:{kind}"
            ]
            k = sum(normalise(a) == normalise(e.target) for a, e in pairs)
            lo, hi = wilson(k, len(pairs))
            rows.append(
                dict(
                    method=method,
                    test=test,
                    kind=kind,
                    n=len(pairs),
                    correct=k,
                    accuracy=round(k / len(pairs), 4),
                    ci_low=round(lo, 4),
                    ci_high=round(hi, 4),
                )
            )
    return rows


def main(steps: int = 400) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    sets = qa_sets()
    tests = sets["tests"]
    answers: dict[str, dict[str, list[str]]] = {}
    for name, fn in baselines(sets).items():
        answers[name] = {t: [fn(e) for e in ex] for t, ex in tests.items()}

    base, tokenizer = load_base_model()
    rng = random.Random(0)
    shots = {k: rng.sample([e for e in sets["train"] if e.tags[0] == f"qa:{k}"], 3) for k in KINDS}
    for name, shots_of in (
        ("pre-trained, zero-shot", lambda e: []),
        ("pre-trained, 3-shot", lambda e: shots[e.tags[0][3:]]),
    ):
        answers[name] = {t: answer_plain(base, tokenizer, ex, shots_of) for t, ex in tests.items()}
        print(name, f"{time.perf_counter() - t0:.0f}s", flush=True)

    curves, timing = [], {}
    for masked in (True, False):
        name = "SFT, answer-only loss" if masked else "SFT, loss on every token"
        model, fmt = load_book_model()
        data = [qa_conversation(e, fmt, masked) for e in sets["train"]]
        t1 = time.perf_counter()
        losses = finetune(model, data, steps)
        timing[name] = round(time.perf_counter() - t1, 1)
        curves += [dict(method=name, step=s + 1, loss=round(v, 5)) for s, v in enumerate(losses)]
        answers[name] = {t: answer_chat(model, fmt, ex) for t, ex in tests.items()}
        print(name, f"{time.perf_counter() - t0:.0f}s", flush=True)

    rows = [r for m, a in answers.items() for r in score_rows(m, a, tests)]
    write_rows(RESULTS / "instruct-qa.csv", list(rows[0]), rows)
    write_rows(RESULTS / "instruct-curves.csv", ["method", "step", "loss"], curves)
    preds = [
        dict(
            test=t,
            kind=e.tags[0][3:],
            work=e.work,
            question=e.text,
            target=e.target,
            **{m: answers[m][t][i] for m in answers},
        )
        for t, ex in tests.items()
        for i, e in enumerate(ex)
    ]
    write_rows(RESULTS / "instruct-predictions.csv", list(preds[0]), preds)
    write_json(
        RESULTS / "instruct-run.json",
        dict(
            steps=steps,
            batch_size=16,
            lr=3e-4,
            train_questions=len(sets["train"]),
            held_out_works=sets["held"],
            left_out_of_seen=sets["straddling"],
            fine_tune_seconds=timing,
            total_seconds=round(time.perf_counter() - t0, 1),
            threads=torch.get_num_threads(),
        ),
    )


if __name__ == "__main__":
    main()
