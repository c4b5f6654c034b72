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
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\b(TODO|TBD|FIXME)\b|lorem ipsum|coming soon", re.I)


def toc_entries() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert toc.get("format") == "jb-book"
    entries = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                entries.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return entries


def source_of(entry: str) -> Path | None:
    for suffix in (".md", ".ipynb"):
        path = ROOT / (entry + suffix)
        if path.exists():
            return path
    return None


def pages_on_disk() -> list[Path]:
    pages = [p for ext in ("md", "ipynb") for p in (ROOT / "chapters").glob(f"**/*.{ext}")]
    return sorted(p for p in pages if ".ipynb_checkpoints" not in p.parts)


def test_toc_entries_exist():
    missing = [e for e in toc_entries() if source_of(e) is None]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_toc_has_no_duplicates():
    entries = toc_entries()
    assert len(entries) == len(set(entries))


def test_every_chapter_page_is_in_the_toc():
    listed = {e.removesuffix(".md").removesuffix(".ipynb") for e in toc_entries()}
    unlisted = [
        str(p.relative_to(ROOT)) for p in pages_on_disk()
        if str(p.relative_to(ROOT).with_suffix("")) not in listed
    ]
    assert not unlisted, f"pages missing from _toc.yml: {unlisted}"


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return "\n".join(c.source for c in nb.cells)
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("entry", toc_entries())
def test_no_placeholder_words(entry):
    path = source_of(entry)
    if path is None:
        pytest.skip("missing page (reported by test_toc_entries_exist)")
    found = sorted({m.group(0) for m in PLACEHOLDER.finditer(_text(path))})
    assert not found, f"{entry}: placeholder words {found}"
