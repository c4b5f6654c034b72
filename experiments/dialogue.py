"""Dialogue in character by chat fine-tuning (chapter 6.1.6).

Conversations are cut from the plays: a run of consecutive speeches in which one character B
answers every other speech (A1, B, A2, B, ...; the A's may be different people) becomes
``<|system|>You are B.<|end|><|user|>A1's speech<|end|><|assistant|>B's reply<|end|>...``.
Speeches longer than 96 tokens end a run; a run holds at most 6 exchanges. Conversations of the
training plays fine-tune the book's model (ChatFormat role tokens, loss on the assistant turns
only; 300 updates of 8 conversations, AdamW at 3e-4, warmup and cosine decay); a conversation
longer than the 256-token window loses its oldest exchanges (``fit_window``) for training.

Tests, on the three works of the validation split (never seen by the model):

* **format validity**: for 150 conversations (seed 0), the model writes B's last reply, sampled
  at temperature 0.8 from the 50 most likely tokens, at most 96 new tokens. A reply is valid
  when it ends with ``<|end|>`` within those tokens and holds no role token.
* **speaker consistency**: a word TF-IDF profile of every character of the play, built from the
  character's speeches outside the conversation. A reply is "in character" when it is closer
  (cosine) to B's profile than to the profile of the character it answers; chance is 1/2. The
  real reply from the play shows how far this crude measure can see; the pre-trained model,
  prompted in the script's own format ("A.\\nspeech\\n\\nB.\\n"), is the no-fine-tuning baseline.
* **window handling**: the conversations whose history does not fit in 256 - 96 tokens,
  answered after dropping the oldest exchanges (the system turn stays) or after cutting the
  token sequence on the left (what ``generate`` does to an over-long prompt).

Run from the repository root (about 8 minutes at one thread on an idle CPU):

    python experiments/dialogue.py   # writes results/dialogue-scores.csv,
                                     # dialogue-replies.csv and dialogue-run.json

Chapter 6.1.6 (``chapters/06-applications/06-dialogue.ipynb``) reads them.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from common import write_json, write_rows  # experiments/common.py
from instruct import RESULTS, all_speeches, finetune, load_book_model, wilson

from gptlib import tasks
from gptlib.finetune import ChatFormat
from gptlib.generate import SamplingConfig, generate
from gptlib.model import GPT, evaluating

MAX_SPEECH_TOKENS = 96
MAX_EXCHANGES = 6
MAX_NEW = 96
SAMPLING = dict(temperature=0.8, top_k=50)


def conversations(speeches: Sequence[tasks.Speech], fmt: ChatFormat) -> list[dict]:
    """Runs A1, B, A2, B, ... of one work as conversations in which B is the assistant."""
    out, i = [], 0
    fits = [len(fmt.tokenizer.encode(s.text)) <= MAX_SPEECH_TOKENS for s in speeches]
    while i + 1 < len(speeches):
        a, b = speeches[i], speeches[i + 1]
        if not (fits[i] and fits[i + 1] and a.work == b.work and a.speaker != b.speaker):
            i += 1
            continue
        j = i + 2  # extend while the pattern (someone else, then B) holds
        while (
            j + 1 < len(speeches)
            and (j - i) // 2 < MAX_EXCHANGES
            and fits[j]
            and fits[j + 1]
            and speeches[j + 1].work == a.work
            and speeches[j].speaker != b.speaker
            and speeches[j + 1].speaker == b.speaker
        ):
            j += 2
        run = speeches[i:j]
        messages = [{"role": "system", "content": f"You are {b.speaker}."}]
        messages += [
            {"role": "user" if k % 2 == 0 else "assistant", "content": s.text}
            for k, s in enumerate(run)
        ]
        out.append(
            dict(
                work=a.work,
                speaker=b.speaker,
                partner=run[-2].speaker,
                speakers=[s.speaker for s in run],
                indices=[s.index for s in run],
                messages=messages,
            )
        )
        i = j
    return out


def fit_window(
    messages: list[dict], fmt: ChatFormat, budget: int, add_generation_prompt: bool = False
) -> list[dict]:
    """Drop the oldest user/assistant exchanges, keeping the system turn, until the encoded
    conversation has at most ``budget`` tokens (the last exchange always stays)."""
    system, turns = messages[:1], list(messages[1:])
    while len(turns) > 2:
        ids, _ = fmt.encode_conversation(system + turns, add_generation_prompt)
        if len(ids) <= budget:
            break
        turns = turns[2:]
    return system + turns


@torch.no_grad()
def sample_replies(
    model: GPT, prompts: Sequence[list[int]], stop: int, seed: int = 0, batch_size: int = 16
) -> list[list[int]]:
    """Sampled continuations (at most MAX_NEW tokens); equal-length prompts share a batch."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_length[len(p)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    gen = torch.Generator().manual_seed(seed)
    cfg = SamplingConfig(**SAMPLING, stop_tokens=(stop,))
    with evaluating(model):
        for length in sorted(by_length):
            rows = by_length[length]
            for k in range(0, len(rows), batch_size):
                chunk = rows[k : k + batch_size]
                x = torch.tensor([prompts[i] for i in chunk], dtype=torch.long)
                y = generate(model, x, MAX_NEW, cfg, generator=gen)[:, length:].tolist()
                for i, new in zip(chunk, y, strict=True):
                    out[i] = new[: new.index(stop) + 1] if stop in new else new
    return out


