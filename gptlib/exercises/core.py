"""Check a student's function against a reference and explain what went wrong.

A notebook exercise ends with one line::

    check(my_softmax, cases=[(torch.randn(2, 3),), (torch.zeros(4),)], reference=softmax)

:func:`check` runs the student's function on every case (on copies of the inputs, so an in-place
bug cannot corrupt the reference's input), compares the result with the reference answer, prints
feedback and returns ``True`` or ``False``. A wrong answer never raises: the feedback names the
failing case, summarises its inputs, says what differs (type, shape, dtype, which element, by how
much) and adds a hint. Only a mistake in *calling* ``check`` raises, for example passing
``my_softmax(x)`` (a tensor) instead of the function ``my_softmax``.

:func:`compare` is the comparison on its own: tensors and arrays by shape, dtype and values
(``allclose`` for floats, exact for integers and booleans), floats with tolerances, strings with
the first differing position, and lists, tuples and dicts element by element.
"""

from __future__ import annotations

import copy
import inspect
import math
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

_NO_VALUE = object()


@dataclass
class Case:
    """One test input: positional ``args``, keyword ``kwargs``, and optionally the answer.

    If ``expected`` is left out, the reference function computes it.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    expected: Any = _NO_VALUE
    hint: str | None = None
    name: str | None = None


@dataclass
class CaseResult:
    """What happened on one case: ``problem`` is None when the student's answer was right."""

    case: Case
    problem: str | None
    inputs: str


