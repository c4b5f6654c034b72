"""Self-checking exercises for the book's notebooks.

:mod:`gptlib.exercises.core` holds the shared machinery (:func:`check`, :class:`Case`,
:class:`Mistake`, :class:`Feedback`, the diagnosis of typical mistakes); each chapter's exercise
set lives in its own module next to it: :mod:`~gptlib.exercises.concepts` (chapter 2),
:mod:`~gptlib.exercises.algorithm` (chapter 3), :mod:`~gptlib.exercises.derivations` and
:mod:`~gptlib.exercises.backward` (chapter 4), :mod:`~gptlib.exercises.practice` (chapter 5),
:mod:`~gptlib.exercises.projects` (the longer ★★/★★★ exercises of chapters 3-5, which rebuild a
part of the library), and for chapter 6 :mod:`~gptlib.exercises.applications` (6.2),
:mod:`~gptlib.exercises.feedback` (6.3) and :mod:`~gptlib.exercises.outlook` (6.4).
"""

from gptlib.exercises.comparison import compare
from gptlib.exercises.core import Case, CaseResult, Feedback, Mistake, check, diagnose, run_checks

__all__ = [
    "Case",
    "CaseResult",
    "Feedback",
    "Mistake",
    "check",
    "compare",
    "diagnose",
    "run_checks",
]
