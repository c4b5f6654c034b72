"""Student notebooks from the book's pages: a stub for every coding exercise, no solutions.

The book keeps one source of truth: each chapter notebook holds its exercises *and* their
solutions (cells tagged ``solution`` between ``{solution-start}`` and ``{solution-end}`` fences).
This tool writes the student version of every page:

* a solution code cell that defines functions becomes a **stub**: each function keeps its
  signature and docstring (or gets one naming the exercise), and its body becomes
  ``raise NotImplementedError``; the checker below it then reports "not implemented yet"
  instead of failing with a ``NameError``. Imports in that cell are kept; everything else in it
  (the worked example that calls the function) goes;
* every other solution cell (prose, worked calculations) is removed;
* MyST markup that plain Jupyter cannot show is rewritten: an exercise fence becomes a heading
  ("Exercise 3.1"), an admonition a bold title, ``{glue:text}`` the value the book computed,
  ``{doc}``/``{ref}`` links to the page, ``{eq}``/``{cite}`` plain text;
* outputs are cleared.

Stub cells keep the ``id`` of the solution cell they replace, and the check cells that test them
are marked in the cell metadata (``gptlib.stubs``; ``gptlib.checks``, with ``gptlib.checker``
true when a :mod:`gptlib.exercises` checker reports on them, false for a cell of asserts that
calls them), so tests can paste the book's solutions back and run the checks. The notebooks keep
the folder depth of ``chapters/``, so relative paths (``../../checkpoints``) still resolve.

Usage::

    python tools/student.py [--out student] [NOTEBOOK ...]   # default: every chapter notebook
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"

SOLUTION_TAG = "solution"
FENCE = re.compile(r"^(`{3,}|:{3,})\{([\w:-]+)\}[ \t]*(.*)$")  # ```{name} argument
OPTION = re.compile(r"^:([\w-]+):[ \t]*(.*)$")  # :label: ex-3-1
ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")  # {ref}`sec-3-shift`
LABEL_LINE = re.compile(r"^\(([\w-]+)\)=\s*$")  # (sec-3-shift)=
TITLE = re.compile(r"\*\*(.+?)\*\*")  # **Inputs and targets.** opens an exercise
FUNCTIONS = ast.FunctionDef | ast.AsyncFunctionDef
EQUATION = re.compile(r"\$\$\s*\(([\w-]+)\)")  # $$ ... $$ (eq-3-batch)


# ---------------------------------------------------------------------------------------------
# Stubs


def exercise_number(label: str) -> str:
    """The exercise number in a label: the digits, joined by dots.

    >>> exercise_number("ex-3-1"), exercise_number("ex-5-5-2"), exercise_number("ex-4-2-1-rope")
    ('3.1', '5.5.2', '4.2.1')
    """
    return ".".join(re.findall(r"\d+", label))


def stub_source(source: str, exercise: str = "the exercise above") -> str | None:
    """A solution cell as a stub: its imports and functions, each raising NotImplementedError.

    Returns None when the cell defines no function (it is then removed, not stubbed).

    >>> print(stub_source('''import math
    ... def area(r):
    ...     "The area of a disc of radius r."
    ...     return math.pi * r * r
    ... print(area(2.0))'''))
    import math
    <BLANKLINE>
    def area(r):
        \"\"\"The area of a disc of radius r.\"\"\"
        raise NotImplementedError
    >>> stub_source("x = 1 + 1") is None
    True
    """
    tree = ast.parse(_python(source))
    todo = f"Your answer to {exercise}: replace the `raise` below with your code."
    parts: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            parts.append(ast.get_source_segment(source, node) or ast.unparse(node))
        elif isinstance(node, FUNCTIONS | ast.ClassDef):
            parts.append(ast.unparse(ast.fix_missing_locations(_stub(node, todo))))
    if not any(isinstance(n, FUNCTIONS | ast.ClassDef) for n in tree.body):
        return None
    return "\n\n".join(parts)


def _stub(node: ast.AST, todo: str) -> ast.AST:
    """A function with its body replaced by its docstring and ``raise NotImplementedError``; a
    class with its docstring and its methods stubbed (attributes and other statements go)."""
    stub = copy.deepcopy(node)
    doc = ast.get_docstring(node)
    if isinstance(node, ast.ClassDef):
        methods = [_stub(n, todo) for n in node.body if isinstance(n, FUNCTIONS)]
        stub.body = [ast.Expr(ast.Constant(doc or todo))] + methods
        return stub
    stub.body = [
        ast.Expr(ast.Constant(doc or todo)),
        ast.Raise(exc=ast.Name("NotImplementedError", ast.Load()), cause=None),
    ]
    return stub


def solution_functions(source: str) -> str:
    """The book's answer in a solution cell, as written: its imports, its functions and classes,
    and the top-level constants they read; the worked example that calls them is left out.

    >>> print(solution_functions("import math\\nK = 2\\ndef f(x):\\n    return K * x\\nf(1)"))
    import math
    <BLANKLINE>
    K = 2
    <BLANKLINE>
    def f(x):
        return K * x
    """
    tree = ast.parse(_python(source))
    defs = [n for n in tree.body if isinstance(n, FUNCTIONS | ast.ClassDef)]
    read = set()  # the free names of the functions: read inside, bound outside
    for d in defs:
        nodes = list(ast.walk(d))
        bound = {n.arg for n in nodes if isinstance(n, ast.arg)} | {
            n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        read |= {n.id for n in nodes if isinstance(n, ast.Name)} - bound

    def constant(node: ast.AST) -> bool:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        return isinstance(node, ast.Assign | ast.AnnAssign) and any(
            isinstance(t, ast.Name) and t.id in read for t in targets
        )

    keep = ast.Import | ast.ImportFrom | FUNCTIONS | ast.ClassDef
    return "\n\n".join(
        ast.get_source_segment(source, n) or ast.unparse(n)
        for n in tree.body
        if isinstance(n, keep) or constant(n)
    )


def defined_functions(source: str) -> list[str]:
    """The names of the functions and classes a cell defines at its top level."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, FUNCTIONS | ast.ClassDef)]


