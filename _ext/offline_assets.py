"""Copy the book's pinned front-end assets into the built site, so that it works offline.

MathJax 3 (``mathjax_path``) and Mermaid 11 (``mermaid_use_local``) are installed by ``npm ci``
from ``package-lock.json`` into ``node_modules/``. Both config values are paths relative to the
site's ``_static/`` folder. This extension copies the files there after the HTML is written,
rather than listing them in ``html_static_path``: Jupyter Book 1 may turn every ``.js`` file of a
static folder into a ``<script>`` tag on every page, and MathJax ships hundreds of components that
it loads on demand by itself.

What is copied:

* ``node_modules/mathjax/es5/`` -> ``_static/mathjax/`` (the ``tex-chtml.js`` component finds its
  fonts and on-demand extensions relative to its own URL);
* ``node_modules/mermaid/dist/mermaid.esm.min.mjs`` and its ``chunks/mermaid.esm.min/*.mjs``
  -> ``_static/mermaid/`` (the module imports its chunks by relative URL; source maps are left
  out).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX_DIR = Path("node_modules/mathjax/es5")
MERMAID_DIR = Path("node_modules/mermaid/dist")
MERMAID_MODULE = "mermaid.esm.min.mjs"
MERMAID_CHUNKS = Path("chunks/mermaid.esm.min")


def _sources(app: Sphinx) -> tuple[Path, Path]:
    root = Path(app.confdir)
    mathjax, mermaid = root / MATHJAX_DIR, root / MERMAID_DIR
    missing = [
        str(p.relative_to(root))
        for p in (mathjax / "tex-chtml.js", mermaid / MERMAID_MODULE, mermaid / MERMAID_CHUNKS)
        if not p.exists()
    ]
    if missing:
        raise ExtensionError(
            "the offline site assets are missing ("
            + ", ".join(missing)
            + "); install them with `npm ci` (or `make setup`)"
        )
    return mathjax, mermaid


def check_assets(app: Sphinx) -> None:
    """Fail early, before reading any page, when ``npm ci`` has not been run."""
    if app.builder.format == "html":
        _sources(app)


def copy_assets(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    mathjax, mermaid = _sources(app)
    static = Path(app.outdir) / "_static"
    shutil.copytree(mathjax, static / "mathjax", dirs_exist_ok=True)
    target = static / "mermaid"
    shutil.copytree(
        mermaid / MERMAID_CHUNKS,
        target / MERMAID_CHUNKS,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("*.map"),
    )
    shutil.copy2(mermaid / MERMAID_MODULE, target / MERMAID_MODULE)
    logger.info("offline_assets: copied MathJax and Mermaid into %s", static)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", check_assets)
    app.connect("build-finished", copy_assets)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
