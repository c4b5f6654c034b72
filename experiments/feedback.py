"""Two rounds of learning from (simulated) user feedback on the book's model (chapter 6.3).

**The task.** The prompt is the start of a verse speech from the plays, in the corpus's own
layout (``"NAME.\\nfirst line\\n...\\n"``, one to three lines); the model writes the next line
(sampled at temperature 1, at most 24 tokens, up to the first token that holds a newline).
Training prompts come from the 39 training works, evaluation prompts from the three works the
model never saw (``tasks.validation_works``).

**The simulated users** stand in for people. A user scores a line with a utility

    u = -(w_meter * |syllables - 10| (at most 6) + w_rep * repeated words
          + w_char * [the line leaves the speech])

(syllables counted by vowel groups; a repeated word is a word of three or more letters seen
before in the line, and copying a prompt line counts 3; a line leaves the speech when it is
empty, a speaker's name in capitals or a stage direction). Base weights 0.5, 1 and 3; each user
multiplies them by its own log-normal factors (sigma 0.3). Shown two lines, a user prefers A
with probability sigma(u_A - u_B) (a Bradley-Terry rater with unit noise) and draws its choice.
Feedback for training comes from a panel of 50 users (seed 1); every evaluation is judged by a
different panel of 50 (seed 2), the "held-out users". The true preference is u with the base
weights and no noise.

**Round 1.** The supervised model pi_0 (the book's model) writes two lines for each of 1200
training prompts; the training panel picks one of each pair. A reward model (the book's model
with a scalar head, ``gptlib.preference.RewardModel``) learns the choices (2 epochs, batches of
32 pairs, AdamW 1e-4). Policies: best-of-n, which samples n lines from pi_0 and keeps the one
the reward model scores highest, and DPO (``gptlib.preference.dpo_batch_loss``, beta 0.1,
reference pi_0, 2 epochs, batches of 32 pairs, AdamW 1e-4), giving pi_1.
**Round 2.** pi_1 is deployed: it writes two lines for 1200 new training prompts, the panel
judges them, the reward model trains one more epoch on both rounds' pairs, and DPO goes on from
pi_1 on the new pairs with pi_1 as its reference, giving pi_2; best-of-n now samples from pi_1.

**Evaluation** on 300 held-out prompts: each policy's line against one line of pi_0, judged by
one held-out user per prompt (win-rate with a Wilson 95 % interval), mean true utility, mean
reward-model scores, and the KL divergence from pi_0 (DPO: the mean of log pi/pi_0 over the
policy's own samples; best-of-n: log n - (n - 1)/n, the usual estimate). Best-of-n is measured
for n = 1 ... 32 with both reward models and with the true utility (an oracle).

Run from the repository root (48 minutes of wall time at one thread on a shared two-core
machine under heavy load; ``total_seconds`` in feedback-run.json records each run):

    python experiments/feedback.py   # writes results/feedback-*.csv and feedback-run.json

Chapter 6.3 (``chapters/06-applications/10-user-feedback.ipynb``) reads them.
"""

from __future__ import annotations

import copy
import math
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import write_json, write_rows  # experiments/common.py
from instruct import RESULTS, all_speeches, load_base_model, wilson

from gptlib.generate import SamplingConfig, generate
from gptlib.model import GPT, evaluating
from gptlib.preference import (
    RewardModel,
    batch_sequences,
    completion_log_probs,
    dpo_batch_loss,
    reward_model_loss,
)

MAX_NEW = 24
N_TRAIN = 1200  # prompts per round
N_EVAL = 300
BEST_OF = (1, 2, 4, 8, 16, 32)
HEADLINE_N = 16
BETA = 0.1

# ------------------------------------------------------------------------ the simulated users
VOWEL_GROUPS = re.compile(r"[aeiouy]+")
WORD = re.compile(r"[A-Za-z']+")
DIRECTION = re.compile(r"^\s*(\[|enter\b|exit\b|exeunt\b|re-enter\b)", re.I)


