"""The chapters' code is written once: no notebook repeats a function or class of gptlib/,
experiments/, another notebook, or itself.

STYLE.md: "The library is the single source of truth ... Never copy library code into a chapter".
A duplicate-code scan of the ``.py`` files cannot see into notebooks, so this test reads every
code cell with ``ast`` (IPython magics commented out by ``tools/notebook_code.py``) and compares
each definition's *normalised* syntax tree with every other one:

* the defined name and the docstring do not count (a copy renamed, or re-documented, is a copy);
* argument names do not count either: parameters are renamed by position (``arg0``, ``arg1``,
  ...) in the signature and wherever the body uses them, so ``def bound(diff)`` and
  ``def bound(d)`` with the same body match; every other name counts (locals, called functions,
  attributes), as do defaults, annotations and decorators;
* definitions of fewer than ``MIN_NODES`` syntax-tree nodes (``def forward(self, x): return
  self.net(x)``) are too small to be worth sharing and are not compared.

A chapter that builds a component by hand to teach it writes it its own way and then checks it
against gptlib; only a copy fails here. Exercise answers (cells tagged ``solution``) are left
out: an exercise may ask the reader to write what another page teaches. Pairs inside gptlib/ and
experiments/ are left to the ``duplicates`` scan (``make duplicates``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIN_NODES = 25
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)

_spec = importlib.util.spec_from_file_location("notebook_code", ROOT / "tools" / "notebook_code.py")
notebook_code = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook_code)


@dataclass(frozen=True)
class Definition:
    """A function or class: where it is defined, and its normalised syntax tree."""

    place: str  # "chapters/04-math/02-attention.ipynb cell 12, line 3: def softmax"
    key: str
    in_notebook: bool
    inside: tuple[str, str] | None = None  # (key, place) of the definition around it, if any


class _RenameArguments(ast.NodeTransformer):
    """Replace the given names by their position: ``{"diff": "arg0"}``."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.copy_location(ast.Name(self.names.get(node.id, node.id), node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node = self.generic_visit(node)
        node.arg = self.names.get(node.arg, node.arg)
        return node


def normalise(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    """The definition's syntax tree as text, without its name, docstring or argument names."""
    tree = ast.parse(ast.unparse(node)).body[0]  # a private copy, without positions
    tree.name = "_"
    first = tree.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        tree.body = tree.body[1:] or [ast.Pass()]
    if not isinstance(tree, ast.ClassDef):
        args = tree.args
        every = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
        tree = _RenameArguments({a.arg: f"arg{i}" for i, a in enumerate(every) if a}).visit(tree)
    return ast.dump(tree, annotate_fields=False)


def definitions(source: str, where: str, in_notebook: bool) -> list[Definition]:
    """Every function and class in ``source`` (nested ones too) of at least ``MIN_NODES`` nodes.

    Raises:
        SyntaxError: the source is not Python; the message names ``where``.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise SyntaxError(f"{where}: {err}") from None
    found = []

    def visit(node: ast.AST, inside: tuple[str, str] | None) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, DEFINITIONS):
                visit(child, inside)
                continue
            kind = "class" if isinstance(child, ast.ClassDef) else "def"
            here = (normalise(child), f"{where}, line {child.lineno}: {kind} {child.name}")
            if sum(1 for _ in ast.walk(child)) >= MIN_NODES:
                found.append(Definition(here[1], here[0], in_notebook, inside))
            visit(child, here)

    visit(tree, None)
    return found


def repeated(found: list[Definition]) -> list[tuple[Definition, Definition]]:
    """Pairs (copy, first place) of equal definitions where the copy or the first is in a
    notebook. Each copy is paired with the first place its tree was seen; the methods of a
    copied class are not listed again."""
    by_key: dict[str, list[Definition]] = defaultdict(list)
    for definition in found:
        by_key[definition.key].append(definition)

    def in_copies_of_one_definition(a: Definition, b: Definition) -> bool:
        return (
            a.inside is not None
            and b.inside is not None
            and a.inside[0] == b.inside[0]
            and a.inside[1] != b.inside[1]
        )

    pairs = []
    for first, *copies in by_key.values():
        pairs += [
            (copy, first)
            for copy in copies
            if (copy.in_notebook or first.in_notebook)
            and not in_copies_of_one_definition(copy, first)
        ]
    return pairs


def solution_cells(path: Path) -> set[int]:
    """Indices of cells tagged ``solution``: a reader's answer to an exercise that asks them to
    write a function may coincide with the page that teaches it, so answers are not compared."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return {
        i for i, cell in enumerate(cells) if "solution" in cell.get("metadata", {}).get("tags", [])
    }


