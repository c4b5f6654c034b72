"""Self-checking exercises for the book's notebooks.

:mod:`gptlib.exercises.core` holds the shared machinery (:func:`check`, :class:`Case`,
:class:`Feedback`); each chapter's exercise set lives in its own module next to it.
"""

from gptlib.exercises.core import Case, CaseResult, Feedback, check, compare, run_checks

__all__ = ["Case", "CaseResult", "Feedback", "check", "compare", "run_checks"]
