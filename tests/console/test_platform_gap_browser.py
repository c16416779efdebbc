"""An alert left open across the platform's downtime shows the gap on its timeline, in the
real console (headless Chromium), in Chinese and in English."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from playwright.async_api import Browser, expect

from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.settings import Settings
from gateway import service
from tests.builders import gateway_sos, sos_button_in
from tests.support.browser import WAIT_MS, log_in
from tests.support.harness import Seeded, ServeApp


async def test_the_timeline_shows_the_platforms_gap_in_chinese_and_english(
    region: Seeded, browser: Browser, artifacts_dir: Path, serve_app: ServeApp
) -> None:
    clock = FakeClock()  # 02:00 UTC: 10:00 in Asia/Shanghai
    _, button = sos_button_in(region.plan, "T01")
    async with transaction(region.sessions) as session:
        await service.gateway_alive(
            session, gateway_id="gw-1", now=clock.now(), shared=False, resuming=True
        )
    alert_id = await gateway_sos(region.sessions, clock, button.device_id)
    clock.advance(timedelta(minutes=25))
    async with transaction(region.sessions) as session:
        gap = await service.gateway_alive(
            session, gateway_id="gw-1", now=clock.now(), shared=False, resuming=True
        )
    assert gap is not None

    async with serve_app(create_app(Settings(), region.sessions)) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        try:
            await log_in(page, base_url, "t01", "anxin-t01")
            await page.evaluate("id => { location.hash = `#/alert/${id}`; }", alert_id)
            entry = page.locator("#timeline tr.tl-platform_gap")
            await expect(entry).to_have_count(1, timeout=WAIT_MS)
            await expect(entry).to_contain_text("平台中断")
            await expect(entry).to_contain_text("25 分钟 (10:00–10:25)")
            await page.screenshot(path=str(artifacts_dir / "console-platform-gap.png"))

            await page.click("#lang")
            await expect(entry).to_contain_text("platform outage", timeout=WAIT_MS)
            await expect(entry).to_contain_text("25 min (10:00–10:25)")
        finally:
            await context.close()
