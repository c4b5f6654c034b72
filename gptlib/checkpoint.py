"""Saving and loading checkpoints, safely and atomically.

A checkpoint is a directory of plain files:

    config.json             format version, model and train configs, step, file list, extra
    model.safetensors       the weights; tied weights are stored once (see below)
    tokenizer.json          the tokenizer, written by ``Tokenizer.save`` (optional)
    optimizer.safetensors   AdamW moments, keys ``state.{i}.exp_avg`` ... (optional)
    trainer_state.json      optimizer param groups and the JSON part of the RNG states (optional)
    rng_state.safetensors   torch generator states as uint8 tensors (optional)

Loading parses only safetensors (a JSON header followed by raw bytes) and JSON, so opening a
checkpoint never runs code: unlike ``torch.save``/pickle, a tampered file cannot execute anything.
Other files in the directory (a training log, a token cache) are left alone and never read.

Atomic writes: every file is first written under a temporary name in the same directory, then
all are renamed into place with ``os.replace``, ``config.json`` last. A crash while writing leaves
the previous checkpoint untouched; the rename phase takes microseconds, and a crash inside it is
caught at load time because every file carries the ``save_id`` of the save that wrote it.

Tied weights: the GPT shares ``wte.weight`` with ``lm_head.weight`` (Press & Wolf, 2017), and
safetensors refuses tensors that share memory. We store each shared tensor once, under its first
name, record the aliases in config.json and re-tie on load. Wrapper prefixes (``_orig_mod.`` from
``torch.compile``, ``module.`` from DDP) are removed in one place, ``clean_state_dict``.

Left out on purpose: sharded weight files, ``torch.load`` of other formats (see ``pretrained``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from gptlib._version import __version__
from gptlib.model import GPT, GPTConfig, unwrap_model
from gptlib.tokenizer import Tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

FORMAT = "gptlib-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
OPTIMIZER_FILE, STATE_FILE, RNG_FILE = (
    "optimizer.safetensors", "trainer_state.json", "rng_state.safetensors")
_OWNED = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, RNG_FILE, TOKENIZER_FILE)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns; ``optimizer_state`` is ready for ``load_state_dict``.

    ``train_config`` stays a plain dict: this module sits below ``gptlib.train`` (which saves
    checkpoints) and does not import it; ``TrainConfig.from_dict(ck.train_config)`` rebuilds it.
    """

    model: nn.Module
    model_config: GPTConfig
    train_config: dict | None = None  # as saved; ``TrainConfig.from_dict`` rebuilds it
    step: int = 0
    tokenizer: Tokenizer | None = None
    optimizer_state: dict | None = None
    rng_state: dict | None = None
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


