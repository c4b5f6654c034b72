"""Training a GPT: the config, the optimizer, the learning-rate schedule, one step and the loop.

What one optimizer step does (``train_step``, which a notebook can also call in its own loop):

1. for each micro-batch: forward (bf16 autocast on CUDA), backward of ``loss / n_micro``, so the
   summed gradients are those of the mean loss over the full batch;
2. clip the global gradient norm (Pascanu et al. 2013);
3. an AdamW update (Kingma & Ba 2015; decoupled weight decay, Loshchilov & Hutter 2019), skipped
   if the loss or the norm is not finite, so one bad batch cannot spread NaN into every weight.

``train`` runs the job around it: ``batch_size * grad_accum * world_size`` random windows per step
from a seeded generator, the learning rate of ``lr_at`` (linear warmup, Goyal et al. 2017, then
cosine decay), evaluation, log.csv, checkpoints, and a ``TrainingDivergedError`` when a step is
not finite. Every run is reproducible from ``TrainConfig.seed``, and ``resume=True`` continues an
interrupted run so exactly that it ends with bit-identical weights. Under ``torchrun`` the same
function runs data-parallel (``gptlib.distributed``). What a run keeps around the loop (devices
and wrappers, log.csv, checkpoints, resuming, the divergence error) lives in ``gptlib.runs``, which
this module imports and which never imports it. Left out on purpose: float16 loss scaling
(bf16 needs none), learning-rate finders, early stopping on validation loss (use ``callback``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from gptlib import distributed, runs
from gptlib.data import get_batch
from gptlib.device import autocast
from gptlib.files import dataclass_from_dict
from gptlib.model import evaluating, unwrap_model
from gptlib.runs import TrainingDivergedError
from gptlib.tokenizer import Tokenizer

__all__ = [
    "StepStats",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",  # defined in gptlib.runs, which raises it; imported from here
    "configure_optimizer",
    "decay_groups",
    "estimate_loss",
    "lr_at",
    "train",
    "train_step",
]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a training run. Frozen: derive variants with `dataclasses.replace`."""

    max_steps: int = 1000  # optimizer updates
    batch_size: int = 32  # sequences per micro-batch (per process under torchrun)
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matmul weights and embeddings only
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    grad_accum: int = 1  # micro-batches per update
    eval_interval: int = 100  # evaluate every this many updates (and after the last)
    eval_iters: int = 20  # batches per split in an evaluation
    checkpoint_interval: int = 0  # save every this many updates; 0: only at the end
    log_interval: int = 10  # a row of log.csv every this many updates
    seed: int = 1337
    compile: bool = False  # torch.compile the model
    device: str | None = None  # None: gptlib.device.pick_device()
    block_size: int | None = None  # training context; None: the model's block_size

    def __post_init__(self) -> None:
        positive = (
            "max_steps",
            "batch_size",
            "grad_accum",
            "eval_interval",
            "eval_iters",
            "log_interval",
        )
        for name in positive + ("warmup_steps", "checkpoint_interval", "seed"):
            value = getattr(self, name)
            low = 1 if name in positive else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.block_size is not None and (
            not isinstance(self.block_size, int) or self.block_size < 1
        ):
            raise ValueError(f"block_size must be None or an integer >= 1, got {self.block_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr={self.min_lr} must lie between 0 and lr={self.lr}")
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} is longer than max_steps={self.max_steps}"
            )
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                "weight_decay and grad_clip must be >= 0, got "
                f"{self.weight_decay} and {self.grad_clip}"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, d)


@dataclass
class TrainResult:
    """What ``train`` returns. Losses are from the last evaluation."""

    history: list[dict] = field(default_factory=list)  # the rows of log.csv
    step: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    stopped_early: bool = False
    out_dir: Path | None = None

    @property
    def val_perplexity(self) -> float | None:
        return None if self.val_loss is None else math.exp(self.val_loss)


