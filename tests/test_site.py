"""The website, as a reader's browser sees it.

Builds the site (or uses the build that `make book` made just before, when ``BOOK_BUILT=1``),
serves ``_build/html`` on 127.0.0.1, and opens every page of the table of contents in Debian's
headless Chromium, driven by Playwright (``executable_path``: no browser download). For each page:

* it loads with HTTP 200, and every file it asks the local server for exists;
* MathJax typeset every math element, without a single ``mjx-merror``;
* every Mermaid block became an SVG, and none is Mermaid's "syntax error" picture;
* exercise solutions start collapsed;
* the console shows no error beyond the allow-list below;
* no request left 127.0.0.1 (each one is aborted and counted).

The explorers (``gptlib.explorers``, precomputed frames switched by page-local script) are driven
like a reader would: each slider of each explorer is moved with the keyboard, and the frame shown
must change, with exactly one frame visible, no console error and no request off the machine.

A full-page screenshot of each page is saved under ``_build/screenshots/``.
Run with ``make test`` (or ``.venv/bin/pytest -m book tests/test_site.py`` after ``make book``).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
TIMEOUT_MS = 60_000

# Console messages that are known upstream noise, not problems of this book.
CONSOLE_ALLOW = [
    # sphinx-thebe declares `const THEBE_JS_URL` in a script that Jupyter Book can include twice.
    re.compile(r"THEBE_JS_URL.*(already been declared|has already been)", re.I),
    # pydata-sphinx-theme logs this when the stored theme mode is missing or unknown.
    re.compile(r"invalid theme mode", re.I),
]


@pytest.fixture(scope="session")
def site() -> Path:
    """The built site: the one `make book` just made, or a fresh build."""
    if os.environ.get("BOOK_BUILT") != "1":
        cmd = [
            str(Path(sys.executable).with_name("jupyter-book")),
            "build",
            ".",
            "-W",
            "-n",
            "--keep-going",
        ]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, "site build failed:\n" + (run.stdout + run.stderr)[-6000:]
    assert (HTML / "index.html").exists(), "no built site in _build/html (run `make book`)"
    return HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="session")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class PageLog:
    """What happened while one page loaded: external requests, local failures, console."""

    def __init__(self) -> None:
        self.external: list[str] = []
        self.local_failures: list[str] = []
        self.console_errors: list[str] = []


def open_page(browser, url: str, log: PageLog):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def route(r):
        host = urlparse(r.request.url).hostname
        if host == "127.0.0.1":
            r.continue_()
        else:
            log.external.append(r.request.url)
            r.abort()

    def on_response(resp):
        if urlparse(resp.url).hostname == "127.0.0.1" and resp.status >= 400:
            log.local_failures.append(f"{resp.status} {resp.url}")

    def on_console(msg):
        if msg.type == "error" and not any(p.search(msg.text) for p in CONSOLE_ALLOW):
            log.console_errors.append(msg.text)

    def on_page_error(err):
        text = str(err)
        if not any(p.search(text) for p in CONSOLE_ALLOW):
            log.console_errors.append("uncaught: " + text)

    page.route("**/*", route)
    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return context, page


WAIT_MATHJAX = """async () => {
    if (!document.querySelector('.math')) return 'no math';
    for (let i = 0; i < 600 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
        await new Promise(r => setTimeout(r, 50));
    if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return 'MathJax missing';
    await MathJax.startup.promise;
    return 'typeset';
}"""

MERMAID_DONE = """() => [...document.querySelectorAll('pre.mermaid')].every(
    e => e.querySelector('svg') || e.hasAttribute('data-mermaid-deferred')
         || e.hasAttribute('data-mermaid-render-failed'))"""

INSPECT = """() => {
    const math = [...document.querySelectorAll('span.math, div.math')];
    const mermaid = [...document.querySelectorAll('pre.mermaid')];
    const solutions = [...document.querySelectorAll('.solution')];
    return {
        math: math.length,
        untypeset: math.filter(e => !e.querySelector('mjx-container'))
                       .map(e => e.textContent.slice(0, 80)),
        merror: [...document.querySelectorAll('mjx-merror')]
                       .map(e => e.getAttribute('data-mjx-error') || e.textContent),
        mermaid: mermaid.length,
        mermaidFailed: mermaid.filter(e => e.hasAttribute('data-mermaid-render-failed')
                            || e.querySelector('svg[aria-roledescription="error"]')).length,
        mermaidVisibleNoSvg: mermaid.filter(e => !e.hasAttribute('data-mermaid-deferred')
                                  && !e.querySelector('svg')).length,
        solutions: solutions.length,
        // A solution is collapsed when its <details> is closed, or (sphinx-togglebutton's
        // admonition toggles) when it has the `toggle-hidden` class and its body is invisible.
        openSolutions: solutions.filter(s => {
            const details = s.tagName === 'DETAILS' ? s : s.querySelector(':scope > details');
            if (details) return details.open;
            const body = [...s.children].filter(c => !c.classList.contains('admonition-title'));
            const hidden = body.every(c => {
                const style = getComputedStyle(c);
                return style.visibility === 'hidden' || style.display === 'none'
                       || c.getBoundingClientRect().height === 0;
            });
            return !(s.classList.contains('toggle-hidden') && hidden);
        }).map(s => (s.id || s.textContent.slice(0, 40))),
    };
}"""


def test_page(toc_page, server, browser):
    """One page of ``_toc.yml`` (the ``toc_page`` argument is filled in by conftest.py)."""
    page_name = toc_page
    html_file = HTML / f"{page_name}.html"
    assert html_file.exists(), f"{page_name}.html was not built"
    log = PageLog()
    context, page = open_page(browser, f"{server}/{page_name}.html", log)
    try:
        response = page.goto(f"{server}/{page_name}.html", wait_until="load", timeout=TIMEOUT_MS)
        assert response is not None and response.status == 200
        mathjax = page.evaluate(WAIT_MATHJAX)
        assert mathjax in ("typeset", "no math"), mathjax
        page.wait_for_function(MERMAID_DONE, timeout=TIMEOUT_MS)
        page.evaluate("document.fonts.ready.then(() => true)")
        page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
        found = page.evaluate(INSPECT)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '__')}.png"), full_page=True)
    finally:
        context.close()

    source_math = _source_has_math(page_name)
    if source_math:
        assert found["math"] > 0, "the page source has math, but the HTML has no math element"
    assert not found["untypeset"], f"math left untypeset: {found['untypeset']}"
    assert not found["merror"], f"MathJax errors: {found['merror']}"
    assert found["mermaid"] == _source_mermaid_blocks(page_name), "Mermaid blocks lost in build"
    assert found["mermaidFailed"] == 0, "a Mermaid diagram failed to render"
    assert found["mermaidVisibleNoSvg"] == 0, "a visible Mermaid block has no SVG"
    assert not found["openSolutions"], f"solutions shown open: {found['openSolutions']}"
    assert not log.local_failures, f"missing local files: {log.local_failures}"
    assert not log.console_errors, f"console errors: {log.console_errors}"
    assert not log.external, f"{len(log.external)} external request(s): {log.external[:10]}"


def _source_text(page_name: str) -> str:
    """The Markdown of a page: the .md file, or the markdown cells of the notebook."""
    md = ROOT / f"{page_name}.md"
    if md.exists():
        return md.read_text(encoding="utf-8")
    import nbformat

    nb = nbformat.read(ROOT / f"{page_name}.ipynb", as_version=4)
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _source_has_math(page_name: str) -> bool:
    text = re.sub(r"```.*?```", "", _source_text(page_name), flags=re.S)  # not in code fences
    text = re.sub(r"`[^`\n]*`", "", text)  # nor in inline code
    return bool(re.search(r"\$[^$\s][^$]*\$|\{math\}", text))


def _source_mermaid_blocks(page_name: str) -> int:
    return len(re.findall(r"^\s*(```+|:::+)\s*\{?mermaid\}?\s*$", _source_text(page_name), re.M))


# page -> DOM id of the explorer it holds (gptlib.explorers.static_html: "gx-" + explorer_id)
EXPLORERS = {
    "chapters/03-algorithm/02-data-preprocessing": "gx-tokenizer",
    "chapters/03-algorithm/05-optimizer": "gx-lr-schedule",
    "chapters/04-math/02-attention": "gx-attention",
    "chapters/06-applications/01-text-generation": "gx-decoding",
}

EXPLORER_STATE = """root => {
    const frames = [...root.querySelectorAll('[data-gx-frame]')];
    const shown = frames.filter(f => getComputedStyle(f).display !== 'none');
    return {
        frames: frames.length,
        shown: shown.map(f => f.getAttribute('data-gx-frame')),
        height: shown.length ? shown[0].getBoundingClientRect().height : 0,
        html: shown.length ? shown[0].innerHTML : '',
        key: root.getAttribute('data-gx-shown'),
        labels: [...root.querySelectorAll('output')].map(o => o.textContent),
    };
}"""


@pytest.mark.parametrize("page_name", sorted(EXPLORERS))
def test_explorer_responds(page_name, server, browser):
    """Moving each control of the page's explorer shows another frame, offline and error-free."""
    url = f"{server}/{page_name}.html"
    log = PageLog()
    context, page = open_page(browser, url, log)
    try:
        response = page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
        assert response is not None and response.status == 200
        root = page.locator(f"#{EXPLORERS[page_name]}")
        assert root.count() == 1, f"no explorer #{EXPLORERS[page_name]} on the page"
        root.scroll_into_view_if_needed()
        before = root.evaluate(EXPLORER_STATE)
        assert before["frames"] >= 2 and len(before["shown"]) == 1, before["shown"]
        assert before["key"] == before["shown"][0], "the script did not run"
        assert before["height"] > 0, "the frame shown has no height"
        sliders = root.locator("input[type=range]")
        assert sliders.count() >= 2
        for i in range(sliders.count()):
            slider = sliders.nth(i)
            at_max = slider.get_attribute("value") == slider.get_attribute("max")
            slider.focus()
            page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
            after = root.evaluate(EXPLORER_STATE)
            assert len(after["shown"]) == 1 and after["key"] == after["shown"][0], after["shown"]
            assert after["key"] != before["key"], f"slider {i} did not change the frame"
            assert after["html"] != before["html"], f"slider {i}: the new frame looks the same"
            assert after["labels"] != before["labels"], f"slider {i}: its label did not change"
            assert after["height"] > 0
            before = after
    finally:
        context.close()
    assert not log.local_failures, f"missing local files: {log.local_failures}"
    assert not log.console_errors, f"console errors: {log.console_errors}"
    assert not log.external, f"{len(log.external)} external request(s): {log.external[:10]}"


def test_search_works_offline(server, browser):
    """Sphinx's built-in search finds a word of the environment page, with no request outside."""
    log = PageLog()
    url = f"{server}/search.html?q=reproducibility"
    context, page = open_page(browser, url, log)
    try:
        response = page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
        assert response is not None and response.status == 200
        page.wait_for_selector("ul.search li", timeout=TIMEOUT_MS)
        hits = page.eval_on_selector_all("ul.search li a", "els => els.map(e => e.href)")
    finally:
        context.close()
    assert any("01-environment" in h for h in hits), hits
    assert not log.external, log.external
    assert not log.console_errors, log.console_errors
