"""End-to-end test of the nbgrader course that `make classroom` builds (tools/classroom.py).

On a course in a temporary folder (its own SQLite gradebook, never shared between runs): build
the source notebooks, `nbgrader generate_assignment`, then `nbgrader autograde` three
submissions per assignment and `nbgrader export` the scores:

* ``book``: the source notebook, the book's solutions in place, must score full marks (every
  assignment);
* ``blank``: the released notebook, untouched, must score zero (one assignment);
* ``wrong``: the book's solutions with one graded function replaced by a wrong one must lose
  exactly that exercise's points (one assignment).

Runs in `make test-classroom` (a few minutes: every submission is executed by a kernel).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT / "tools"))
_spec = importlib.util.spec_from_file_location("classroom", ROOT / "tools" / "classroom.py")
classroom = importlib.util.module_from_spec(_spec)
sys.modules["classroom"] = classroom
_spec.loader.exec_module(classroom)


SCORED = "03-algorithm"  # the assignment that also gets a blank and a one-wrong submission


def _wrong(plan: list, assignment: str):
    """The graded exercise to get wrong: the most valuable function exercise of the assignment."""
    functions = [g for g in plan if g.assignment == assignment and g.functions[0][0].islower()]
    return max(functions, key=lambda g: (g.points, g.label))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A built, released and autograded course: (folder, plan, {(assignment, student): row})."""
    root = tmp_path_factory.mktemp("course")
    plan = classroom.build_course(root)
    classroom.release(root)
    for assignment in dict.fromkeys(g.assignment for g in plan):
        source = next((root / "source" / assignment).glob("*.ipynb"))
        released = root / "release" / assignment / source.name
        wrong = _wrong(plan, assignment)
        nb = json.loads(source.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("grade_id") == f"{wrong.label}-answer":
                cell["source"] += (
                    f"\n\n\ndef {wrong.functions[0]}(*args, **kwargs):\n    return None\n"
                )
        submissions = [("book", lambda p, s=source: shutil.copy(s, p))]
        if assignment == SCORED:  # zero and one-wrong on one assignment: each run costs a kernel
            submissions += [
                ("blank", lambda p, r=released: shutil.copy(r, p)),
                ("wrong", lambda p, n=nb: p.write_text(json.dumps(n), encoding="utf-8")),
            ]
        for student, make in submissions:
            folder = root / "submitted" / student / assignment
            folder.mkdir(parents=True)
            make(folder / source.name)
    classroom.nbgrader(root, "autograde", "*", "--force")  # every submission, one process
    classroom.nbgrader(root, "export", "--to", str(root / "grades.csv"))
    with open(root / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {(r["assignment"], r["student_id"]): r for r in csv.DictReader(f)}
    return root, plan, rows


def test_the_course_has_the_three_exercise_chapters_and_points():
    plan = classroom.course_plan()
    assert {g.assignment for g in plan} >= {"03-algorithm", "04-math", "05-practice"}
    assert all(g.points > 0 for g in plan)
    assert len({(g.assignment, g.label) for g in plan}) == len(plan)  # one graded cell each
    assert {"next_token_pairs", "my_softmax", "mfu"} <= {f for g in plan for f in g.functions}


def test_released_notebooks_hold_stubs_and_no_solution(course):
    root, plan, _ = course
    for assignment in dict.fromkeys(g.assignment for g in plan):
        (released,) = (root / "release" / assignment).glob("*.ipynb")
        text = released.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError" in text
        source = (root / "source" / assignment / released.name).read_text(encoding="utf-8")
        assert "### BEGIN SOLUTION" in source


def test_book_solutions_score_full_marks(course):
    _, plan, rows = course
    for assignment in dict.fromkeys(g.assignment for g in plan):
        row = rows[(assignment, "book")]
        total = sum(g.points for g in plan if g.assignment == assignment)
        assert float(row["max_score"]) == total
        assert float(row["score"]) == total, assignment


def test_untouched_release_scores_zero(course):
    _, plan, rows = course
    total = sum(g.points for g in plan if g.assignment == SCORED)
    assert float(rows[(SCORED, "blank")]["max_score"]) == total > 0
    assert float(rows[(SCORED, "blank")]["score"]) == 0.0


def test_one_wrong_answer_loses_exactly_its_points(course):
    _, plan, rows = course
    total = sum(g.points for g in plan if g.assignment == SCORED)
    lost = _wrong(plan, SCORED).points
    assert 0 < lost < total
    assert float(rows[(SCORED, "wrong")]["score"]) == total - lost


def test_the_gradebook_is_the_temporary_courses_own(course):
    root, _, _ = course
    assert (root / "gradebook.db").is_file()
    assert not (ROOT / "gradebook.db").exists()