def validity(reply: list[int], fmt: ChatFormat) -> tuple[bool, bool, bool]:
    """(valid, ended with <|end|>, held a role token) for a reply's token ids."""
    ended = bool(reply) and reply[-1] == fmt.end_id
    body = reply[:-1] if ended else reply
    roles = any(t >= fmt.base_vocab_size for t in body)
    return ended and not roles, ended, roles


WORD = re.compile(r"[a-z']+")


class Profiles:
    """Word TF-IDF profiles of the characters of one play (numpy)."""

    def __init__(self, speeches: Sequence[tasks.Speech]) -> None:
        self.speeches = list(speeches)
        docs = [Counter(WORD.findall(s.text.lower())) for s in self.speeches]
        self.vocab = {w: k for k, w in enumerate(sorted({w for d in docs for w in d}))}
        df = np.zeros(len(self.vocab))
        for d in docs:
            df[[self.vocab[w] for w in d]] += 1
        self.idf = np.log((1 + len(docs)) / (1 + df)) + 1.0
        self.rows = np.stack([self.vector(s.text) for s in self.speeches])  # (S, V)

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(len(self.vocab))
        for w, c in Counter(WORD.findall(text.lower())).items():
            if w in self.vocab:
                v[self.vocab[w]] = 1 + math.log(c)
        v *= self.idf
        n = np.linalg.norm(v)
        return v / n if n else v

    def profile(self, speaker: str, leave_out: set[int]) -> np.ndarray:
        keep = [
            k
            for k, s in enumerate(self.speeches)
            if s.speaker == speaker and s.index not in leave_out
        ]
        p = self.rows[keep].sum(axis=0)
        n = np.linalg.norm(p)
        return p / n if n else p

    def in_character(self, text: str, speaker: str, partner: str, leave_out: set[int]) -> bool:
        v = self.vector(text)
        return float(v @ self.profile(speaker, leave_out)) > float(
            v @ self.profile(partner, leave_out)
        )


def script_prompt(conv: dict, tokenizer) -> list[int]:
    """The conversation in the plays' own layout, ending with B's name: for the base model."""
    text = "".join(
        f"{n}.\n{m['content']}\n\n"
        for n, m in zip(conv["speakers"][:-1], conv["messages"][1:-1], strict=True)
    )
    return tokenizer.encode(text + f"{conv['speaker']}.\n")[-(256 - MAX_NEW) :]


