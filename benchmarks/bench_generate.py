"""Generation speed: gptlib with and without its KV cache, and Hugging Face ``generate``.

One randomly initialised GPT (weights do not matter for speed) generates ``--new-tokens``
tokens greedily from a short prompt three ways, in the same run:

1. gptlib ``generate(..., use_cache=False)``: every step re-runs the whole sequence;
2. gptlib ``generate(..., use_cache=True)``: every step runs one token against a ``KVCache``;
3. ``transformers`` ``GPT2LMHeadModel.generate`` with its own cache, same weights
   (converted with ``gptlib.pretrained.to_hf_model``); skipped if transformers is missing.

Printed: tokens/s of each, the ratios cache / no cache (the book's claim: at least 3x for 512
new tokens) and gptlib / transformers, and whether all three produced the same tokens.

    python benchmarks/bench_generate.py                    # 512 new tokens, default model
    python benchmarks/bench_generate.py --new-tokens 128 --threads 2
"""

import argparse
import os
import platform
import time

import torch

from gptlib.generate import SamplingConfig, generate
from gptlib.model import GPT, GPTConfig


def timed(fn, repeats: int):
    """Best wall time of `repeats` calls (the least disturbed by other processes)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.prompt_tokens + args.new_tokens > args.block_size:
        parser.error("prompt + new tokens must fit in block_size (the cache would fall back)")

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=args.vocab_size,
        block_size=args.block_size,
        n_layer=args.n_layer,
        n_head=args.n_embd // 64,
        n_embd=args.n_embd,
    )
    model = GPT(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt_tokens))
    n = args.new_tokens
    print(f"model: {model.num_params():,} parameters {config}")
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, torch threads={torch.get_num_threads()}; "
        f"prompt {args.prompt_tokens} tokens, {n} new tokens, greedy, "
        f"best of {args.repeats} runs (no cache: 1 run)"
    )

    greedy = SamplingConfig(temperature=0)
    generate(model, prompt, 8, greedy)  # warm-up
    rows = {}
    # the slow path runs once: its time is long enough to be stable
    t, no_cache = timed(lambda: generate(model, prompt, n, greedy, use_cache=False), 1)
    rows["gptlib, no cache"] = t
    t, cached = timed(lambda: generate(model, prompt, n, greedy, use_cache=True), args.repeats)
    rows["gptlib, KV cache"] = t
    same = {"gptlib cache vs no cache": torch.equal(cached, no_cache)}

    try:
        from gptlib.pretrained import to_hf_model

        hf = to_hf_model(model).eval()
        mask = torch.ones_like(prompt)

        def hf_generate():
            with torch.no_grad():
                return hf.generate(
                    prompt,
                    attention_mask=mask,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=0,
                )

        hf_generate()  # warm-up
        rows["transformers generate (cache)"], hf_out = timed(hf_generate, args.repeats)
        same["gptlib vs transformers"] = torch.equal(cached, hf_out)
    except ImportError:
        print("transformers is not installed: skipping the comparison with it")

    print(f"\n{'method':<32}{'seconds':>10}{'tokens/s':>12}")
    for name, seconds in rows.items():
        print(f"{name:<32}{seconds:>10.2f}{n / seconds:>12.1f}")
    speedup = rows["gptlib, no cache"] / rows["gptlib, KV cache"]
    print(
        f"\nKV cache speed-up (no cache time / cache time): {speedup:.2f}x "
        f"({'meets' if speedup >= 3 else 'BELOW'} the 3x target)"
    )
    if "transformers generate (cache)" in rows:
        ratio = rows["transformers generate (cache)"] / rows["gptlib, KV cache"]
        print(f"gptlib cache speed relative to transformers (their time / ours): {ratio:.2f}x")
    for name, ok in same.items():
        print(f"identical tokens, {name}: {ok}")


if __name__ == "__main__":
    main()
