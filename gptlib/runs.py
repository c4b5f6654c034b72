"""A training run on disk: the state ``gptlib.train.train`` keeps around its steps.

``train`` (in ``gptlib.train``) is the loop; this module holds what the loop needs around it:

- ``Run``: the state its helpers share (config, DDP/compile wrappers, optimizer, data generator);
- ``setup_run``: the device, the compiled model, the DistributedDataParallel wrapper;
- ``check_tokens`` and ``micro_batches``: the token streams checked, one step's batches cut;
- ``read_log`` / ``write_log``: log.csv, one row per logged step (columns ``LOG_COLUMNS``);
- ``start_run`` / ``resume_run``: a fresh output folder guarded, or an interrupted run continued
  exactly (weights, optimizer, data order and dropout RNG, the log up to the checkpoint);
- ``save_run``: a checkpoint of the run, refused when a weight is not finite;
- ``diverged`` and ``TrainingDivergedError``: the error a non-finite step raises;
- ``log_row``: one row of log.csv written, logged and shown on the progress bar.

``gptlib.train`` sits above this module and imports it, never the reverse (tests/test_layering.py):
so ``Run.cfg`` is typed loosely (any object with ``TrainConfig``'s attributes and ``to_dict``),
the optimizer is built by a function ``train`` passes to ``setup_run``, and evaluation, which
calls ``gptlib.train.estimate_loss``, stays in ``gptlib.train``. ``TrainingDivergedError`` lives
here because ``save_run`` raises it too; ``gptlib.train`` re-exports it, and that is where callers
import it from. Left out on purpose: keeping more than the newest checkpoint, log formats other
than CSV.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from gptlib import checkpoint, distributed
from gptlib.data import get_batch
from gptlib.device import capture_rng_state, restore_rng_state
from gptlib.model import unwrap_model
from gptlib.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s")
FREE_SETTINGS = ("max_steps", "device", "compile", "log_interval")  # may change on resume


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm stopped being a finite number."""

    def __init__(self, message: str, step: int, value: float, checkpoint_step: int | None):
        super().__init__(message)
        self.step, self.value, self.checkpoint_step = step, value, checkpoint_step


