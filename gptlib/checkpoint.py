"""Saving and loading checkpoints, safely and atomically.

A checkpoint is a directory of plain files:

    config.json          format version, model and train configs, step, files, checksums, extra
    model.safetensors    the weights; tied weights are stored once (see below)
    tokenizer.json       the tokenizer, written by ``Tokenizer.save`` (optional)
    training_state.pt    what only a resume needs: optimizer and RNG states (optional)

Safe loading: weights are safetensors (a JSON header, then raw bytes) and configs are JSON, so
loading a model never runs code from the files. The training state is read with
``torch.load(weights_only=True)``, whose unpickler rebuilds only tensors and plain containers and
refuses anything else. Other files in the directory (a training log) are never read.

Atomic saves: every file is written into a fresh staging directory inside the checkpoint (with
``gptlib.files.atomic_write``, which flushes it to disk), then all are moved into place with
``os.replace``, ``config.json`` last. A crash while writing leaves the previous checkpoint
untouched. A crash between two moves (microseconds) is caught at load time: the weights carry the
``save_id`` of their save, and config.json holds the SHA-256 of every other file.

Tied weights: the GPT shares ``wte.weight`` with ``lm_head.weight`` (Press & Wolf, 2017); each
shared tensor is stored once (safetensors refuses shared memory) and re-tied on load. Wrapper
prefixes (``_orig_mod.`` from ``torch.compile``, ``module.`` from DDP): ``clean_state_dict``.

Format 1 (gptlib 0.1) differs only in its training-state files: its model and tokenizer load,
its training state is not read. Left out on purpose: sharded weights, other formats.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from gptlib._version import __version__
from gptlib.files import atomic_write, fsync_path, sha256_file
from gptlib.model import GPT, GPTConfig, unwrap_model
from gptlib.tokenizer import Tokenizer, load_tokenizer

FORMAT = "gptlib-checkpoint"
FORMAT_VERSION = 2
MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
STATE_FILE = "training_state.pt"
_V1_STATE_FILES = ("optimizer.safetensors", "trainer_state.json", "rng_state.safetensors")
_OWNED = (MODEL_FILE, TOKENIZER_FILE, STATE_FILE, *_V1_STATE_FILES)
_STAGING = ".saving-"  # prefix of the staging directory of a save in progress


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns; ``optimizer_state`` is ready for ``load_state_dict``."""

    model: nn.Module
    model_config: GPTConfig
    train_config: dict | None = None  # as saved: ``gptlib.train`` sits above this module
    step: int = 0
    tokenizer: Tokenizer | None = None
    optimizer_state: dict | None = None
    rng_state: dict | None = None  # see ``gptlib.device.restore_rng_state``
    extra: dict = field(default_factory=dict)
    path: Path | None = None


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes: ``module._orig_mod.h.0.x`` -> ``h.0.x``.

    >>> list(clean_state_dict({"module._orig_mod.wte.weight": 0}))
    ['wte.weight']
    """
    out = {}
    for key, value in state.items():
        parts = [p for p in key.split(".") if p != "_orig_mod"]
        while parts and parts[0] == "module":
            parts = parts[1:]
        out[".".join(parts)] = value
    return out


def _tied_aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Map each name whose tensor is the same memory as an earlier name to that earlier name."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for name, t in state.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen.setdefault(key, name)
    return aliases


def save_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    *,
    train_config: dict | None = None,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    rng_state: dict | None = None,
    tokenizer: Tokenizer | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (and optionally training state) into ``directory``.

    Args:
        directory: created if missing; other files in it are left alone.
        model: a GPT, possibly wrapped by ``torch.compile`` or DDP; needs a ``.config``.
        train_config, step: the run's settings as a dict (``TrainConfig.to_dict()``) and the
            number of updates taken, saved in config.json.
        optimizer, rng_state: what a resume needs (``rng_state`` from
            ``gptlib.device.capture_rng_state``); saved together in training_state.pt.
        tokenizer: saved with its own ``save`` as tokenizer.json.
        extra: any JSON-serialisable dict (e.g. tokens seen, best validation loss).
    Returns:
        The checkpoint directory as a Path.
    """
    directory, raw = Path(directory), unwrap_model(model)
    if not hasattr(raw, "config"):
        raise TypeError("save_checkpoint needs a model with a .config (a GPTConfig)")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{_STAGING}*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    save_id = secrets.token_hex(8)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=directory))
    try:
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gptlib_version": __version__,
            "save_id": save_id,
            "step": int(step),
            "model_config": raw.config.to_dict(),
            "train_config": train_config,
            "tied_weights": _stage_weights(staging, raw, save_id),
            "tokenizer": None,
            "files": [MODEL_FILE],
            "extra": extra or {},
        }
        if optimizer is not None or rng_state is not None:
            optimizer_state = None if optimizer is None else optimizer.state_dict()
            with atomic_write(staging / STATE_FILE) as f:
                torch.save({"optimizer": optimizer_state, "rng": rng_state}, f)
            config["files"].append(STATE_FILE)
        if tokenizer is not None:
            tokenizer.save(staging / TOKENIZER_FILE)
            config["tokenizer"] = TOKENIZER_FILE
            config["files"].append(TOKENIZER_FILE)
        config["sha256"] = {
            name: sha256_file(staging / name)  # the weights carry save_id
            for name in config["files"]
            if name != MODEL_FILE
        }
        with atomic_write(staging / CONFIG_FILE, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2) + "\n")
        _commit(staging, directory, [*config["files"], CONFIG_FILE])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name in set(_OWNED) - set(config["files"]):  # files of an older save that this one lacks
        (directory / name).unlink(missing_ok=True)
    return directory


