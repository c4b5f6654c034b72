"""Tests for tools/student.py: the student notebooks that `make student` writes.

The unit tests cover the stubs and the MyST rewriting. The notebook tests build the student
version of every chapter page: no solution may survive, no kept cell may use a name that only a
removed solution defined, and every page with checkers is executed twice: as released, every
check must say "not implemented yet" (and nothing else may fail), and with the book's solutions
pasted into the stub cells, every check must pass.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("student", ROOT / "tools" / "student.py")
student = importlib.util.module_from_spec(_spec)
sys.modules["student"] = student
_spec.loader.exec_module(student)

PAGES = student.chapter_notebooks()
LABELS = student.label_index()


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _python(source: str) -> str:
    """A cell's code without IPython magics, which `ast` cannot parse."""
    return "\n".join("" if line.lstrip()[:1] in "%!" else line for line in source.splitlines())


def _student(page: Path) -> dict:
    return student.to_student(json.loads(page.read_text(encoding="utf-8")), page, LABELS)


# ---------------------------------------------------------------------------------------------
# Stubs


def test_stub_keeps_signature_docstring_and_imports_and_drops_the_rest():
    source = '''import math
from torch import nn


@staticmethod
def adam(theta, grad, *, lr: float = 1e-3, betas=(0.9, 0.95)) -> float:
    """One step."""
    m = grad * (1 - betas[0])
    return theta - lr * m


def helper(x):
    return math.sqrt(x)


print(adam(1.0, 2.0))
'''
    stub = student.stub_source(source, "exercise 4.9")
    tree = ast.parse(stub)
    kinds = [type(n).__name__ for n in tree.body]
    assert kinds == ["Import", "ImportFrom", "FunctionDef", "FunctionDef"]
    adam, helper = tree.body[2:]
    assert ast.unparse(adam.args) == "theta, grad, *, lr: float=0.001, betas=(0.9, 0.95)"
    assert ast.unparse(adam.returns) == "float" and ast.unparse(adam.decorator_list[0]) == (
        "staticmethod"
    )
    assert ast.get_docstring(adam) == "One step."
    assert "exercise 4.9" in ast.get_docstring(helper)  # no docstring: one naming the exercise
    for fn in (adam, helper):
        assert ast.unparse(fn.body[-1]) == "raise NotImplementedError"
        assert len(fn.body) == 2
    assert "return" not in stub and "print" not in stub and "sqrt" not in stub


def test_a_class_keeps_its_methods_as_stubs():
    source = '''class Cache:
    size = 3

    def __init__(self, n):
        self.n = n

    def append(self, k, v):
        """Store one step."""
        self.k = k
'''
    tree = ast.parse(student.stub_source(source, "exercise 5.5.9"))
    (cls,) = tree.body
    assert [type(n).__name__ for n in cls.body] == ["Expr", "FunctionDef", "FunctionDef"]
    init, append = cls.body[1:]
    assert ast.unparse(init.args) == "self, n" and ast.get_docstring(append) == "Store one step."
    assert all(ast.unparse(f.body[-1]) == "raise NotImplementedError" for f in (init, append))
    assert student.defined_functions(source) == ["Cache"]


def test_pasted_solution_keeps_the_constants_its_functions_read_and_nothing_else():
    source = "K = 2\nW = make(H)  # an example\ndef f(x, W):\n    return K * x @ W\nf(1, W)"
    answer = student.solution_functions(source)
    assert answer == "K = 2\n\ndef f(x, W):\n    return K * x @ W"  # W is a parameter of f


def test_a_cell_without_functions_has_no_stub():
    assert student.stub_source("x = 1\nprint(x)") is None


