"""The operator console in a real headless Chromium, against every role running in-process.

Waits are generous on purpose: they guard against a hang; speed is never asserted here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, expect
from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert, AlertTimelineEntry
from anxin.app import create_app
from anxin.clock import SystemClock
from anxin.db import transaction
from anxin.models import AuditLog, OperatorUser
from anxin.settings import Settings
from tests.builders import seed_closed_alerts, sos_button_in
from tests.support.broker import press_sos
from tests.support.browser import WAIT_MS, accept_dialog, log_in
from tests.support.harness import RunningPlatform, Seeded, ServeApp


async def test_township_operator_sees_a_new_sos_live_and_resolves_it_from_the_page(
    platform: RunningPlatform, region: Seeded, browser: Browser, artifacts_dir: Path
) -> None:
    plan = region.plan
    mine, my_button = sos_button_in(plan, "T01")
    theirs, their_button = sos_button_in(plan, "T02")
    context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    page.on("dialog", accept_dialog)
    try:
        await log_in(page, platform.web_url, "t01", "anxin-t01")
        rows = page.locator("#queue-rows")

        # Another township's emergency first: it must never reach this operator's screen.
        their_alert = await press_sos(platform, their_button, "console-t02")
        my_alert = await press_sos(platform, my_button, "console-t01")

        # Pushed, no reload: the row, the banner and the beep for a new P1.
        my_row = rows.locator(f"tr[data-id='{my_alert}']")
        await expect(my_row).to_be_visible(timeout=WAIT_MS)
        await expect(my_row).to_contain_text(mine.name)
        await expect(my_row).to_contain_text("一键呼叫")
        banner = page.locator("#banner")
        await expect(banner).to_be_visible(timeout=WAIT_MS)
        await expect(banner).to_contain_text(mine.name)
        assert await page.evaluate("window.anxinBeeps || 0") >= 1
        await expect(rows.locator(f"tr[data-id='{their_alert}']")).to_have_count(0)
        assert theirs.name not in await rows.inner_text()

        # The countdown runs in the page.
        countdown = my_row.locator("td.countdown")
        first = await countdown.inner_text()
        await page.wait_for_function(
            "([id, text]) => document.querySelector(`#queue-rows tr[data-id='${id}'] td.countdown`)"
            "?.textContent !== text",
            arg=[my_alert, first],
            timeout=WAIT_MS,
        )
        await page.screenshot(path=str(artifacts_dir / "console-queue.png"), full_page=True)

        # The map draws the open alert at the elder's home, offline, from coordinates.
        await page.click("#nav a[data-route=map]")
        await expect(page.locator(f"svg.map a[href='#/alert/{my_alert}']")).to_be_attached(
            timeout=WAIT_MS
        )
        await page.screenshot(path=str(artifacts_dir / "console-map.png"), full_page=True)
        await page.click("#nav a[data-route=queue]")

        # The detail: timeline, ranking with ETAs, the SMS; then resolve with an outcome.
        await my_row.click()
        await expect(page.locator("#alert-title")).to_contain_text(f"A{my_alert}", timeout=WAIT_MS)
        await expect(page.locator("#timeline")).to_contain_text("报警")
        await expect(page.locator("#ranking")).to_contain_text("分钟")
        await expect(page.locator("#sms")).to_contain_text("派单", timeout=WAIT_MS)
        await page.screenshot(path=str(artifacts_dir / "console-detail.png"), full_page=True)

        note = "电话核实 <img src=x onerror=window.pwned=1>"
        await page.select_option("#outcome", "false_alarm")
        await page.fill("#note", note)
        await page.click("#do-resolve")
        await expect(page.locator("#outcome-value")).to_have_text("误报", timeout=WAIT_MS)
        timeline = page.locator("#timeline")
        await expect(timeline.locator("tr.tl-resolved")).to_contain_text("t01")
        await expect(timeline.locator("tr.tl-resolved")).to_contain_text(note)
        assert await page.evaluate("window.pwned === undefined")  # the note stayed text
        await page.screenshot(path=str(artifacts_dir / "console-resolved.png"), full_page=True)

        async with platform.services.sessions() as session:
            alert = await session.get(Alert, my_alert)
            assert alert is not None
            assert (alert.status, alert.outcome, alert.note) == ("resolved", "false_alarm", note)
            assert alert.resolved_by == "operator:t01"
            resolved = (
                await session.execute(
                    select(AlertTimelineEntry).where(
                        col(AlertTimelineEntry.alert_id) == my_alert,
                        col(AlertTimelineEntry.action) == "resolved",
                    )
                )
            ).scalar_one()
            assert resolved.actor == "operator:t01"
            entry = (
                await session.execute(
                    select(AuditLog, OperatorUser)
                    .join(OperatorUser, col(OperatorUser.id) == col(AuditLog.operator_id))
                    .where(
                        col(AuditLog.action) == "resolve",
                        col(AuditLog.target_id) == str(my_alert),
                    )
                )
            ).one()
            assert entry[1].username == "t01"
            assert entry[0].detail["outcome"] == "false_alarm"

    finally:
        await context.close()


async def test_county_figures_page_charts_compliance_per_township_and_exports_csv(
    region: Seeded, browser: Browser, artifacts_dir: Path, serve_app: ServeApp
) -> None:
    async with transaction(region.sessions) as session:
        await seed_closed_alerts(session, SystemClock().now())
    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url:
        # The page closes before the server stops: its live stream would hold the server open.
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        try:
            await log_in(page, base_url, "county", "anxin-county")
            await page.click("#nav a[data-route=figures]")
            table = page.locator("#figures-table")
            for township in region.plan.townships:
                await expect(table).to_contain_text(township.name, timeout=WAIT_MS)
            await expect(page.locator("svg.chart rect")).to_have_count(15)  # 3 townships × 5 months
            await page.screenshot(path=str(artifacts_dir / "console-figures.png"), full_page=True)

            async with page.expect_download() as download_info:
                await page.click("#export-csv")
            download = await download_info.value
            saved = await download.path()
            exported = await asyncio.to_thread(Path(saved).read_text, encoding="utf-8-sig")
            assert exported.splitlines()[0].startswith("region,level,month,alerts,urgent")
            assert region.plan.townships[0].name in exported

            # English on request; Chinese is the default.
            await page.click("#lang")
            await expect(page.locator("#nav a[data-route=figures]")).to_have_text("Figures")
            await expect(page.locator("h2")).to_have_text("15-minute rule compliance")
        finally:
            await context.close()


async def test_registry_pages_list_and_edit_with_validation_shown_at_the_field(
    region: Seeded, browser: Browser, artifacts_dir: Path, serve_app: ServeApp
) -> None:
    errors: list[str] = []
    async with serve_app(create_app(Settings(), region.sessions)) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", accept_dialog)
        try:
            await log_in(page, base_url, "t01", "anxin-t01")
            for route, expected in (
                ("devices", "sos-"),
                ("responders", "助老员"),
                ("regions", "青溪乡"),
                ("dead-letters", "异常设备消息"),
                ("elders", region.plan.elders[0].name),
            ):
                await page.click(f"#nav a[data-route='{route}']")
                await expect(page.locator("#view")).to_contain_text(expected, timeout=WAIT_MS)
            await page.screenshot(path=str(artifacts_dir / "console-elders.png"), full_page=True)

            # Edit an elder: a guardian number that is not E.164 is refused at its field.
            await page.click(f"text={region.plan.elders[0].name}")
            await page.click("#edit-elder")
            await page.fill("#f-guardian_phones", "13800000000")
            await page.click("dialog button[type=submit]")
            await expect(
                page.locator("dialog label:has(#f-guardian_phones) .field-error")
            ).not_to_be_empty(timeout=WAIT_MS)
            await page.screenshot(path=str(artifacts_dir / "console-elder-edit.png"))
            await page.fill("#f-guardian_phones", "+8613800000000")
            await page.click("dialog button[type=submit]")
            await expect(page.locator("#view")).to_contain_text("+8613800000000", timeout=WAIT_MS)
        finally:
            await context.close()
    assert errors == []
