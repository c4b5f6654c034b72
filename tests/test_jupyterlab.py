"""The notebooks as a reader sees them in JupyterLab, with the jupyterlab-myst extension.

Running the notebooks locally is one of the book's uses, so this test opens two representative
notebooks in a real JupyterLab (``.venv/bin/jupyter-lab`` on 127.0.0.1, a free port, a random
token) and drives Debian's headless Chromium with Playwright, as ``tests/test_site.py`` does:

* ``chapters/04-math/02-attention.ipynb``: equations, equation labels, {eq}, {ref}, {cite}, {doc};
* ``chapters/03-algorithm/08-exercises.ipynb``: sphinx-exercise gated exercises and solutions.

For each notebook it waits until every markdown cell is rendered by MyST, then checks that

* no raw MyST markup is visible in the rendered cells (roles such as ``{eq}``, directive fences
  such as ``{exercise-start}``, ``:label:`` options, ``(target)=`` lines); inline code is left
  out, since a role written in backticks is meant to be read literally;
* every formula was typeset by KaTeX without an error (an unknown macro shows as an error);
* no request left 127.0.0.1, the notebook file on disk was not changed, and no
  ``.ipynb_checkpoints`` folder appeared next to it (checkpoints go to the temporary directory).

A screenshot of the top of each notebook and of its first exercise (when it has one) is saved
under ``_build/screenshots/`` next to the site's, with a ``jupyterlab__`` prefix.

JupyterLab runs with its settings, workspaces, runtime files and home in a temporary directory,
autosave off, news and update checks off, and cell windowing off (so every cell is rendered, not
only those on screen). The server and its kernels run in their own process group, which is
killed at the end, also when the test fails. Run with ``make test`` or
``.venv/bin/pytest -m book tests/test_jupyterlab.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"
JUPYTER_LAB = ROOT / ".venv" / "bin" / "jupyter-lab"
TIMEOUT_MS = 40_000
NOTEBOOKS = [
    "chapters/04-math/02-attention.ipynb",
    "chapters/03-algorithm/08-exercises.ipynb",
]

# JupyterLab user settings for the test: nothing is saved, nothing is fetched, all cells render.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# Raw MyST that a reader should never see in a rendered cell.
RAW_MYST = [
    re.compile(r"\{(eq|ref|numref|doc|cite|cite:[a-z]+|glue|glue:[a-z]+|term|download)\}"),
    re.compile(r"\{(exercise|solution)(-start|-end)?\}"),
    re.compile(r"\{(admonition|note|tip|warning|important|figure|mermaid|math|code-cell)\}"),
    re.compile(r"^\s*:(label|class|name|nonumber|width|align):", re.M),
    re.compile(r"^\s*\([\w:-]+\)=\s*$", re.M),
    re.compile(r"^\s*(```|:::)", re.M),
]

# In the page: the rendered MyST of each markdown cell, and what went wrong in it.
RENDERED = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    if (!panel) return [];
    const cells = [...panel.querySelectorAll('.jp-MarkdownCell')];
    return cells.map(cell => {
        const myst = cell.querySelector('.jp-Cell-inputArea > .myst');
        if (!myst) return null;
        const flagged = [...myst.querySelectorAll('[title]')].map(e => e.getAttribute('title'));
        // The text a reader sees, less inline code: `{eq}` in backticks is meant literally.
        const clone = myst.cloneNode(true);
        clone.querySelectorAll('code').forEach(c => { if (!c.closest('pre')) c.remove(); });
        clone.style.cssText = 'position:absolute; left:-20000px; width:1000px';
        document.body.appendChild(clone);
        const text = clone.innerText;
        clone.remove();
        return {
            text: text,
            katex: myst.querySelectorAll('.katex').length,
            mathErrors: [...myst.querySelectorAll('.katex-error')].map(e => e.textContent)
                .concat(flagged.filter(t => /control sequence|parse error|katex/i.test(t))),
        };
    });
}"""