def _config_dict(config: Any) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file (on POSIX also a directory) to disk, so a rename cannot overtake its data."""
    with contextlib.suppress(OSError):  # directories cannot be opened on Windows
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _split_tensors(values: dict, prefix: str = "") -> tuple[dict, dict]:
    """Split a flat dict into (tensors for safetensors, JSON-able rest)."""
    tensors, rest = {}, {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor):
            tensors[prefix + k] = v.detach().cpu().contiguous()
        else:
            rest[k] = list(v) if isinstance(v, tuple) else v
    return tensors, rest


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, *, train_config: Any = None,
                    step: int = 0, optimizer: torch.optim.Optimizer | None = None,
                    rng_state: dict | None = None, tokenizer: Any = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint of ``model`` (and optionally training state) into ``directory``.

    Args:
        directory: created if missing; other files in it are left alone.
        model: a GPT, possibly wrapped by ``torch.compile`` or DDP; needs a ``.config``.
        train_config, step: saved in config.json for resuming and for the record.
        optimizer: its state goes to optimizer.safetensors + trainer_state.json.
        rng_state: flat dict (see ``gptlib.device.capture_rng_state``) of tensors and JSON values.
        tokenizer: saved with its own ``save`` as tokenizer.json.
        extra: any JSON-serialisable dict (e.g. tokens seen, best validation loss).
    Returns:
        The checkpoint directory as a Path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = unwrap_model(model)
    if not hasattr(raw, "config"):
        raise TypeError("save_checkpoint needs a model with a .config (a GPTConfig)")
    save_id = secrets.token_hex(8)
    meta = {"gptlib_save_id": save_id}
    for name in (*_OWNED, CONFIG_FILE):  # temporaries left by an earlier crashed save
        for stale in directory.glob(f".{name}.tmp-*"):
            stale.unlink(missing_ok=True)
    state = clean_state_dict(raw.state_dict())
    tied = _tied_aliases(state)
    weights = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in tied}
    config: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "gptlib_version": __version__,
        "save_id": save_id, "step": int(step), "model_config": _config_dict(raw.config),
        "train_config": None if train_config is None else _config_dict(train_config),
        "tied_weights": tied, "tokenizer": None, "files": [MODEL_FILE], "sha256": {},
        "extra": extra or {},
    }
    pending: list[tuple[Path, Path]] = []  # (temporary name, final name), renamed at the end

    def tmp(name: str) -> Path:
        final = directory / name
        pending.append((directory / f".{name}.tmp-{save_id}", final))
        return pending[-1][0]

    try:
        save_file(weights, tmp(MODEL_FILE), metadata=meta)
        trainer_state: dict[str, Any] = {}
        if optimizer is not None:
            opt = optimizer.state_dict()
            tensors, json_state = {}, {}
            for i, per_param in opt["state"].items():
                t, rest = _split_tensors(per_param, prefix=f"state.{i}.")
                tensors.update(t)
                if rest:
                    json_state[str(i)] = rest
            save_file(tensors, tmp(OPTIMIZER_FILE), metadata=meta)
            groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
                      for g in opt["param_groups"]]
            trainer_state["optimizer"] = {"param_groups": groups, "state": json_state}
            config["files"].append(OPTIMIZER_FILE)
        if rng_state is not None:
            tensors, trainer_state["rng"] = _split_tensors(rng_state)
            save_file(tensors, tmp(RNG_FILE), metadata=meta)
            config["files"].append(RNG_FILE)
        if trainer_state:
            path = tmp(STATE_FILE)
            path.write_text(json.dumps(trainer_state), encoding="utf-8")
            config["files"].append(STATE_FILE)
            config["sha256"][STATE_FILE] = _sha256(path)
        if tokenizer is not None:
            path = tmp(TOKENIZER_FILE)
            tokenizer.save(path)
            config["tokenizer"] = TOKENIZER_FILE
            config["files"].append(TOKENIZER_FILE)
            config["sha256"][TOKENIZER_FILE] = _sha256(path)
        tmp(CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for temporary, _ in pending:
            os.chmod(temporary, 0o644)  # safetensors writes 0600; checkpoints are for sharing
            _fsync(temporary)
    except BaseException:
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, final in pending:  # config.json is last: it commits the new checkpoint
        os.replace(temporary, final)
    _fsync(directory)
    for name in set(_OWNED) - set(config["files"]):  # files of an older save that this one lacks
        (directory / name).unlink(missing_ok=True)
    logger.info("saved checkpoint at step %d to %s", step, directory)
    return directory


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a (committed) checkpoint."""
    return (Path(directory) / CONFIG_FILE).is_file()


