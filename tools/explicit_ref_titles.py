"""Give every reference to another page an explicit title, so that it reads well in JupyterLab.

On the website, ``{ref}`sec-3-shift``` prints the title of the section that carries the label
and ``{doc}`../03-algorithm/01-overview``` the title of that page. In JupyterLab the
jupyterlab-myst extension renders one notebook at a time: a label or page outside it cannot be
resolved, so the reader sees the bare label (``sec-3-shift``, with a warning mark) or the file
path. Written with the title in the role, ``{ref}`Inputs and targets: the shift by one
<sec-3-shift>``` prints the same words on the website and in JupyterLab.

This script writes those titles in: for each ``{ref}`` without a title whose label is defined on
*another* page, the heading that follows the label there; for each ``{doc}`` without a title,
the first ``#`` heading of the target page. References within a page are left alone (JupyterLab
resolves them and numbers them). Titles with math (``$``) or angle brackets are skipped, since a
role's title is plain text; backticks and emphasis marks are dropped from titles for the same
reason. ``{eq}`` to another page cannot be given a title (Sphinx prints the equation number
whatever the role says), so those are only counted.

Usage::

    python tools/explicit_ref_titles.py            # rewrite the pages under chapters/ and *.md
    python tools/explicit_ref_titles.py --check    # list what would change; exit 1 if anything

Only markdown is changed (see ``expand_tex_macros.py``, whose Markdown walker this reuses); no
notebook needs re-executing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from expand_tex_macros import ROOT, default_files, map_markdown, rewrite_file

LABEL = re.compile(r"^\(([\w:.-]+)\)=[ \t]*\n+(#+)[ \t]+(.+?)[ \t]*$", re.M)
H1 = re.compile(r"^#[ \t]+(.+?)[ \t]*$", re.M)
UNSAFE = re.compile(r"[$<>]")


def markdown_of(path: Path) -> str:
    """The Markdown of a page: the .md file, or the markdown cells of the notebook joined."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return text
    cells = json.loads(text)["cells"]
    return "\n\n".join(
        c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        for c in cells
        if c["cell_type"] == "markdown"
    )


def plain(title: str) -> str:
    """A heading as plain text for a role's title.

    >>> plain("The same computation in `gptlib`")
    'The same computation in gptlib'
    """
    return re.sub(r"[`*]", "", title).strip()


def index(files: list[Path]) -> tuple[dict[str, tuple[Path, str]], dict[Path, str]]:
    """Labels -> (page, heading title) and page (without suffix) -> page title."""
    labels, titles = {}, {}
    for path in files:
        text = markdown_of(path)
        for m in LABEL.finditer(text):
            labels[m.group(1)] = (path.with_suffix(""), m.group(3))
        h1 = H1.search(text)
        if h1:
            titles[path.with_suffix("")] = h1.group(1)
    return labels, titles


def add_titles(
    text: str, page: Path, labels: dict[str, tuple[Path, str]], titles: dict[Path, str]
) -> tuple[str, int]:
    """Give the cross-page {ref} and {doc} roles of one piece of Markdown their titles."""
    count = 0

    def role(name: str, content: str) -> str | None:
        nonlocal count
        if "<" in content:
            return None  # already has a title
        target = content.strip()
        if name == "ref" and target in labels:
            where, title = labels[target]
            if where == page or UNSAFE.search(title):
                return None
            count += 1
            return f"{{ref}}`{plain(title)} <{target}>`"
        if name == "doc":
            base = ROOT if target.startswith("/") else page.parent
            where = (base / target.lstrip("/")).resolve()
            title = titles.get(where)
            if title is None or UNSAFE.search(title):
                return None
            count += 1
            return f"{{doc}}`{plain(title)} <{target}>`"
        return None

    return map_markdown(text, lambda s: s, role), count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files (default: the whole book)")
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    args = parser.parse_args(argv)
    files = [p.resolve() for p in default_files()]
    labels, titles = index(files)
    total = 0
    for path in [p.resolve() for p in args.paths] or files:
        page = path.with_suffix("")
        n = rewrite_file(
            path, lambda text, page=page: add_titles(text, page, labels, titles), not args.check
        )
        if n:
            total += n
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(f"{shown}: {n} {'to title' if args.check else 'titled'}")
    print(f"{total} references {'without a title' if args.check else 'given a title'}")
    return 1 if args.check and total else 0


if __name__ == "__main__":
    sys.exit(main())