def main(steps: int = 300, n_test: int = 150) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    speeches, held, _ = all_speeches()
    model, fmt = load_book_model()
    base = load_book_model()[0]  # the same weights, never fine-tuned
    convs = conversations(speeches, fmt)
    train = [c for c in convs if c["work"] not in held]
    test_all = [c for c in convs if c["work"] in held and len(c["messages"]) >= 3]
    rng = random.Random(0)
    test = rng.sample(test_all, min(n_test, len(test_all)))
    budget = model.config.block_size - MAX_NEW
    long = [
        c for c in test_all if len(fmt.encode_conversation(c["messages"][:-1], True)[0]) > budget
    ]

    data = [
        fmt.encode_conversation(fit_window(c["messages"], fmt, model.config.block_size))
        for c in train
    ]
    data = [(ids, mask) for ids, mask in data if len(ids) <= model.config.block_size]
    t1 = time.perf_counter()
    losses = finetune(model, data, steps, batch_size=8)
    ft_seconds = time.perf_counter() - t1
    print("fine-tuned", f"{time.perf_counter() - t0:.0f}s", flush=True)

    profiles = {w: Profiles([s for s in speeches if s.work == w]) for w in held}

    def prompt(c, strategy="drop oldest exchanges"):
        if strategy == "drop oldest exchanges":
            kept = fit_window(c["messages"][:-1], fmt, budget, add_generation_prompt=True)
            return fmt.encode_conversation(kept, add_generation_prompt=True)[0]
        ids = fmt.encode_conversation(c["messages"][:-1], add_generation_prompt=True)[0]
        return ids[-budget:]

    runs = {  # name -> (model, conversations, strategy)
        "pre-trained, chat format": (base, test, "drop oldest exchanges"),
        "fine-tuned": (model, test, "drop oldest exchanges"),
        "fine-tuned, long: drop oldest exchanges": (model, long, "drop oldest exchanges"),
        "fine-tuned, long: cut tokens on the left": (model, long, "cut tokens on the left"),
    }
    rows, replies = [], []

    def score(name: str, cs: list[dict], texts: list[str], flags: list[tuple] | None) -> None:
        ok = [
            profiles[c["work"]].in_character(t, c["speaker"], c["partner"], set(c["indices"]))
            for c, t in zip(cs, texts, strict=True)
        ]
        row = dict(system=name, n=len(cs), in_character=sum(ok))
        lo, hi = wilson(sum(ok), len(cs))
        row |= dict(
            consistency=round(sum(ok) / len(cs), 4), cons_low=round(lo, 4), cons_high=round(hi, 4)
        )
        if flags is not None:
            valid = sum(f[0] for f in flags)
            v_lo, v_hi = wilson(valid, len(cs))
            row |= dict(
                valid=valid,
                validity=round(valid / len(cs), 4),
                valid_low=round(v_lo, 4),
                valid_high=round(v_hi, 4),
                ended=sum(f[1] for f in flags),
                role_tokens=sum(f[2] for f in flags),
            )
        row["mean_reply_words"] = round(float(np.mean([len(t.split()) for t in texts])), 1)
        rows.append(row)
        replies.extend(
            dict(
                system=name,
                work=c["work"],
                speaker=c["speaker"],
                partner=c["partner"],
                last_user=c["messages"][-2]["content"],
                reply=t,
                in_character=k,
            )
            for c, t, k in zip(cs, texts, ok, strict=True)
        )

    score("real reply (from the play)", test, [c["messages"][-1]["content"] for c in test], None)
    other = [
        rng.choice(
            [
                s
                for s in speeches
                if s.work == c["work"] and s.speaker not in (c["speaker"], c["partner"])
            ]
        ).text
        for c in test
    ]
    score("another character's speech (same play)", test, other, None)
    for name, (m, cs, strategy) in runs.items():
        outs = sample_replies(m, [prompt(c, strategy) for c in cs], fmt.end_id)
        flags = [validity(o, fmt) for o in outs]
        texts = [fmt.decode([t for t in o if t < fmt.base_vocab_size]) for o in outs]
        score(name, cs, [t.strip() for t in texts], flags)
        print(name, f"{time.perf_counter() - t0:.0f}s", flush=True)
    tok = fmt.tokenizer
    outs = sample_replies(base, [script_prompt(c, tok) for c in test], -1)
    texts = [tok.decode(o).split("\n\n")[0].strip() for o in outs]
    score("pre-trained, script format", test, texts, None)

    columns = list(dict.fromkeys(k for r in rows for k in r))
    write_rows(RESULTS / "dialogue-scores.csv", columns, rows)
    write_rows(RESULTS / "dialogue-replies.csv", list(replies[0]), replies)
    write_json(
        RESULTS / "dialogue-run.json",
        dict(
            steps=steps,
            batch_size=8,
            lr=3e-4,
            train_conversations=len(data),
            test_conversations=len(test),
            long_conversations=len(long),
            held_out_works=held,
            max_new_tokens=MAX_NEW,
            sampling=SAMPLING,
            window_budget=budget,
            final_train_loss=round(float(np.mean(losses[-20:])), 4),
            fine_tune_seconds=round(ft_seconds, 1),
            total_seconds=round(time.perf_counter() - t0, 1),
            threads=torch.get_num_threads(),
        ),
    )


if __name__ == "__main__":
    main()
