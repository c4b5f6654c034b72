"""Tests for gptlib.exercises.core: the self-checking exercise helpers."""

import numpy as np
import pytest
import torch

from gptlib.exercises import Case, check, compare, run_checks


def softmax(x):
    return torch.softmax(x, dim=-1)


def good_softmax(x):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def flat_softmax(x):  # right values, wrong shape
    return good_softmax(x).flatten()


def global_softmax(x):  # normalises over the whole tensor instead of the last axis
    return torch.exp(x) / torch.exp(x).sum()


def crashing_softmax(x):
    return x.softmax(dim=5)


def no_return_softmax(x):
    good_softmax(x)


def todo_softmax(x):
    raise NotImplementedError


CASES = [(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]),),
         Case(args=(torch.zeros(4),), hint="equal inputs give 1/n each", name="uniform")]


def test_correct_function_passes(capsys):
    assert check(good_softmax, CASES, reference=softmax) is True
    assert capsys.readouterr().out.strip() == "✅ good_softmax: all 2 cases passed."


def test_wrong_shape_is_named(capsys):
    assert check(flat_softmax, CASES, reference=softmax) is False
    out = capsys.readouterr().out
    assert "1 of 2 cases failed" in out  # a 1-D input survives flatten()
    assert "wrong shape: expected (2, 3), got (6,)" in out
    assert "input:   x=Tensor(shape=(2, 3), dtype=float32, values=[[1, 2, 3], [0, 0, 0]])" in out


def test_wrong_values_report_index_and_numbers():
    feedback = run_checks(global_softmax, CASES, reference=softmax)
    assert not feedback
    first, second = feedback.results
    assert first.problem.startswith("6 of 6 values differ; first at index (0, 0): expected 0.0900")
    assert "tolerance rtol=1e-05" in first.problem
    assert second.problem is None  # for 1-D input the whole tensor is the last axis
    assert "case 2" not in str(feedback)


def test_per_case_hint_and_name_are_shown():
    feedback = run_checks(lambda x: x, CASES, reference=softmax, hint="use torch.exp")
    text = str(feedback)
    assert "case 2 (uniform)" in text and "hint:    equal inputs give 1/n each" in text
    assert text.endswith("  hint: use torch.exp") and text.startswith("❌ <lambda>: 2 of 2")


def test_exception_in_student_function_is_reported_not_raised():
    feedback = run_checks(crashing_softmax, CASES, reference=softmax)
    problem = feedback.results[0].problem
    assert problem.startswith("your function raised IndexError: Dimension out of range")
    assert "x.softmax(dim=5)" in problem  # the offending line of the student's code


@pytest.mark.parametrize("fn, message", [
    (no_return_softmax, "returned None: did you forget a `return` statement?"),
    (todo_softmax, "not implemented yet")])
def test_common_mistakes_get_specific_messages(fn, message):
    feedback = run_checks(fn, CASES, reference=softmax)
    assert all(message in r.problem for r in feedback.results)


def test_dtype_is_checked_unless_disabled():
    def double(x):
        return good_softmax(x).double()

    assert "wrong dtype: expected torch.float32, got torch.float64" in str(
        run_checks(double, CASES, reference=softmax))
    assert run_checks(double, CASES, reference=softmax, check_dtype=False).passed


def test_tolerances_are_applied():
    def slightly_off(x):
        return softmax(x) + 1e-4

    assert not run_checks(slightly_off, CASES, reference=softmax)
    assert run_checks(slightly_off, CASES, reference=softmax, atol=1e-3)


def test_inputs_are_copied_so_in_place_bugs_do_not_leak():
    def in_place(x):
        x.add_(1.0)
        return softmax(x)

    x = torch.tensor([1.0, 2.0])
    assert run_checks(in_place, [(x,)], reference=softmax).passed  # softmax is shift-invariant
    assert x.tolist() == [1.0, 2.0]


def test_expected_values_without_reference():
    def square(n):
        return n * n

    assert check(square, [Case((3,), expected=9), Case((0.5,), expected=0.25)])
    feedback = run_checks(square, [Case((3,), expected=10)])
    assert feedback.results[0].problem == "expected 10, got 9"


def test_not_callable_raises_type_error():
    x = torch.zeros(3)
    with pytest.raises(TypeError, match=r"must be callable, got Tensor.*not the result of calling"):
        check(good_softmax(x), CASES, reference=softmax)
    with pytest.raises(TypeError, match="reference must be callable"):
        check(good_softmax, CASES, reference=3)


def test_missing_expected_and_reference_is_an_error():
    with pytest.raises(ValueError, match="no reference"):
        run_checks(good_softmax, CASES)


@pytest.mark.parametrize("expected, got, message", [
    (torch.arange(3), np.arange(3), "expected a torch.Tensor, got ndarray"),
    (np.array([1, 2]), np.array([1, 3]), "1 of 2 values differ; first at index (1,)"),
    (2.0, torch.tensor(2.0), "use .item()"),
    (1.0, "1.0", "expected a number, got str"),
    ("hello world", "hello word", "strings differ at position 9: expected 'ld', got 'd'"),
    ({"a": 1, "b": 2}, {"a": 1}, "keys differ: missing ['b']"),
    ({"a": [1, 2]}, {"a": [1, 5]}, "at ['a'][1]: expected 2, got 5"),
    ((1, 2), (1, 2, 3), "expected 2 items, got 3"),
    (True, 1, "expected True, got 1"),
])
def test_compare_messages(expected, got, message):
    assert message in compare(expected, got)


@pytest.mark.parametrize("expected, got", [
    (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")])),
    (0.1 + 0.2, 0.3), (3, np.int64(3)), ([1, "a", (2.0,)], [1, "a", (2.0,)]), (None, None)])
def test_compare_accepts_equal_values(expected, got):
    assert compare(expected, got) is None