def lr_at(step: int, cfg: TrainConfig) -> float:
    r"""The learning rate for update ``step`` (0-based): linear warmup, then cosine decay.

    With W = warmup_steps, S = max_steps:

    .. math::
        \eta_t = \eta_{max} \frac{t + 1}{W} \quad (t < W), \qquad
        \eta_t = \eta_{min} + \tfrac12 (\eta_{max} - \eta_{min})
                 \left(1 + \cos \pi \frac{t - W}{S - W}\right) \quad (t \ge W)

    Warmup starts at lr / W rather than 0, so the first update is not wasted.

    >>> cfg = TrainConfig(max_steps=110, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    >>> [round(lr_at(t, cfg), 6) for t in (0, 4, 10, 60, 110)]
    [0.0001, 0.0005, 0.001, 0.00055, 0.0001]
    """
    if step < cfg.warmup_steps:  # linear warmup (Goyal et al. 2017, Sec. 2.2)
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps)  # in [0, 1)
    # cosine annealing (Loshchilov & Hutter 2017, SGDR, Eq. 5) without restarts
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def decay_groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters with and without weight decay.

    Matrices (dim >= 2: Linear weights, embeddings) are decayed; biases and LayerNorm gains
    are not: shrinking them towards 0 does not regularise anything useful.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied weight is listed once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(name)
    return decay, no_decay


