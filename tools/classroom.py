"""An nbgrader course built from the book's exercise pages (``make classroom``).

Every chapter's exercise page (``*exercises.ipynb``) with coding exercises checked by
:mod:`gptlib.exercises` becomes one assignment, named after its chapter folder. Its notebook is the
page's student version (``tools/student.py``: rendered prose, stubs, no solutions) with nbgrader
metadata added:

* each stub cell becomes a *solution cell*: the stub (signature, docstring,
  ``raise NotImplementedError``) and, between ``### BEGIN SOLUTION`` and ``### END SOLUTION``,
  the book's own answer, which redefines the functions; ``nbgrader generate_assignment`` removes
  that region, so the released notebook is the stub the student completes;
* each checker cell becomes a locked, *autograded test cell* worth the exercise's points:
  ``assert check_...(fn)``. The checker prints its feedback to stdout (never to stderr, which
  would zero the cell) and returns False on a wrong answer, so the assert fails and the cell
  scores 0.

Points per exercise: :data:`DEFAULT_POINTS`, or :data:`POINTS` for the longer ones. The instructor's
guide (chapters/09-appendix/05-instructors-guide.ipynb) computes its table of graded exercises
with :func:`course_plan`, the same function that builds the course, so the two cannot disagree.

The course folder (default ``classroom/``)::

    nbgrader_config.py            course id, code stub, cell timeout
    source/<assignment>/<page>.ipynb
    release/<assignment>/...      written by `nbgrader generate_assignment` (--release)

Usage::

    python tools/classroom.py [--out classroom] [--release]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import student  # noqa: E402  (tools/student.py, next to this file)

ROOT = student.ROOT
COURSE_ID = "gpt-from-the-ground-up"
DEFAULT_POINTS = 2
# Exercises worth more than the default: the ones with the most steps to get right.
POINTS = {
    "ex-3-2": 3,  # causal attention over batches and heads
    "ex-3-6": 3,  # gradient accumulation
    "ex-4-9": 3,  # one AdamW step
    "ex-4-11": 3,  # one causal attention head
}
CELL_TIMEOUT = 60  # seconds per cell when autograding (nbgrader's default is 30)
CODE_STUB = "# YOUR CODE HERE: complete the function(s) above"

CONFIG = f'''"""nbgrader configuration of the course built by tools/classroom.py."""

c = get_config()  # noqa: F821 (provided by nbgrader)
c.CourseDirectory.course_id = "{COURSE_ID}"
c.ClearSolutions.code_stub = {{"python": "{CODE_STUB}"}}
c.ExecutePreprocessor.timeout = {CELL_TIMEOUT}
c.Execute.timeout = {CELL_TIMEOUT}
'''


@dataclass(frozen=True)
class GradedExercise:
    """One autograded exercise: where it is, what it checks and what it is worth."""

    assignment: str
    notebook: str
    label: str
    number: str
    functions: tuple[str, ...]
    checker: str
    points: int


def exercise_pages() -> list[Path]:
    """The chapters' exercise pages (``*exercises.ipynb``) with a coding exercise that a
    gptlib.exercises checker grades. Exercises on the other pages stay ungraded: those pages run
    whole experiments, which do not belong in a graded notebook."""
    labels = student.label_index()
    return [
        p
        for p in student.chapter_notebooks()
        if p.stem.endswith("exercises") and _graded(_student(p, labels))
    ]


def assignment_name(page: Path) -> str:
    """``chapters/03-algorithm/08-exercises.ipynb`` -> ``03-algorithm``."""
    return page.parent.name


def _student(page: Path, labels: dict) -> dict:
    return student.to_student(json.loads(page.read_text(encoding="utf-8")), page, labels)


def _graded(nb: dict) -> list[int]:
    return [i for i, c in enumerate(nb["cells"]) if c["metadata"].get("gptlib", {}).get("checker")]


def _meta(grade_id: str, *, solution: bool, grade: bool, points: int = 0) -> dict:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    return meta


def course_notebook(page: Path, labels: dict | None = None) -> tuple[dict, list[GradedExercise]]:
    """The nbgrader source notebook of one exercise page, and its graded exercises."""
    labels = student.label_index() if labels is None else labels
    source = json.loads(page.read_text(encoding="utf-8"))
    by_id = {c.get("id"): "".join(c["source"]) for c in source["cells"]}
    nb = student.to_student(source, page, labels)
    assignment, name = assignment_name(page), page.name
    label_of = {  # "exercise 3.1" -> "ex-3-1"
        f"exercise {student.exercise_number(k)}": k for k in labels if labels[k][0] == page
    }
    graded: list[GradedExercise] = []
    stub_exercise: dict[str, str] = {}  # function name -> exercise label
    for cell in nb["cells"]:
        meta = cell["metadata"].get("gptlib", {})
        if "stubs" in meta:
            label = label_of.get(meta["exercise"], meta["exercise"])
            stub_exercise |= {f: label for f in meta["stubs"]}
            answer = student.solution_functions(by_id[cell["id"]])
            cell["source"] = f"{cell['source']}\n\n### BEGIN SOLUTION\n{answer}\n### END SOLUTION"
            cell["metadata"]["nbgrader"] = _meta(f"{label}-answer", solution=True, grade=False)
        elif meta.get("checker"):
            call = student.checker_calls(cell["source"], meta["checks"])[0]
            label = stub_exercise[call.args[0].id]
            points = POINTS.get(label, DEFAULT_POINTS)
            checker = ast.unparse(call)
            cell["source"] = (
                f"# {points} point{'s' * (points != 1)}: the checker prints its feedback; the "
                f"cell fails if a case fails\nassert {checker}, 'see the feedback above'"
            )
            cell["metadata"]["nbgrader"] = _meta(
                f"{label}-check", solution=False, grade=True, points=points
            )
            graded.append(
                GradedExercise(
                    assignment,
                    name,
                    label,
                    student.exercise_number(label),
                    tuple(meta["checks"]),
                    checker,
                    points,
                )
            )
    nb["metadata"]["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    return nb, graded


def course_plan() -> list[GradedExercise]:
    """Every autograded exercise of the course, in book order (what the guide's table shows)."""
    labels = student.label_index()
    return [g for page in exercise_pages() for g in course_notebook(page, labels)[1]]


def build_course(out: Path) -> list[GradedExercise]:
    """Write the course folder: nbgrader_config.py and source/<assignment>/<page>.ipynb."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")
    shutil.rmtree(out / "source", ignore_errors=True)
    labels = student.label_index()
    plan = []
    for page in exercise_pages():
        nb, graded = course_notebook(page, labels)
        target = out / "source" / assignment_name(page) / page.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        plan += graded
    return plan


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course folder with the nbgrader next to this Python.

    That folder goes first on PATH: nbgrader runs ``alembic`` from PATH to create a gradebook.
    """
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(bin_dir / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def release(course: Path) -> None:
    """``nbgrader generate_assignment`` for every assignment in source/ (one process): release/."""
    nbgrader(course, "generate_assignment", "*", "--force")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "classroom", help="default: classroom/")
    parser.add_argument(
        "--release", action="store_true", help="also run nbgrader generate_assignment"
    )
    args = parser.parse_args(argv)
    course = args.out.resolve()
    plan = build_course(course)
    if args.release:
        release(course)
    total = {}
    for g in plan:
        total[g.assignment] = total.get(g.assignment, 0) + g.points
    for assignment, points in total.items():
        n = sum(g.assignment == assignment for g in plan)
        print(f"{assignment}: {n} autograded exercises, {points} points")
    print(f"course written to {course}" + (" (source/ and release/)" if args.release else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
