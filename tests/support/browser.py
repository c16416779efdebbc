"""A real headless Chromium (Debian's `chromium` package) driven by Playwright: where it is, how
it starts (the `browser` fixture is in tests/conftest.py), and logging in on the console page.

Playwright's own browser download is never used: `apt-get install -y chromium` provides the
browser. Outside CI a machine without it skips the browser tests; under CI it is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.harness import IN_CI

# Playwright is imported where it is used: without it the browser tests skip (outside CI)
# instead of every test failing at collection.
if TYPE_CHECKING:
    from playwright.async_api import Dialog, Page

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


def missing(what: str) -> None:
    if IN_CI:
        raise RuntimeError(f"{what} is missing; CI needs it for the console's browser tests")
    pytest.skip(f"{what} is not installed here (CI has it)")


WAIT_MS = 30_000


async def accept_dialog(dialog: Dialog) -> None:
    await dialog.accept()


async def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    from playwright.async_api import expect

    await page.goto(base_url + "/")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("form#login button[type=submit]")
    await expect(page.locator("#queue")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#live")).to_have_class("live on", timeout=WAIT_MS)