def configure_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with the two groups of ``decay_groups``.

    Uses the fused kernel where this torch build has one for the model's device, else foreach.
    """
    params = dict(model.named_parameters())
    decay, no_decay = decay_groups(model)
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": cfg.weight_decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=True)


@dataclass(frozen=True)
class StepStats:
    """What one ``train_step`` measured, both before the update."""

    loss: float  # mean loss over the micro-batches (and over the processes under torchrun)
    grad_norm: float  # global L2 norm of all gradients, before clipping

    @property
    def finite(self) -> bool:
        """False when the loss or the norm is NaN or infinite (and the update was skipped)."""
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    lr: float | None = None,
    grad_clip: float | None = 1.0,
) -> StepStats:
    """One optimizer update from the (x, y) micro-batches of one step: accumulate, clip, update.

    Each micro-batch's loss is divided by ``len(batches)`` before its backward pass, so the
    gradients that add up in ``p.grad`` are those of the mean loss over the micro-batches: for
    micro-batches of one shape, exactly the gradient of one batch of ``len(batches) * B`` rows.
    Under DistributedDataParallel the gradients are exchanged once, after the last micro-batch.
    The model runs in the mode it is in: call ``model.train()`` first if it has dropout.

    Args:
        model: ``model(x, y)`` returns ``(logits, loss)``, the loss a mean over the batch: a GPT,
            possibly compiled or wrapped in DistributedDataParallel.
        optimizer: any ``torch.optim`` optimizer over the model's parameters.
        batches: the micro-batches, each two (B, T) long tensors on the model's device,
            ``y[b, t]`` the token that follows ``x[b, t]``.
        lr: if given, the learning rate of every parameter group from this step on.
        grad_clip: the largest global gradient norm (Pascanu et al. 2013, Sec. 3.2); None or 0
            turns clipping off (the norm is still measured).
    Returns:
        ``StepStats(loss, grad_norm)``. If either is not finite the update is skipped and the
        weights stay as they were. ``p.grad`` keeps the step's clipped gradients until the next
        call clears them.
    """
    if not batches:
        raise ValueError("train_step needs at least one (x, y) micro-batch")
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)  # gradients left from before would be added in
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    total = torch.zeros((), device=batches[0][0].device)
    for i, (x, y) in enumerate(batches):
        last = i == len(batches) - 1
        with model.no_sync() if ddp and not last else contextlib.nullcontext():
            with autocast(x.device):
                _, loss = model(x, y)
            (loss / len(batches)).backward()  # summed gradients = gradient of the mean loss
        total += loss.detach().float()
    mean_loss = distributed.all_reduce_mean(total / len(batches)).item()
    max_norm = grad_clip if grad_clip else math.inf
    norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
    stats = StepStats(loss=mean_loss, grad_norm=norm)
    if stats.finite:  # a NaN or inf update would spoil every weight it touches
        optimizer.step()
    return stats


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    splits: dict[str, Any],
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    block_size: int | None = None,
) -> dict[str, float]:
    """Mean loss over ``cfg.eval_iters`` random batches of each split, in eval mode (no dropout).

    Args:
        model: a GPT (or a compiled one); its train/eval mode is restored afterwards.
        splits: ``{"train": tokens, "val": tokens}`` (any names; 1-D tensors or TokenFiles).
        cfg: ``batch_size`` and ``eval_iters`` (and ``block_size``) are read from it.
        generator: draws the batches; reseed it to evaluate on the same batches every time.
        block_size: the window length T (default: ``cfg.block_size``, else the model's).
    Returns:
        ``{"train_loss": ..., "train_perplexity": ..., "val_loss": ..., ...}``.
    """
    device = next(model.parameters()).device
    block_size = block_size or cfg.block_size or unwrap_model(model).config.block_size
    out = {}
    with evaluating(model):
        for name, tokens in splits.items():
            total = torch.zeros((), device=device)
            for _ in range(cfg.eval_iters):
                x, y = get_batch(tokens, cfg.batch_size, block_size, generator, device)
                with autocast(device):
                    _, loss = model(x, y)
                total += loss.float()
            out[f"{name}_loss"] = total.item() / cfg.eval_iters
            out[f"{name}_perplexity"] = math.exp(min(out[f"{name}_loss"], 700.0))
    return out


def _evaluate(run: runs.Run, result: TrainResult, train_tokens: Any, val_tokens: Any) -> dict:
    """Evaluate on the same batches every time (a generator seeded ``seed + 1``)."""
    ev = estimate_loss(
        run.eval_model,
        {"train": train_tokens, "val": val_tokens},
        run.cfg,
        torch.Generator().manual_seed(run.cfg.seed + 1),
        run.block_size,
    )
    result.train_loss, result.val_loss = ev["train_loss"], ev["val_loss"]
    return {"val_loss": ev["val_loss"], "val_perplexity": ev["val_perplexity"]}


def train(
    model: nn.Module,
    train_tokens: Any,
    val_tokens: Any,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    tokenizer: Tokenizer | None = None,
    callback: Callable[[int, dict], bool | None] | None = None,
) -> TrainResult:
    """Train ``model`` (in place) for ``cfg.max_steps`` updates of ``train_step``.

    Seeds torch's global generator (dropout) with ``cfg.seed``; batches come from a separate
    generator, and evaluation always uses the same batches (a fresh generator, ``seed + 1``).

    Args:
        model: a GPT; moved to the training device.
        train_tokens, val_tokens: 1-D long tensors or ``TokenFile``s.
        cfg: the run's hyper-parameters.
        out_dir: where checkpoints and log.csv go (None: keep nothing on disk).
        resume: continue the checkpoint in ``out_dir``: weights, optimizer, step, RNG states, log.
        progress: show a tqdm progress bar.
        tokenizer: saved with each checkpoint.
        callback: ``callback(step, metrics)`` after every update (on every process); return True
            to stop early (a checkpoint is still written).
    Returns:
        A ``TrainResult``; the rows of ``history`` are also in ``out_dir/log.csv``.
    Raises:
        TrainingDivergedError: the loss or gradient norm became NaN/inf; the weights are those
            before that step, and the last checkpoint in ``out_dir`` is kept as it was.
    """
    run = runs.setup_run(model, cfg, out_dir, tokenizer, lambda m: configure_optimizer(m, cfg))
    for tokens, name in ((train_tokens, "train_tokens"), (val_tokens, "val_tokens")):
        runs.check_tokens(tokens, name, run.block_size, run.raw.config.vocab_size)
    step, history = runs.start_run(run, resume)
    result = TrainResult(history=history, step=step, out_dir=run.out)
    shown = progress and run.dist.is_main
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not shown, unit="step", desc="train")
    try:
        while step < cfg.max_steps:
            t0, lr = time.perf_counter(), lr_at(step, cfg)
            batches = runs.micro_batches(run, train_tokens)
            stats = train_step(
                run.step_model, run.optimizer, batches, lr=lr, grad_clip=cfg.grad_clip
            )
            if not stats.finite:  # train_step skipped this update; stop the run before the next
                bad_loss = not math.isfinite(stats.loss)
                what, value = (
                    ("loss", stats.loss) if bad_loss else ("gradient norm", stats.grad_norm)
                )
                raise runs.diverged(run, step + 1, what, value)
            step += 1
            run.seconds += time.perf_counter() - t0
            run.steps_timed += 1
            metrics = dict(step=step, train_loss=stats.loss, lr=lr, grad_norm=stats.grad_norm)
            if step % cfg.eval_interval == 0 or step == cfg.max_steps:
                metrics.update(_evaluate(run, result, train_tokens, val_tokens))
            if "val_loss" in metrics or step % cfg.log_interval == 0 or step == cfg.max_steps:
                result.history.append(runs.log_row(run, metrics, bar))
            bar.update(1)
            result.step = step
            if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0:
                runs.save_run(run, step)
            stop = bool(callback(step, metrics)) if callback is not None else False
            if distributed.any_process(stop, run.dist):
                result.stopped_early = step < cfg.max_steps
                break
        runs.save_run(run, step)
    finally:
        bar.close()
    distributed.barrier(run.dist)
    return result
