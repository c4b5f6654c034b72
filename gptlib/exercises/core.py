"""Check a student's function against a reference and explain what went wrong.

A notebook exercise ends with one line::

    check(my_softmax, cases=[(torch.randn(2, 3),), (torch.zeros(4),)], reference=softmax)

:func:`check` runs the student's function on every case (on copies of the inputs, so an in-place bug
cannot corrupt the reference's input), compares the result with the reference answer, prints
feedback and returns ``True`` or ``False``. A wrong answer never raises: a stub that still raises
``NotImplementedError`` (the student notebooks of ``make student``) is reported as not implemented
yet, and otherwise the feedback names the failing case, summarises its inputs, says what differs
(type, shape, dtype, which element, by how much) and adds a hint. Only a mistake in *calling*
``check`` raises, for example passing ``my_softmax(x)`` (a tensor) instead of the function
``my_softmax``.

Each chapter's checkers add the *typical wrong answers* of their exercise as :class:`Mistake`
objects (a softmax over the wrong dimension, a forgotten bias correction, ...). When a case fails,
:func:`diagnose` finds the mistake that explains the student's answers and the feedback names it.
*Probes* are extra inputs, never scored or shown, built so that those mistakes are easy to tell
apart (token ids equal to their positions, a schedule with round numbers).

:func:`~gptlib.exercises.comparison.compare` (re-exported here) is the comparison on its own.
"""

from __future__ import annotations

