"""The table of contents and the pages it lists.

* every file listed in ``_toc.yml`` exists (as .md or .ipynb);
* every page under ``chapters/`` is listed (``only_build_toc_files`` would silently drop it);
* no page contains placeholder words (TODO, TBD, FIXME, lorem ipsum, coming soon).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from conftest import read_toc  # the walker test_site.py shares

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\b(TODO|TBD|FIXME)\b|lorem ipsum|coming soon", re.I)


def source_of(entry: str) -> Path | None:
    for suffix in (".md", ".ipynb"):
        path = ROOT / (entry + suffix)
        if path.exists():
            return path
    return None


def pages_on_disk() -> list[Path]:
    pages = [p for ext in ("md", "ipynb") for p in (ROOT / "chapters").glob(f"**/*.{ext}")]
    return sorted(p for p in pages if ".ipynb_checkpoints" not in p.parts)


def test_toc_entries_exist(toc_pages):
    missing = [e for e in toc_pages if source_of(e) is None]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_toc_has_no_duplicates(toc_pages):
    assert len(toc_pages) == len(set(toc_pages))


def test_every_chapter_page_is_in_the_toc(toc_pages):
    listed = {e.removesuffix(".md").removesuffix(".ipynb") for e in toc_pages}
    unlisted = [
        str(p.relative_to(ROOT))
        for p in pages_on_disk()
        if str(p.relative_to(ROOT).with_suffix("")) not in listed
    ]
    assert not unlisted, f"pages missing from _toc.yml: {unlisted}"


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return "\n".join(c.source for c in nb.cells)
    return path.read_text(encoding="utf-8")


def test_no_placeholder_words(toc_page):
    path = source_of(toc_page)
    assert path is not None, f"{toc_page} is listed in _toc.yml but has no .md or .ipynb file"
    found = sorted({m.group(0) for m in PLACEHOLDER.finditer(_text(path))})
    assert not found, f"{toc_page}: placeholder words {found}"


def test_placeholder_pattern_catches_the_words_it_names():
    """The pattern itself: it finds each placeholder and leaves ordinary words alone."""
    for text in ["TODO: write", "see TBD", "FIXME", "Lorem ipsum dolor", "Coming soon!"]:
        assert PLACEHOLDER.search(text), text
    for text in ["TODOS are fine", "mastodon", "the sooner the better", "to do"]:
        assert not PLACEHOLDER.search(text), text


def test_read_toc_walks_parts_chapters_and_nested_sections(tmp_path):
    """A hand-written table of contents, listed in reading order, nested sections included."""
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro\nparts:\n"
        "  - caption: One\n    chapters:\n"
        "      - file: a/first\n        sections:\n"
        "          - file: a/first-1\n            sections:\n"
        "              - file: a/first-1-1\n"
        "      - file: a/second\n"
        "  - caption: Two\n    chapters:\n      - file: b/third\n"
        "      - url: https://example.org\n        title: not a page\n",
        encoding="utf-8",
    )
    assert read_toc(toc) == ["intro", "a/first", "a/first-1", "a/first-1-1", "a/second", "b/third"]
    toc.write_text("format: jb-article\nroot: intro\n", encoding="utf-8")
    with pytest.raises(ValueError, match="jb-book"):
        read_toc(toc)
