"""Checkpoints: round trip, tied weights, atomic saves, safe loading, clear errors for bad files."""

import contextlib
import json
import math
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import gptlib.checkpoint as ckpt
import gptlib.tokenizer
from gptlib.checkpoint import CheckpointError, clean_state_dict, load_checkpoint, save_checkpoint
from gptlib.device import capture_rng_state, restore_rng_state
from gptlib.files import atomic_write, sha256_file
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer
from gptlib.train import TrainConfig

CONFIG = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)
BOOK_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "book-model"


def _trained(seed=0):
    """A tiny model and an AdamW that has taken one step (so it has moment tensors)."""
    torch.manual_seed(seed)
    model = GPT(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 32, (2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    return model, opt, idx


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def test_round_trip_same_outputs_and_ties_kept(tmp_path):
    model, opt, idx = _trained()
    save_checkpoint(tmp_path, model, step=7, optimizer=opt, extra={"note": "hi"})
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 7 and loaded.extra == {"note": "hi"}
    assert loaded.model_config == CONFIG
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    # the tied weight is stored once and shared again after loading
    assert loaded.model.lm_head.weight is loaded.model.wte.weight
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert "wte.weight" in f.keys() and "lm_head.weight" not in f.keys()
    assert json.loads((tmp_path / "config.json").read_text())["tied_weights"] == {
        "lm_head.weight": "wte.weight"
    }
    # the optimizer state goes back into a fresh AdamW unchanged, and steps it identically
    fresh = torch.optim.AdamW(loaded.model.parameters(), lr=1e-3)
    fresh.load_state_dict(loaded.optimizer_state)
    for i, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(fresh.state_dict()["state"][i][name], value)
    assert fresh.param_groups[0]["betas"] == opt.param_groups[0]["betas"] == (0.9, 0.999)
    for m, o in ((model, opt), (loaded.model, fresh)):
        o.zero_grad()
        m(idx, idx)[1].backward()
        o.step()
    torch.testing.assert_close(loaded.model.wte.weight, model.wte.weight, rtol=0, atol=0)


class _DiskFull(OSError):
    pass


def _crash_writing(name):
    """An atomic_write that dies half-way through writing the file called ``name``."""

    @contextlib.contextmanager
    def writer(path, *args, **kwargs):
        with atomic_write(path, *args, **kwargs) as f:
            if Path(path).name == name:
                f.write(b"half a file" if "b" in f.mode else "half a file")
                raise _DiskFull("disk full")
            yield f

    return writer


@pytest.mark.parametrize(
    "failing", ["model.safetensors", "training_state.pt", "tokenizer.json", "config.json"]
)
def test_crash_mid_save_leaves_previous_checkpoint_untouched(tmp_path, monkeypatch, failing):
    old, opt, idx = _trained(seed=0)
    save_checkpoint(tmp_path, old, step=1, optimizer=opt, tokenizer=CharTokenizer().train("ab"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    new, new_opt, _ = _trained(seed=1)
    monkeypatch.setattr(ckpt, "atomic_write", _crash_writing(failing))
    monkeypatch.setattr(gptlib.tokenizer, "atomic_write", _crash_writing(failing))
    with pytest.raises(_DiskFull):
        save_checkpoint(
            tmp_path, new, step=2, optimizer=new_opt, tokenizer=CharTokenizer().train("xyz")
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no file touched
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 1 and loaded.tokenizer.chars == ["a", "b"]
    torch.testing.assert_close(loaded.model(idx)[0], old(idx)[0], rtol=0, atol=0)


def test_crash_between_the_moves_is_caught_at_load_time(tmp_path, monkeypatch):
    """The new weights are in place but config.json is still the old one: a mixed checkpoint."""
    save_checkpoint(tmp_path, _trained(0)[0], step=1)
    real_replace = os.replace

    def die_before_config(src, dst):
        if Path(dst) == tmp_path / "config.json":
            raise KeyboardInterrupt  # the process is stopped between two renames
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_before_config)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _trained(1)[0], step=2)
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(CheckpointError, match="written by a different save than config.json"):
        load_checkpoint(tmp_path)


def test_leftovers_of_a_killed_save_are_ignored_then_removed(tmp_path):
    model, _, idx = _trained()
    save_checkpoint(tmp_path, model, step=1)
    stale = tmp_path / ".saving-killed"  # what a save killed by the OS leaves behind
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"garbage")
    torch.testing.assert_close(load_checkpoint(tmp_path).model(idx)[0], model(idx)[0])
    save_checkpoint(tmp_path, model, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_truncated_weights_are_reported(tmp_path):
    model, _, _ = _trained()
    save_checkpoint(tmp_path, model)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors in .* is missing, truncated"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["tokenizer.json", "training_state.pt"])
def test_modified_files_fail_their_checksum(tmp_path, name):
    model, opt, _ = _trained()
    save_checkpoint(tmp_path, model, optimizer=opt, tokenizer=CharTokenizer().train("abc"))
    path = tmp_path / name
    path.write_bytes(path.read_bytes().replace(b"b", b"B", 1))  # one byte changed
    with pytest.raises(CheckpointError, match=f"{name} in .* does not match its checksum"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_embd": 64}, r"size mismatch for wte.weight: .*\[32, 32\].*\[32, 64\]"),
        ({"n_layer": 3}, r"Missing key\(s\) in state_dict: \"h.2."),
        ({"n_layer": 1}, r"Unexpected key\(s\) in state_dict: \"h.1."),
    ],
)
def test_config_weights_mismatch_names_the_tensor(tmp_path, change, message):
    model, _, _ = _trained()
    save_checkpoint(tmp_path, model)
    config = json.loads((tmp_path / "config.json").read_text())
    _edit_config(tmp_path, model_config={**config["model_config"], **change})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_unknown_format_version_and_missing_files(tmp_path):
    for empty in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(CheckpointError, match="no config.json in .*not a gptlib checkpoint"):
            load_checkpoint(empty)
    save_checkpoint(tmp_path, _trained()[0])
    _edit_config(tmp_path, format_version=99)
    with pytest.raises(CheckpointError, match="unknown checkpoint format version 99"):
        load_checkpoint(tmp_path)


def test_format_1_loads_for_inference_only(tmp_path):
    """gptlib 0.1 kept the training state in three files that this version no longer reads."""
    model, opt, idx = _trained()
    save_checkpoint(tmp_path, model, optimizer=opt)
    (tmp_path / "training_state.pt").unlink()
    _edit_config(
        tmp_path,
        format_version=1,
        sha256={},
        files=["model.safetensors", "optimizer.safetensors", "trainer_state.json"],
    )
    loaded = load_checkpoint(tmp_path, load_optimizer=False)
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="load it with load_optimizer=False"):
        load_checkpoint(tmp_path)


@pytest.mark.skipif(not BOOK_MODEL.is_dir(), reason="the committed book model is not here")
def test_committed_book_model_loads_for_inference():
    """The book's model (config.json, model.safetensors, tokenizer.json) loads and is trained."""
    ck = load_checkpoint(BOOK_MODEL, load_optimizer=False)
    state = ck.model.state_dict()
    for name, tensor in load_file(BOOK_MODEL / "model.safetensors").items():  # another reader
        assert torch.equal(state[name], tensor), name
    text = "ROMEO.\nBut soft, what light through yonder window breaks?\nIt is the east.\n"
    ids = ck.tokenizer.encode(text)
    assert ck.tokenizer.decode(ids) == text and len(ids) < len(text) / 2
    with torch.no_grad():
        _, loss = ck.model.eval()(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
    # an untrained model scores about ln V = 8.3 nats; the trained one scored 3.3 on this line
    assert loss.item() < 0.5 * math.log(ck.model_config.vocab_size)


class _Exploit:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_runs_code_from_the_files(tmp_path, monkeypatch):
    model, opt, idx = _trained()
    save_checkpoint(tmp_path, model, optimizer=opt)
    marker = tmp_path / "pwned"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))
    with monkeypatch.context() as m:  # an inference load does not unpickle at all
        for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
            m.setattr(module, name, lambda *a, **k: pytest.fail("an inference load unpickled"))
        loaded = load_checkpoint(tmp_path, load_optimizer=False)  # the stray pickle is ignored
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    # a pickle in place of the training state, with a matching checksum: weights_only refuses it
    (tmp_path / "training_state.pt").write_bytes(pickle.dumps(_Exploit(marker), protocol=2))
    _edit_config(
        tmp_path, sha256={"training_state.pt": sha256_file(tmp_path / "training_state.pt")}
    )
    with pytest.raises(CheckpointError, match="is not a training state"):
        load_checkpoint(tmp_path)
    # and a pickle disguised as the weights file is rejected, not executed
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path, load_optimizer=False)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices on dynamo import
def test_compile_and_ddp_prefixes_are_stripped(tmp_path):
    assert list(clean_state_dict({"module._orig_mod.h.0.ln_1.weight": 0})) == ["h.0.ln_1.weight"]
    model, _, idx = _trained()
    compiled = torch.compile(model)  # compiles lazily: no compiler needed to save it
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_checkpoint(tmp_path, compiled)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "_orig_mod" in k or k.startswith("module.")]
    torch.testing.assert_close(load_checkpoint(tmp_path).model(idx)[0], model(idx)[0])


