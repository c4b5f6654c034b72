"""What the two browser tests share: which Chromium to drive and how to start it.

Debian's chromium (``BOOK_CHROMIUM`` overrides the path), headless, with every background
service that would try to reach the network switched off, so that the tests' "zero external
requests" checks see only what the page itself asks for.
"""

import contextlib
import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("BOOK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium_browser():
    """A launched headless Chromium (playwright), closed on exit; fails if it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make test` does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
