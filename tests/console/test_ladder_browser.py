"""A county operator changes a township's ladder from the regions page, in a real Chromium."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.async_api import expect
from sqlalchemy import select
from sqlmodel import col

from anxin.app import create_app
from anxin.models import AuditLog, Region
from anxin.settings import Settings
from tests.support.harness import Seeded, ServeApp, eventually

if TYPE_CHECKING:
    from playwright.async_api import Browser

WAIT_MS = 30_000


async def test_a_county_operator_sets_a_townships_aide_timeout_from_the_regions_page(
    region: Seeded, serve_app: ServeApp, browser: Browser
) -> None:
    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        try:
            await page.goto(base_url + "/")
            await page.fill("input[name=username]", "county")
            await page.fill("input[name=password]", "anxin-county")
            await page.click("form#login button[type=submit]")
            await expect(page.locator("#queue")).to_be_visible(timeout=WAIT_MS)
            await page.goto(base_url + "/#/regions")
            row = page.locator("tr", has_text="T01")
            await row.get_by_role("button", name="响应梯次").click()
            dialog = page.locator("dialog.form-dialog")
            timeout = dialog.locator("input[name=accept_timeout_s]")
            # Empty: inherited; the value in force shows as the placeholder.
            await expect(timeout).to_have_attribute("placeholder", "180", timeout=WAIT_MS)
            await timeout.fill("900")
            await dialog.get_by_role("button", name="保存").click()
            error = dialog.locator(
                "label", has=page.locator("input[name=accept_timeout_s]")
            ).locator(".field-error")
            await expect(error).to_have_text(re.compile(r"\S"), timeout=WAIT_MS)  # 15 min: refused
            await timeout.fill("120")
            await dialog.get_by_role("button", name="保存").click()
            await expect(dialog).to_have_count(0, timeout=WAIT_MS)

            async def saved() -> dict[str, object] | None:
                async with region.sessions() as session:
                    ladder = await session.scalar(
                        select(col(Region.ladder)).where(col(Region.code) == "T01")
                    )
                return ladder or None

            assert await eventually(saved, what="the ladder saved") == {"accept_timeout_s": 120}
            async with region.sessions() as session:
                changes = await session.scalar(
                    select(col(AuditLog.detail)).where(col(AuditLog.action) == "change_ladder")
                )
            assert changes == {"before": {}, "after": {"accept_timeout_s": 120}}
        finally:
            await context.close()
