"""Command line: ``python -m gptlib data | train | sample``, a thin layer over the library.

    python -m gptlib data                                   # fetch and cache the corpus once
    python -m gptlib train --config run.json --out runs/a   # tokenizer, tokens, model, train
    python -m gptlib train --config run.json --out runs/a --resume
    python -m gptlib sample --checkpoint runs/a --prompt "ROMEO:" --top-p 0.9

A run config is JSON:

    {"model": {"preset": "small", "n_layer": 4},      # GPTConfig fields, or a preset + overrides
     "train": {"max_steps": 2000, "lr": 1e-3},        # TrainConfig fields
     "tokenizer": {"type": "bpe", "vocab_size": 4096},  # or {"type": "char"}
     "data": "shakespeare",                           # or the path of a UTF-8 text file
     "val_fraction": 0.1,
     "samples": {"prompt": "ROMEO.\\n", "max_new_tokens": 100, "temperature": 0.8}}

With ``samples.max_new_tokens`` > 0, every evaluation also writes a seeded sample from the
prompt to ``samples.jsonl`` in the run directory, so the book can show text at several points
of training without keeping a checkpoint for each.

``--set section.key=value`` overrides any entry (the value is read as JSON when it parses). The
model's ``vocab_size`` always comes from the tokenizer. The token ids of both parts are cached as
``train.npy`` and ``val.npy`` in the run directory (:func:`gptlib.data.cached_tokens`).

Exit codes: 0 done; 1 training diverged; 130 interrupted; 2 a mistake in the input, reported in
one line: the exceptions in ``USER_ERRORS`` (a bad command line or config, a corpus that cannot
be fetched, a missing or corrupt checkpoint or tokenizer file, a missing file), and ValueErrors
raised while the config and the text are read. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from gptlib import data
from gptlib.bpe import BPETokenizer
from gptlib.checkpoint import CheckpointError, has_checkpoint, load_checkpoint
from gptlib.corpus import CorpusError, load_text, prepare_corpus, shakespeare_text
from gptlib.device import pick_device, set_seed
from gptlib.distributed import is_main_process
from gptlib.generate import SamplingConfig, beam_search, generate, stream_text
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer, Tokenizer, TokenizerFileError, load_tokenizer
from gptlib.train import TrainConfig, TrainingDivergedError, train

SECTIONS = {
    "model": dict,
    "train": dict,
    "tokenizer": dict,
    "data": str,
    "val_fraction": float,
    "samples": dict,
}
DEFAULTS: dict[str, Any] = {
    "model": {"preset": "small"},
    "train": {},
    "tokenizer": {"type": "char"},
    "data": "shakespeare",
    "val_fraction": 0.1,
    "samples": {"max_new_tokens": 0},
}
SAMPLING_KEYS = {"temperature", "top_k", "top_p", "repetition_penalty"}  # SamplingConfig's
SAMPLE_KEYS = {"prompt", "max_new_tokens", "seed"} | SAMPLING_KEYS
TOKENIZERS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "bpe": BPETokenizer}
TOKENIZER_OPTIONS = {"char": {"vocab_size"}, "bpe": {"vocab_size", "special_tokens"}}


class UsageError(Exception):
    """A mistake in the command line or the config: reported in one line, exit code 2."""


# Exceptions that describe a mistake in what the user gave us, each raised with a message that
# says what to change: they end with exit code 2 and one line. Anything else is a bug in gptlib
# and keeps its traceback.
USER_ERRORS = (UsageError, CorpusError, CheckpointError, TokenizerFileError, FileNotFoundError)


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """Turn a ValueError raised while reading the config and the text into a UsageError.

    The config dataclasses, ``load_text``, ``train_val_split`` and the tokenizer trainers report
    bad values with ValueError; inside this block those values came from the user.
    """
    try:
        yield
    except ValueError as e:
        raise UsageError(str(e)) from e


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as cuda or shakespeare


def load_run_config(path: str | None, overrides: list[str]) -> dict[str, Any]:
    """Read the JSON run config and apply ``section.key=value`` overrides."""
    config = json.loads(json.dumps(DEFAULTS))
    if path is not None:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"config file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"config file {path} is not valid JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"config file {path} must hold a JSON object")
        config.update(loaded)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
        section, _, field = key.partition(".")
        if section not in SECTIONS:
            raise UsageError(
                f"--set {item!r}: unknown section {section!r}; known: {sorted(SECTIONS)}"
            )
        if field:
            config.setdefault(section, {})[field] = _parse_value(value)
        else:
            config[section] = _parse_value(value)
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise UsageError(f"unknown config key(s) {unknown}; known: {sorted(SECTIONS)}")
    for key, kind in SECTIONS.items():
        if not isinstance(config[key], kind) and not (
            kind is float and isinstance(config[key], int)
        ):
            raise UsageError(f"config key {key!r} must be a {kind.__name__}")
    unknown = sorted(set(config["samples"]) - SAMPLE_KEYS)
    if unknown:
        raise UsageError(f"unknown samples key(s) {unknown}; known: {sorted(SAMPLE_KEYS)}")
    return config


def model_config(section: dict[str, Any]) -> GPTConfig:
    """The model section as a GPTConfig (a preset plus overrides, or plain fields).

    Its ``vocab_size`` is the preset's or the default until the tokenizer is fitted; the caller
    then sets the tokenizer's with ``dataclasses.replace``. Parsing it first reports a typo in
    the section before the slow part (reading the corpus, fitting a BPE).
    """
    fields = {key: value for key, value in section.items() if key != "vocab_size"}
    preset = fields.pop("preset", None)
    return GPTConfig.preset(preset, **fields) if preset else GPTConfig.from_dict(fields)


def fit_tokenizer(section: dict[str, Any], text: str) -> Tokenizer:
    """Train the tokenizer the section names (``{"type": "bpe", "vocab_size": 4096}``) on text."""
    options = dict(section)
    kind = options.pop("type", "char")
    if kind not in TOKENIZERS:
        raise UsageError(f"tokenizer.type must be one of {sorted(TOKENIZERS)}, got {kind!r}")
    if kind == "bpe" and "vocab_size" not in options:
        raise UsageError("tokenizer.vocab_size is required for a bpe tokenizer")
    unknown = sorted(set(options) - TOKENIZER_OPTIONS[kind])
    if unknown:
        raise UsageError(
            f"unknown tokenizer option(s) {unknown} for type {kind!r}; "
            f"known: {sorted(TOKENIZER_OPTIONS[kind])}"
        )
    return TOKENIZERS[kind]().train(text, **options)


def split_and_tokenize(
    text: str, section: dict[str, Any], val_fraction: float, tokenizer: Tokenizer | None = None
) -> tuple[Tokenizer, str, str]:
    """Split ``text`` by characters, then fit the tokenizer on the training part only.

    The split comes first so that the validation characters are the same whatever the tokenizer
    (characters, BPE of any size, the n-gram baselines), and no validation text reaches the
    tokenizer's trainer: a BPE fitted on the whole corpus would learn single tokens for names
    that occur only in the validation plays. Pass ``tokenizer`` to reuse one (``--resume``).

    Returns:
        ``(tokenizer, train_text, val_text)``.
    """
    train_text, val_text = data.train_val_split(text, val_fraction)
    if tokenizer is None:
        tokenizer = fit_tokenizer(section, train_text)
    unseen = sorted(set(val_text) - set(train_text))
    if unseen and isinstance(tokenizer, CharTokenizer):
        raise UsageError(
            f"the validation text has {len(unseen)} character(s) that never occur "
            f"in the training text ({''.join(unseen[:10])!r}); a char tokenizer "
            "fitted on the training text cannot encode them. Use a bpe tokenizer "
            "(byte-level, it encodes any text) or a smaller val_fraction"
        )
    return tokenizer, train_text, val_text


def _sample_writer(
    options: dict[str, Any], sampling: SamplingConfig, model, tokenizer, path: Path, resume: bool
):
    """A training callback that appends a seeded sample to ``path`` after every evaluation."""
    n_new = options.get("max_new_tokens", 0)
    if not n_new:
        return None
    if not resume:
        path.unlink(missing_ok=True)
    prompt = tokenizer.encode(options.get("prompt", "\n"))

    def write(step: int, metrics: dict) -> None:
        if "val_loss" not in metrics or not is_main_process():
            return
        device = next(model.parameters()).device
        idx = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
        gen = torch.Generator(device=device).manual_seed(options.get("seed", 0))
        out = generate(model, idx, n_new, sampling, generator=gen)
        row = {
            "step": step,
            "val_loss": metrics["val_loss"],
            "text": tokenizer.decode(out[0].tolist()),
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write


def cmd_data(args: argparse.Namespace) -> int:
    path = prepare_corpus(args.cache_dir)
    print(f"Shakespeare corpus ready: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run config with the command line's shortcuts (--max-steps, --device, --data) applied."""
    overrides = list(args.set)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.device is not None:
        overrides.append(f"train.device={json.dumps(args.device)}")
    if args.data is not None:
        overrides.append(f"data={json.dumps(args.data)}")
    return load_run_config(args.config, overrides)


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume and not has_checkpoint(out):
        raise UsageError(f"--resume: no checkpoint in {out}")
    if not resume and has_checkpoint(out):
        raise UsageError(
            f"{out} already holds a checkpoint; add --resume to continue it or choose another --out"
        )


