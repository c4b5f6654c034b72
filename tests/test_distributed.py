"""Two CPU processes under torchrun take the same steps as one process on the combined batch."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as tdist
from safetensors.torch import load_file

from gptlib.distributed import DistInfo, init_distributed, is_main_process, shard_batch
from gptlib.model import GPT, GPTConfig

pytestmark = pytest.mark.skipif(not tdist.is_available(), reason="torch.distributed unavailable")

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from safetensors.torch import save_file
    from gptlib import distributed
    from gptlib.model import GPT, GPTConfig
    from gptlib.train import TrainConfig, train

    def run(batch_size):
        ids = (torch.arange(3000) * 7 + torch.arange(3000) // 13) % 29  # a deterministic "text"
        torch.manual_seed(0)
        # bias=False: the key bias gets an exactly-zero gradient, and Adam's normalisation would
        # blow its rounding noise up to lr-sized steps that differ between the two runs
        config = GPTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=32,
                           bias=False)
        model = GPT(config)
        # a small lr: Adam moves an element with |grad| ~ eps by ~lr whatever its rounding, so
        # float noise from the different reduction order shows up at the scale of lr
        cfg = TrainConfig(max_steps=2, batch_size=batch_size, grad_accum=2, lr=1e-4,
                          min_lr=1e-5, warmup_steps=1, eval_interval=10, eval_iters=1,
                          log_interval=1, device="cpu")
        result = train(model, ids[:2500], ids[2500:], cfg, progress=False)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        return state, result.history

    if __name__ == "__main__":
        torch.set_num_threads(1)
        state, history = run(int(sys.argv[2]))
        info = distributed.init_distributed("cpu")
        if info.is_main:
            save_file(state, sys.argv[1] + ".safetensors")
            with open(sys.argv[1] + ".json", "w") as f:
                json.dump({"world_size": info.world_size, "history": history}, f)
        distributed.cleanup()
""")


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTLIB_DEVICE": "cpu"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path, monkeypatch):
    """2 ranks x batch 4 (x 2 micro-batches) == 1 process x batch 8 (x 2), for two AdamW steps."""
    script = tmp_path / "ddp_step.py"
    script.write_text(SCRIPT)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(tmp_path / "ddp"),
            "4",
        ],
        tmp_path,
    )
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, history = __import__("ddp_step").run(8)  # the same code, in this process
    finally:
        torch.set_num_threads(threads)
    ddp = load_file(tmp_path / "ddp.safetensors")
    assert single.keys() == ddp.keys()
    torch.manual_seed(0)
    start = GPT(
        GPTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)
    ).state_dict()
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=0, atol=1e-6, msg=name)
    # the updates are ~lr = 1e-4, far above the tolerance: a wrong shard would be caught
    assert (single["h.0.mlp.c_fc.weight"] - start["h.0.mlp.c_fc.weight"]).abs().max() > 1e-5
    log = json.loads((tmp_path / "ddp.json").read_text())
    assert log["world_size"] == 2
    for a, b in zip(history, log["history"], strict=True):  # the loss is averaged over ranks
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], abs=1e-5)


def test_shard_batch_takes_every_world_size_th_row():
    batch = torch.arange(12).view(6, 2)
    shards = [shard_batch(batch, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert torch.equal(torch.cat(shards).sort(dim=0).values, batch)
    assert shards[1].tolist() == [[2, 3], [8, 9]]
    with pytest.raises(ValueError, match="does not split evenly"):
        shard_batch(torch.arange(5), DistInfo(rank=0, world_size=2))


def test_single_process_outside_torchrun(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.device) == (
        0,
        1,
        True,
        torch.device("cpu"),
    )
    assert is_main_process()


def test_only_rank_0_is_main():
    """is_main is derived from the rank, so the two can never disagree."""
    assert [DistInfo(rank=r, world_size=3).is_main for r in range(3)] == [True, False, False]
