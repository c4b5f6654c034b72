"""Tests for gptlib.exercises.core: running the cases, the feedback, and the diagnosis of typical
mistakes that every chapter's checkers share."""

import numpy as np
import pytest
import torch

from gptlib.exercises import Case, CaseResult, Mistake, check, compare, diagnose, run_checks
from gptlib.exercises.comparison import summarize


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


CASES = [
    (torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]),),
    Case(args=(torch.zeros(4),), hint="equal inputs give 1/n each", name="uniform"),
]


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


@pytest.mark.parametrize(
    "fn, message",
    [
        (no_return_softmax, "returned None: did you forget a `return` statement?"),
        (todo_softmax, "not implemented yet"),
    ],
)
def test_common_mistakes_get_specific_messages(fn, message):
    feedback = run_checks(fn, CASES, reference=softmax)
    assert all(message in r.problem for r in feedback.results)


def test_dtype_is_checked_unless_disabled():
    def double(x):
        return good_softmax(x).double()

    assert "wrong dtype: expected torch.float32, got torch.float64" in str(
        run_checks(double, CASES, reference=softmax)
    )
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


@pytest.mark.parametrize(
    "expected, got, message",
    [
        (torch.arange(3), np.arange(3), "expected a torch.Tensor, got ndarray"),
        (np.array([1, 2]), np.array([1, 3]), "1 of 2 values differ; first at index (1,)"),
        (2.0, torch.tensor(2.0), "use .item()"),
        (1.0, "1.0", "expected a number, got str"),
        ("hello world", "hello word", "strings differ at position 9: expected 'ld', got 'd'"),
        ({"a": 1, "b": 2}, {"a": 1}, "keys differ: missing ['b']"),
        ({"a": [1, 2]}, {"a": [1, 5]}, "at ['a'][1]: expected 2, got 5"),
        ((1, 2), (1, 2, 3), "expected 2 items, got 3"),
        (True, 1, "expected True, got 1"),
    ],
)
def test_compare_messages(expected, got, message):
    assert message in compare(expected, got)