@dataclass
class Feedback:
    """The outcome of :func:`run_checks`; ``bool(feedback)`` says whether every case passed."""

    name: str
    results: list[CaseResult]
    hint: str | None = None

    @property
    def passed(self) -> bool:
        return all(r.problem is None for r in self.results)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        n = len(self.results)
        failed = [(i, r) for i, r in enumerate(self.results, 1) if r.problem is not None]
        if not failed:
            return f"✅ {self.name}: all {n} case{'s' if n != 1 else ''} passed."
        lines = [f"❌ {self.name}: {len(failed)} of {n} cases failed."]
        for i, r in failed[:3]:
            label = f"case {i}" + (f" ({r.case.name})" if r.case.name else "")
            lines += [f"  {label}", f"    input:   {r.inputs}", f"    problem: {r.problem}"]
            if r.case.hint:
                lines.append(f"    hint:    {r.case.hint}")
        if len(failed) > 3:
            lines.append(f"  ... and {len(failed) - 3} more failing case(s).")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


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
    """
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


def _compare_arrays(expected, got, rtol, atol, path, check_dtype) -> str | None:
    torch_like = isinstance(expected, torch.Tensor)
    kind = "torch.Tensor" if torch_like else "numpy array"
    if not isinstance(got, type(expected)):
        return f"{path}expected a {kind}, got {type(got).__name__} ({summarize(got)})"
    exp_shape, got_shape = tuple(expected.shape), tuple(got.shape)
    if exp_shape != got_shape:
        return f"{path}wrong shape: expected {exp_shape}, got {got_shape}"
    if check_dtype and expected.dtype != got.dtype:
        return f"{path}wrong dtype: expected {expected.dtype}, got {got.dtype}"
    if torch_like:
        floating = expected.is_floating_point()
        e, g = (t.detach().cpu().double().numpy() for t in (expected, got))
    else:
        floating = np.issubdtype(expected.dtype, np.floating)
        e, g = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    exact = not floating
    close = (e == g) if exact else np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if np.all(close):
        return None
    bad = np.argwhere(~np.asarray(close))
    where = tuple(int(i) for i in bad[0])
    diff = np.abs(np.where(close, 0.0, g - e))
    # an answer that is NaN everywhere has no finite difference to report: say so, without the
    # "All-NaN slice" warning np.nanmax would print into the student's notebook
    worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else float("nan")
    return (f"{path}{len(bad)} of {e.size} values differ; first at index {where}: "
            f"expected {e[where]:.6g}, got {g[where]:.6g} (largest difference {worst:.3g}"
            + ("" if exact else f"; tolerance rtol={rtol}, atol={atol}") + ")")


def compare(expected: Any, got: Any, rtol: float = 1e-5, atol: float = 1e-8,
            check_dtype: bool = True, path: str = "") -> str | None:
    """Describe how ``got`` differs from ``expected``; ``None`` when they match.

    >>> compare(1.0, 1.0 + 1e-9) is None
    True
    >>> compare([1, 2], [1, 3])
    'at [1]: expected 2, got 3'
    """
    at = f"at {path}: " if path else ""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        return _compare_arrays(expected, got, rtol, atol, at, check_dtype)
    if isinstance(expected, bool) or expected is None:
        same = got is None if expected is None else (
            isinstance(got, (bool, np.bool_)) and bool(got) == expected)
        return None if same else f"{at}expected {expected!r}, got {summarize(got)}"
    if isinstance(expected, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            return f"{at}expected a Python number, got a one-element tensor (use .item())"
        if not isinstance(got, (int, float, np.number)) or isinstance(got, bool):
            return f"{at}expected a number, got {type(got).__name__} ({summarize(got)})"
        if isinstance(expected, int) and not isinstance(expected, bool) and \
                isinstance(got, (int, np.integer)):
            return None if got == expected else f"{at}expected {expected}, got {got}"
        if math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol) or \
                (math.isnan(expected) and math.isnan(float(got))):
            return None
        return f"{at}expected {expected!r}, got {float(got)!r} (difference {got - expected:.3g})"
    if isinstance(expected, str):
        if not isinstance(got, str):
            return f"{at}expected a string, got {type(got).__name__} ({summarize(got)})"
        if got == expected:
            return None
        i = next((k for k, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
                 min(len(expected), len(got)))
        return (f"{at}strings differ at position {i}: expected {expected[i:i + 20]!r}, "
                f"got {got[i:i + 20]!r} (lengths {len(expected)} and {len(got)})")
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"{at}expected a dict, got {type(got).__name__}"
        if set(expected) != set(got):
            missing, extra = set(expected) - set(got), set(got) - set(expected)
            return f"{at}keys differ: missing {sorted(missing, key=repr)}, " \
                   f"unexpected {sorted(extra, key=repr)}"
        for key in expected:
            msg = compare(expected[key], got[key], rtol, atol, check_dtype, f"{path}[{key!r}]")
            if msg:
                return msg
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"{at}expected a {type(expected).__name__}, got {type(got).__name__} " \
                   f"({summarize(got)})"
        if len(got) != len(expected):
            return f"{at}expected {len(expected)} items, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            msg = compare(e, g, rtol, atol, check_dtype, f"{path}[{i}]")
            if msg:
                return msg
        return None
    return None if got == expected else f"{at}expected {summarize(expected)}, got {summarize(got)}"


def _describe_inputs(fn: Callable, case: Case) -> str:
    try:
        bound = inspect.signature(fn).bind(*case.args, **case.kwargs)
        items = bound.arguments.items()
    except (TypeError, ValueError):
        items = [(f"arg{i}", a) for i, a in enumerate(case.args)] + list(case.kwargs.items())
    return ", ".join(f"{k}={summarize(v)}" for k, v in items) or "(no arguments)"


def _as_case(item: Any) -> Case:
    if isinstance(item, Case):
        return item
    return Case(args=item if isinstance(item, tuple) else (item,))


def _error_message(err: Exception) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = ""
    if frames:
        code = (frames[-1].line or "").strip()
        where = f" (line {frames[-1].lineno}" + (f": {code}" if code else "") + ")"
    if isinstance(err, NotImplementedError):
        return "not implemented yet: the function still raises NotImplementedError"
    return f"your function raised {type(err).__name__}: {err}{where}"


def run_checks(fn: Callable, cases: Iterable, reference: Callable | None = None, *,
               rtol: float = 1e-5, atol: float = 1e-8, check_dtype: bool = True,
               name: str | None = None, hint: str | None = None) -> Feedback:
    """Run ``fn`` on ``cases`` and compare with the reference; return a :class:`Feedback`.

    Args:
        fn: the student's function.
        cases: :class:`Case` objects, argument tuples, or single arguments.
        reference: computes the expected answer of cases that do not carry one.
        rtol, atol: tolerances for floating-point results; check_dtype: compare dtypes too.
        name: shown in the feedback (default: the function's name).
        hint: shown once, below the failures.
    """
    for label, f in (("the function to check", fn), ("reference", reference)):
        if f is not None and not callable(f):
            raise TypeError(f"{label} must be callable, got {type(f).__name__} "
                            f"({summarize(f)}); pass the function itself, e.g. check(my_fn, "
                            "...), not the result of calling it, check(my_fn(x), ...)")
    results = []
    for case in map(_as_case, cases):
        inputs = _describe_inputs(reference or fn, case)
        expected = case.expected
        if expected is _NO_VALUE:
            if reference is None:
                raise ValueError("a case has no expected value and no reference was given")
            expected = reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        try:
            got = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        except Exception as err:  # the student's bug is reported, never raised
            results.append(CaseResult(case, _error_message(err), inputs))
            continue
        if got is None and expected is not None:
            problem = "your function returned None: did you forget a `return` statement?"
        else:
            problem = compare(expected, got, rtol, atol, check_dtype)
        results.append(CaseResult(case, problem, inputs))
    label = name or getattr(fn, "__name__", type(fn).__name__)
    return Feedback(label, results, hint)


def check(fn: Callable, cases: Sequence, reference: Callable | None = None, **kwargs) -> bool:
    """Print feedback on ``fn`` (see :func:`run_checks` for the arguments); True if all passed."""
    feedback = run_checks(fn, cases, reference, **kwargs)
    print(feedback)
    return feedback.passed
