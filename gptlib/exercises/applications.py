"""Self-checking exercises for chapter 6.2, challenges in application.

Each ``check_*`` function takes the reader's function, runs it on a few cases against a reference
(:func:`gptlib.exercises.core.run_checks`), prints feedback and returns ``True`` when every case
passed; a failing answer is compared with the typical wrong answers of the exercise, and the
feedback names the one that matches.

=========================  ==========================================================  ========
checker                    the reader writes                                           book
=========================  ==========================================================  ========
check_banned_next          ``banned_next(ids, n)``: the tokens n-gram blocking          Ex. 6.2.1
                           forbids next
check_calibration_error    ``calibration_error(conf, correct, bins)``: the expected     Ex. 6.2.2
                           calibration error
=========================  ==========================================================  ========

``tests/test_exercises_applications.py`` checks the first reference against
``gptlib.generate.no_repeat_ngram_mask`` and every diagnosis.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from gptlib.exercises.core import Case, Mistake, check


# --------------------------------------------------------------------------- n-gram blocking
def banned_next_reference(ids: Sequence[int], n: int) -> set[int]:
    """Tokens t such that the last n - 1 ids followed by t already occur in ``ids``.

    >>> sorted(banned_next_reference([5, 3, 5], 2))  # (5, 3) occurred; the text ends in 5
    [3]
    >>> sorted(banned_next_reference([1, 2, 1], 1))  # n = 1: every id already present
    [1, 2]
    """
    ids = list(ids)
    tail = ids[len(ids) - n + 1 :] if n > 1 else []
    return {ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == tail}


def _tail_of_n(ids, n):
    ids = list(ids)
    tail = ids[len(ids) - n :]
    return {ids[i + n] for i in range(len(ids) - n) if ids[i : i + n] == tail}


def _every_follower(ids, n):
    ids = list(ids)
    return {ids[i + n - 1] for i in range(len(ids) - n + 1)}


def _not_a_set(case: Case, answer: object) -> bool:
    return isinstance(answer, (list, tuple)) and set(answer) == banned_next_reference(*case.args)


def check_banned_next(fn: Callable[[Sequence[int], int], set[int]]) -> bool:
    """Exercise 6.2.1: the tokens that n-gram blocking forbids after ``ids``."""
    rng = random.Random(0)
    cases = [
        Case(([5, 3, 5], 2), name="the hand case"),
        Case(([1, 2, 3], 3), name="no earlier 3-gram starts with (2, 3)"),
        Case(([1, 2, 1], 1), name="n = 1: every id present"),
        Case(([7, 7, 7, 7], 2), name="one repeated token"),
        Case(([4, 9], 3), name="shorter than n"),
    ]
    cases += [
        Case(([rng.randrange(4) for _ in range(rng.randrange(6, 16))], n), name=f"random, n={n}")
        for n in (2, 3, 4)
    ]
    mistakes = [
        Mistake(
            "return a set of token ids (use set(...)), not a list or tuple.", symptom=_not_a_set
        ),
        Mistake(
            "your tail is n ids long: an n-gram is the last n - 1 ids plus the next token, so "
            "match the last n - 1 ids against the first n - 1 ids of each earlier n-gram.",
            wrong=_tail_of_n,
        ),
        Mistake(
            "you ban the last token of every earlier n-gram; only the n-grams whose first n - 1 "
            "ids equal the current last n - 1 ids can be completed by the next token.",
            wrong=_every_follower,
        ),
    ]
    return check(fn, cases, banned_next_reference, name="banned_next", mistakes=mistakes)


# --------------------------------------------------------------------------- calibration
def calibration_error_reference(
    conf: Sequence[float], correct: Sequence[int], bins: int = 10
) -> float:
    """Expected calibration error with ``bins`` equal-width bins; a confidence of 1 goes last.

    ECE = sum over bins of (share of the answers in the bin) x |accuracy - mean confidence|.
    Two bins: {0.2, 0.4} are right half the time at mean confidence 0.3, {0.9, 1.0} always
    at 0.95, so ECE = 0.5 * 0.2 + 0.5 * 0.05:

    >>> round(calibration_error_reference([0.2, 0.4, 0.9, 1.0], [0, 1, 1, 1], bins=2), 6)
    0.125
    """
    n = len(conf)
    return sum(k / n * abs(right / k - total / k) for total, right, k in _bins(conf, correct, bins))


def _bins(conf, correct, bins):
    """(sum of confidences, number right, size) of each non-empty bin."""
    sums: dict[int, list[float]] = {}
    for c, ok in zip(conf, correct, strict=True):
        s = sums.setdefault(min(int(math.floor(c * bins)), bins - 1), [0.0, 0.0, 0])
        s[0], s[1], s[2] = s[0] + c, s[1] + float(ok), s[2] + 1
    return [tuple(v) for v in sums.values()]


def _unweighted(conf, correct, bins=10):
    gaps = [abs(right - total) / k for total, right, k in _bins(conf, correct, bins)]
    return sum(gaps) / len(gaps)


def _signed(conf, correct, bins=10):
    return abs(sum(right - total for total, right, _ in _bins(conf, correct, bins)) / len(conf))


def check_calibration_error(fn: Callable[..., float]) -> bool:
    """Exercise 6.2.2: the expected calibration error of a set of answers."""
    rng = random.Random(1)
    conf = [rng.random() for _ in range(200)]
    over = [int(rng.random() < c / 2) for c in conf]  # right half as often as it claims
    mixed = [round(rng.random(), 2) for _ in range(60)]
    mixed_ok = [int(rng.random() < 0.5) for _ in mixed]
    cases = [
        Case(([0.2, 0.4, 0.9, 1.0], [0, 1, 1, 1], 2), name="the hand case"),
        Case(([0.7] * 10, [1] * 10, 10), name="always right at confidence 0.7"),
        Case(([1.0, 1.0, 0.05], [1, 0, 0], 10), name="confidence exactly 1"),
        Case((conf, over, 10), name="over-confident answerer"),
        Case((mixed, mixed_ok, 5), name="five bins"),
    ]
    mistakes = [
        Mistake(
            "weight each bin by its share of the answers, |B_m| / n: a plain mean over bins "
            "lets a bin with one answer count as much as a bin with a hundred.",
            wrong=_unweighted,
        ),
        Mistake(
            "take the absolute gap in each bin before summing: signed gaps of over- and "
            "under-confident bins cancel.",
            wrong=_signed,
        ),
        Mistake(
            "a confidence of exactly 1.0 gives bin index `bins`, one past the last: put it in "
            "the last bin (min(floor(c * bins), bins - 1)).",
            symptom=lambda case, answer: isinstance(answer, IndexError),
        ),
    ]
    return check(
        fn,
        cases,
        calibration_error_reference,
        name="calibration_error",
        rtol=1e-6,
        mistakes=mistakes,
    )