def checker_calls(source: str, names: Iterable[str]) -> list[ast.Call]:
    """Calls ``check...(name, ...)`` in ``source`` whose first argument is one of ``names``.

    >>> [ast.unparse(c) for c in checker_calls("ok = d.check_softmax(my_softmax)", ["my_softmax"])]
    ['d.check_softmax(my_softmax)']
    """
    names = set(names)
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if fname.startswith("check") and isinstance(first, ast.Name) and first.id in names:
            calls.append(node)
    return calls


def _python(source: str) -> str:
    """A cell's code without IPython magics and shell lines, which `ast` cannot parse."""
    return "\n".join("" if x.lstrip()[:1] in "%!" else x for x in source.splitlines())


def stub_calls(source: str, names: Iterable[str]) -> set[str]:
    """The ``names`` that ``source`` calls directly, e.g. ``result = continuation_counts(words)``.

    >>> sorted(stub_calls("r = f(1)\\nprint(g)\\n%time f(2)", ["f", "g"]))
    ['f']
    """
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return set()
    return {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in set(names)
    }


# ---------------------------------------------------------------------------------------------
# MyST markup -> plain Markdown


def glue_values(nb: dict) -> dict[str, str]:
    """The text of every ``glue(name, value)`` output stored in an executed notebook."""
    values = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            scrapbook = out.get("metadata", {}).get("scrapbook", {})
            name, prefix = scrapbook.get("name"), scrapbook.get("mime_prefix", "")
            data = out.get("data", {})
            text = data.get(prefix + "text/plain", data.get("text/plain"))
            if name and text is not None:
                text = "".join(text) if isinstance(text, list) else text
                values[name] = text[1:-1] if text[:1] == text[-1:] and text[:1] in "'\"" else text
    return values


