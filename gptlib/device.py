"""Where the computation runs, in what precision, and from which seed.

Every notebook and script in the book asks this module for its device instead of writing
``.cuda()``: the same code then runs on a laptop CPU, an NVIDIA GPU, an Apple GPU (MPS) or Colab.

* :func:`pick_device` chooses the device: an explicit argument wins, then the environment variable
  ``GPTLIB_DEVICE``, then the best one present (CUDA > MPS > CPU).
* :func:`autocast_dtype` / :func:`autocast` give mixed precision where it is safe and useful:
  bfloat16 on CUDA GPUs that support it, plain float32 everywhere else. float16 (which needs a
  loss scaler) and CPU bfloat16 autocast (slow on most laptops) are left out on purpose.
* :func:`set_seed` seeds every random number generator the book uses;
  :func:`capture_rng_state` / :func:`restore_rng_state` save and restore all of them (resume).
* :func:`describe` reports the versions and hardware, for the "your environment" page.

Importing the module has no side effects.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from typing import Any

import numpy as np
import torch

ENV_VAR = "GPTLIB_DEVICE"
_KNOWN_TYPES = ("cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The device types usable on this machine, best first (always ends with ``"cpu"``).

    >>> available_devices()[-1]
    'cpu'
    """
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if torch.backends.mps.is_available():  # Apple GPUs; False on every other machine
        found.append("mps")
    found.append("cpu")
    return found


def _validate(device: str | torch.device, source: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {device!r} ({source}); use one of {available_devices()}"
        ) from err
    if dev.type not in _KNOWN_TYPES:
        raise ValueError(
            f"device type {dev.type!r} ({source}) is not supported by gptlib; "
            f"use one of {available_devices()}"
        )
    if dev.type not in available_devices():
        raise ValueError(
            f"device {str(dev)!r} ({source}) is not available on this machine; "
            f"available: {available_devices()}"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(dev)!r} ({source}) does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Choose the device to compute on.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``, or ``None``.

    Returns:
        The explicit ``device`` if given; else the value of ``GPTLIB_DEVICE`` if set; else the
        best available of CUDA > MPS > CPU.

    Raises:
        ValueError: the requested device is unknown or not present on this machine; the message
            lists the devices that are.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if device is not None:
        return _validate(device, "passed to pick_device")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _validate(env, f"from the environment variable {ENV_VAR}")
    return torch.device(available_devices()[0])


def autocast_dtype(device: str | torch.device) -> torch.dtype:
    """The compute dtype for mixed precision: bfloat16 on CUDA with bf16 support, else float32.

    Args:
        device: the device the forward pass runs on (``"cuda"``, ``torch.device("cpu")``, ...).
    Returns:
        ``torch.bfloat16`` or ``torch.float32``.

    >>> autocast_dtype("cpu")
    torch.float32
    """
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """A context manager that runs the enclosed forward pass in :func:`autocast_dtype`.

    On CUDA with bfloat16 this is ``torch.autocast``; elsewhere it does nothing, so code can
    always write ``with autocast(device): logits, loss = model(x, y)``.
    """
    dev = torch.device(device)
    dtype = autocast_dtype(dev)
    if dev.type == "cuda" and dtype == torch.bfloat16:
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    After ``set_seed(s)`` the same sequence of draws comes out again, on the same machine and
    library versions. (Different hardware may still differ in the last bits of floats.)

    Args:
        seed: any Python int; NumPy receives it modulo 2**32.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def describe(device: str | torch.device | None = None) -> dict:
    """Versions and hardware, as a plain dict (printed on the book's environment page).

    Args:
        device: as for :func:`pick_device`; None picks the best available.
    Returns:
        Keys ``python``, ``torch``, ``numpy``, ``platform``, ``device``, ``dtype`` (the
        :func:`autocast_dtype` there, e.g. ``"float32"``), ``torch_threads`` and
        ``cuda_device`` (the GPU's name; ``None`` unless the device is a CUDA one).
    """
    dev = pick_device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(terse=True),
        "device": str(dev),
        "dtype": str(autocast_dtype(dev)).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": None,
    }
    if dev.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(dev)
    return info


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every random state a training run depends on, as tensors and JSON lists (no pickle).

    ``gptlib.checkpoint`` saves the result with safetensors and JSON, so a resumed run continues
    with exactly the random numbers an uninterrupted one would have drawn.

    Keys: ``python``, ``numpy``, ``torch`` (CPU), ``cuda.{i}`` (per GPU, when CUDA is in use)
    and ``generator.{name}`` for each named ``torch.Generator`` (e.g. the data sampler's).
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    for name, gen in (generators or {}).items():
        state[f"generator.{name}"] = gen.get_state()
    return state


def restore_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of ``capture_rng_state``: set every random state it recorded."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda_keys = sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k[5:]))
    cuda = [state[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    for name, gen in (generators or {}).items():
        if f"generator.{name}" not in state:
            raise KeyError(f"the saved random state has no entry for the '{name}' generator")
        gen.set_state(state[f"generator.{name}"])
