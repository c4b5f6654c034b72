"""The command line: train a tiny model on a small file, sample from it, resume, report mistakes."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import gptlib.__main__ as cli
from gptlib.__main__ import UsageError, load_run_config, main
from gptlib.checkpoint import load_checkpoint

CONFIG = {
    "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
    "train": {
        "max_steps": 20,
        "batch_size": 8,
        "warmup_steps": 2,
        "lr": 3e-3,
        "min_lr": 3e-4,
        "eval_interval": 10,
        "eval_iters": 2,
        "log_interval": 5,
        "device": "cpu",
    },
    "tokenizer": {"type": "char"},
    "val_fraction": 0.1,
}


@pytest.fixture
def run_files(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 40)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(CONFIG))
    return tmp_path, ["--config", str(config), "--data", str(text)]


def _steps(log_path):
    with open(log_path, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_train_sample_and_resume(run_files, capsys):
    tmp_path, common = run_files
    out = tmp_path / "run"
    assert main(["train", *common, "--out", str(out), "--no-progress"]) == 0
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "log.csv",
        "train.npy",
        "val.npy",
        "train.json",
        "val.json",
    ):
        assert (out / name).is_file(), name
    tokenizer = load_checkpoint(out).tokenizer
    text = (tmp_path / "text.txt").read_text()
    n_train = int(len(text) * 0.9)
    assert np.load(out / "train.npy").tolist() == tokenizer.encode(text[:n_train])
    assert np.load(out / "val.npy").tolist() == tokenizer.encode(text[n_train:])
    assert _steps(out / "log.csv") == [5, 10, 15, 20]
    assert load_checkpoint(out).step == 20
    capsys.readouterr()

    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(out),
                "--prompt",
                "First",
                "--max-new-tokens",
                "30",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("First") and len(text.rstrip("\n")) >= 30
    # streaming prints the same text, piece by piece
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(out),
                "--prompt",
                "First",
                "--max-new-tokens",
                "30",
                "--seed",
                "1",
                "--stream",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == text

    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(out),
                "--prompt",
                "hear",
                "--max-new-tokens",
                "10",
                "--stream",
                "--num-samples",
                "2",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    streamed = capsys.readouterr().out
    assert streamed.count("--- sample") == 2 and streamed.count("\nhear") == 2

    assert (
        main(
            ["train", *common, "--out", str(out), "--resume", "--max-steps", "30", "--no-progress"]
        )
        == 0
    )
    assert _steps(out / "log.csv") == [5, 10, 15, 20, 25, 30]
    assert load_checkpoint(out).step == 30


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", r"unknown TrainConfig field\(s\) \['lrr'\]"),
        ("model.n_layers=1", r"unknown GPTConfig field\(s\) \['n_layers'\]"),
        ("optimizer.lr=1", "unknown section 'optimizer'"),
        ("train.min_lr=1", "min_lr=1 must lie between 0 and lr="),
        ("model.n_head=3", "n_embd=32 is not divisible by n_head=3"),
        ("model.preset=huge", "unknown preset 'huge'"),
        ("train.block_size=64", "train.block_size=64 exceeds .* model.block_size=32"),
        ("tokenizer.type=word", "tokenizer.type must be one of"),
        ("tokenizer.vocabsize=9", r"unknown tokenizer option\(s\) \['vocabsize'\]"),
        ("val_fraction=1.5", "val_fraction must be between 0 and 1"),
        ("samples.promt=1", r"unknown samples key\(s\) \['promt'\]"),
        ("samples.temperature=-1", "temperature must be >= 0"),
    ],
)
def test_bad_config_exits_with_code_2(run_files, capsys, override, message):
    tmp_path, common = run_files
    code = main(["train", *common, "--out", str(tmp_path / "bad"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("python -m gptlib train: error:")
    assert re.search(message, err), err
    assert not (tmp_path / "bad" / "log.csv").exists()


def test_missing_inputs_give_messages(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert re.search(r"error: .*nowhere.*checkpoint", capsys.readouterr().err)
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere"), "--top-p", "2"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--resume"]) == 2
    assert "--resume: no checkpoint in" in capsys.readouterr().err


def test_entry_point_reports_without_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "gptlib", "sample", "--checkpoint", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert re.search(r"error: .*nope.*checkpoint", proc.stderr) and "Traceback" not in proc.stderr


def test_set_overrides_are_parsed_as_json_when_possible():
    config = load_run_config(
        None,
        [
            "train.lr=1e-3",
            "model.attention=explicit",
            "tokenizer.vocab_size=512",
            "val_fraction=0.2",
        ],
    )
    assert config["train"]["lr"] == 1e-3 and config["model"]["attention"] == "explicit"
    assert config["tokenizer"]["vocab_size"] == 512 and config["val_fraction"] == 0.2
    with pytest.raises(UsageError, match="expected section.key=value"):
        load_run_config(None, ["train.lr"])


@pytest.mark.parametrize("tokenizer", [{"type": "char"}, {"type": "bpe", "vocab_size": 300}])
def test_tokenizer_never_sees_validation_text(tmp_path, monkeypatch, tokenizer):
    """The split comes before the tokenizer: its trainer gets exactly the first 90% of the text.

    The last 10% holds a word (and, for the BPE, a character pair) that the first 90% never has;
    we record every text handed to either trainer and check that none of it comes from there.
    """
    from gptlib.bpe import BPETokenizer
    from gptlib.tokenizer import CharTokenizer

    head = "OLIVIA, MAIL.\nBefore we proceed any further, hear me speak.\n\n" * 36
    tail = "MALVOLIO.\nBefore we proceed any further, hear me speak.\n\n" * 4
    text = head + tail
    n_train = int(len(text) * 0.9)
    assert "MALVOLIO" not in text[:n_train]  # the validation part alone holds the name
    path = tmp_path / "text.txt"
    path.write_text(text)
    seen = []
    for cls in (CharTokenizer, BPETokenizer):
        original = cls.train

        def spy(self, text, *args, _original=original, **kwargs):
            seen.append(text)
            return _original(self, text, *args, **kwargs)

        monkeypatch.setattr(cls, "train", spy)
    config = {
        **CONFIG,
        "tokenizer": tokenizer,
        "train": {**CONFIG["train"], "max_steps": 2, "eval_interval": 2},
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "run.json"),
                "--data",
                str(path),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert seen == [text[:n_train]]
    # both parts are tokenized separately and decode back to the exact characters
    meta = {name: json.loads((out / f"{name}.json").read_text()) for name in ("train", "val")}
    assert (meta["train"]["chars"], meta["val"]["chars"]) == (n_train, len(text) - n_train)


def test_char_tokenizer_reports_characters_only_in_validation(tmp_path, capsys):
    path = tmp_path / "text.txt"
    path.write_text("abcabcabc\n" * 90 + "xyzxyz\n" * 10)
    (tmp_path / "run.json").write_text(json.dumps(CONFIG))
    code = main(
        [
            "train",
            "--config",
            str(tmp_path / "run.json"),
            "--data",
            str(path),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "never occur in the training text" in err and "bpe" in err


def test_config_mistakes_are_found_before_the_text_is_read(tmp_path, capsys):
    """A typo in the model section is reported even though --data names a file that is not there."""
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "missing.txt"),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "model.n_layers=2",
        ]
    )
    assert code == 2 and "unknown GPTConfig field(s) ['n_layers']" in capsys.readouterr().err
    assert (
        main(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "r")]) == 2
    )
    assert "missing.txt does not exist" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(run_files, monkeypatch):
    """Only user-facing errors become exit code 2; a ValueError from inside training is a bug."""

    def broken(*args, **kwargs):
        raise ValueError("a bug inside the training loop")

    monkeypatch.setattr(cli, "train", broken)
    tmp_path, common = run_files
    with pytest.raises(ValueError, match="a bug inside the training loop"):
        main(["train", *common, "--out", str(tmp_path / "run"), "--no-progress"])


def test_resume_reuses_the_cached_tokens(run_files, monkeypatch):
    tmp_path, common = run_files
    out = tmp_path / "run"
    assert main(["train", *common, "--out", str(out), "--set", "train.max_steps=10"]) == 0
    monkeypatch.setattr(cli.data, "write_token_file", lambda *a: pytest.fail("encoded again"))
    assert main(["train", *common, "--out", str(out), "--resume", "--max-steps", "20"]) == 0
    assert load_checkpoint(out).step == 20