def syllables(word: str) -> int:
    """Vowel groups, less a silent final e: a rough count (``syllables("speaketh") == 3``)."""
    w = word.lower().strip("'")
    n = len(VOWEL_GROUPS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(n, 1) if w else 0


def features(line: str, prompt_lines: Sequence[str] = ()) -> dict:
    """What the simulated users look at in one line of verse."""
    words = WORD.findall(line)
    long_words = [w.lower() for w in words if len(w) >= 3]
    repeats = len(long_words) - len(set(long_words))
    if line.strip() and line.strip() in {p.strip() for p in prompt_lines}:
        repeats += 3  # a copied line
    letters = [c for c in line if c.isalpha()]
    leaves = not letters or line.upper() == line or bool(DIRECTION.match(line))
    n_syl = sum(syllables(w) for w in words)
    return dict(
        syllables=n_syl,
        off_meter=min(abs(n_syl - 10), 6),
        repeats=repeats,
        leaves_speech=int(leaves),
    )


BASE_WEIGHTS = dict(off_meter=0.5, repeats=1.0, leaves_speech=3.0)


@dataclass(frozen=True)
class User:
    """A simulated rater: its own weights on the features, and Bradley-Terry noise."""

    off_meter: float = BASE_WEIGHTS["off_meter"]
    repeats: float = BASE_WEIGHTS["repeats"]
    leaves_speech: float = BASE_WEIGHTS["leaves_speech"]

    def utility(self, f: dict) -> float:
        return -(
            self.off_meter * f["off_meter"]
            + self.repeats * f["repeats"]
            + self.leaves_speech * f["leaves_speech"]
        )

    def prefers_first(self, fa: dict, fb: dict, rng: random.Random) -> bool:
        """A noisy choice: A with probability sigma(u_A - u_B)."""
        p = 1 / (1 + math.exp(-(self.utility(fa) - self.utility(fb))))
        return rng.random() < p


TRUE_USER = User()  # the base weights: the true preference, without noise


def panel(n: int, seed: int, spread: float = 0.3) -> list[User]:
    """n users whose weights are the base weights times log-normal factors."""
    rng = np.random.default_rng(seed)
    return [
        User(**{k: v * float(np.exp(rng.normal(0, spread))) for k, v in BASE_WEIGHTS.items()})
        for _ in range(n)
    ]


# ----------------------------------------------------------------------------------- prompts
def verse_prompts(speeches, works: set[str], n: int, seed: int, tokenizer) -> list[dict]:
    """Starts of verse speeches (every line capitalised, 7 to 13 syllables) from ``works``."""
    out = []
    for s in speeches:
        lines = s.text.split("\n")
        if s.work not in works or len(lines) < 2:
            continue
        if not all(ln[:1].isupper() and 7 <= features(ln)["syllables"] <= 13 for ln in lines):
            continue
        out.append(s)
    rng = random.Random(seed)
    chosen = rng.sample(out, min(n, len(out)))
    prompts = []
    for s in chosen:
        lines = s.text.split("\n")
        k = rng.randint(1, min(3, len(lines) - 1))
        text = f"{s.speaker}.\n" + "\n".join(lines[:k]) + "\n"
        prompts.append(dict(work=s.work, text=text, lines=lines[:k], ids=tokenizer.encode(text)))
    return prompts


# -------------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample(model: GPT, prompts: list[dict], n: int, seed: int, tokenizer, stops) -> list[list]:
    """n sampled completions per prompt: lists of dicts with ids, line and features."""
    gen = torch.Generator().manual_seed(seed)
    cfg = SamplingConfig(temperature=1.0, stop_tokens=tuple(stops))
    out: list[list] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]["ids"]))
    jobs = [(i, r) for i in order for r in range(n)]
    with evaluating(model):
        k = 0
        while k < len(jobs):
            length = len(prompts[jobs[k][0]]["ids"])
            chunk = []
            while k < len(jobs) and len(prompts[jobs[k][0]]["ids"]) == length and len(chunk) < 64:
                chunk.append(jobs[k])
                k += 1
            x = torch.tensor([prompts[i]["ids"] for i, _ in chunk], dtype=torch.long)
            y = generate(model, x, MAX_NEW, cfg, generator=gen)[:, length:].tolist()
            for (i, _), new in zip(chunk, y, strict=True):
                cut = next((j for j, t in enumerate(new) if t in stops), None)
                ids = new if cut is None else new[: cut + 1]
                line = tokenizer.decode(ids).split("\n")[0]
                out[i].append(dict(ids=ids, line=line, f=features(line, prompts[i]["lines"])))
    return out


@torch.no_grad()
def rm_scores(rm: RewardModel, prompts: list[dict], comps: list[dict]) -> list[float]:
    scores = []
    with evaluating(rm):
        for k in range(0, len(comps), 64):
            scores += rm.score(
                [p["ids"] for p in prompts[k : k + 64]], [c["ids"] for c in comps[k : k + 64]]
            ).tolist()
    return scores


