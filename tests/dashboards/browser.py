"""The dashboard in headless Chromium: Debian's ``chromium`` package, driven by Playwright (a dev
dependency; no browser download). ``./infra/wikipulse test`` installs chromium when missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: The page has run: the top contributor is drawn, nothing is loading.
RENDERED = """() =>
    document.querySelector('.st-key-top_contributor') !== null
    && !document.querySelector('[data-testid=stSkeleton]')
    && !document.querySelector('[data-testid=stStatusWidgetRunningIcon]')"""
#: The page has finished its run: both charts drawn as well.
FINISHED = """() =>
    document.querySelectorAll('[data-testid=stVegaLiteChart] svg .mark-area, '
                              + '[data-testid=stVegaLiteChart] svg .mark-rect').length >= 2
    && document.querySelector('.st-key-top_contributor') !== null
    && !document.querySelector('[data-testid=stSkeleton]')
    && !document.querySelector('[data-testid=stStatusWidgetRunningIcon]')"""


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A page of headless Chromium, 1400 × 1700. Playwright's synchronous API runs an event
    loop: nothing inside the block may use asyncio."""
    from playwright import sync_api

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1700})
        finally:
            browser.close()