def label_index(root: Path = CHAPTERS) -> dict[str, tuple[Path, str]]:
    """Every ``(label)=`` target and exercise label in the chapters: label -> (page, title)."""
    index: dict[str, tuple[Path, str]] = {}
    for page in chapter_notebooks(root):
        nb = json.loads(page.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            lines = "".join(cell["source"]).splitlines()
            for i, line in enumerate(lines):
                m = LABEL_LINE.match(line)
                if m:
                    heading = next((x for x in lines[i + 1 :] if x.strip()), "")
                    index[m.group(1)] = (page, heading.lstrip("#").strip() or m.group(1))
                for eq in EQUATION.finditer(line):
                    index[eq.group(1)] = (page, f"({eq.group(1)})")
                m = OPTION.match(line)
                if m and m.group(1) == "label":
                    label = m.group(2).strip()
                    exercise = label.startswith("ex-")
                    title = f"Exercise {exercise_number(label)}" if exercise else f"({label})"
                    index.setdefault(label, (page, title))
    return index


def _link(target: Path, page: Path) -> str:
    """The relative link from ``page`` to ``target`` (both under chapters/, so under student/)."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


def render_roles(text: str, page: Path, glue: dict[str, str], labels: dict) -> str:
    """Rewrite MyST roles as plain Markdown (see the module docstring)."""

    def replace(m: re.Match) -> str:
        role, content = m.group(1), m.group(2)
        shown, _, target = content.partition("<")
        target = target.rstrip(">").strip() if target else content
        shown = shown.strip() if _ else None
        if role in ("glue:text", "glue", "glue:md"):
            return glue.get(target.split(":")[0], f"`{target}`")
        if role == "doc":
            path = (page.parent / target).with_suffix(".ipynb")
            return f"[{shown or path.stem}]({_link(path, page)})"
        if role in ("ref", "numref"):
            if target in labels:
                where, title = labels[target]
                link = _link(where, page) if where != page else ""
                return f"[{shown or title}]({link})" if link else (shown or title)
            return shown or target
        if role == "eq":  # the page's prose already says "equation"
            if target in labels and labels[target][0] != page:
                return f"[({target})]({_link(labels[target][0], page)})"
            return f"({target})"
        if role == "cite":
            return "[" + ", ".join(k.strip() for k in target.split(",")) + "]"
        if role == "math":
            return f"${content}$"
        return shown or target

    return ROLE.sub(replace, text)


def render_markdown(text: str, page: Path, glue: dict[str, str], labels: dict) -> str:
    """A markdown cell for plain Jupyter: exercise fences -> headings, other directives -> text."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if not LABEL_LINE.match(lines[i]):  # (label)= targets mean nothing in Jupyter
                out.append(lines[i])
            i += 1
            continue
        marker, name, argument = m.groups()
        body, options = [], {}
        i += 1
        while i < len(lines) and lines[i].strip() != marker:
            opt = OPTION.match(lines[i])
            if opt and not body:
                options[opt.group(1)] = opt.group(2)
            else:
                body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if name == "exercise-start":
            label = options.get("label", "")
            number = exercise_number(label)
            out.append(f"### Exercise {number}" if number else "### Exercise")
        elif name in ("exercise-end", "solution-start", "solution-end"):
            pass
        elif name == "math":
            out += ["$$", *body, "$$"]
        elif name in ("code-block", "code"):
            out += [f"```{argument}", *body, "```"]
        elif name == "literalinclude":
            shown = Path(argument).as_posix().lstrip("./")
            what = f"`{options['pyobject']}` in " if "pyobject" in options else ""
            out.append(f"(The book shows {what}`{shown}` here: open that file of the repository.)")
        else:  # admonition, note, figure, ...: a bold title, then the body (fences may nest)
            title = argument or name.capitalize()
            out += [f"**{title}**", "", render_markdown("\n".join(body), page, glue, labels)]
    return render_roles("\n".join(out), page, glue, labels).strip() + "\n"


# ---------------------------------------------------------------------------------------------
# Whole notebooks


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _new_cell(cell: dict, source: str, metadata: dict | None = None) -> dict:
    new = {
        "cell_type": cell["cell_type"],
        "metadata": metadata if metadata is not None else {},
        "source": source,
    }
    if "id" in cell:
        new["id"] = cell["id"]
    if cell["cell_type"] == "code":
        new |= {"execution_count": None, "outputs": []}
    return new


def to_student(nb: dict, page: Path, labels: dict | None = None) -> dict:
    """The student version of one executed source notebook (``page`` is its path)."""
    labels = label_index() if labels is None else labels
    glue = glue_values(nb)
    cells: list[dict] = []
    exercise, title = "the exercise above", ""
    stubbed: list[str] = []  # functions stubbed so far: checks of these are marked
    local = {  # check functions the page defines itself (they assert; gptlib's report)
        name
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for name in defined_functions(_python("".join(c["source"])))
    }
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and "{exercise-start}" in source:
            m = re.search(r":label:\s*(\S+)", source)
            exercise = f"exercise {exercise_number(m.group(1))}" if m else "the exercise above"
            t = TITLE.search(source)
            title = t.group(1).rstrip(".").strip() if t else ""
        if SOLUTION_TAG in _tags(cell):
            if cell["cell_type"] != "code":
                continue
            named = f"{exercise} ({title})" if title else exercise
            stub = stub_source(source, named)
            if stub is None:
                continue
            names = defined_functions(source)
            stubbed += names
            meta = {"tags": ["stub"], "gptlib": {"stubs": names, "exercise": exercise}}
            cells.append(_new_cell(cell, stub, meta))
            continue
        if cell["cell_type"] == "markdown":
            cells.append(_new_cell(cell, render_markdown(source, page, glue, labels)))
            continue
        if cell["cell_type"] != "code":
            cells.append(_new_cell(cell, source, cell.get("metadata", {})))
            continue
        meta = {k: v for k, v in cell.get("metadata", {}).items() if k == "tags"}
        by_checker = {
            c.args[0].id
            for c in checker_calls(source, stubbed)
            if getattr(c.func, "id", None) not in local
        }
        called = stub_calls(source, stubbed)  # a hand-written check (asserts) calls the stub
        if by_checker or called:
            meta["gptlib"] = {"checks": sorted(by_checker | called), "checker": bool(by_checker)}
        cells.append(_new_cell(cell, source, meta))
    student = {k: v for k, v in nb.items() if k != "cells"}
    student["cells"] = cells
    return student


def write_student(pages: Iterable[Path], out: Path) -> list[Path]:
    """Write the student version of each page under ``out`` (same path below ``chapters/``)."""
    labels = label_index()
    written = []
    for page in pages:
        page = page.resolve()
        nb = json.loads(page.read_text(encoding="utf-8"))
        target = out / page.relative_to(CHAPTERS)
        target.parent.mkdir(parents=True, exist_ok=True)
        student = to_student(nb, page, labels)
        target.write_text(json.dumps(student, indent=1, ensure_ascii=False) + "\n", "utf-8")
        written.append(target)
    return written


def chapter_notebooks(root: Path = CHAPTERS) -> list[Path]:
    """Every chapter notebook, sorted (scratch files named ``_*`` are not pages)."""
    return sorted(
        p
        for p in root.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter page")
    parser.add_argument("--out", type=Path, default=ROOT / "student", help="default: student/")
    args = parser.parse_args(argv)
    for path in write_student(args.notebooks or chapter_notebooks(), args.out.resolve()):
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