@torch.no_grad()
def log_probs(model: GPT, prompts: list[dict], comps: list[dict]) -> list[float]:
    out = []
    with evaluating(model):
        for k in range(0, len(comps), 64):
            ps, cs = prompts[k : k + 64], comps[k : k + 64]
            X, mask, _ = batch_sequences(
                [[*p["ids"], *c["ids"]] for p, c in zip(ps, cs, strict=True)],
                [len(p["ids"]) for p in ps],
            )
            out += completion_log_probs(model, X, mask).tolist()
    return out


def label(prompts, samples, users, seed) -> list[tuple]:
    """One preference per prompt from a random user of the panel: (prompt, chosen, rejected)."""
    rng = random.Random(seed)
    pairs = []
    for p, (a, b) in zip(prompts, samples, strict=True):
        user = rng.choice(users)
        first = user.prefers_first(a["f"], b["f"], rng)
        pairs.append((p, a, b) if first else (p, b, a))
    return pairs


# -------------------------------------------------------------------------------- training
def train_pairs(model, pairs, loss_fn, epochs: int, lr: float, seed: int, log: list, tag: str):
    """AdamW over shuffled batches of 32 pairs; loss_fn(model, prompts, chosen, rejected)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    model.train()
    step = 0
    for epoch in range(epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for k in range(0, len(order) - 31, 32):
            batch = [pairs[i] for i in order[k : k + 32]]
            loss, acc = loss_fn(
                model,
                [p["ids"] for p, _, _ in batch],
                [c["ids"] for _, c, _ in batch],
                [r["ids"] for _, _, r in batch],
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            log.append(
                dict(
                    stage=tag,
                    step=step,
                    epoch=epoch,
                    loss=round(loss.item(), 5),
                    accuracy=round(acc.item(), 4),
                )
            )
            step += 1
    model.eval()


def pairwise_accuracy(rm, pairs, prompts) -> dict:
    """The reward model's agreement with held-out choices and with the noiseless preference."""
    chosen = rm_scores(rm, prompts, [c for _, c, _ in pairs])
    rejected = rm_scores(rm, prompts, [r for _, _, r in pairs])
    agree = [c > r for c, r in zip(chosen, rejected, strict=True)]
    true = [(TRUE_USER.utility(c["f"]), TRUE_USER.utility(r["f"])) for _, c, r in pairs]
    strict = [(a, t) for a, t in zip(agree, true, strict=True) if t[0] != t[1]]
    rm_true = sum(a == (t[0] > t[1]) for a, t in strict)
    label_true = sum(t[0] > t[1] for _, t in strict)
    lo, hi = wilson(sum(agree), len(agree))
    return dict(
        n=len(agree),
        accuracy=round(sum(agree) / len(agree), 4),
        low=round(lo, 4),
        high=round(hi, 4),
        n_untied=len(strict),
        accuracy_true=round(rm_true / len(strict), 4),
        labels_agree_with_true=round(label_true / len(strict), 4),
    )


def sample_row(policy: str, prompt: dict, line: dict) -> dict:
    """One row of feedback-samples.csv: a policy's line for a prompt, its features and scores."""
    return dict(
        policy=policy,
        work=prompt["work"],
        prompt=prompt["text"],
        line=line["line"],
        **line["f"],
        utility=round(TRUE_USER.utility(line["f"]), 3),
        rm1=round(line["rm1"], 4),
        rm2=round(line["rm2"], 4),
    )


