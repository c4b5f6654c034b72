"""Training speed: gptlib's GPT against Hugging Face ``GPT2LMHeadModel``, same everything else.

For each model size, both models start from the same weights (``gptlib.pretrained.to_hf_model``)
and take the same training step, ``gptlib.train.train_step`` (forward, backward, gradient
clipping, the AdamW update of ``gptlib.train.configure_optimizer``), on the same batches and with
the same loss (cross-entropy on the logits). Steps alternate between the two models, so a busy
machine slows both alike; the median step time of each gives tokens/s.

Printed: tokens/s of each and the ratio gptlib / transformers (the goal: >= 1).

    python benchmarks/bench_train.py                 # tiny and ~10M parameters
    python benchmarks/bench_train.py --steps 20 --threads 2 --sizes 10M
"""

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from gptlib.data import get_batch
from gptlib.device import pick_device
from gptlib.model import GPT, GPTConfig
from gptlib.pretrained import to_hf_model
from gptlib.train import TrainConfig, configure_optimizer, train_step

SIZES = {  # name: (model config, batch size)
    "tiny": (GPTConfig.preset("tiny"), 16),
    "10M": (GPTConfig(vocab_size=4096, block_size=256, n_layer=6, n_head=6, n_embd=384), 4),
}


class HFWithLoss(nn.Module):
    """A Hugging Face GPT-2 with gptlib's forward contract, ``(x, y) -> (logits, loss)``."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.hf(input_ids=x).logits  # (B, T, V)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))


def step_time(model, optimizer, x, y, device) -> float:
    """Seconds for one ``train_step`` (forward, backward, clip, AdamW update) on one batch."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_step(model, optimizer, [(x, y)], grad_clip=1.0)  # returns floats: waits for the device
    return time.perf_counter() - start


def bench(name: str, config: GPTConfig, batch_size: int, steps: int, warmup: int, device):
    torch.manual_seed(0)
    ours = GPT(config).to(device)
    theirs = HFWithLoss(to_hf_model(ours)).to(device)
    cfg = TrainConfig(batch_size=batch_size, lr=1e-4, min_lr=1e-5, warmup_steps=0)
    opt_ours, opt_theirs = configure_optimizer(ours, cfg), configure_optimizer(theirs, cfg)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (100_000,), generator=gen)
    times = {"gptlib": [], "transformers": []}
    for i in range(warmup + steps):
        x, y = get_batch(tokens, batch_size, config.block_size, gen, device)
        t_ours = step_time(ours, opt_ours, x, y, device)
        t_theirs = step_time(theirs, opt_theirs, x, y, device)
        if i >= warmup:
            times["gptlib"].append(t_ours)
            times["transformers"].append(t_theirs)
    n_tokens = batch_size * config.block_size
    speed = {k: n_tokens / statistics.median(v) for k, v in times.items()}
    print(
        f"{name:>5} {ours.num_params():>11,} {batch_size:>3}x{config.block_size:<4} "
        f"{speed['gptlib']:>10,.0f} {speed['transformers']:>13,.0f} "
        f"{speed['gptlib'] / speed['transformers']:>6.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, {device}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(
        f"{'size':>5} {'parameters':>11} {'batch':>8} {'gptlib tok/s':>10} "
        f"{'transformers':>13} {'ratio':>7}"
    )
    for name in args.sizes:
        config, batch_size = SIZES[name]
        bench(name, config, batch_size, args.steps, args.warmup, device)


if __name__ == "__main__":
    main()