def test_a_stub_raises_not_implemented_and_the_checker_says_so(capsys):
    from gptlib.exercises.derivations import check_softmax

    namespace: dict = {}
    exec(student.stub_source("def my_softmax(z):\n    return z.softmax(-1)\n"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["my_softmax"](None)
    assert check_softmax(namespace["my_softmax"]) is False
    assert "not implemented yet" in capsys.readouterr().out


def test_checker_calls_find_the_checked_function_only():
    source = "ok = practice.check_mfu(mfu)\nprint(mfu(1, 2))\ncheck_other(other)"
    assert [c.args[0].id for c in student.checker_calls(source, ["mfu"])] == ["mfu"]


# ---------------------------------------------------------------------------------------------
# MyST -> plain Markdown


def test_exercise_fences_become_headings_and_roles_plain_markdown():
    page = ROOT / "chapters" / "03-algorithm" / "08-exercises.ipynb"
    text = (
        "```{exercise-start}\n:label: ex-3-2\n```\n**Attention.** See {doc}`04-loss-function`,"
        " {ref}`ex-3-1`, equation {eq}`eq-3-batch`, {cite}`vaswani2017attention` and "
        "{glue:text}`hours` hours.\n```{exercise-end}\n```\n"
        "````{admonition} Note\n:class: dropdown\n\n```{math}\nx = 1\n```\n````\n(sec-x)=\n## Next"
    )
    out = student.render_markdown(text, page, {"hours": "12"}, LABELS)
    assert out.startswith("### Exercise 3.2\n**Attention.**")
    assert "[04-loss-function](04-loss-function.ipynb)" in out
    assert "[Exercise 3.1]()" not in out and "Exercise 3.1" in out  # same page: no link
    assert "[(eq-3-batch)](02-data-preprocessing.ipynb)" in out
    assert "[vaswani2017attention]" in out and "12 hours" in out
    assert "**Note**" in out and "$$\nx = 1\n$$" in out
    assert "{" not in out.replace("{eq-", "") and "```" not in out and "(sec-x)=" not in out


def test_glue_values_are_read_from_stored_outputs():
    nb = json.loads((ROOT / "chapters" / "05-practice" / "06-exercises.ipynb").read_text("utf-8"))
    values = student.glue_values(nb)
    assert re.fullmatch(r"\d+", values["ex5_batch"])


# ---------------------------------------------------------------------------------------------
# Every page


def _defined(source: str) -> set[str]:
    """Names a cell binds: assignments, loop variables, functions, classes, imports."""
    tree = ast.parse(_python(source))
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.arg):  # a parameter
            names.add(n.arg)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(n.name)
        elif isinstance(n, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return names


def _used(source: str) -> set[str]:
    tree = ast.parse(_python(source))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _called(source: str) -> set[str]:
    tree = ast.parse(_python(source))
    return {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_student_page_has_no_solution_and_no_dangling_name(page):
    source = json.loads(page.read_text(encoding="utf-8"))
    notebook = _student(page)
    by_solutions = set()
    for cell in source["cells"]:
        if cell["cell_type"] == "code" and "solution" in cell["metadata"].get("tags", []):
            by_solutions |= _defined(_source(cell))
    kept, stubs = set(), set()
    for cell in notebook["cells"]:
        text = _source(cell)
        assert "solution" not in cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] != "code":
            assert "{solution-" not in text and "{exercise-" not in text
            continue
        assert cell["outputs"] == [] and cell["execution_count"] is None
        kept |= _defined(text)
        if "stub" in cell["metadata"].get("tags", []):
            stubs |= set(cell["metadata"]["gptlib"]["stubs"])
            assert not any(isinstance(n, ast.Return) for n in ast.walk(ast.parse(text)))
    gone = by_solutions - kept
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        text = _source(cell)
        assert not _used(text) & gone, f"cell {i} uses {_used(text) & gone}, only solutions define"
        if "gptlib" not in cell["metadata"]:  # neither a stub nor a check: must not call a stub
            assert not _called(text) & stubs, f"cell {i} calls the stub {_called(text) & stubs}"


def test_make_student_writes_every_page(tmp_path):
    assert student.main(["--out", str(tmp_path / "student")]) == 0
    written = sorted(p.relative_to(tmp_path / "student") for p in tmp_path.rglob("*.ipynb"))
    assert written == [p.relative_to(ROOT / "chapters") for p in PAGES]


# ---------------------------------------------------------------------------------------------
# Executing the pages that have checkers


def _checks(notebook: dict, by_checker: bool) -> list[int]:
    """The check cells: those of a gptlib checker (by_checker) or hand-written asserts."""
    return [
        i
        for i, c in enumerate(notebook["cells"])
        if c["metadata"].get("gptlib", {}).get("checker") is by_checker
        and "checks" in c["metadata"]["gptlib"]
    ]


# The exercise pages with gptlib checkers are executed; the other pages run whole experiments
# (minutes each), so their student versions are checked statically above.
CHECKED = [p for p in PAGES if p.stem.endswith("exercises") and _checks(_student(p), True)]


def _run(notebook: dict, page: Path) -> list[dict]:
    """Execute a student notebook in its page's folder (relative paths resolve as in the book)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.from_dict(notebook)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(page.parent)}},
    )
    client.execute(env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return nb.cells


def _text(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream"
    )


def _errors(cells) -> list[str]:
    return [
        f"cell {i}: {o['ename']}: {o['evalue']}"
        for i, c in enumerate(cells)
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]


def test_the_checked_pages_are_the_three_exercise_pages():
    assert {p.parent.name + "/" + p.name for p in CHECKED} >= {
        "03-algorithm/08-exercises.ipynb",
        "04-math/08-exercises.ipynb",
        "05-practice/06-exercises.ipynb",
    }


@pytest.mark.parametrize("page", CHECKED, ids=[p.parent.name for p in CHECKED])
def test_released_notebook_fails_only_with_not_implemented_and_solutions_pass(page):
    notebook = _student(page)
    checks = _checks(notebook, by_checker=True)
    assert _checks(notebook, by_checker=False) == []  # every check here reports, none raises
    cells = _run(notebook, page)
    assert _errors(cells) == []
    for i in checks:
        assert "not implemented yet" in _text(cells[i]) and "✅" not in _text(cells[i]), i

    by_id = {c.get("id"): _source(c) for c in json.loads(page.read_text("utf-8"))["cells"]}
    for cell in notebook["cells"]:
        if "stub" in cell["metadata"].get("tags", []):
            cell["source"] = student.solution_functions(by_id[cell["id"]])
    cells = _run(notebook, page)
    assert _errors(cells) == []
    for i in checks:
        out = _text(cells[i])
        assert "✅" in out and "❌" not in out and "⏳" not in out, (i, out)