def test_load_into_model_with_other_config_fails(tmp_path):
    save_checkpoint(tmp_path, _trained()[0])
    other = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=32))
    with pytest.raises(CheckpointError, match=r"'block_size': \(16, 8\)"):
        load_checkpoint(tmp_path, model=other)


def test_rng_state_round_trip(tmp_path):
    """After a restore, every generator draws what it would have drawn at save time."""
    gen = torch.Generator().manual_seed(5)
    save_checkpoint(tmp_path, _trained()[0], rng_state=capture_rng_state({"data": gen}))
    expected = (random.random(), torch.rand(3), torch.rand(3, generator=gen))
    random.seed(0)
    torch.manual_seed(0)
    gen.manual_seed(0)
    restore_rng_state(load_checkpoint(tmp_path).rng_state, {"data": gen})
    got = (random.random(), torch.rand(3), torch.rand(3, generator=gen))
    assert got[0] == expected[0]
    assert torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])


def test_inference_copy_without_training_state_loads(tmp_path):
    """The book ships only weights, config and tokenizer; the file a resume needs stays home."""
    model, opt, idx = _trained()
    save_checkpoint(
        tmp_path,
        model,
        step=3,
        optimizer=opt,
        rng_state=capture_rng_state({"data": torch.Generator().manual_seed(1)}),
    )
    (tmp_path / "training_state.pt").unlink()
    loaded = load_checkpoint(tmp_path, load_optimizer=False)
    assert loaded.optimizer_state is None and loaded.rng_state is None
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    with pytest.raises(
        CheckpointError, match="training_state.pt is listed in config.json but missing"
    ):  # a resume does need it
        load_checkpoint(tmp_path)