def _read_inputs(config: dict[str, Any], saved: Tokenizer | None):
    """Parse the config's sections and split and tokenize the text; bad values exit with 2.

    Returns:
        (train_cfg, model_cfg, sampling, tokenizer, train_text, val_text)
    """
    with _input_errors():
        train_cfg = TrainConfig.from_dict(config["train"])
        model_cfg = model_config(config["model"])
        if (train_cfg.block_size or 0) > model_cfg.block_size:
            raise UsageError(
                f"train.block_size={train_cfg.block_size} exceeds the model's "
                f"context length model.block_size={model_cfg.block_size}"
            )
        text = shakespeare_text() if config["data"] == "shakespeare" else load_text(config["data"])
        sampling = SamplingConfig(
            **{key: value for key, value in config["samples"].items() if key in SAMPLING_KEYS}
        )
        tokenizer, train_text, val_text = split_and_tokenize(
            text, config["tokenizer"], config["val_fraction"], tokenizer=saved
        )
    if config["model"].get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
        logging.getLogger("gptlib").warning(
            "model.vocab_size=%s replaced by the tokenizer's %d",
            config["model"]["vocab_size"],
            tokenizer.vocab_size,
        )
    model_cfg = dataclasses.replace(model_cfg, vocab_size=tokenizer.vocab_size)
    return train_cfg, model_cfg, sampling, tokenizer, train_text, val_text