def main(n_train: int = N_TRAIN, n_eval: int = N_EVAL, epochs: int = 2) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    speeches, held, _ = all_speeches()
    pi0, tok = load_base_model()
    pi0.eval().requires_grad_(False)
    stops = [i for i in range(tok.vocab_size) if "\n" in tok.decode([i])]
    train_works = {s.work for s in speeches} - set(held)
    train_prompts = verse_prompts(speeches, train_works, 2 * n_train, 0, tok)
    round_prompts = [train_prompts[:n_train], train_prompts[n_train : 2 * n_train]]
    eval_prompts = verse_prompts(speeches, set(held), n_eval, 1, tok)
    users, judges = panel(50, 1), panel(50, 2)
    log: list[dict] = []

    def stamp(what: str) -> None:
        print(f"{what}: {time.perf_counter() - t0:.0f}s", flush=True)

    # -------- evaluation samples of the supervised model: 32 per prompt for best-of-n
    base = sample(pi0, eval_prompts, 1 + max(BEST_OF), 10, tok, stops)
    reference = [s[0] for s in base]  # the line every policy is compared with
    pool0 = [s[1:] for s in base]  # 32 more lines per prompt
    stamp("eval samples")

    # -------- round 1
    r1 = sample(pi0, round_prompts[0], 2, 11, tok, stops)
    pairs1 = label(round_prompts[0], r1, users, 12)
    held_pairs = label(eval_prompts, [(s[0], s[1]) for s in pool0], judges, 13)
    stamp("round 1 feedback")
    rm = RewardModel(copy.deepcopy(pi0).requires_grad_(True))
    train_pairs(rm, pairs1, reward_model_loss, epochs, 1e-4, 0, log, "reward model, round 1")
    rm1 = copy.deepcopy(rm)
    acc1 = pairwise_accuracy(rm1, held_pairs, eval_prompts)
    stamp(f"reward model 1 {acc1}")
    pi1 = copy.deepcopy(pi0).requires_grad_(True)

    def dpo(ref):
        return lambda m, p, c, r: dpo_batch_loss(m, ref, p, c, r, beta=BETA)

    train_pairs(pi1, pairs1, dpo(pi0), epochs, 1e-4, 0, log, "DPO, round 1")
    pi1.requires_grad_(False)
    stamp("DPO 1")

    # -------- round 2: deploy pi_1, collect new feedback, retrain
    r2 = sample(pi1, round_prompts[1], 2, 21, tok, stops)
    pairs2 = label(round_prompts[1], r2, users, 22)
    train_pairs(rm, pairs1 + pairs2, reward_model_loss, 1, 5e-5, 1, log, "reward model, round 2")
    rm2 = rm
    acc2 = pairwise_accuracy(rm2, held_pairs, eval_prompts)
    stamp(f"reward model 2 {acc2}")
    pi2 = copy.deepcopy(pi1).requires_grad_(True)
    train_pairs(pi2, pairs2, dpo(pi1), epochs, 1e-4, 1, log, "DPO, round 2")
    pi2.requires_grad_(False)
    stamp("DPO 2")

    # -------- evaluation
    pool1 = sample(pi1, eval_prompts, HEADLINE_N, 30, tok, stops)
    held_pairs2 = label(eval_prompts, [(s[0], s[1]) for s in pool1], judges, 14)
    acc2_new = pairwise_accuracy(rm2, held_pairs2, eval_prompts)
    acc1_new = pairwise_accuracy(rm1, held_pairs2, eval_prompts)
    own = {"DPO round 1 (pi_1)": pi1, "DPO round 2 (pi_2)": pi2}
    own_samples = {
        k: [s[0] for s in sample(m, eval_prompts, 1, 31, tok, stops)] for k, m in own.items()
    }
    stamp("eval samples of the new policies")
    flat = lambda pool: [c for s in pool for c in s]  # noqa: E731
    rep = lambda pool: [p for p, s in zip(eval_prompts, pool, strict=True) for _ in s]  # noqa: E731
    for pool in (pool0, pool1):
        for name, r in (("rm1", rm1), ("rm2", rm2)):
            for c, v in zip(flat(pool), rm_scores(r, rep(pool), flat(pool)), strict=True):
                c[name] = v
    for group in [reference, *own_samples.values()]:
        for name, r in (("rm1", rm1), ("rm2", rm2)):
            for c, v in zip(group, rm_scores(r, eval_prompts, group), strict=True):
                c[name] = v
    for name, m in own.items():
        lp = log_probs(m, eval_prompts, own_samples[name])
        lp0 = log_probs(pi0, eval_prompts, own_samples[name])
        for c, a, b in zip(own_samples[name], lp, lp0, strict=True):
            c["kl"] = a - b
    stamp("scored")

    policies: dict[str, tuple[list[dict], float | None, str]] = {}  # name -> (lines, KL, round)
    policies["supervised model (another sample)"] = ([s[0] for s in pool0], 0.0, "0")
    for n in BEST_OF[1:]:
        for key, tag in (
            ("rm1", "reward model 1"),
            ("rm2", "reward model 2"),
            ("true", "true preference (oracle)"),
        ):

            def pick(c, key=key):
                return TRUE_USER.utility(c["f"]) if key == "true" else c[key]

            lines = [max(s[:n], key=pick) for s in pool0]
            policies[f"best-of-{n}, {tag}, from pi_0"] = (
                lines,
                math.log(n) - (n - 1) / n,
                "1" if key == "rm1" else "-",
            )
    policies[f"best-of-{HEADLINE_N}, reward model 2, from pi_1"] = (
        [max(s, key=lambda c: c["rm2"]) for s in pool1],
        None,
        "2",
    )
    policies["pi_1 (sample)"] = ([s[0] for s in pool1], None, "-")
    for name, lines in own_samples.items():
        policies[name] = (
            lines,
            float(np.mean([c["kl"] for c in lines])),
            "1" if "1" in name else "2",
        )

    rng = random.Random(99)
    rows, sample_rows = [], []
    for name, (lines, kl, rnd) in policies.items():
        wins = 0
        for c, ref in zip(lines, reference, strict=True):
            wins += rng.choice(judges).prefers_first(c["f"], ref["f"], rng)
        expected = np.mean(
            [
                1 / (1 + math.exp(TRUE_USER.utility(r["f"]) - TRUE_USER.utility(c["f"])))
                for c, r in zip(lines, reference, strict=True)
            ]
        )
        lo, hi = wilson(wins, len(lines))
        rows.append(
            dict(
                policy=name,
                round=rnd,
                n=len(lines),
                wins=wins,
                win_rate=round(wins / len(lines), 4),
                low=round(lo, 4),
                high=round(hi, 4),
                expected_win_rate=round(float(expected), 4),
                true_utility=round(float(np.mean([TRUE_USER.utility(c["f"]) for c in lines])), 4),
                rm1=round(float(np.mean([c["rm1"] for c in lines])), 4),
                rm2=round(float(np.mean([c["rm2"] for c in lines])), 4),
                kl=None if kl is None else round(kl, 4),
                syllables=round(float(np.mean([c["f"]["syllables"] for c in lines])), 3),
                off_meter=round(float(np.mean([c["f"]["off_meter"] for c in lines])), 3),
                repeats=round(float(np.mean([c["f"]["repeats"] for c in lines])), 3),
                leaves_speech=round(float(np.mean([c["f"]["leaves_speech"] for c in lines])), 4),
            )
        )
        if "best-of" not in name or f"-{HEADLINE_N}," in name:
            sample_rows += [
                sample_row(name, p, c) for p, c in zip(eval_prompts, lines, strict=True)
            ]
    sample_rows += [
        sample_row("supervised model (reference sample)", p, c)
        for p, c in zip(eval_prompts, reference, strict=True)
    ]
    write_rows(RESULTS / "feedback-policies.csv", list(rows[0]), rows)
    write_rows(RESULTS / "feedback-samples.csv", list(sample_rows[0]), sample_rows)
    write_rows(RESULTS / "feedback-training.csv", list(log[0]), log)
    pool_rows = [
        dict(
            pool=name,
            prompt=i,
            sample=j,
            syllables=c["f"]["syllables"],
            utility=round(TRUE_USER.utility(c["f"]), 3),
            rm1=round(c["rm1"], 4),
            rm2=round(c["rm2"], 4),
        )
        for name, pool in (("pi_0", pool0), ("pi_1", pool1))
        for i, s in enumerate(pool)
        for j, c in enumerate(s)
    ]
    write_rows(RESULTS / "feedback-pool.csv", list(pool_rows[0]), pool_rows)
    write_json(
        RESULTS / "feedback-run.json",
        dict(
            train_prompts_per_round=n_train,
            eval_prompts=len(eval_prompts),
            held_out_works=held,
            max_new_tokens=MAX_NEW,
            beta=BETA,
            epochs=epochs,
            best_of=list(BEST_OF),
            headline_n=HEADLINE_N,
            base_weights=BASE_WEIGHTS,
            panel_size=50,
            weight_spread=0.3,
            reward_model_1_on_pi0_pairs=acc1,
            reward_model_2_on_pi0_pairs=acc2,
            reward_model_1_on_pi1_pairs=acc1_new,
            reward_model_2_on_pi1_pairs=acc2_new,
            round1_chosen_utility=round(
                float(np.mean([TRUE_USER.utility(c["f"]) for _, c, _ in pairs1])), 4
            ),
            round1_rejected_utility=round(
                float(np.mean([TRUE_USER.utility(r["f"]) for _, _, r in pairs1])), 4
            ),
            total_seconds=round(time.perf_counter() - t0, 1),
            threads=torch.get_num_threads(),
        ),
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--smoke":
        RESULTS = Path("/tmp/h4-smoke")  # noqa: F811
        main(n_train=64, n_eval=16, epochs=1)
    else:
        main()
