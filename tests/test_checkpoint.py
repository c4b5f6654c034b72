"""Checkpoints: round trip, tied weights, atomic writes, and clear errors for bad files."""

import json
import pickle
import random

import pytest
import torch
from safetensors import safe_open

import gptlib.checkpoint as ckpt
from gptlib.checkpoint import CheckpointError, clean_state_dict, load_checkpoint, save_checkpoint
from gptlib.device import capture_rng_state, restore_rng_state
from gptlib.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)


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
        "lm_head.weight": "wte.weight"}
    # the optimizer state goes back into a fresh AdamW unchanged
    fresh = torch.optim.AdamW(loaded.model.parameters(), lr=1e-3)
    fresh.load_state_dict(loaded.optimizer_state)
    for i, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(fresh.state_dict()["state"][i][name], value)
    assert fresh.param_groups[0]["betas"] == opt.param_groups[0]["betas"]


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    old, opt, idx = _trained(seed=0)
    save_checkpoint(tmp_path, old, step=1, optimizer=opt)
    new, new_opt, _ = _trained(seed=1)
    real_save_file = ckpt.save_file
    calls = []

    def crash_on_second_file(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # model file written, crash while writing the optimizer state
            raise OSError("disk full")
        real_save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", crash_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, new, step=2, optimizer=new_opt)
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 1
    torch.testing.assert_close(loaded.model(idx)[0], old(idx)[0], rtol=0, atol=0)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_truncated_weights_are_reported(tmp_path):
    model, _, _ = _trained()
    save_checkpoint(tmp_path, model)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or corrupt"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"n_embd": 64}, r"tensor 'wte.weight' has shape \(32, 32\) in the file but \(32, 64\)"),
    ({"n_layer": 3}, r"missing tensors \['h.2."),
    ({"n_layer": 1}, r"unexpected tensors \['h.1."),
])
def test_config_weights_mismatch_names_the_tensor(tmp_path, change, message):
    model, _, _ = _trained()
    save_checkpoint(tmp_path, model)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_config"].update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_unknown_format_version_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json in"):
        load_checkpoint(tmp_path)
    model, _, _ = _trained()
    save_checkpoint(tmp_path, model)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown checkpoint format version 99"):
        load_checkpoint(tmp_path)


def test_file_from_another_save_is_detected(tmp_path):
    """A crash between the renames would mix files of two saves; the save id catches it."""
    a, b = tmp_path / "a", tmp_path / "b"
    save_checkpoint(a, _trained(0)[0])
    save_checkpoint(b, _trained(1)[0])
    (a / "model.safetensors").write_bytes((b / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="different save"):
        load_checkpoint(a)


class _Exploit:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model, _, idx = _trained()
    save_checkpoint(tmp_path, model)
    marker = tmp_path / "pwned"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = load_checkpoint(tmp_path)  # the stray pickle file is ignored
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    # a pickle disguised as the weights file is rejected, not executed
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path)
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
    with pytest.raises(CheckpointError, match="block_size"):
        load_checkpoint(tmp_path, model=other)


def test_rng_state_round_trip(tmp_path):
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
    """The book ships only weights, config and tokenizer; the files a resume needs stay home."""
    model, opt, idx = _trained()
    save_checkpoint(tmp_path, model, step=3, optimizer=opt,
                    rng_state=capture_rng_state({"data": torch.Generator().manual_seed(1)}))
    for name in ("optimizer.safetensors", "rng_state.safetensors", "trainer_state.json"):
        (tmp_path / name).unlink()
    loaded = load_checkpoint(tmp_path, load_optimizer=False)
    assert loaded.optimizer_state is None and loaded.rng_state is None
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="missing"):  # a resume does need them
        load_checkpoint(tmp_path)


def test_saved_files_are_readable_by_others(tmp_path):
    model, opt, _ = _trained()
    save_checkpoint(tmp_path, model, optimizer=opt)
    for name in ("model.safetensors", "optimizer.safetensors", "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o044 == 0o044, name


def test_train_config_is_returned_as_saved_and_rebuilds(tmp_path):
    """checkpoint sits below train, so it hands back the dict it read; TrainConfig rebuilds it."""
    from gptlib.train import TrainConfig

    cfg = TrainConfig(max_steps=7, lr=3e-4, min_lr=3e-5, warmup_steps=2, betas=(0.8, 0.9))
    save_checkpoint(tmp_path, _trained()[0], train_config=cfg, step=7)
    loaded = load_checkpoint(tmp_path)
    assert isinstance(loaded.train_config, dict)
    assert TrainConfig.from_dict(loaded.train_config) == cfg
    config = json.loads((tmp_path / "config.json").read_text())
    config["train_config"] = [1, 2]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid train config"):
        load_checkpoint(tmp_path)
