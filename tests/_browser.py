"""Debian's Chromium for the browser tests (the web explorer, the docs site): where it is and how it is started."""

import os

CHROMIUM = os.environ.get("ALIGNNET_CHROMIUM", "/usr/bin/chromium")
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