def all_definitions() -> list[Definition]:
    """Library and experiments first (the place a definition belongs), then the notebooks."""
    found = []
    for folder in ("gptlib", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            found += definitions(path.read_text(encoding="utf-8"), where, in_notebook=False)
    for path in notebook_code.notebooks(ROOT):
        answers = solution_cells(path)
        for index, source in notebook_code.code_cells(path):
            if index in answers:
                continue
            where = f"{path.relative_to(ROOT)} cell {index}"
            found += definitions(source, where, in_notebook=True)
    return found


def test_no_notebook_repeats_a_definition():
    pairs = repeated(all_definitions())
    if pairs:
        pytest.fail(
            "definitions written twice (import the first one instead):\n"
            + "\n".join(f"  {copy.place}\n    = {first.place}" for copy, first in pairs),
            pytrace=False,
        )


# ---- the detector itself, on small synthetic sources -------------------------------------------

LIBRARY = '''
def layer_norm(x, gamma, beta, eps=1e-5):
    """LayerNorm over the last dimension."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return gamma * (x - mu) / (var + eps).sqrt() + beta
'''

RENAMED_COPY = """
import torch

def my_norm(v, g, b, eps=1e-5):
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    return g * (v - mu) / (var + eps).sqrt() + b
"""

OWN_VERSION = """
def layer_norm(x, gamma, beta, eps=1e-5):  # the variance another way: a different tree
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return gamma * (x - mu) / (var + eps).sqrt() + beta
"""

TWICE = """
class Residual:
    def __init__(self, block, scale):
        self.block, self.scale = block, scale
        self.calls = [block, scale, block]

class Skip:
    def __init__(self, block, scale):
        self.block, self.scale = block, scale
        self.calls = [block, scale, block]

def tiny(x):
    return x
"""


def places(pairs):
    return sorted((copy.place, first.place) for copy, first in pairs)


def test_detector_finds_a_renamed_copy_of_library_code():
    found = definitions(LIBRARY, "lib.py", in_notebook=False)
    found += definitions(RENAMED_COPY, "nb.ipynb cell 3", in_notebook=True)
    assert places(repeated(found)) == [
        ("nb.ipynb cell 3, line 4: def my_norm", "lib.py, line 2: def layer_norm")
    ]


def test_detector_lets_an_own_version_pass():
    found = definitions(LIBRARY, "lib.py", in_notebook=False)
    found += definitions(OWN_VERSION, "nb.ipynb cell 5", in_notebook=True)
    assert repeated(found) == []


def test_detector_finds_classes_twice_in_one_notebook_and_skips_tiny_functions():
    pairs = repeated(definitions(TWICE, "nb.ipynb cell 1", in_notebook=True))
    assert places(pairs) == [
        ("nb.ipynb cell 1, line 7: class Skip", "nb.ipynb cell 1, line 2: class Residual")
    ]
    tiny = [d for d in definitions(TWICE * 2, "x", True) if "tiny" in d.place]
    assert tiny == []  # `def tiny(x): return x` is below MIN_NODES


def test_detector_finds_a_method_repeated_in_one_class():
    one_class = TWICE.split("class Skip")[0] + (
        "    def reset(self, block, scale):\n"
        "        self.block, self.scale = block, scale\n"
        "        self.calls = [block, scale, block]\n"
    )
    pairs = repeated(definitions(one_class, "nb", in_notebook=True))
    assert places(pairs) == [("nb, line 7: def reset", "nb, line 3: def __init__")]


def test_detector_leaves_pairs_outside_notebooks_to_the_duplicates_scan():
    found = definitions(LIBRARY, "a.py", False) + definitions(LIBRARY, "b.py", False)
    assert repeated(found) == []


def test_local_names_and_defaults_still_count():
    other_local = RENAMED_COPY.replace("var", "variance")
    other_default = RENAMED_COPY.replace("eps=1e-5", "eps=1e-6")
    for variant in (other_local, other_default):
        found = definitions(LIBRARY, "lib.py", False) + definitions(variant, "nb", True)
        assert repeated(found) == [], variant


# ---- the export tool ------------------------------------------------------------------------


def test_python_source_comments_out_magics_and_shell_escapes():
    cell = "%config InlineBackend.figure_format = 'retina'\nimport math\n!pip list\nx = 10 % 3"
    assert notebook_code.python_source(cell) == (
        "# [magic] %config InlineBackend.figure_format = 'retina'\nimport math\n"
        "# [magic] !pip list\nx = 10 % 3"
    )
    assert notebook_code.python_source("%%time\nx = 1") == "# [magic] %%time\nx = 1"
    assert notebook_code.python_source("%%bash\necho hi") == "# [magic] %%bash\n# [magic] echo hi"


def test_export_writes_one_file_per_notebook(tmp_path):
    """A fake repository with one notebook: a markdown cell, a magic, two code cells."""
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title"]},
        {
            "cell_type": "code",
            "metadata": {},
            "source": ["%config X = 1\n", "import math"],
            "outputs": [],
            "execution_count": 1,
        },
        {
            "cell_type": "code",
            "metadata": {},
            "source": "def f():\n    return math.pi",
            "outputs": [],
            "execution_count": 2,
        },
    ]
    page = tmp_path / "repo" / "chapters" / "01-intro" / "01-page.ipynb"
    page.parent.mkdir(parents=True)
    page.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert notebook_code.main([str(out), "--root", str(tmp_path / "repo")]) == 0
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.py")] == [
        "chapters/01-intro/01-page.py"
    ]
    text = (out / "chapters" / "01-intro" / "01-page.py").read_text(encoding="utf-8")
    assert text == (
        "# The code cells of chapters/01-intro/01-page.ipynb,\n"
        "# exported by tools/notebook_code.py: edit the notebook, not this file.\n\n"
        "# %% cell 1\n# [magic] %config X = 1\nimport math\n\n"
        "# %% cell 2\ndef f():\n    return math.pi\n"
    )
    ast.parse(text)


def test_export_without_notebooks_fails(tmp_path, capsys):
    assert notebook_code.main([str(tmp_path / "out"), "--root", str(tmp_path)]) == 1
    assert "no notebooks" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path", notebook_code.notebooks(ROOT), ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_exported_notebook_is_python(path):
    ast.parse(notebook_code.notebook_as_python(path, ROOT))