# Scroll the first exercise into view; false when the notebook has none.
SCROLL_TO_EXERCISE = """() => {
    const cell = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .myst')]
        .find(e => /Exercise\\s+1\\b/.test(e.innerText));
    if (!cell) return false;
    cell.scrollIntoView({block: 'start'});
    return true;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        package, name = plugin.rsplit("/", 1)
        path = settings_dir / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1: yields (base URL, token); killed at the end."""
    if not JUPYTER_LAB.exists():
        pytest.fail(f"{JUPYTER_LAB} is missing (run `make setup`)")
    tmp = tmp_path_factory.mktemp("jupyterlab")
    _write_settings(tmp / "settings")
    token = secrets.token_hex(24)
    port = _free_port()
    env = dict(
        os.environ,
        HOME=str(tmp / "home"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
        MPLCONFIGDIR=str(tmp / "matplotlib"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    cmd = [
        str(JUPYTER_LAB),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        # Opening a notebook saves a checkpoint copy; an absolute folder keeps it out of the repo.
        f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = tmp / "jupyterlab.log"
    with open(log_path, "wb") as log:
        # Its own process group: the kernels it starts are killed with it.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while True:
            if proc.poll() is not None:
                pytest.fail("jupyter-lab exited:\n" + log_path.read_text()[-4000:])
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("jupyter-lab did not start:\n" + log_path.read_text()[-4000:])
                time.sleep(0.5)
        yield base, token
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=20)
                # The server is gone; its kernels may not be: the second round kills the group.
            except subprocess.TimeoutExpired:
                continue


def _markdown_cells(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(1 for c in nb.cells if c.cell_type == "markdown")


def _wait_rendered(page, expected: int) -> list[dict]:
    """Poll until all `expected` markdown cells are rendered and their text stopped changing."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    cells: list = []
    previous = None
    while time.monotonic() < deadline:
        cells = page.evaluate(RENDERED)
        if len(cells) == expected and all(c is not None for c in cells):
            if cells == previous:
                return cells
            previous = cells
        time.sleep(1.0)
    missing = [i for i, c in enumerate(cells) if c is None]
    pytest.fail(
        f"{len(cells)} markdown cells in the page, {expected} in the file; "
        f"not rendered in time: {missing}"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_renders(notebook, lab, browser):
    base, token = lab
    path = ROOT / notebook
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    checkpoints = path.parent / ".ipynb_checkpoints"
    had_checkpoints = checkpoints.exists()
    external: list[str] = []

    def route(r):
        if urlparse(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.route("**/*", route)
    try:
        # `reset`: an empty workspace, so only this notebook is open.
        page.goto(f"{base}/lab/tree/{notebook}?reset&token={token}", timeout=TIMEOUT_MS)
        page.wait_for_selector(".jp-Notebook .jp-MarkdownCell", timeout=TIMEOUT_MS)
        cells = _wait_rendered(page, _markdown_cells(path))
        shot = SHOTS / f"jupyterlab__{notebook[:-6].replace('/', '__')}.png"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        if page.evaluate(SCROLL_TO_EXERCISE):
            time.sleep(1.0)
            page.screenshot(path=str(shot.with_name(shot.stem + "__exercise.png")))
    finally:
        context.close()

    raw = [
        (i, m.group(0).strip(), c["text"][max(0, m.start() - 40) : m.end() + 40])
        for i, c in enumerate(cells)
        for pattern in RAW_MYST
        for m in pattern.finditer(c["text"])
    ]
    assert not raw, f"raw MyST visible in {notebook} (cell index, match, context): {raw[:10]}"
    assert sum(c["katex"] for c in cells) > 0, f"no formula typeset in {notebook}"
    math_errors = [i for i, c in enumerate(cells) if c["mathErrors"]]
    assert not math_errors, (
        f"formulas that KaTeX could not typeset in markdown cells {math_errors} of {notebook}: "
        f"{[t for i in math_errors for t in cells[i]['mathErrors']][:5]}"
    )
    assert not external, f"{len(external)} external request(s): {external[:10]}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{notebook} was modified"
    assert had_checkpoints or not checkpoints.exists(), f"JupyterLab wrote {checkpoints}"