import copy
import functools
import inspect
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptlib.exercises.comparison import compare, summarize

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
    """What happened on one case: ``problem`` is None when the student's answer was right.

    ``answer`` is what the student's function returned, or the exception it raised.
    """

    case: Case
    problem: str | None
    inputs: str
    answer: Any = None


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer to an exercise, and the explanation the feedback gives for it.

    Give exactly one way to recognise it:

    * ``wrong``: a function with the exercise's signature that makes the mistake; an answer equal
      to ``wrong(*case.args, **case.kwargs)`` (within the check's tolerances) reproduces it.
    * ``symptom``: ``symptom(case, answer) -> bool``, for a mistake seen in a property of the
      answer (inf, a percentage, a wrong shape) rather than in its value; ``answer`` is what the
      function returned, or the exception it raised.
    """

    message: str
    wrong: Callable[..., Any] | None = None
    symptom: Callable[[Case, Any], bool] | None = None

    def __post_init__(self) -> None:
        if (self.wrong is None) == (self.symptom is None):
            raise ValueError(
                f"Mistake({self.message[:30]!r}...) needs exactly one of wrong= or symptom="
            )


@dataclass
class Feedback:
    """The outcome of :func:`run_checks`; ``bool(feedback)`` says whether every case passed."""

    name: str
    results: list[CaseResult]
    hint: str | None = None

    @property
    def passed(self) -> bool:
        return all(r.problem is None for r in self.results)

    @property
    def not_implemented(self) -> bool:
        """Whether the function is still a stub: it raised NotImplementedError on every case."""
        return bool(self.results) and all(
            isinstance(r.answer, NotImplementedError) for r in self.results
        )

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        n = len(self.results)
        if self.not_implemented:
            return (
                f"⏳ {self.name}: not implemented yet (your function still raises "
                "NotImplementedError). Write its body, run its cell, then run this check again."
            )
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


def _call(fn: Callable, case: Case) -> Any:
    return fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))


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


def _run_case(
    fn: Callable, case: Case, judge: Callable[[Case, Any], str | None], described_by: Callable
) -> CaseResult:
    inputs = _describe_inputs(described_by, case)
    try:
        answer = _call(fn, case)
    except Exception as err:  # the student's bug is reported, never raised
        return CaseResult(case, _error_message(err), inputs, err)
    return CaseResult(case, judge(case, answer), inputs, answer)


def _judge_by_reference(reference: Callable | None, differ: Callable) -> Callable:
    """A judge that compares an answer with the case's expected value or the reference's."""

    def judge(case: Case, answer: Any) -> str | None:
        expected = case.expected
        if expected is _NO_VALUE:
            expected = _call(reference, case)
        if answer is None and expected is not None:
            return "your function returned None: did you forget a `return` statement?"
        return differ(expected, answer)

    return judge


def _shows(mistake: Mistake, case: Case, answer: Any, differ: Callable) -> bool:
    """Whether ``answer`` to ``case`` is the one ``mistake`` gives."""
    try:
        if mistake.symptom is not None:
            return bool(mistake.symptom(case, answer))
        return differ(_call(mistake.wrong, case), answer) is None
    except Exception:  # this mistake cannot happen on this case, or with this kind of answer
        return False


def diagnose(
    results: Sequence[CaseResult],
    mistakes: Sequence[Mistake],
    differ: Callable[[Any, Any], str | None] = compare,
) -> str | None:
    """The explanation of the known mistake that accounts for the most failing answers.

    Each mistake gets one vote per failing answer it reproduces (its ``wrong`` function gives the
    same answer, or its ``symptom`` is there); the most votes win, ties go to the mistake listed
    first. Voting matters because several mistakes can give the same answer on one case
    (dividing by the number of tokens and counting distinct tokens agree on "abab"). A function
    that raised on every case gets no diagnosis: its error message says more.

    Args:
        results: the results of the cases (and probes), passing ones included.
        mistakes: the exercise's typical wrong answers.
        differ: ``differ(expected, got)`` is None when the two match (default :func:`compare`).
    Returns:
        The message of the best-matching mistake, or None when none reproduces any answer.

    >>> twice = Mistake("you doubled n", wrong=lambda n: 2 * n)
    >>> plus_one = Mistake("you added one", wrong=lambda n: n + 1)
    >>> diagnose([CaseResult(Case((1,)), "wrong", "n=1", 2),  # both mistakes give 2
    ...           CaseResult(Case((3,)), "wrong", "n=3", 6)], [plus_one, twice])
    'you doubled n'
    """
    if all(isinstance(r.answer, Exception) for r in results):
        return None
    failing = [(r.case, r.answer) for r in results if r.problem is not None]
    best, best_votes = None, 0
    for mistake in mistakes:
        votes = sum(_shows(mistake, case, answer, differ) for case, answer in failing)
        if votes > best_votes:
            best, best_votes = mistake.message, votes
    return best


def run_checks(
    fn: Callable,
    cases: Iterable,
    reference: Callable | None = None,
    *,
    mistakes: Sequence[Mistake] = (),
    probes: Iterable = (),
    judge: Callable[[Case, Any], str | None] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    check_dtype: bool = True,
    name: str | None = None,
    hint: str | None = None,
) -> Feedback:
    """Run ``fn`` on ``cases``, compare with the reference, diagnose; return a :class:`Feedback`.

    Args:
        fn: the student's function.
        cases: :class:`Case` objects, argument tuples, or single arguments.
        reference: computes the expected answer of cases that do not carry one.
        mistakes: typical wrong answers; when a case fails, the one that explains the answers
            (see :func:`diagnose`) is named in the hint.
        probes: extra cases, never scored or shown, run only to tell the mistakes apart.
        judge: ``judge(case, answer) -> problem or None``, instead of comparing with a reference
            (for answers that are right in more than one form).
        rtol, atol: tolerances for floating-point results; check_dtype: compare dtypes too.
        name: shown in the feedback (default: the function's name).
        hint: shown once, below the failures (after the diagnosis, if any).
    """
    for label, f in (("the function to check", fn), ("reference", reference)):
        if f is not None and not callable(f):
            raise TypeError(
                f"{label} must be callable, got {type(f).__name__} "
                f"({summarize(f)}); pass the function itself, e.g. check(my_fn, "
                "...), not the result of calling it, check(my_fn(x), ...)"
            )
    cases = [_as_case(c) for c in cases]
    if judge is None and reference is None and any(c.expected is _NO_VALUE for c in cases):
        raise ValueError("a case has no expected value and no reference was given")
    differ = functools.partial(compare, rtol=rtol, atol=atol, check_dtype=check_dtype)
    judge = judge or _judge_by_reference(reference, differ)
    run = functools.partial(_run_case, fn, judge=judge, described_by=reference or fn)
    results = [run(c) for c in cases]
    diagnosis = None
    if mistakes and not all(r.problem is None for r in results):
        diagnosis = diagnose(results + [run(_as_case(c)) for c in probes], mistakes, differ)
    label = name or getattr(fn, "__name__", type(fn).__name__)
    return Feedback(label, results, " ".join(filter(None, [diagnosis, hint])) or None)


def check(fn: Callable, cases: Sequence, reference: Callable | None = None, **kwargs) -> bool:
    """Print feedback on ``fn`` (see :func:`run_checks` for the arguments); True if all passed."""
    feedback = run_checks(fn, cases, reference, **kwargs)
    print(feedback)
    return feedback.passed
