"""Shared test settings and helpers.

* every test runs on one torch thread;
* ``feedback_of``: run a self-checking exercise and read the feedback it printed;
* ``browser``: one headless Chromium for the whole session, shared by the site test and the
  JupyterLab test (playwright's sync API allows one running instance per process);
* the table of contents: :func:`read_toc` reads ``_toc.yml``, the ``toc_pages`` fixture gives
  the list, and a test that takes a ``toc_page`` argument runs once per page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread, and a CI machine's cores may be shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def browser():
    from browser import chromium_browser  # tests/browser.py

    with chromium_browser() as launched:
        yield launched


@pytest.fixture
def feedback_of(capsys) -> Callable[[Callable, Callable], tuple[bool, str]]:
    """``feedback_of(checker, fn)``: what ``checker(fn)`` returned and the feedback it printed."""

    def run(checker: Callable, fn: Callable) -> tuple[bool, str]:
        passed = checker(fn)
        return passed, capsys.readouterr().out

    return run


def read_toc(toc_file: Path = ROOT / "_toc.yml") -> list[str]:
    """Every page of a Jupyter Book table of contents, root first, as paths without extension.

    Walks ``parts`` -> ``chapters`` -> ``sections`` (any depth) of the ``jb-book`` format.
    """
    import yaml  # installed with the book's tools; the library tests do not need it

    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    if toc.get("format") != "jb-book":
        raise ValueError(f"{toc_file}: expected format jb-book, got {toc.get('format')!r}")
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


@pytest.fixture(name="toc_pages", scope="session")
def toc_pages_fixture() -> list[str]:
    """The pages of ``_toc.yml``, as :func:`read_toc` lists them."""
    return read_toc()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that takes a ``toc_page`` argument once per page of ``_toc.yml``."""
    if "toc_page" in metafunc.fixturenames:
        pages = read_toc()
        metafunc.parametrize("toc_page", pages, ids=pages)
