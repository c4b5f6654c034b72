"""Data-parallel training with ``torchrun``: one process per GPU (or CPU worker), same model.

Launch any script that calls ``gptlib.train.train`` with

    torchrun --standalone --nproc_per_node=N script.py

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``init_distributed`` reads them and
joins the process group (NCCL on CUDA, gloo on CPU). Outside ``torchrun`` every function here is a
cheap no-op, so the same code runs in a notebook.

How the data is split (``shard_batch``). Every process draws the same global batch of
``batch_size * world_size`` windows from the same seeded generator and keeps rows
``rank, rank + world_size, ...``. DistributedDataParallel averages the gradients, and the mean of
equal-sized per-process mean losses is the mean loss over the whole batch, so an update with N
processes equals the update of one process on the combined batch (a test checks this). The cost is
that every process samples all offsets, which is negligible next to a forward pass. Rank 0 alone
writes checkpoints and logs.

Left out on purpose: multi-node launch details, FSDP/tensor parallelism, gradient compression.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn

from gptlib.device import pick_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    >>> DistInfo(rank=1, world_size=2).is_main, DistInfo().is_main
    (False, True)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes checkpoints and logs."""
        return self.rank == 0


def _under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if there is one (idempotent); describe this process.

    Args:
        device: the device type to use (default: ``pick_device``); under torchrun with CUDA each
            process takes GPU ``LOCAL_RANK``.
    """
    dev = pick_device(device)
    if not _under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo(device=dev)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def is_main_process() -> bool:
    """True on rank 0, and in any process that is not part of a distributed job."""
    return not tdist.is_available() or not tdist.is_initialized() or tdist.get_rank() == 0


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun script)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def shard_batch(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This process's rows of a global batch: ``batch[rank::world_size]``.

    >>> shard_batch(torch.arange(6), DistInfo(rank=1, world_size=2))
    tensor([1, 3, 5])
    """
    if batch.shape[0] % info.world_size:
        raise ValueError(
            f"a global batch of {batch.shape[0]} rows does not split evenly over "
            f"{info.world_size} processes"
        )
    return batch[info.rank :: info.world_size]


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(model)`` in a multi-process job, else ``model`` itself."""
    if info.world_size == 1:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all processes (``value`` itself outside a job)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return value
    value = value.clone()
    tdist.all_reduce(value, op=tdist.ReduceOp.SUM)
    return value / tdist.get_world_size()


def any_process(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is True on any process, so every process takes the same branch."""
    if info.world_size == 1:
        return flag
    t = torch.tensor(float(flag), device=info.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op outside a job)."""
    if info.world_size > 1:
        tdist.barrier()
