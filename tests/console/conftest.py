"""A real headless Chromium (Debian's `chromium` package) driven by Playwright.

Playwright's own browser download is never used: `apt-get install -y chromium` provides the
browser. Outside CI a machine without it skips the browser tests; under CI it is an error.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = Path(os.environ.get("ANXIN_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The new-P1 beep plays without a click in the test browser, as it would after login.
    "--autoplay-policy=no-user-gesture-required",
]


def _missing(what: str) -> None:
    if IN_CI:
        raise RuntimeError(f"{what} is missing; CI needs it for the console's browser tests")
    pytest.skip(f"{what} is not installed here (CI has it)")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _missing("the playwright package (pip install -e '.[dev]')")
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (a stat, once per session)
        _missing(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()