def _token_parts(out: Path, tokenizer: Tokenizer, texts: tuple[str, str], block_size: int):
    """The training and validation tokens, cached beside the checkpoint, each longer than T."""
    parts = [
        data.cached_tokens(text, tokenizer, out / f"{name}.npy")
        for name, text in zip(("train", "val"), texts, strict=True)
    ]
    for name, part in zip(("training", "validation"), parts, strict=True):
        if len(part) <= block_size:
            raise UsageError(
                f"the {name} part has {len(part)} tokens, but training needs more "
                f"than block_size={block_size}; use a longer text, a different "
                "val_fraction or a smaller block_size"
            )
    return parts


def cmd_train(args: argparse.Namespace) -> int:
    config = _run_config(args)
    out = Path(args.out or f"runs/{Path(args.config).stem if args.config else 'default'}")
    _check_out_dir(out, args.resume)
    saved = load_tokenizer(out / "tokenizer.json") if args.resume else None
    train_cfg, model_cfg, sampling, tokenizer, train_text, val_text = _read_inputs(config, saved)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        tokenizer.save(out / "tokenizer.json")
    (out / "run.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    block_size = train_cfg.block_size or model_cfg.block_size
    train_tokens, val_tokens = _token_parts(out, tokenizer, (train_text, val_text), block_size)
    set_seed(train_cfg.seed)
    model = GPT(model_cfg)
    print(
        f"{type(tokenizer).__name__} with {tokenizer.vocab_size} tokens (fitted on the training "
        f"text only); {len(train_tokens):,} training and {len(val_tokens):,} validation tokens "
        f"({len(train_text):,} and {len(val_text):,} characters); "
        f"{model.num_params():,} parameters"
    )
    callback = _sample_writer(
        config["samples"], sampling, model, tokenizer, out / "samples.jsonl", resume=args.resume
    )
    result = train(
        model,
        train_tokens,
        val_tokens,
        train_cfg,
        out_dir=out,
        resume=args.resume,
        progress=not args.no_progress,
        tokenizer=tokenizer,
        callback=callback,
    )
    if result.val_loss is not None:
        print(
            f"step {result.step}: val loss {result.val_loss:.4f} "
            f"(perplexity {result.val_perplexity:.2f})"
        )
    print(f"checkpoint and log.csv in {out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    with _input_errors():
        sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    dev = pick_device(args.device)
    ck = load_checkpoint(args.checkpoint, device=dev, load_optimizer=False)
    if ck.tokenizer is None:
        raise UsageError(f"the checkpoint in {args.checkpoint} has no tokenizer.json")
    model, tokenizer = ck.model, ck.tokenizer
    idx = torch.tensor([tokenizer.encode(args.prompt)], dtype=torch.long, device=dev)  # (1, T)
    if idx.numel() == 0:
        raise UsageError("the prompt is empty; give at least one character with --prompt")
    generator = torch.Generator(device=dev).manual_seed(args.seed)
    if args.beam:
        out = beam_search(model, idx, args.max_new_tokens, beam_size=args.beam)
        print(tokenizer.decode(out[0].tolist()))
        return 0
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        if args.stream:  # the prompt, then each piece of text as soon as it is sampled
            print(tokenizer.decode(idx[0].tolist()), end="", flush=True)
            for piece in stream_text(
                model, tokenizer, idx, args.max_new_tokens, sampling, generator=generator
            ):
                print(piece, end="", flush=True)
            print()
            continue
        out = generate(model, idx, args.max_new_tokens, sampling, generator=generator)
        print(tokenizer.decode(out[0].tolist()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gptlib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="download and cache the Shakespeare corpus")
    p.add_argument("--cache-dir", help="default: $GPTLIB_CACHE or ~/.cache/gptlib")
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("train", help="train a tokenizer and a model from a JSON run config")
    p.add_argument("--config", help="JSON run config (see python -m gptlib --help)")
    p.add_argument("--data", help="'shakespeare' or the path of a UTF-8 text file")
    p.add_argument("--out", help="run directory: checkpoint, log.csv, tokens (default runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config entry, e.g. train.lr=1e-3 (repeatable)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="log a line every log_interval steps instead of a progress bar",
    )
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--beam", type=int, default=0, help="beam search with this many beams")
    p.add_argument("--stream", action="store_true", help="print tokens as they are produced")
    p.add_argument("--device")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "no_progress", False)  # without a progress bar, log a line instead
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDivergedError as e:
        print(f"{parser.prog} {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