def test_a_save_without_training_state_removes_the_old_one(tmp_path):
    model, opt, _ = _trained()
    save_checkpoint(tmp_path, model, optimizer=opt, tokenizer=CharTokenizer().train("ab"))
    save_checkpoint(tmp_path, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert load_checkpoint(tmp_path).optimizer_state is None


def test_saved_files_are_readable_by_others(tmp_path):
    model, opt, _ = _trained()
    save_checkpoint(tmp_path, model, optimizer=opt, tokenizer=CharTokenizer().train("ab"))
    for name in ("model.safetensors", "training_state.pt", "tokenizer.json", "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o044 == 0o044, name


def test_train_config_is_returned_as_saved_and_rebuilds(tmp_path):
    """checkpoint sits below train, so it hands back the dict it read; TrainConfig rebuilds it."""
    cfg = TrainConfig(max_steps=7, lr=3e-4, min_lr=3e-5, warmup_steps=2, betas=(0.8, 0.9))
    save_checkpoint(tmp_path, _trained()[0], train_config=cfg.to_dict(), step=7)
    loaded = load_checkpoint(tmp_path)
    assert isinstance(loaded.train_config, dict)
    assert TrainConfig.from_dict(loaded.train_config) == cfg
    _edit_config(tmp_path, train_config=[1, 2])
    with pytest.raises(CheckpointError, match="invalid train config"):
        load_checkpoint(tmp_path)