def _read_safetensors(path: Path, save_id: str) -> dict[str, torch.Tensor]:
    name = path.name
    if not path.is_file():
        raise CheckpointError(f"{name} is listed in config.json but missing from {path.parent}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            if (f.metadata() or {}).get("gptlib_save_id") != save_id:
                raise CheckpointError(
                    f"{name} in {path.parent} was written by a different save than config.json "
                    "(an interrupted save?); use an older copy of the checkpoint")
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{name} is truncated or corrupt: {e}") from e


def _read_json(path: Path, expected_sha: str | None = None) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path.name} is listed in config.json but missing in {path.parent}")
    data = path.read_bytes()
    if expected_sha is not None and hashlib.sha256(data).hexdigest() != expected_sha:
        raise CheckpointError(f"{path.name} in {path.parent} does not match the checksum in "
                              "config.json (modified, or from an interrupted save)")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} is truncated or corrupt: {e}") from e


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], tied: dict) -> None:
    """Copy ``tensors`` into ``model``, raising CheckpointError on any mismatch."""
    expected = model.state_dict()
    model_aliases = _tied_aliases(expected)
    for alias, source in tied.items():  # re-tie: a model that does not share gets a copy
        if alias not in model_aliases and source in tensors:
            tensors[alias] = tensors[source]
    wanted = [k for k in expected if k not in model_aliases]
    missing = [k for k in wanted if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            "model.safetensors does not match the model built from config.json: "
            f"missing tensors {missing[:8]}, unexpected tensors {unexpected[:8]}")
    for k in wanted:
        if tuple(tensors[k].shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"model.safetensors does not match config.json: tensor '{k}' has shape "
                f"{tuple(tensors[k].shape)} in the file but {tuple(expected[k].shape)} in the "
                "model built from config.json")
    model.load_state_dict({k: tensors[k] for k in wanted}, strict=False)


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device | None = None,
                    load_optimizer: bool = True, model: nn.Module | None = None) -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint``; never executes code from the files.

    Args:
        directory: the checkpoint directory.
        device: where to put the model (default: CPU).
        load_optimizer: also read the training state a resume needs (optimizer, RNG states,
            trainer state). With False those files are neither read nor required, so a
            checkpoint shipped for inference without them (as the book's model is) loads.
        model: load into this existing model (its config must equal the saved one) instead of
            building a new ``gptlib.model.GPT``.
    Raises:
        CheckpointError: missing or corrupt files, unknown format version, config/weight mismatch.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory at {directory}")
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {directory}: not a gptlib checkpoint")
    config = _read_json(directory / CONFIG_FILE)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not a gptlib checkpoint config")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"unknown checkpoint format version {version!r} in {directory} (this gptlib "
            f"{__version__} reads version {FORMAT_VERSION}); upgrade or downgrade gptlib")
    try:
        model_config = GPTConfig.from_dict(config["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"config.json in {directory} has an invalid model config: {e}") from e
    if model is None:
        model = GPT(model_config)
    else:
        saved, current = _config_dict(model_config), _config_dict(unwrap_model(model).config)
        diff = {k: (saved.get(k), current.get(k)) for k in saved.keys() | current.keys()
                if saved.get(k) != current.get(k)}
        if diff:
            raise CheckpointError(f"the checkpoint's model config differs from the model's "
                                  f"(field: (saved, model)): {diff}")
    files, save_id = config.get("files", []), config.get("save_id")
    with torch.no_grad():
        _load_weights(unwrap_model(model), _read_safetensors(directory / MODEL_FILE, save_id),
                      config.get("tied_weights", {}))
    if device is not None:
        model.to(device)
    train_config = config.get("train_config")
    if train_config is not None and not isinstance(train_config, dict):
        raise CheckpointError(f"config.json in {directory} has an invalid train config: "
                              f"expected an object, got {type(train_config).__name__}")
    state = {}
    if load_optimizer and STATE_FILE in files:
        state = _read_json(directory / STATE_FILE, config["sha256"].get(STATE_FILE))
    optimizer_state = None
    if load_optimizer and OPTIMIZER_FILE in files:
        tensors = _read_safetensors(directory / OPTIMIZER_FILE, save_id)
        per_param: dict[int, dict] = {}
        for key, t in tensors.items():
            _, i, name = key.split(".", 2)
            per_param.setdefault(int(i), {})[name] = t
        for i, rest in state["optimizer"]["state"].items():
            per_param.setdefault(int(i), {}).update(rest)
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
                  for g in state["optimizer"]["param_groups"]]
        optimizer_state = {"state": per_param, "param_groups": groups}
    rng_state = None
    if load_optimizer and RNG_FILE in files:
        rng_state = dict(state.get("rng", {}))
        rng_state.update(_read_safetensors(directory / RNG_FILE, save_id))
    tokenizer = None
    if config.get("tokenizer"):
        tok_path = directory / config["tokenizer"]
        _read_json(tok_path, config["sha256"].get(config["tokenizer"]))
        tokenizer = load_tokenizer(tok_path)
    return Checkpoint(model=model, model_config=model_config, train_config=train_config,
                      step=int(config.get("step", 0)), tokenizer=tokenizer,
                      optimizer_state=optimizer_state, rng_state=rng_state,
                      extra=config.get("extra") or {}, path=directory)
