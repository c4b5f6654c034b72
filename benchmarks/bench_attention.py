"""Attention cost: the explicit softmax path against ``scaled_dot_product_attention`` (SDPA).

For each sequence length T, with GPT-2 small's shape (12 heads of 64 channels, batch 1), both
paths compute causal attention from the same q, k, v, as ``gptlib.model.CausalSelfAttention``
does: the explicit path with ``attention_weights`` (it materialises the (B, nh, T, T) matrix of
weights) then ``@ v``; the SDPA path with one ``F.scaled_dot_product_attention(is_causal=True)``
call, which may use a fused kernel that never stores that matrix (Dao et al. 2022).

Printed per T: best forward time of each path, the ratio explicit / SDPA, and peak memory
above what was allocated before the call. On CUDA that is ``torch.cuda.max_memory_allocated``;
on CPU it is the growth of the peak resident set size (VmHWM) of a fresh process that
makes one call, so it is coarse (about 1 MiB) and includes allocator effects. For reference,
one (1, 12, T, T) float32 matrix takes 48 * T^2 bytes.

    python benchmarks/bench_attention.py                   # T = 128 .. 2048, CPU
    python benchmarks/bench_attention.py --lengths 256 1024 --threads 2
"""

import argparse
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from gptlib.model import CausalSelfAttention, GPTConfig

N_HEAD, HEAD_SIZE = 12, 64


def make(T: int, device: str):
    config = GPTConfig(block_size=T, n_head=N_HEAD, n_embd=N_HEAD * HEAD_SIZE, vocab_size=1)
    attn = CausalSelfAttention(config).to(device)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, N_HEAD, T, HEAD_SIZE, generator=g).to(device) for _ in range(3))
    return attn, q, k, v


def run(path: str, attn, q, k, v) -> torch.Tensor:
    with torch.no_grad():
        if path == "explicit":
            return attn.attention_weights(q, k) @ v  # (B, nh, T, T) @ (B, nh, T, hs)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)


def best_time(path: str, T: int, device: str, repeats: int) -> float:
    attn, q, k, v = make(T, device)
    run(path, attn, q, k, v)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(path, attn, q, k, v)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(path: str, T: int, device: str, threads: int) -> float:
    """Peak bytes allocated by one call, above what was in use just before it."""
    if device == "cuda":
        attn, q, k, v = make(T, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(path, attn, q, k, v)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    cmd = [sys.executable, __file__, "--worker", path, str(T), "--threads", str(threads)]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def peak_rss_kib() -> int:
    """Peak resident set size of this process in KiB.

    Linux's VmHWM belongs to this program's memory map; ru_maxrss (the fallback elsewhere) can
    start at the parent's size, because the peak of a forked process survives its exec.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(path: str, T: int) -> None:
    """Runs in a fresh process: print how far one call pushes the peak resident set size."""
    attn, q, k, v = make(T, "cpu")
    before = peak_rss_kib()
    run(path, attn, q, k, v)
    print((peak_rss_kib() - before) * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"torch {torch.__version__}, device {device}, {os.cpu_count()} CPUs, "
        f"torch threads={torch.get_num_threads()}; B=1, nh={N_HEAD}, hs={HEAD_SIZE}, "
        f"best of {args.repeats}; memory: "
        f"{'cuda max_memory_allocated' if device == 'cuda' else 'peak RSS growth'}"
    )
    for T in args.lengths:  # the two paths must agree before their speed means anything
        a, b = (run(p, *make(T, device)) for p in ("explicit", "sdpa"))
        assert torch.allclose(a, b, atol=1e-5), f"paths differ at T={T}"
    mib = 2**20
    print(
        f"\n{'T':>6}{'explicit ms':>13}{'sdpa ms':>10}{'time ratio':>12}"
        f"{'explicit MiB':>14}{'sdpa MiB':>10}{'mem ratio':>11}{'T x T MiB':>11}"
    )
    for T in args.lengths:
        t_e, t_s = (best_time(p, T, device, args.repeats) for p in ("explicit", "sdpa"))
        m_e, m_s = (peak_memory(p, T, device, args.threads) for p in ("explicit", "sdpa"))
        mem_ratio = f"{m_e / m_s:.1f}x" if m_s > 0 else "n/a"
        print(
            f"{T:>6}{1e3 * t_e:>13.1f}{1e3 * t_s:>10.1f}{t_e / t_s:>11.2f}x"
            f"{m_e / mib:>14.1f}{m_s / mib:>10.1f}{mem_ratio:>11}{48 * T * T / mib:>11.1f}"
        )
    print("\nratios are explicit / sdpa: above 1 means SDPA is faster or uses less memory")


if __name__ == "__main__":
    main()
