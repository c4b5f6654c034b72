"""Export the code cells of the book's notebooks to plain Python files, one file per notebook.

Tools that read source files, such as a linter or the ``duplicates`` scan (``make duplicates``),
skip ``.ipynb`` files, so the code of the chapters would escape them. This writes
``OUTDIR/chapters/<part>/<page>.py`` for every ``chapters/*/*.ipynb`` (sorted, which is also the
order of ``_toc.yml``), holding the notebook's code cells in order:

* a header comment names the notebook, and ``# %% cell N`` starts each code cell (N counts all
  cells, markdown included, from 0, as Jupyter's cell list does);
* IPython line magics and shell escapes (``%config ...``, ``!pip ...``) become comments, marked
  ``# [magic]`` so that they cannot be mistaken for a cell separator;
* a cell magic keeps its body as code when the body is Python (``%%time``, ``%%timeit``,
  ``%%capture``); any other (``%%bash``, ``%%writefile``) comments out the whole cell.

Usage::

    python tools/notebook_code.py OUTDIR [--root REPOSITORY]

Only the standard library is used; nothing is executed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON_CELL_MAGICS = ("time", "timeit", "capture")  # cell magics whose body is Python


def notebooks(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks under ``root``, sorted (checkpoint copies left out)."""
    found = sorted((root / "chapters").glob("*/*.ipynb"))
    return [path for path in found if ".ipynb_checkpoints" not in path.parts]


def _comment(line: str) -> str:
    return f"# [magic] {line}"


def python_source(cell: str) -> str:
    """A code cell's source as plain Python: magics and shell escapes commented out.

    >>> print(python_source("%config X = 1\\nimport math\\n  !ls"))
    # [magic] %config X = 1
    import math
    # [magic]   !ls
    >>> print(python_source("%%bash\\necho hi"))
    # [magic] %%bash
    # [magic] echo hi
    """
    lines = cell.splitlines()
    if lines and lines[0].startswith("%%"):
        name = (lines[0][2:].split() or [""])[0]
        if name not in PYTHON_CELL_MAGICS:  # the body is not Python: the whole cell is a comment
            return "\n".join(map(_comment, lines))
    return "\n".join(
        _comment(line) if line.lstrip().startswith(("%", "!")) else line for line in lines
    )


def code_cells(path: Path) -> list[tuple[int, str]]:
    """``(index among all cells, Python source)`` for each code cell of the notebook ``path``."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [
        (i, python_source("".join(cell["source"])))  # a str, or a list of lines: both join
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code"
    ]


def notebook_as_python(path: Path, root: Path = ROOT) -> str:
    """The whole exported file for one notebook."""
    parts = [
        f"# The code cells of {path.relative_to(root).as_posix()},\n"
        "# exported by tools/notebook_code.py: edit the notebook, not this file."
    ]
    for index, source in code_cells(path):
        parts.append(f"\n\n# %% cell {index}\n{source}")
    return "".join(parts) + "\n"


def export(outdir: Path, root: Path = ROOT) -> list[Path]:
    """Write one ``.py`` file per chapter notebook under ``outdir``; return their paths."""
    written = []
    for path in notebooks(root):
        target = outdir / path.relative_to(root).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(notebook_as_python(path, root), encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="folder to write the .py files into")
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the repository whose chapters/ to read (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    written = export(args.outdir, args.root.resolve())
    if not written:
        print(f"no notebooks under {args.root / 'chapters'}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files under {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
