"""Byte-level BPE speed: gptlib against Hugging Face ``tokenizers`` (Rust), in the same run.

Both tokenizers are trained on the same text with the same vocabulary size and the same GPT-2
pre-tokenization, then encode the same text. Printed: absolute times and throughputs, and the
ratios gptlib / tokenizers, which are what to compare across machines.

gptlib is pure Python on one core. ``tokenizers`` runs on ``--hf-threads`` threads (default 1,
for a like-for-like comparison; it sets RAYON_NUM_THREADS before ``tokenizers`` is imported).

    python benchmarks/bench_bpe.py                      # full Shakespeare corpus, vocab 4096
    python benchmarks/bench_bpe.py --chars 1000000 --hf-threads 2
"""

import argparse
import os
import platform
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--chars", type=int, default=None, help="use only the first N characters")
    parser.add_argument("--hf-threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.hf_threads)

    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from gptlib.bpe import BPETokenizer
    from gptlib.corpus import shakespeare_text

    text = shakespeare_text()[: args.chars]
    special = "<|endoftext|>"
    print(
        f"text: {len(text):,} characters of Shakespeare; vocab_size={args.vocab_size}; "
        f"python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
        f"{os.cpu_count()} CPUs, tokenizers threads={args.hf_threads}"
    )

    start = time.perf_counter()
    ours = BPETokenizer().train(text, args.vocab_size, special_tokens=[special])
    ours_train = time.perf_counter() - start

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        special_tokens=[special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    start = time.perf_counter()
    hf.train_from_iterator([text], trainer)
    hf_train = time.perf_counter() - start

    start = time.perf_counter()
    ours_ids = ours.encode(text)  # the chunk cache starts empty after training
    ours_cold = time.perf_counter() - start
    start = time.perf_counter()
    ours.encode(text)  # every chunk now comes from the cache
    ours_warm = time.perf_counter() - start
    start = time.perf_counter()
    hf_ids = hf.encode(text).ids  # one call on the whole text, as for gptlib
    hf_cold = time.perf_counter() - start
    start = time.perf_counter()
    hf.encode(text)  # tokenizers keeps a word cache too
    hf_warm = time.perf_counter() - start
    assert ours.decode(ours_ids) == text and hf.decode(hf_ids) == text
    lines = text.splitlines(keepends=True)
    start = time.perf_counter()
    hf.encode_batch(lines)  # the usual way to feed tokenizers a corpus
    hf_batch = time.perf_counter() - start

    n = len(text)
    rows = [
        ("train (s)", ours_train, hf_train),
        ("encode, first pass (chars/s)", n / ours_cold, n / hf_cold),
        ("encode, second pass (chars/s)", n / ours_warm, n / hf_warm),
        ("characters per token", n / len(ours_ids), n / len(hf_ids)),
    ]
    print(f"{'':30} {'gptlib':>14} {'tokenizers':>14} {'gptlib/tokenizers':>18}")
    for name, ours_value, hf_value in rows:
        print(f"{name:30} {ours_value:14,.2f} {hf_value:14,.2f} {ours_value / hf_value:18.3f}")
    print(f"tokenizers encode_batch over {len(lines):,} lines: {n / hf_batch:,.0f} chars/s")


if __name__ == "__main__":
    main()
