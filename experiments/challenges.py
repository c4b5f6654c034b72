"""Hallucination, calibration and retrieval-augmented answering (chapter 6.2).

The 6.1.4 question-answering model (``instruct.py``) answers "who says this line?", "which play
has it?" and "what line follows?" in the chat format, and it answers every question, whether or
not the answer is anywhere in its weights. This script measures how often it does so with
confidence, whether its confidence means anything, and what retrieval from the pre-training text
changes.

Model. The book's model is fine-tuned as in 6.1.4 (400 updates of 16 conversations, answer-only
loss, the same optimiser and seed, by importing ``instruct.finetune``), with one difference: every
second training question (a seeded coin) carries the script's line record in front of it,

    Context: PROSPERO in the tempest: "..." Next: "..."
    Who says: "..."

so one network answers both closed-book (no context) and with a retrieved context.

Questions (all in the 6.1.4 templates, greedy decoding, exact match as in 6.1.4):

* **seen plays**: 6.1.4's test questions on the training plays (250 of each kind);
* **misquoted**: the same lines with one word deleted (100 of each kind), so an exact lookup in
  the script fails while the answer is unchanged;
* **held-out plays**: 6.1.4's questions on the three plays the model never saw (250 of each
  kind); nothing in the model or in the index holds their answers;
* **invented**: lines spliced from the first half of one training line and the second half of
  another (100 of each kind), checked to occur nowhere in the corpus: there is no answer.

Confidence is the probability the model gives its own greedy answer, end token included
(``exp`` of the summed log-probabilities). Retrieval is TF-IDF over every line of the training
plays (word counts, ``log(1 + tf) * (1 + log(N / df))``, unit length, cosine), as in 6.1.7; the
top line's record becomes the context. The answerer abstains when the top cosine is below a
threshold chosen on the dev questions of the split and on a separate set of invented lines (the
threshold with the most right decisions, answer or abstain).

Run from the repository root (24 minutes of wall time at one thread on a heavily loaded 2-core
CPU, 16.5 of them fine-tuning; much less on an idle one):

    python experiments/challenges.py   # writes results/challenges-qa.csv, challenges-run.json

Chapter 6.2 (``chapters/06-applications/08-challenges.ipynb``) reads them.
"""

from __future__ import annotations

import math
import random
import re
import time
import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from common import write_json, write_rows  # experiments/common.py
from instruct import KINDS, RESULTS, finetune, greedy, load_book_model, normalise, qa_sets

from gptlib import tasks
from gptlib.finetune import ChatFormat
from gptlib.model import GPT, evaluating

STEPS = 400
WORD = re.compile(r"[a-z']+")


def line_of(question: str) -> str:
    """The quoted line of a 6.1.4 question."""
    return question.split('"', 1)[1].rsplit('"', 1)[0]


def ask(kind: str, line: str) -> str:
    """The 6.1.4 question template for one line (``gptlib.tasks.qa_examples``)."""
    return {
        "who": f'Who says: "{line}"',
        "work": f'Which play has the line: "{line}"',
        "next": f'What line follows: "{line}"',
    }[kind]


def script_records(speeches: list[tasks.Speech], held: list[str]) -> list[tuple[str, ...]]:
    """(line, speaker, play, next line) for every line of the training plays."""
    out = []
    for s in speeches:
        if s.work in held:
            continue
        lines = s.text.split("\n")
        for k, line in enumerate(lines):
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            out.append((line, s.speaker, s.work.replace("_", " "), nxt))
    return out


def context(record: tuple[str, ...]) -> str:
    line, speaker, work, nxt = record
    return f'Context: {speaker} in {work}: "{line}" Next: "{nxt}"'


