"""Tests for gptlib.device: device choice, autocast dtype, seeding, environment report.

Device choice is tested on any machine by pretending which accelerators are present
(``monkeypatch`` on ``torch.cuda.is_available`` and ``torch.backends.mps.is_available``), so a
CPU-only CI run checks the CUDA and MPS branches too. Expected values are written out, never
recomputed with the logic under test.
"""

import importlib.metadata
import platform
import random

import numpy as np
import pytest
import torch

from gptlib import device as dev


@pytest.fixture
def machine(monkeypatch):
    """``machine(cuda=..., mps=..., gpus=..., bf16=...)`` pretends this is such a machine."""
    monkeypatch.delenv("GPTLIB_DEVICE", raising=False)

    def pretend(cuda: bool = False, mps: bool = False, gpus: int = 1, bf16: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Pretend GPU")
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return pretend


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [
        (False, False, ["cpu"]),
        (True, False, ["cuda", "cpu"]),
        (False, True, ["mps", "cpu"]),
        (True, True, ["cuda", "mps", "cpu"]),
    ],
)
def test_best_available_device_comes_first(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert dev.available_devices() == expected
    assert dev.pick_device() == torch.device(expected[0])


def test_explicit_cpu_wins_over_environment_and_hardware(machine, monkeypatch):
    machine(cuda=True, mps=True)
    monkeypatch.setenv("GPTLIB_DEVICE", "not-a-device")
    assert dev.pick_device("cpu") == torch.device("cpu")
    assert dev.pick_device(torch.device("cpu")) == torch.device("cpu")


def test_environment_variable_wins_over_hardware(machine, monkeypatch):
    machine(cuda=True)
    monkeypatch.setenv("GPTLIB_DEVICE", "cpu")
    assert dev.pick_device() == torch.device("cpu")
    monkeypatch.setenv("GPTLIB_DEVICE", "  cuda:0 ")
    assert dev.pick_device() == torch.device("cuda", 0)


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:x"])
def test_unknown_device_lists_available(machine, bad):
    machine(cuda=False, mps=False)
    with pytest.raises(ValueError, match=r"unknown device .*\['cpu'\]"):
        dev.pick_device(bad)


def test_bad_environment_value_names_the_variable(machine, monkeypatch):
    machine()
    monkeypatch.setenv("GPTLIB_DEVICE", "tpu")
    with pytest.raises(ValueError, match="GPTLIB_DEVICE"):
        dev.pick_device()


@pytest.mark.parametrize("asked", ["cuda", "cuda:0", "mps"])
def test_absent_accelerator_is_a_clear_error(machine, asked):
    machine(cuda=False, mps=False)
    with pytest.raises(ValueError, match=r"not available on this machine; available: \['cpu'\]"):
        dev.pick_device(asked)


def test_cuda_index_beyond_the_gpus_present(machine):
    machine(cuda=True, gpus=2)
    assert dev.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="this machine has 2 CUDA device"):
        dev.pick_device("cuda:2")


def test_unsupported_torch_device_type():
    with pytest.raises(ValueError, match="not supported by gptlib"):
        dev.pick_device("meta")


@pytest.mark.parametrize(
    "cuda, bf16, asked, expected",
    [
        (True, True, "cuda", torch.bfloat16),
        (True, True, torch.device("cuda", 0), torch.bfloat16),
        (True, False, "cuda", torch.float32),  # an older GPU without bfloat16
        (True, True, "cpu", torch.float32),  # CPU autocast is left out on purpose
        (False, True, "cpu", torch.float32),
        (False, True, "mps", torch.float32),
    ],
)
def test_autocast_dtype(machine, cuda, bf16, asked, expected):
    machine(cuda=cuda, bf16=bf16)
    assert dev.autocast_dtype(asked) is expected


def test_autocast_on_cpu_does_not_change_dtype():
    a = torch.randn(4, 4)
    with dev.autocast("cpu"):
        out = a @ a
    assert out.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_on_cuda_runs_matmuls_in_bfloat16():
    if not torch.cuda.is_bf16_supported():
        pytest.fail("this GPU has no bfloat16; the test is meant for one that has")
    a = torch.randn(4, 4, device="cuda")
    with dev.autocast("cuda"):
        out = a @ a
    assert out.dtype == torch.bfloat16


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_set_seed_reproduces_all_generators():
    dev.set_seed(123)
    first = _draws()
    dev.set_seed(123)
    assert _draws() == first
    dev.set_seed(124)
    second = _draws()
    assert all(a != b for a, b in zip(first, second, strict=True))  # each generator reseeded


@pytest.mark.parametrize("bad", [1.5, "7", True])
def test_set_seed_rejects_non_int(bad):
    with pytest.raises(TypeError, match="int"):
        dev.set_seed(bad)


def test_describe_reports_versions_from_the_installed_packages(monkeypatch):
    """Versions come from the package metadata, a source independent of the modules' own
    ``__version__``; the thread count is the one set here."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    info = dev.describe("cpu")
    assert info["torch"] == importlib.metadata.version("torch")
    assert info["numpy"] == importlib.metadata.version("numpy")
    assert info["python"] == ".".join(platform.python_version_tuple())
    assert (info["device"], info["dtype"], info["torch_threads"]) == ("cpu", "float32", 3)
    assert info["cuda_device"] is None


def test_describe_names_the_gpu(machine):
    machine(cuda=True, gpus=2, bf16=True)
    info = dev.describe("cuda:1")
    assert (info["device"], info["dtype"], info["cuda_device"]) == (
        "cuda:1",
        "bfloat16",
        "Pretend GPU",
    )
