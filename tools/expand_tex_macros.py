"""Write the book's TeX macros out in full in the Markdown of the chapters.

The site defines short macros such as ``\\softmax`` or ``\\vq`` for MathJax in ``_config.yml``
(``sphinx.config.mathjax3_config.tex.macros``). Those definitions exist only in the built site:
a notebook opened in JupyterLab (jupyterlab-myst typesets with KaTeX and reads macros only from
a YAML front matter block, which Jupyter Book 1 does not accept in a notebook cell), in VS Code
or in Colab does not know them, and every formula that uses one shows as an error. Writing the
definition in place of each use (``\\softmax(z)`` becomes ``\\operatorname{softmax}(z)``) renders
the same on the site and everywhere else.

Only Markdown is changed: the markdown cells of ``.ipynb`` files and whole ``.md`` files. Inside
them, code is left alone (fenced code blocks, including ``{code-cell}`` and ``{mermaid}``, and
inline code spans); ``{math}`` fences and the ``{math}`` role are math and are expanded. A macro is
replaced only as a whole control word: ``\\R`` in ``\\R^d`` is, ``\\R`` in ``\\Rightarrow`` is not.
Code cells and stored outputs are not touched, so no notebook needs re-executing.

Usage::

    python tools/expand_tex_macros.py            # rewrite the files under chapters/ and *.md
    python tools/expand_tex_macros.py --check    # list remaining uses; exit status 1 if any
    python tools/expand_tex_macros.py PATH ...   # only these files

The definitions stay in ``_config.yml`` (this script reads them from there); ``--check`` in
``make lint`` catches a macro written again.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRECTIVES = {"code", "code-block", "code-cell", "sourcecode", "mermaid", "literalinclude"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
# a one-argument accent or a sub/superscript right before a macro: its expansion needs braces
ARGUMENT_BEFORE = re.compile(
    r"(\\(hat|bar|tilde|vec|dot|ddot|check|breve|acute|grave|widehat|widetilde|overline|"
    r"underline|sqrt|boldsymbol|mathbf|mathrm)|[_^])\s*$"
)
INLINE = re.compile(r"(\{([\w:-]+)\})?(`+)(.+?)\3", re.S)  # a role, or inline code


def load_macros(config: Path = ROOT / "_config.yml") -> dict[str, str]:
    """The macros of ``_config.yml``, name (without backslash) -> TeX that replaces it.

    A definition that ends in a subscript or superscript is wrapped in braces, so that a use
    followed by ``_`` or ``^`` stays valid TeX (``\\KL_x`` -> ``{D_{\\mathrm{KL}}}_x``).
    """
    import yaml

    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    tex = cfg["sphinx"]["config"]["mathjax3_config"]["tex"]
    macros = {}
    for name, body in tex.get("macros", {}).items():
        if not isinstance(body, str):
            raise ValueError(f"macro {name!r} takes arguments; expand it by hand")
        macros[name] = "{" + body + "}" if re.search(r"[_^]", body) else body
    return macros


def macro_pattern(macros: dict[str, str]) -> re.Pattern:
    """A regex matching ``\\name`` for every macro, as a whole control word.

    >>> p = macro_pattern({"R": r"\\mathbb{R}"})
    >>> p.sub(lambda m: "<" + m.group(1) + ">", r"\\R^d \\Rightarrow \\R")
    '<R>^d \\\\Rightarrow <R>'
    """
    names = "|".join(sorted(map(re.escape, macros), key=len, reverse=True))
    return re.compile(r"(?<!\\)\\(" + names + r")(?![A-Za-z])")


def map_markdown(
    text: str,
    prose: Callable[[str], str],
    role: Callable[[str, str], str | None] = lambda name, content: None,
) -> str:
    """Rewrite the prose of one piece of Markdown, leaving code alone.

    ``prose(segment)`` rewrites text outside code blocks, inline code spans and roles;
    ``role(name, content)`` may return the replacement of a whole role (``{name}`content```) or
    None to keep it. Fenced code blocks (and ``{code-cell}``, ``{mermaid}``, ...) are copied as
    they are; the fence lines of other directives (``{math}``, ``{admonition}``) pass through
    ``prose``, and so does their content.

    >>> map_markdown("a `a` {x}`a`\\n```python\\na\\n```", str.upper)
    'A `a` {x}`a`\\n```python\\na\\n```'
    """

    def inline(segment: str) -> str:
        out, last = [], 0
        for m in INLINE.finditer(segment):
            out.append(prose(segment[last : m.start()]))
            new = role(m.group(2), m.group(4)) if m.group(1) else None
            out.append(m.group(0) if new is None else new)
            last = m.end()
        out.append(prose(segment[last:]))
        return "".join(out)

    out_lines: list[str] = []
    buffer: list[str] = []  # prose lines not yet rewritten
    code_fence: str | None = None  # the fence that closes the code block we are in
    directives: list[str] = []  # the fences of the directive blocks we are in

    def flush() -> None:
        if buffer:
            out_lines.append(inline("\n".join(buffer)))
            buffer.clear()

    for line in text.split("\n"):
        m = FENCE.match(line)
        if code_fence is not None:  # inside a code block: copy until its closing fence
            if m and m.group(2).startswith(code_fence) and not m.group(3).strip():
                code_fence = None
            out_lines.append(line)
            continue
        if not m:
            buffer.append(line)
            continue
        # a fence line: close a directive, open a directive, or open a code block
        flush()
        info = m.group(3).strip()
        directive = re.match(r"\{([\w:-]+)\}", info)
        if not info and directives and m.group(2).startswith(directives[-1]):
            directives.pop()
            out_lines.append(line)
        elif directive and directive.group(1) not in CODE_DIRECTIVES:
            directives.append(m.group(2))
            out_lines.append(prose(line))  # a title argument may hold math
        else:
            code_fence = m.group(2)
            out_lines.append(line)
    flush()
    return "\n".join(out_lines)


def expand_text(text: str, macros: dict[str, str]) -> tuple[str, int]:
    """Expand the macros in one piece of Markdown; return the new text and the count replaced.

    >>> m = {"vq": r"\\mathbf{q}", "softmax": r"\\operatorname{softmax}"}
    >>> expand_text("$\\\\softmax(\\\\vq)$ and `\\\\vq` stays", m)
    ('$\\\\operatorname{softmax}(\\\\mathbf{q})$ and `\\\\vq` stays', 2)
    >>> expand_text("$\\\\hat\\\\vq + x^\\\\vq$", m)[0]
    '$\\\\hat{\\\\mathbf{q}} + x^{\\\\mathbf{q}}$'
    """
    pattern = macro_pattern(macros)
    count = 0

    def replacement(m: re.Match) -> str:
        body = macros[m.group(1)]
        # After a command or ^/_ that takes one argument (\hat\vx, x^\vq), the macro was that
        # whole argument; its expansion is several tokens, so it needs braces (\hat{\mathbf{x}}).
        if ARGUMENT_BEFORE.search(m.string, 0, m.start()):
            return "{" + body + "}"
        return body

    def sub(segment: str) -> str:
        nonlocal count
        new, n = pattern.subn(replacement, segment)
        count += n
        return new

    def math_role(name: str, content: str) -> str | None:
        return "{math}`" + sub(content) + "`" if name == "math" else None

    return map_markdown(text, sub, math_role), count


def rewrite_file(path: Path, rewrite: Callable[[str], tuple[str, int]], write: bool) -> int:
    """Apply ``rewrite`` to a ``.md`` file or to each markdown cell of an ``.ipynb``.

    Returns the number of changes ``rewrite`` reported; writes only when asked and something
    changed. Notebooks are read and written as plain JSON, not with nbformat: key order and
    layout stay exactly as they were (nbformat's writer would also add cell ids and reorder keys
    in notebooks written by other tools).
    """
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        new, count = rewrite(raw)
        if write and count:
            path.write_text(new, encoding="utf-8")
        return count
    nb = json.loads(raw)
    count = 0
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            source = cell["source"]
            text = source if isinstance(source, str) else "".join(source)
            new, n = rewrite(text)
            if n:
                cell["source"] = new if isinstance(source, str) else new.splitlines(keepends=True)
                count += n
    if write and count:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return count


def default_files() -> list[Path]:
    files = sorted(ROOT.glob("*.md")) + sorted((ROOT / "chapters").rglob("*.md"))
    files += sorted((ROOT / "chapters").rglob("*.ipynb"))
    return [f for f in files if ".ipynb_checkpoints" not in f.parts and f.name != "README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files (default: the whole book)")
    parser.add_argument("--check", action="store_true", help="report uses, change nothing")
    args = parser.parse_args(argv)
    macros = load_macros()
    total = 0
    for path in args.paths or default_files():
        n = rewrite_file(path, lambda text: expand_text(text, macros), write=not args.check)
        if n:
            total += n
            verb = "uses" if args.check else "expanded"
            shown = path.resolve()
            shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
            print(f"{shown}: {n} {verb}")
    print(f"{total} macro uses {'found' if args.check else 'expanded'}")
    return 1 if args.check and total else 0


if __name__ == "__main__":
    sys.exit(main())
