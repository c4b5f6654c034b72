"""The book model's recipe (checkpoints/book-model.json) still runs, shrunk to a few steps.

`make pretrain` trains the committed model for about 70 minutes; this test runs the very same
config file through the same command line with overrides that make it take seconds, so the recipe
cannot rot while the library changes.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gptlib.checkpoint import load_checkpoint
from gptlib.model import GPTConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "checkpoints" / "book-model.json"


@pytest.fixture
def small_corpus(tmp_path):
    """A fixed synthetic text (offline, the same on every machine): the recipe only needs text."""
    line = "ROMEO.\nBut soft, what light through yonder window breaks?\n\n"
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"{line}{i}\n" for i in range(3000)), encoding="utf-8")
    return path


def test_recipe_runs_with_a_tiny_override(tmp_path, small_corpus):
    recipe = json.loads(RECIPE.read_text())
    assert recipe["model"]["preset"] == "book" and recipe["tokenizer"]["type"] == "bpe"
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "gptlib",
        "train",
        "--config",
        str(RECIPE),
        "--out",
        str(out),
        "--data",
        str(small_corpus),
        "--max-steps",
        "3",
        "--no-progress",
        "--set",
        "train.warmup_steps=1",
        "--set",
        "train.eval_interval=3",
        "--set",
        "train.eval_iters=1",
        "--set",
        "train.batch_size=2",
        "--set",
        "tokenizer.vocab_size=400",
        "--set",
        "samples.max_new_tokens=5",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "training_state.pt",
        "log.csv",
        "samples.jsonl",
    ):
        assert (out / name).is_file(), name
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,train_loss,val_loss,lr")
    assert rows[-1].split(",")[0] == "3"
    sample = json.loads((out / "samples.jsonl").read_text().splitlines()[-1])
    assert sample["step"] == 3 and sample["text"].startswith("ROMEO.\n")

    ck = load_checkpoint(out, load_optimizer=False)
    assert ck.model.config.n_layer == GPTConfig.preset("book").n_layer
    assert ck.model.config.vocab_size == 400  # the override, not the preset's 4,096
    sampled = subprocess.run(
        [
            sys.executable,
            "-m",
            "gptlib",
            "sample",
            "--checkpoint",
            str(out),
            "--prompt",
            "ROMEO.\n",
            "--max-new-tokens",
            "5",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert sampled.stdout.startswith("ROMEO.")


def test_book_preset_is_the_trained_configuration():
    """The `book` preset is exactly what `make pretrain` trained: no overrides in the recipe, and
    the committed checkpoint's model config equals the preset (dropout included)."""
    recipe = json.loads(RECIPE.read_text())
    assert recipe["model"] == {"preset": "book"}
    saved = json.loads((ROOT / "checkpoints" / "book-model" / "config.json").read_text())
    assert GPTConfig.from_dict(saved["model_config"]) == GPTConfig.preset("book")
    assert saved["model_config"]["vocab_size"] == recipe["tokenizer"]["vocab_size"]
