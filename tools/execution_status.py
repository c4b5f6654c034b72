"""When each chapter notebook was last executed, how long it took, and what it stored.

Every code cell that Jupyter runs records four timestamps in its metadata
(``metadata.execution``: ``iopub.status.busy``, ``iopub.execute_input``, ``shell.execute_reply``,
``iopub.status.idle``). From them this module reads, per notebook, the wall time of its last
top-to-bottom run (first cell busy to last cell idle), the date of that run and its slowest
cell, and from the outputs, how many cells produced output and whether any stored an error.

The appendix page ``chapters/09-appendix/09-execution-status.ipynb`` prints the table, so the
book reports its own execution record instead of a typed one. That page reads the other
notebooks, so it is executed last (its file name sorts last, as ``make execute`` runs them), and
strict nbval fails when any notebook was re-executed after it.

Usage::

    python tools/execution_status.py          # prints the table for the repository

Only the standard library is used; nothing is executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class NotebookStatus:
    """The record of one notebook's last execution."""

    path: str  # relative to the repository root
    code_cells: int
    cells_with_output: int
    errors: int  # stored outputs of type "error"
    started: datetime | None  # first cell busy; None if no cell carries timestamps
    seconds: float | None  # first cell busy to last cell idle
    slowest_cell: int | None  # index among all cells, markdown included
    slowest_seconds: float | None


def _stamp(text: str) -> datetime:
    # "2026-11-29T19:01:12.566664Z": fromisoformat reads the "Z" since Python 3.11
    return datetime.fromisoformat(text)


def notebook_status(path: Path, root: Path = ROOT) -> NotebookStatus:
    """Read one notebook's execution record from its stored metadata and outputs.

    >>> import json, tempfile
    >>> cell = {"cell_type": "code", "source": "1", "outputs": [], "execution_count": 1,
    ...         "metadata": {"execution": {"iopub.status.busy": "2026-01-01T00:00:00Z",
    ...                                    "iopub.status.idle": "2026-01-01T00:00:02.5Z"}}}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "a.ipynb"
    ...     _ = p.write_text(json.dumps({"cells": [cell]}))
    ...     s = notebook_status(p, Path(d))
    >>> (s.path, s.code_cells, s.seconds, s.slowest_cell)
    ('a.ipynb', 1, 2.5, 0)
    """
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    spans = []  # (cell index, busy, idle)
    for i, cell in code:
        stamps = cell.get("metadata", {}).get("execution", {})
        busy = stamps.get("iopub.status.busy") or stamps.get("iopub.execute_input")
        idle = stamps.get("iopub.status.idle") or stamps.get("shell.execute_reply")
        if busy and idle:
            spans.append((i, _stamp(busy), _stamp(idle)))
    errors = sum(o.get("output_type") == "error" for _, c in code for o in c.get("outputs", []))
    with_output = sum(bool(c.get("outputs")) for _, c in code)
    if not spans:
        return NotebookStatus(
            str(path.relative_to(root)), len(code), with_output, errors, None, None, None, None
        )
    start = min(busy for _, busy, _ in spans)
    end = max(idle for _, _, idle in spans)
    slow_i, slow_busy, slow_idle = max(spans, key=lambda s: s[2] - s[1])
    return NotebookStatus(
        path=str(path.relative_to(root)),
        code_cells=len(code),
        cells_with_output=with_output,
        errors=errors,
        started=start,
        seconds=(end - start).total_seconds(),
        slowest_cell=slow_i,
        slowest_seconds=(slow_idle - slow_busy).total_seconds(),
    )


def book_status(root: Path = ROOT, skip: tuple[str, ...] = ()) -> list[NotebookStatus]:
    """The status of every chapter notebook under ``root``, sorted by path.

    Args:
        root: the repository root.
        skip: file names to leave out (the status page leaves itself out).
    """
    paths = sorted((root / "chapters").glob("*/*.ipynb"))
    paths = [p for p in paths if ".ipynb_checkpoints" not in p.parts and p.name not in skip]
    return [notebook_status(p, root) for p in paths]


def main() -> None:
    for s in book_status():
        took = "never" if s.seconds is None else f"{s.seconds:8.1f}"
        print(f"{s.path:70s} {took:>8s} {s.code_cells:4d} {s.errors:2d}")


if __name__ == "__main__":
    main()