class TfidfIndex:
    """Cosine similarity of TF-IDF word vectors, a sparse matrix (lines x words)."""

    def __init__(self, texts: list[str]) -> None:
        words = [WORD.findall(t.lower()) for t in texts]
        self.vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
        df = Counter(w for ws in words for w in set(ws))
        self.idf = torch.zeros(len(self.vocab))
        for w, n in df.items():
            self.idf[self.vocab[w]] = 1.0 + math.log(len(texts) / n)
        self.matrix = self._vectors(words).to_sparse_csr()  # (N, W)

    def _vectors(self, words: list[list[str]]) -> torch.Tensor:
        rows, cols, vals = [], [], []
        for r, ws in enumerate(words):
            counts = Counter(self.vocab[w] for w in ws if w in self.vocab)
            weights = {c: math.log1p(n) * float(self.idf[c]) for c, n in counts.items()}
            norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
            for c, v in weights.items():
                rows.append(r)
                cols.append(c)
                vals.append(v / norm)
        return torch.sparse_coo_tensor(
            torch.tensor([rows, cols], dtype=torch.long),
            torch.tensor(vals),
            (len(words), len(self.vocab)),
        ).coalesce()

    def top1(self, queries: list[str], chunk: int = 128) -> tuple[list[int], list[float]]:
        """Index and cosine of the most similar line for each query."""
        best, score = [], []
        for a in range(0, len(queries), chunk):
            q = self._vectors([WORD.findall(t.lower()) for t in queries[a : a + chunk]])
            sims = (self.matrix @ q.to_dense().T).to_dense()  # (N, chunk)
            s, i = sims.max(dim=0)
            best += i.tolist()
            score += s.tolist()
        return best, score


