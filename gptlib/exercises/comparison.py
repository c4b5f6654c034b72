"""Compare a student's answer with the expected one and say, in one sentence, how they differ.

:func:`compare` handles tensors and arrays (shape, dtype, then values: ``allclose`` for floats,
exact for integers and booleans), numbers with tolerances, strings (the first differing
position), None and booleans exactly, and dicts, lists and tuples element by element, naming the
path to the first difference. :func:`summarize` describes a value on one line for the feedback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def _short(x: Any) -> str:
    if isinstance(x, list):
        return "[" + ", ".join(map(_short, x)) + "]"
    return f"{x:.4g}" if isinstance(x, float) else repr(x)


def summarize(value: Any, width: int = 60) -> str:
    """A one-line description of a value for feedback messages.

    >>> summarize(torch.zeros(3, 4))
    'Tensor(shape=(3, 4), dtype=float32)'
    >>> summarize(torch.tensor([0.5, 1.25]))
    'Tensor(shape=(2,), dtype=float32, values=[0.5, 1.25])'
    >>> summarize([1, 2, 3])
    '[1, 2, 3]'
    >>> summarize(torch.nn.Linear(3, 2))
    'Linear with 8 parameters'
    """
    if isinstance(value, torch.nn.Module):  # its repr runs over many lines
        n = sum(p.numel() for p in value.parameters())
        return f"{type(value).__name__} with {n:,} parameters"
    if isinstance(value, (torch.Tensor, np.ndarray)):
        is_torch = isinstance(value, torch.Tensor)
        arr = value.detach().cpu().numpy() if is_torch else value
        small = ""
        if arr.size <= 6 and arr.dtype != object:
            small = f", values={_short(arr.tolist())}"
        dtype = str(value.dtype).removeprefix("torch.")
        kind = "Tensor" if is_torch else "ndarray"
        return f"{kind}(shape={tuple(value.shape)}, dtype={dtype}{small})"
    text = repr(value)
    if len(text) > width:
        size = f" of length {len(value)}" if hasattr(value, "__len__") else ""
        text = f"{text[: width - 3]}... ({type(value).__name__}{size})"
    return text


def _compare_arrays(expected, got, rtol, atol, check_dtype, at) -> str | None:
    torch_like = isinstance(expected, torch.Tensor)
    kind = "torch.Tensor" if torch_like else "numpy array"
    if not isinstance(got, type(expected)):
        return f"{at}expected a {kind}, got {type(got).__name__} ({summarize(got)})"
    exp_shape, got_shape = tuple(expected.shape), tuple(got.shape)
    if exp_shape != got_shape:
        return f"{at}wrong shape: expected {exp_shape}, got {got_shape}"
    if check_dtype and expected.dtype != got.dtype:
        return f"{at}wrong dtype: expected {expected.dtype}, got {got.dtype}"
    if torch_like:
        exact = not expected.is_floating_point()
        e, g = (t.detach().cpu().double().numpy() for t in (expected, got))
    else:
        exact = not np.issubdtype(expected.dtype, np.floating)
        e, g = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    close = (e == g) if exact else np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if np.all(close):
        return None
    bad = np.argwhere(~np.asarray(close))
    where = tuple(int(i) for i in bad[0])
    with np.errstate(invalid="ignore"):  # inf - inf where a -inf is in the wrong place
        diff = np.abs(np.where(close, 0.0, g - e))
    # an answer that is NaN everywhere has no finite difference to report: say so, without the
    # "All-NaN slice" warning np.nanmax would print into the student's notebook
    worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else float("nan")
    return (
        f"{at}{len(bad)} of {e.size} values differ; first at index {where}: "
        f"expected {e[where]:.6g}, got {g[where]:.6g} (largest difference {worst:.3g}"
        + ("" if exact else f"; tolerance rtol={rtol}, atol={atol}")
        + ")"
    )


def _compare_numbers(expected, got, rtol, atol, at) -> str | None:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return f"{at}expected a Python number, got a one-element tensor (use .item())"
    if not isinstance(got, (int, float, np.number)) or isinstance(got, bool):
        return f"{at}expected a number, got {type(got).__name__} ({summarize(got)})"
    if isinstance(expected, int) and isinstance(got, (int, np.integer)):
        return None if got == expected else f"{at}expected {expected}, got {got}"
    if math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol) or (
        math.isnan(expected) and math.isnan(float(got))
    ):
        return None
    return f"{at}expected {expected!r}, got {float(got)!r} (difference {got - expected:.3g})"


def _compare_strings(expected: str, got, at) -> str | None:
    if not isinstance(got, str):
        return f"{at}expected a string, got {type(got).__name__} ({summarize(got)})"
    if got == expected:
        return None
    i = next(
        (k for k, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
        min(len(expected), len(got)),
    )
    return (
        f"{at}strings differ at position {i}: expected {expected[i : i + 20]!r}, "
        f"got {got[i : i + 20]!r} (lengths {len(expected)} and {len(got)})"
    )


def _compare_containers(expected, got, at, compare_item) -> str | None:
    """Dicts key by key, lists and tuples item by item; ``compare_item(e, g, label)``."""
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"{at}expected a dict, got {type(got).__name__}"
        if set(expected) != set(got):
            missing, extra = set(expected) - set(got), set(got) - set(expected)
            return (
                f"{at}keys differ: missing {sorted(missing, key=repr)}, "
                f"unexpected {sorted(extra, key=repr)}"
            )
        pairs = [(expected[k], got[k], f"[{k!r}]") for k in expected]
    else:
        if not isinstance(got, (list, tuple)):
            return (
                f"{at}expected a {type(expected).__name__}, got {type(got).__name__} "
                f"({summarize(got)})"
            )
        if len(got) != len(expected):
            return f"{at}expected {len(expected)} items, got {len(got)}"
        pairs = [(e, g, f"[{i}]") for i, (e, g) in enumerate(zip(expected, got, strict=True))]
    return next(filter(None, (compare_item(e, g, label) for e, g, label in pairs)), None)


def compare(
    expected: Any,
    got: Any,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    check_dtype: bool = True,
    path: str = "",
) -> str | None:
    """Describe how ``got`` differs from ``expected``; ``None`` when they match.

    Args:
        expected, got: tensors, arrays, numbers, strings, None, or dicts/lists/tuples of them.
        rtol, atol: tolerances for floating-point values; check_dtype: compare dtypes too.
        path: where in an outer container these values sit, e.g. ``"[1]['a']"``.
    Returns:
        One sentence naming the first difference, or None.

    >>> compare(1.0, 1.0 + 1e-9) is None
    True
    >>> compare([1, 2], [1, 3])
    'at [1]: expected 2, got 3'
    """
    at = f"at {path}: " if path else ""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        return _compare_arrays(expected, got, rtol, atol, check_dtype, at)
    if isinstance(expected, bool) or expected is None:
        same = (
            got is None
            if expected is None
            else (isinstance(got, (bool, np.bool_)) and bool(got) == expected)
        )
        return None if same else f"{at}expected {expected!r}, got {summarize(got)}"
    if isinstance(expected, (int, float)):
        return _compare_numbers(expected, got, rtol, atol, at)
    if isinstance(expected, str):
        return _compare_strings(expected, got, at)
    if isinstance(expected, (Mapping, list, tuple)):

        def compare_item(e, g, label):
            return compare(e, g, rtol, atol, check_dtype, path + label)

        return _compare_containers(expected, got, at, compare_item)
    return None if got == expected else f"{at}expected {summarize(expected)}, got {summarize(got)}"


def rounding_bound(diff: float) -> str:
    """The smallest power of ten above a rounding-level difference, as text (at least 1e-15).

    The last bits of a float result differ between CPUs and thread counts; this text does not,
    so a page can print how close two computations agree and still reproduce exactly.

    >>> rounding_bound(0.0), rounding_bound(2.2e-16), rounding_bound(0.004)
    ('< 1e-15', '< 1e-15', '< 1e-2')
    """
    exponent = -15 if diff == 0 else max(-15, math.ceil(math.log10(diff)))
    return f"< 1e{exponent}"