@dataclass
class Run:
    """What the helpers of ``train`` share about one run."""

    cfg: Any  # a gptlib.train.TrainConfig (that module sits above this one)
    dist: distributed.DistInfo
    raw: nn.Module  # the plain model: checkpointed, its weights checked for NaN
    eval_model: nn.Module  # ``raw``, compiled if ``cfg.compile``
    step_model: nn.Module  # ``eval_model``, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # the data order: the only source of training batches
    block_size: int
    out: Path | None
    tokenizer: Tokenizer | None
    last_saved: int | None = None  # step of the newest checkpoint on disk
    seconds: float = 0.0  # time spent in steps since the last log row
    steps_timed: int = 0

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one update, over all micro-batches and processes."""
        return self.cfg.batch_size * self.block_size * self.cfg.grad_accum * self.dist.world_size


def setup_run(
    model: nn.Module,
    cfg: Any,
    out_dir: str | Path | None,
    tokenizer: Tokenizer | None,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
) -> Run:
    """Start the process group (under torchrun), move, compile and wrap the model.

    Args:
        model: a GPT, possibly compiled or wrapped; its plain module is moved to the device.
        cfg: a ``TrainConfig`` (``device``, ``block_size``, ``compile`` and ``seed`` are read).
        out_dir: where the run keeps its files (None: nothing on disk).
        tokenizer: saved with each checkpoint.
        make_optimizer: builds the optimizer over the plain model once it is on its device
            (the fused AdamW kernel depends on the device).
    Returns:
        The ``Run``; its data generator is seeded with ``cfg.seed``.
    """
    dist = distributed.init_distributed(cfg.device)
    raw = unwrap_model(model).to(dist.device)
    block_size = cfg.block_size or raw.config.block_size
    if block_size > raw.config.block_size:
        raise ValueError(
            f"TrainConfig.block_size={block_size} exceeds the model's context "
            f"length block_size={raw.config.block_size}"
        )
    raw.train()
    eval_model = torch.compile(raw) if cfg.compile else raw
    return Run(
        cfg=cfg,
        dist=dist,
        raw=raw,
        eval_model=eval_model,
        step_model=distributed.wrap_model(eval_model, dist),
        optimizer=make_optimizer(raw),
        gen=torch.Generator().manual_seed(cfg.seed),
        block_size=block_size,
        out=None if out_dir is None else Path(out_dir),
        tokenizer=tokenizer,
    )


def check_tokens(tokens: Any, name: str, block_size: int, vocab_size: int) -> None:
    """Raise ValueError, naming ``name``, if ``tokens`` cannot give training windows.

    >>> check_tokens(torch.tensor([0, 1, 2, 1]), "val_tokens", block_size=3, vocab_size=3)
    >>> check_tokens(torch.tensor([0, 1, 2]), "val_tokens", 3, 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: val_tokens has 3 tokens; training with block_size=3 needs more: ...
    """
    if len(tokens) <= block_size:
        raise ValueError(
            f"{name} has {len(tokens)} tokens; training with block_size={block_size} "
            "needs more: use a longer text or a smaller block_size"
        )
    if isinstance(tokens, torch.Tensor) and int(tokens.max()) >= vocab_size:
        raise ValueError(
            f"{name} holds token id {int(tokens.max())}, outside the model's "
            f"vocabulary (vocab_size={vocab_size})"
        )


def micro_batches(run: Run, tokens: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This process's ``grad_accum`` micro-batches, cut from one global batch of the job.

    Every process draws the same ``batch_size * world_size * grad_accum`` windows from
    ``run.gen``, so the data order does not depend on the number of processes; each keeps its
    shard of every micro-batch.

    Returns:
        ``grad_accum`` pairs (x, y) of (batch_size, T) long tensors on the run's device.
    """
    rows = run.cfg.batch_size * run.dist.world_size  # one micro-batch of the whole job
    x, y = get_batch(tokens, rows * run.cfg.grad_accum, run.block_size, generator=run.gen)
    return [
        tuple(
            distributed.shard_batch(t[i : i + rows], run.dist).to(run.dist.device) for t in (x, y)
        )  # (batch_size, T) each
        for i in range(0, len(x), rows)
    ]


def read_log(path: Path, upto: int) -> list[dict]:
    """The rows of log.csv ``path`` up to step ``upto`` (none if there is no file).

    Returns:
        One dict per row, ``step`` an int, the other columns floats or None where empty.
    """
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = [
            {k: (None if v in ("", None) else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]
    return [{**r, "step": int(r["step"])} for r in rows if r["step"] <= upto]


def write_log(path: Path, rows: list[dict], append: bool) -> None:
    """Write ``rows`` (the ``LOG_COLUMNS`` of each) to log.csv ``path``: a new file, or appended.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "log.csv"
    ...     write_log(path, [{"step": 1, "train_loss": 2.5, "val_loss": None}], append=False)
    ...     write_log(path, [{"step": 2, "train_loss": 2.0, "lr": 1e-3}], append=True)
    ...     rows, upto_1 = read_log(path, upto=2), read_log(path, upto=1)
    >>> [(r["step"], r["train_loss"], r["lr"]) for r in rows], len(upto_1)
    ([(1, 2.5, None), (2, 2.0, 0.001)], 1)
    """
    with open(path, "a" if append else "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if not append:
            writer.writeheader()
        writer.writerows(rows)


def start_run(run: Run, resume: bool) -> tuple[int, list[dict]]:
    """Resume from or guard ``run.out``, seed dropout, start log.csv; returns (step, log rows)."""
    if resume:
        step, history = resume_run(run)
    elif run.out is not None and checkpoint.has_checkpoint(run.out):
        raise FileExistsError(
            f"{run.out} already holds a checkpoint; pass resume=True to "
            "continue it, or choose another out_dir"
        )
    else:
        step, history = 0, []
        torch.manual_seed(run.cfg.seed + run.dist.rank)  # dropout masks
    if run.out is not None and run.dist.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        write_log(run.out / "log.csv", history, append=False)
    return step, history


def resume_run(run: Run) -> tuple[int, list[dict]]:
    """Load the state of ``run.out``'s checkpoint into the run; returns (step, log rows so far).

    Settings that change the result (all but ``FREE_SETTINGS``) may differ from the saved ones,
    with a warning: the run then differs from an uninterrupted one.
    """
    out, cfg = run.out, run.cfg
    if out is None or not checkpoint.has_checkpoint(out):
        raise checkpoint.CheckpointError(f"resume=True but there is no checkpoint in {out}")
    ck = checkpoint.load_checkpoint(out, model=run.raw)
    if ck.optimizer_state is None or ck.rng_state is None:
        raise checkpoint.CheckpointError(
            f"the checkpoint in {out} has no optimizer or RNG "
            "state (saved for inference?); cannot resume it"
        )
    run.optimizer.load_state_dict(ck.optimizer_state)
    restore_rng_state(ck.rng_state, {"train": run.gen})
    if run.dist.rank:  # exact resume covers rank 0's dropout masks; other ranks reseed
        torch.manual_seed(cfg.seed + run.dist.rank + ck.step)
    saved = ck.train_config  # TrainConfig.to_dict() of the saved run: betas a list in both
    changed = {
        name: getattr(cfg, name)
        for name, value in cfg.to_dict().items()
        if saved is not None and name not in FREE_SETTINGS and saved.get(name) != value
    }
    if changed:
        logger.warning(
            "resuming with changed settings %s: the run will differ from an uninterrupted one",
            changed,
        )
    run.last_saved = ck.step
    return ck.step, read_log(out / "log.csv", upto=ck.step)  # later rows were never saved


def diverged(run: Run, step: int, what: str, value: float) -> TrainingDivergedError:
    """The error for ``what`` (the loss, ...) turning ``value`` at ``step``, with a remedy."""
    kept = (
        f"the last good checkpoint (step {run.last_saved}) in {run.out} is kept"
        if run.last_saved is not None and run.out is not None
        else "no checkpoint had been written"
    )
    return TrainingDivergedError(
        f"training diverged at step {step}: the {what} is {value}; {kept}. Try a lower "
        f"learning rate (lr={run.cfg.lr}), more warmup or gradient clipping.",
        step,
        value,
        run.last_saved,
    )


def save_run(run: Run, step: int) -> None:
    """Checkpoint the run at ``step`` (rank 0 writes), unless that step is already saved.

    Raises:
        TrainingDivergedError: a weight is not finite; the checkpoint on disk is kept.
    """
    if run.out is None or run.last_saved == step:
        return
    if not all(torch.isfinite(p).all() for p in run.raw.parameters()):
        raise diverged(run, step, "largest weight", math.inf)
    if run.dist.is_main:
        checkpoint.save_checkpoint(
            run.out,
            run.raw,
            train_config=run.cfg.to_dict(),
            step=step,
            optimizer=run.optimizer,
            tokenizer=run.tokenizer,
            rng_state=capture_rng_state({"train": run.gen}),
            extra={"tokens_seen": step * run.tokens_per_step},
        )
        logger.info("saved the checkpoint of step %d in %s", step, run.out)
    run.last_saved = step


def log_row(run: Run, metrics: dict, bar: tqdm) -> dict:
    """Append a row to log.csv, log it and show it on ``bar``; restarts the speed meter.

    Args:
        metrics: ``step``, ``train_loss``, ``lr``, ``grad_norm`` and, after an evaluation,
            ``val_loss``.
    Returns:
        The row: the ``LOG_COLUMNS``, with the speed in tokens/s since the last row.
    """
    tokens_per_s = run.steps_timed * run.tokens_per_step / max(run.seconds, 1e-9)
    row = {"val_loss": None, **metrics, "tokens_per_s": tokens_per_s}
    run.seconds, run.steps_timed = 0.0, 0
    if run.out is not None and run.dist.is_main:
        write_log(run.out / "log.csv", [row], append=True)
    val = "" if row["val_loss"] is None else f", val loss {row['val_loss']:.4f}"
    logger.info(
        "step %d: loss %.4f%s, lr %.2e, grad norm %.3f, %.0f tok/s",
        row["step"],
        row["train_loss"],
        val,
        row["lr"],
        row["grad_norm"],
        tokens_per_s,
    )
    bar.set_postfix(loss=f"{row['train_loss']:.3f}", lr=f"{row['lr']:.1e}", refresh=False)
    return {k: row[k] for k in LOG_COLUMNS}