def invented_lines(records, taken: set[str], n: int, seed: int) -> list[str]:
    """Lines made of the first half of one training line and the second half of another."""
    rng = random.Random(seed)
    pool = [r[0] for r in records if len(r[0].split()) >= 6]
    out: list[str] = []
    while len(out) < n:
        a, b = rng.sample(pool, 2)
        wa, wb = a.split(), b.split()
        line = " ".join(wa[: len(wa) // 2] + wb[len(wb) // 2 :])
        if line not in taken and line not in out:
            out.append(line)
    return out


def misquote(line: str, rng: random.Random) -> str:
    words = line.split()
    k = rng.randrange(len(words))
    return " ".join(words[:k] + words[k + 1 :])


@torch.no_grad()
def answers_with_confidence(
    model: GPT, fmt: ChatFormat, questions: list[str], contexts: list[str | None]
) -> list[tuple[str, float]]:
    """Greedy answer and the probability of that answer (end token included), per question."""
    prompts = [
        fmt.encode_conversation(
            [{"role": "user", "content": q if c is None else f"{c}\n{q}"}],
            add_generation_prompt=True,
        )[0]
        for q, c in zip(questions, contexts, strict=True)
    ]
    outs = greedy(model, prompts, 24, [fmt.end_id])
    result = []
    with evaluating(model):
        for p, (new, stopped) in zip(prompts, outs, strict=True):
            seq = torch.tensor([p + new + ([fmt.end_id] if stopped else [])])  # (1, T)
            logits, _ = model(seq[:, :-1])  # (1, T-1, V)
            logp = F.log_softmax(logits.float(), dim=-1).gather(-1, seq[:, 1:, None])[0, :, 0]
            result.append((fmt.decode(new).strip(), float(logp[len(p) - 1 :].sum().exp())))
    return result


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Sparse")  # beta-state notices from torch.sparse
    t0 = time.perf_counter()
    sets = qa_sets()
    records = script_records(sets["speeches"], sets["held"])
    by_line = {r[0]: r for r in records}
    all_lines = {line for s in sets["speeches"] for line in s.text.split("\n")}

    # test questions: (set, kind, question, target)
    rng = random.Random(1)
    tests: list[tuple[str, str, str, str]] = []
    for name in ("seen plays", "held-out plays"):
        tests += [(name, e.tags[0][3:], e.text, e.target) for e in sets["tests"][name]]
    seen = sets["tests"]["seen plays"]
    for kind in KINDS:
        pick = rng.sample([e for e in seen if e.tags[0] == f"qa:{kind}"], 100)
        tests += [
            ("misquoted", kind, ask(kind, misquote(line_of(e.text), rng)), e.target) for e in pick
        ]
    invented = invented_lines(records, all_lines, 600, seed=2)
    for k, kind in enumerate(KINDS):
        tests += [("invented", kind, ask(kind, x), "") for x in invented[k * 100 : k * 100 + 100]]

    # dev questions for the abstention threshold: answerable (dev split) and invented
    split = tasks.split_examples(
        tasks.qa_examples(sets["speeches"], seed=0), seed=0, test_works=tuple(sets["held"])
    )
    dev = random.Random(3).sample(split["dev"], 300)
    dev_lines = [line_of(e.text) for e in dev] + invented[300:600]
    dev_ok = [True] * len(dev) + [False] * 300

    index = TfidfIndex([r[0] for r in records])
    print(f"index: {len(records)} lines, {len(index.vocab)} words, {time.perf_counter() - t0:.0f}s")
    _, dev_scores = index.top1(dev_lines)
    cands = sorted(set(round(s, 3) for s in dev_scores))
    threshold = max(
        cands,
        key=lambda t: sum((s >= t) == ok for s, ok in zip(dev_scores, dev_ok, strict=True)),
    )
    dev_right = sum((s >= threshold) == ok for s, ok in zip(dev_scores, dev_ok, strict=True))

    # fine-tune: half the questions with their gold context
    model, fmt = load_book_model()
    coin = random.Random(4)
    data = []
    for e in sets["train"]:
        c = context(by_line[line_of(e.text)]) if coin.random() < 0.5 else None
        content = e.text if c is None else f"{c}\n{e.text}"
        ids, mask = fmt.encode_conversation(
            [{"role": "user", "content": content}, {"role": "assistant", "content": e.target}]
        )
        data.append((ids, mask))
    t1 = time.perf_counter()
    losses = finetune(model, data, STEPS)
    train_seconds = time.perf_counter() - t1
    print(f"fine-tuned in {train_seconds:.0f}s, last loss {losses[-1]:.3f}", flush=True)

    questions = [t[2] for t in tests]
    hit, score = index.top1([line_of(q) for q in questions])
    ctx = [context(records[h]) for h in hit]
    closed = answers_with_confidence(model, fmt, questions, [None] * len(questions))
    print(f"closed-book answers {time.perf_counter() - t0:.0f}s", flush=True)
    rag = answers_with_confidence(model, fmt, questions, ctx)
    print(f"retrieval answers {time.perf_counter() - t0:.0f}s", flush=True)

    rows = []
    for t, h, s, (ca, cc), (ra, rc) in zip(tests, hit, score, closed, rag, strict=True):
        name, kind, q, target = t
        rows.append(
            dict(
                set=name,
                kind=kind,
                question=q,
                target=target,
                closed_answer=ca,
                closed_conf=round(cc, 5),
                closed_correct=int(bool(target) and normalise(ca) == normalise(target)),
                retrieved=records[h][0],
                retrieval_score=round(s, 4),
                retrieved_exact=int(records[h][0] == line_of(q)),
                rag_answer=ra,
                rag_conf=round(rc, 5),
                rag_correct=int(bool(target) and normalise(ra) == normalise(target)),
            )
        )
    write_rows(RESULTS / "challenges-qa.csv", list(rows[0]), rows)
    write_json(
        RESULTS / "challenges-run.json",
        dict(
            steps=STEPS,
            batch_size=16,
            lr=3e-4,
            context_share=0.5,
            train_questions=len(data),
            index_lines=len(records),
            index_words=len(index.vocab),
            threshold=threshold,
            dev_questions=len(dev_ok),
            dev_right=dev_right,
            final_loss=round(sum(losses[-20:]) / 20, 4),
            fine_tune_seconds=round(train_seconds, 1),
            total_seconds=round(time.perf_counter() - t0, 1),
            threads=torch.get_num_threads(),
        ),
    )


if __name__ == "__main__":
    main()
