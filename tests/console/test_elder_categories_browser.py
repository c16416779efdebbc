"""An operator sets an elder's civil-affairs categories (特困, 失智 …) on the elder's page, in a
real Chromium: checkboxes with Chinese labels, saved, shown on the page and in the list."""

from __future__ import annotations

from playwright.async_api import Browser, expect
from sqlalchemy import select
from sqlmodel import col

from anxin.app import create_app
from anxin.models import Elder
from anxin.settings import Settings
from tests.builders import village_codes
from tests.support.browser import WAIT_MS, accept_dialog, log_in
from tests.support.harness import Seeded, ServeApp


async def _elder(region: Seeded, code: str) -> Elder:
    async with region.sessions() as session:
        return (await session.execute(select(Elder).where(col(Elder.code) == code))).scalar_one()


async def test_an_operator_ticks_categories_on_the_elders_page_and_they_are_stored(
    region: Seeded, browser: Browser, serve_app: ServeApp
) -> None:
    spec = next(e for e in region.plan.elders if e.village_code in village_codes(region, "T01"))
    before = await _elder(region, spec.code)
    assert not (before.dementia or before.extreme_poverty or before.family_planning_special)
    errors: list[str] = []
    async with serve_app(create_app(Settings(), region.sessions)) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", accept_dialog)
        try:
            await log_in(page, base_url, "t01", "anxin-t01")
            await page.goto(f"{base_url}/#/elder/{before.id}")
            facts = page.locator("#elder-categories")
            await expect(facts).to_be_visible(timeout=WAIT_MS)

            await page.click("#edit-elder")
            group = page.locator("dialog fieldset#f-categories")
            await expect(group.locator("legend")).to_have_text("类别")
            for word in ("特困", "低保", "半失能", "失智", "重残", "计划生育特殊家庭"):
                await expect(group).to_contain_text(word)
            await group.get_by_label("失智").check()
            await group.get_by_label("特困").check()
            await group.get_by_label("计划生育特殊家庭").check()
            await page.click("dialog button[type=submit]")

            await expect(facts).to_contain_text("失智", timeout=WAIT_MS)
            await expect(facts).to_contain_text("特困")
            await expect(facts).to_contain_text("计划生育特殊家庭")
            after = await _elder(region, spec.code)
            assert (after.dementia, after.extreme_poverty, after.family_planning_special) == (
                True,
                True,
                True,
            )
            # The rest of the record is as it was.
            assert (after.living_alone, after.guardian_phones, after.lat) == (
                before.living_alone,
                before.guardian_phones,
                before.lat,
            )

            # Unticked again from the form, and the list's badges say so.
            await page.click("#edit-elder")
            await page.locator("dialog fieldset#f-categories").get_by_label("特困").uncheck()
            await page.click("dialog button[type=submit]")
            await expect(facts).not_to_contain_text("特困", timeout=WAIT_MS)
            assert not (await _elder(region, spec.code)).extreme_poverty
            await page.goto(f"{base_url}/#/elders")
            row = page.locator("tr", has_text=spec.code)
            await expect(row.locator(".flag-dementia")).to_have_text("失智", timeout=WAIT_MS)
            # The list's category filter: only the elders with 失智, this one among them.
            await page.select_option("#elder-category", label="失智")
            rows = page.locator("#view tbody tr")
            await expect(rows.filter(has_text=spec.code)).to_have_count(1, timeout=WAIT_MS)
            without = rows.filter(has_not=page.locator(".flag-dementia"))
            await expect(without).to_have_count(0, timeout=WAIT_MS)
        finally:
            await context.close()
    assert errors == []
