"""Structure of the committed chapter notebooks (fast: nothing is executed here).

The book promises that what a page shows is what running it gives. nbval re-executes the
notebooks and compares outputs; these tests check what nbval cannot see:

* every code cell was executed, in order, in one fresh kernel run: execution counts 1, 2, ..., n
  with no gap and no unexecuted cell (so the stored outputs come from a top-to-bottom run);
* no stored output is an error;
* no output leaks a path of the machine that executed it (/root/, /tmp/, /work/, /home/<user>/);
* the kernelspec is the plain "python3" one that JupyterLab, Colab and nbval all find;
* the files are stored as nbformat 4 (what Jupyter Book, nbval and Colab read);
* no output is a widget view and no metadata holds widget state: explorers
  (``gptlib.explorers``) are executed with ``GPTLIB_STATIC_EXPLORERS=1`` and store plain HTML.
  A stored widget would show as a dead "loading widget" box, and myst-nb would load require.js
  and the widget manager from a CDN for it, which the offline site must not do.

No test here skips itself: with no notebook to check, every per-notebook test fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("**/*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
MACHINE_PATH = re.compile(r"(/root/|/tmp/|/work/|/home/[^/\s]+/|[A-Z]:\\+Users\\+)")


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.fixture(params=NOTEBOOKS or [None], ids=_ids(NOTEBOOKS) or ["no notebooks"])
def notebook(request):
    if request.param is None:  # an empty parameter list would skip these tests without a word
        pytest.fail("no notebooks under chapters/")
    return request.param, nbformat.read(request.param, as_version=4)


def _output_text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join([output.get("ename", ""), output.get("evalue", "")])
    data = output.get("data", {})
    texts = [v for k, v in data.items() if isinstance(v, str) and not k.startswith("image/")]
    return "\n".join(texts)


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks under chapters/"


def test_valid_nbformat(notebook):
    """Valid against the schema, and stored as version 4: read the file's own number, since
    ``nbformat.read(..., as_version=4)`` converts older files and would always say 4."""
    path, nb = notebook
    nbformat.validate(nb)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert (stored["nbformat"], stored["nbformat_minor"] >= 4) == (4, True), (
        f"stored as nbformat {stored['nbformat']}.{stored['nbformat_minor']}"
    )


def test_kernelspec(notebook):
    path, nb = notebook
    spec = nb.metadata.get("kernelspec", {})
    assert spec.get("name") == "python3", f"kernelspec name is {spec.get('name')!r}"
    assert spec.get("display_name") == "Python 3"
    assert spec.get("language", "python") == "python"


def test_executed_in_order(notebook):
    path, nb = notebook
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    unexecuted = [i for i, c in enumerate(counts) if c is None]
    assert not unexecuted, f"code cells never executed (cell positions {unexecuted})"
    assert counts == list(range(1, len(counts) + 1)), (
        f"execution counts {counts} are not 1..{len(counts)}: re-run the notebook top to "
        "bottom in a fresh kernel (`make execute`)"
    )


def test_no_error_outputs(notebook):
    path, nb = notebook
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.outputs
        if o.get("output_type") == "error"
    ]
    assert not errors, f"stored error outputs: {errors}"


def test_no_machine_paths(notebook):
    path, nb = notebook
    leaks = [
        (i, m.group(0))
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.outputs
        for m in [MACHINE_PATH.search(_output_text(o))]
        if m
    ]
    assert not leaks, f"outputs show machine paths (cell, match): {leaks}"


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def widget_leaks(nb) -> list[str]:
    """Where a notebook stores widgets: widget-view outputs, widget state in any metadata."""
    found = []
    if "widgets" in nb.metadata or WIDGET_STATE in json.dumps(dict(nb.metadata)):
        found.append("notebook metadata holds widget state")
    for i, cell in enumerate(nb.cells):
        if "widgets" in cell.get("metadata", {}):
            found.append(f"cell {i} metadata holds widget state")
        for o in cell.get("outputs", []):
            if WIDGET_VIEW in o.get("data", {}):
                found.append(f"cell {i} stores a widget view")
    return found


def test_no_widget_outputs_or_state(notebook):
    path, nb = notebook
    leaks = widget_leaks(nb)
    assert not leaks, (
        f"{leaks}: re-execute with GPTLIB_STATIC_EXPLORERS=1 (`make execute` sets it) so the "
        "explorers store plain HTML"
    )


def test_widget_leaks_are_found():
    """The check above can fail: a notebook with a widget view and widget state is flagged."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("w")
    cell.outputs = [nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "x"}})]
    nb.cells = [cell, nbformat.v4.new_code_cell("x")]
    assert widget_leaks(nb) == ["cell 0 stores a widget view"]
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": {}}}
    assert len(widget_leaks(nb)) == 2


@pytest.mark.parametrize(
    "text, leaked",
    [
        ("saved to /root/.cache/gptlib", True),
        ("cd /tmp/xyz", True),
        ("/work/main/x.py", True),
        ("/home/alice/book", True),
        ("C:\\Users\\bob\\book", True),
        ("checkpoints/book-model/model.safetensors", False),
        ("~/.cache/gptlib", False),
        ("a ratio 3/4 of /tmp", False),
    ],
)
def test_machine_path_pattern(text, leaked):
    """The pattern flags absolute paths of a machine, not relative paths or ordinary slashes."""
    assert bool(MACHINE_PATH.search(text)) is leaked
