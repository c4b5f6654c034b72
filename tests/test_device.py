"""Tests for gptlib.device: device choice, autocast dtype, seeding, environment report."""

import random

import numpy as np
import pytest
import torch

from gptlib import device as dev


def test_explicit_cpu_wins_over_environment(monkeypatch):
    monkeypatch.setenv("GPTLIB_DEVICE", "not-a-device")
    assert dev.pick_device("cpu") == torch.device("cpu")
    assert dev.pick_device(torch.device("cpu")) == torch.device("cpu")


def test_environment_variable_is_used(monkeypatch):
    monkeypatch.setenv("GPTLIB_DEVICE", "cpu")
    assert dev.pick_device() == torch.device("cpu")


def test_default_is_best_available(monkeypatch):
    monkeypatch.delenv("GPTLIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert dev.pick_device().type == expected
    assert dev.available_devices()[-1] == "cpu"


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:x"])
def test_unknown_device_lists_available(bad):
    with pytest.raises(ValueError, match=r"unknown device .*'cpu'"):
        dev.pick_device(bad)


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("GPTLIB_DEVICE", "tpu")
    with pytest.raises(ValueError, match="GPTLIB_DEVICE"):
        dev.pick_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="not available on this machine"):
        dev.pick_device("cuda")


def test_unsupported_torch_device_type():
    with pytest.raises(ValueError, match="not supported by gptlib"):
        dev.pick_device("meta")


def test_autocast_dtype_on_cpu_is_float32():
    assert dev.autocast_dtype("cpu") == torch.float32
    assert dev.autocast_dtype(torch.device("cpu")) == torch.float32


def test_autocast_on_cpu_does_not_change_dtype():
    a = torch.randn(4, 4)
    with dev.autocast("cpu"):
        out = a @ a
    assert out.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_on_cuda_uses_bf16():
    a = torch.randn(4, 4, device="cuda")
    with dev.autocast("cuda"):
        out = a @ a
    assert out.dtype == dev.autocast_dtype("cuda")


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_set_seed_reproduces_all_generators():
    dev.set_seed(123)
    first = _draws()
    dev.set_seed(123)
    assert _draws() == first
    dev.set_seed(124)
    assert _draws() != first


def test_set_seed_rejects_non_int():
    with pytest.raises(TypeError, match="int"):
        dev.set_seed(1.5)


def test_describe_reports_versions_and_device():
    info = dev.describe("cpu")
    assert info["torch"] == torch.__version__
    assert info["numpy"] == np.__version__
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cuda_device"] is None