def _stage_weights(staging: Path, raw: nn.Module, save_id: str) -> dict[str, str]:
    """Write model.safetensors, each shared tensor once; returns the ties ``{alias: name}``."""
    state = clean_state_dict(raw.state_dict())
    tied = _tied_aliases(state)
    weights = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in tied}
    with atomic_write(staging / MODEL_FILE) as f:
        f.write(safetensors_bytes(weights, metadata={"gptlib_save_id": save_id}))
    return tied


def _commit(staging: Path, directory: Path, names: list[str]) -> None:
    """Move the staged files into ``directory`` in order; the last (config.json) commits."""
    for name in names:
        os.replace(staging / name, directory / name)
    fsync_path(directory)


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a (committed) checkpoint."""
    return (Path(directory) / CONFIG_FILE).is_file()


def load_checkpoint(
    directory: str | os.PathLike,
    device: str | torch.device | None = None,
    load_optimizer: bool = True,
    model: nn.Module | None = None,
) -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint``; never executes code from the files.

    Args:
        directory: the checkpoint directory.
        device: where to put the model (default: CPU).
        load_optimizer: also read the training state a resume needs (optimizer, RNG states);
            with False it is not required, so a copy shipped for inference (the book's) loads.
        model: load into this existing model (its config must equal the saved one) instead of
            building a new ``gptlib.model.GPT``.
    Returns:
        A ``Checkpoint``; ``optimizer_state`` and ``rng_state`` are None when not loaded/saved.
    Raises:
        CheckpointError: missing or corrupt files, unknown format version, config/weight mismatch.
    """
    directory = Path(directory)
    config = _read_config(directory)
    model, model_config = _build_model(config, model)
    _load_weights(unwrap_model(model), directory, config)
    if device is not None:
        model.to(device)
    state = _read_training_state(directory, config) if load_optimizer else {}
    tok_name = config.get("tokenizer")
    tokenizer = load_tokenizer(_checked(directory, tok_name, config)) if tok_name else None
    return Checkpoint(
        model=model,
        model_config=model_config,
        train_config=config.get("train_config"),
        step=int(config.get("step", 0)),
        tokenizer=tokenizer,
        optimizer_state=state.get("optimizer"),
        rng_state=state.get("rng"),
        extra=config.get("extra") or {},
        path=directory,
    )


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {directory}: not a gptlib checkpoint")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{CONFIG_FILE} is truncated or corrupt: {e}") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gptlib checkpoint config")
    version = config.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise CheckpointError(
            f"unknown checkpoint format version {version!r} in {directory} (this gptlib "
            f"{__version__} reads versions 1 to {FORMAT_VERSION}); upgrade gptlib"
        )
    if not isinstance(config.get("train_config") or {}, dict):
        raise CheckpointError(f"{path} has an invalid train config: {config['train_config']!r}")
    return config


def _build_model(config: dict, model: nn.Module | None) -> tuple[nn.Module, GPTConfig]:
    """A new GPT for the saved config, or ``model`` after checking that its config is the same."""
    try:
        model_config = GPTConfig.from_dict(config["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"config.json has an invalid model config: {e}") from e
    if model is None:
        return GPT(model_config), model_config
    saved, current = model_config.to_dict(), unwrap_model(model).config.to_dict()
    diff = {k: (v, current[k]) for k, v in saved.items() if current[k] != v}
    if diff:
        raise CheckpointError(
            f"the checkpoint's model config differs from the model's "
            f"(field: (saved, model)): {diff}"
        )
    return model, model_config


def _checked(directory: Path, name: str, config: dict) -> Path:
    """``directory / name`` once it exists and matches its checksum in config.json."""
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"{name} is listed in config.json but missing from {directory}")
    if sha256_file(path) != config.get("sha256", {}).get(name):
        raise CheckpointError(
            f"{name} in {directory} does not match its checksum in "
            "config.json (modified, or from an interrupted save)"
        )
    return path


def _load_weights(model: nn.Module, directory: Path, config: dict) -> None:
    """Copy model.safetensors into ``model``, re-tying shared tensors; CheckpointError if unfit."""
    try:
        with safe_open(str(directory / MODEL_FILE), framework="pt", device="cpu") as f:
            save_id = (f.metadata() or {}).get("gptlib_save_id")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:  # OSError: the file is missing
        raise CheckpointError(
            f"{MODEL_FILE} in {directory} is missing, truncated or corrupt: {e}"
        ) from e
    if save_id != config.get("save_id"):
        raise CheckpointError(
            f"{MODEL_FILE} in {directory} was written by a different save than "
            "config.json (an interrupted save?); use an older copy"
        )
    tied = config.get("tied_weights", {})
    tensors.update({alias: tensors[source] for alias, source in tied.items() if source in tensors})
    try:
        model.load_state_dict(tensors)  # strict: every name and every shape must match
    except RuntimeError as e:
        raise CheckpointError(
            f"{MODEL_FILE} does not match the model built from config.json: {e}"
        ) from e


def _read_training_state(directory: Path, config: dict) -> dict:
    """``{"optimizer": state_dict or None, "rng": states or None}``; {} if none was saved."""
    files = config.get("files", [])
    if config["format_version"] == 1 and any(name in files for name in _V1_STATE_FILES):
        raise CheckpointError(
            f"{directory} has a training state in format 1 (gptlib 0.1), "
            "which is not read: load it with load_optimizer=False"
        )
    if STATE_FILE not in files:
        return {}
    path = _checked(directory, STATE_FILE, config)
    try:  # weights_only: tensors and plain containers, never arbitrary objects
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{STATE_FILE} in {directory} is not a training state: {e}") from e
    if not isinstance(state, dict) or set(state) != {"optimizer", "rng"}:
        raise CheckpointError(f"{STATE_FILE} in {directory} is not a training state")
    return state
