"""What the two browser tests share: which Chromium to drive and how to start it.

Debian's chromium (``BOOK_CHROMIUM`` overrides the path), headless, with every background
service that would try to reach the network switched off, so that the tests' "zero external
requests" checks see only what the page itself asks for.
"""

import os
from pathlib import Path

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
