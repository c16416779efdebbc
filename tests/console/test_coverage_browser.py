"""The figures page's coverage section in a real Chromium: a township operator sees the elder
no on-duty aide reaches in time (at their seasonal place), the village left with no aide on
duty, and the warning of the aide whose 下班 left it so."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect
from sqlalchemy import select, update
from sqlmodel import col

from alert_service import coverage_service
from anxin.app import create_app
from anxin.clock import SystemClock
from anxin.db import transaction
from anxin.models import Elder, Region, Responder
from anxin.settings import Settings
from tests.support.browser import WAIT_MS, log_in
from tests.support.harness import Seeded, ServeApp


async def test_a_township_operator_sees_who_no_aide_can_reach(
    region: Seeded, browser: Browser, artifacts_dir: Path, serve_app: ServeApp
) -> None:
    plan = region.plan
    township = plan.townships[0]
    villages = [v for v in plan.villages if v.parent_code == township.code]
    far, emptied = villages[0], villages[1]
    elder = next(e for e in plan.elders if e.village_code == far.code)
    operator = next(o for o in plan.operators if o.region_code == township.code)
    last_aide = next(a for a in plan.aides if a.village_code == emptied.code and a.on_duty)
    async with transaction(region.sessions) as session:
        # All year at a place about 20 km north of home: no aide reaches it in 15 minutes.
        await session.execute(
            update(Elder)
            .where(col(Elder.code) == elder.code)
            .values(
                season_address="夏季牧场",
                season_lat=elder.lat + 0.18,
                season_lon=elder.lon,
                season_start="01-01",
                season_end="12-31",
            )
        )
        emptied_id = (
            await session.execute(select(col(Region.id)).where(col(Region.code) == emptied.code))
        ).scalar_one()
        await session.execute(
            update(Responder).where(col(Responder.village_id) == emptied_id).values(on_duty=False)
        )
        aide = (
            await session.execute(select(Responder).where(col(Responder.phone) == last_aide.phone))
        ).scalar_one()
        # What the 下班 webhook does after setting the aide off duty (tested over the wire in
        # tests/dispatcher/test_coverage_off_duty.py).
        assert await coverage_service.warn_after_off_duty(
            session, responder=aide, now=SystemClock().now()
        )

    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        try:
            await log_in(page, base_url, operator.username, operator.password)
            await page.click("#nav a[data-route=figures]")
            section = page.locator("#coverage")
            await expect(section.locator("h3")).to_have_text(
                "覆盖情况：15分钟内无人可到的老人", timeout=WAIT_MS
            )
            table = page.locator("#coverage-table")
            row = table.locator("tr", has_text=elder.code)
            await expect(row).to_contain_text(f"{far.name}（季节住址）")
            await expect(page.locator("#coverage-summary")).to_contain_text(
                "在岗助老员无法按时到达"
            )
            await expect(page.locator("#coverage-villages")).to_contain_text(emptied.name)
            warnings = page.locator("#coverage-warnings")
            await expect(warnings).to_contain_text(f"{last_aide.name} 下班")
            await expect(warnings).to_contain_text(emptied.name)
            await page.screenshot(path=str(artifacts_dir / "console-coverage.png"), full_page=True)
        finally:
            await context.close()


async def test_an_elders_seasonal_place_from_the_elder_form(
    region: Seeded, browser: Browser, serve_app: ServeApp
) -> None:
    """Set in the form, shown on the elder's page, kept when something else is edited (the
    form's PUT sends every field), refused at its field when half given."""
    spec = region.plan.elders[0]
    async with region.sessions() as session:
        elder = (await session.execute(select(Elder).where(col(Elder.code) == spec.code))).one()[0]

    async def stored() -> Elder:
        async with region.sessions() as session:
            row = await session.get(Elder, elder.id)
        assert row is not None
        return row

    async with serve_app(create_app(Settings(), region.sessions)) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        try:
            await log_in(page, base_url, "admin", "anxin-admin")
            await page.goto(f"{base_url}/#/elder/{elder.id}")
            await page.click("#edit-elder")
            dialog = page.locator("dialog.form-dialog")
            await dialog.get_by_label("季节住址").fill("县城女儿家")
            await dialog.get_by_label("季节纬度").fill("32.70")
            await dialog.get_by_label("季节经度").fill("109.05")
            await dialog.get_by_label("季节起(月-日)").fill("11-15")
            await dialog.get_by_label("季节止(月-日)").fill("3-15")
            await dialog.locator("button[type=submit]").click()
            await expect(page.locator("#elder-season")).to_have_text(
                "县城女儿家（11-15–03-15）", timeout=WAIT_MS
            )
            assert (await stored()).season_lat == 32.70

            await page.click("#edit-elder")
            dialog = page.locator("dialog.form-dialog")
            await dialog.get_by_label("地址", exact=True).fill("新地址 1 号")
            await dialog.locator("button[type=submit]").click()
            await expect(dialog).to_have_count(0, timeout=WAIT_MS)
            after = await stored()
            assert (after.address, after.season_start, after.season_end) == (
                "新地址 1 号",
                "11-15",
                "03-15",
            )

            await page.click("#edit-elder")
            dialog = page.locator("dialog.form-dialog")
            await dialog.get_by_label("季节止(月-日)").fill("2月30日")
            await dialog.locator("button[type=submit]").click()
            error = dialog.locator("label", has=page.locator("input[name=season_end]")).locator(
                ".field-error"
            )
            await expect(error).not_to_be_empty(timeout=WAIT_MS)
            assert (await stored()).season_end == "03-15"
        finally:
            await context.close()