@pytest.mark.parametrize(
    "expected, got",
    [
        (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")])),
        (0.1 + 0.2, 0.3),
        (3, np.int64(3)),
        ([1, "a", (2.0,)], [1, "a", (2.0,)]),
        (None, None),
    ],
)
def test_compare_accepts_equal_values(expected, got):
    assert compare(expected, got) is None


# ---- the diagnosis of typical mistakes --------------------------------------------------------


def square(n):
    return n * n


PLUS_ONE = Mistake("you added one", wrong=lambda n: n + 1)
TWICE = Mistake("you doubled n", wrong=lambda n: 2 * n)
NEGATIVE = Mistake("your answer is negative", symptom=lambda case, answer: answer < 0)


def results(*answers_by_n):
    """CaseResults of square(n) for (n, answer) pairs; a problem wherever answer != n * n."""
    return [
        CaseResult(Case((n,)), None if a == n * n else "wrong", f"n={n}", a)
        for n, a in answers_by_n
    ]


def test_a_mistake_needs_exactly_one_way_to_be_recognised():
    with pytest.raises(ValueError, match="exactly one"):
        Mistake("no test")
    with pytest.raises(ValueError, match="exactly one"):
        Mistake("both", wrong=abs, symptom=lambda case, answer: True)


def test_the_mistake_that_explains_most_failing_answers_wins():
    """n=1: both mistakes give 2; n=3: only doubling gives 6; n=5: nothing gives 11."""
    assert diagnose(results((1, 2), (3, 6), (5, 11)), [PLUS_ONE, TWICE]) == "you doubled n"


def test_ties_go_to_the_mistake_listed_first():
    assert diagnose(results((1, 2)), [PLUS_ONE, TWICE]) == "you added one"
    assert diagnose(results((1, 2)), [TWICE, PLUS_ONE]) == "you doubled n"


def test_passing_answers_do_not_vote():
    """n=2: 2 + 2 = 2 * 2 = 4 passes, so it cannot tell doubling from squaring."""
    assert diagnose(results((2, 4), (1, 2)), [TWICE, PLUS_ONE]) == "you doubled n"
    assert diagnose(results((2, 4), (3, 9)), [TWICE, PLUS_ONE]) is None


def test_symptoms_vote_like_wrong_answers():
    assert diagnose(results((3, -9), (4, -16), (1, 2)), [PLUS_ONE, NEGATIVE]) == NEGATIVE.message
    assert diagnose(results((3, -9), (1, 2), (5, 10)), [NEGATIVE, TWICE]) == TWICE.message


def test_a_mistake_that_cannot_happen_on_a_case_gets_no_vote():
    crashes_on_zero = Mistake("divides", wrong=lambda n: 1 / n)
    assert diagnose(results((0, 5)), [crashes_on_zero]) is None
    odd = Mistake("odd answer", symptom=lambda case, answer: answer % 2 == 1)  # fails on a str
    assert diagnose(results((2, "four"), (3, 7)), [odd]) == "odd answer"


def test_a_function_that_always_raises_gets_no_diagnosis():
    err = ValueError("boom")
    raised = [CaseResult(Case((n,)), "raised", f"n={n}", err) for n in (1, 2)]
    anything = Mistake("an error", symptom=lambda case, answer: True)
    assert diagnose(raised, [anything]) is None
    assert diagnose(raised + results((3, 9)), [anything]) == "an error"


def test_run_checks_names_the_mistake_before_the_hint():
    feedback = run_checks(
        lambda n: 2 * n, [(3,), (4,)], square, mistakes=[PLUS_ONE, TWICE], hint="n * n"
    )
    assert feedback.hint == "you doubled n n * n"
    assert str(feedback).endswith("  hint: you doubled n n * n")


def test_probes_are_neither_scored_nor_shown_but_tell_mistakes_apart():
    """Case n=1 fails with 2 (both mistakes give it); the probe n=10 (answer 20) decides."""
    feedback = run_checks(
        lambda n: 2 * n, [(1,)], square, mistakes=[PLUS_ONE, TWICE], probes=[(10,)]
    )
    assert len(feedback.results) == 1 and "n=10" not in str(feedback)
    assert feedback.hint == "you doubled n"
    without_probe = run_checks(lambda n: 2 * n, [(1,)], square, mistakes=[PLUS_ONE, TWICE])
    assert without_probe.hint == "you added one"


def test_no_diagnosis_and_no_probe_when_every_case_passes():
    calls = []

    def fn(n):
        calls.append(n)
        return n * n if n < 10 else -1

    feedback = run_checks(fn, [(2,)], square, mistakes=[NEGATIVE], probes=[(10,)])
    assert feedback.passed and feedback.hint is None and calls == [2]


def test_results_keep_the_answer_or_the_exception():
    feedback = run_checks(lambda n: 1 // n, [Case((1,), expected=1), Case((0,), expected=0)])
    first, second = feedback.results
    assert first.answer == 1 and first.problem is None
    assert isinstance(second.answer, ZeroDivisionError)


def test_a_judge_replaces_the_reference():
    def even_judge(case, answer):
        return None if answer % 2 == 0 else f"{answer} is odd"

    feedback = run_checks(lambda n: n + 1, [(1,), (2,)], judge=even_judge)
    assert [r.problem for r in feedback.results] == [None, "3 is odd"]


def test_summarize_describes_a_model_by_its_size():
    assert summarize(torch.nn.Linear(4, 3)) == "Linear with 15 parameters"


def test_a_stub_is_reported_as_not_implemented_yet(capsys):
    assert check(todo_softmax, CASES, reference=softmax) is False
    out = capsys.readouterr().out.strip()
    assert out.startswith("⏳ todo_softmax: not implemented yet")
    assert "\n" not in out and "case 1" not in out  # one line, no list of failing cases
    assert run_checks(todo_softmax, CASES, reference=softmax).not_implemented


def test_a_function_that_raises_not_implemented_on_some_cases_only_is_listed():
    def half_done(x):
        if x.dim() == 1:
            raise NotImplementedError
        return softmax(x)

    feedback = run_checks(half_done, CASES, reference=softmax)
    assert not feedback.not_implemented and not feedback
    assert "1 of 2 cases failed" in str(feedback) and "not implemented yet" in str(feedback)
