"""torch.compile on a training step: compilation time, and compiled against eager speed.

Both models start from the same weights and take the same training step,
``gptlib.train.train_step`` (forward, backward, gradient clipping, the AdamW update of
``gptlib.train.configure_optimizer``), on the same batch.
The first call of the compiled model compiles it (Ansel et al. 2024); that call is timed on its
own. After warm-up, steps alternate between the two models, so a busy machine slows both alike,
and the median step time of each gives tokens/s.

Printed: the compilation time, tokens/s of eager and compiled steps, and the ratio
compiled / eager (above 1: compiling pays off once its cost is amortised), and how many steps
the compilation time would pay for at that ratio. Section 5.3 of the book discusses the result.

    python benchmarks/bench_compile.py                     # book preset, batch 4 x 256, CPU
    python benchmarks/bench_compile.py --preset small --batch-size 16 --steps 20
"""

import argparse
import platform
import statistics

import torch
from bench_train import step_time  # the sibling script: python benchmarks/bench_compile.py

from gptlib.device import pick_device
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, configure_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="book", help="GPTConfig preset")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    config = GPTConfig.preset(args.preset)
    torch.manual_seed(0)
    eager = GPT(config).to(device)
    twin = GPT(config).to(device)
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin)
    cfg = TrainConfig(lr=1e-4, min_lr=1e-5, warmup_steps=0)
    opt_eager, opt_compiled = configure_optimizer(eager, cfg), configure_optimizer(twin, cfg)
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch_size, config.block_size)
    x = torch.randint(0, config.vocab_size, shape, generator=gen).to(device)
    y = torch.randint(0, config.vocab_size, shape, generator=gen).to(device)

    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; preset {args.preset}, "
        f"batch {shape[0]} x {shape[1]}"
    )
    compile_s = step_time(compiled, opt_compiled, x, y, device)  # compiles forward + backward
    print(f"first compiled step (includes compilation): {compile_s:.1f} s")
    for _ in range(args.warmup):
        step_time(eager, opt_eager, x, y, device)
        step_time(compiled, opt_compiled, x, y, device)
    times = {"eager": [], "compiled": []}
    for _ in range(args.steps):
        times["eager"].append(step_time(eager, opt_eager, x, y, device))
        times["compiled"].append(step_time(compiled, opt_compiled, x, y, device))
    n_tokens = shape[0] * shape[1]
    median = {k: statistics.median(v) for k, v in times.items()}
    for k, t in median.items():
        print(f"{k:>8}: {n_tokens / t:10,.0f} tokens/s ({t * 1e3:.0f} ms per step)")
    ratio = median["eager"] / median["compiled"]
    print(f"compiled / eager speed: {ratio:.2f}x")
    saved = median["eager"] - median["compiled"]
    if saved > 0:
        print(f"compilation pays for itself after about {compile_s / saved:,.0f} steps")
    else:
        print("the compiled step is not faster here, so compilation never pays for itself")


if __name__ == "__main__":
    main()
