"""The queue's 逾期探访 tab and the elder's visit status in a real Chromium: a township operator
sees, apart from the emergencies, the elders of their township whose visit is overdue (never
visited: overdue once a whole period has passed), not the one visited today, and each elder's
page says where their visits stand (issue 18 item 4)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from anxin.app import create_app
from anxin.clock import SystemClock
from anxin.db import transaction
from anxin.settings import Settings
from tests import builders
from tests.support.browser import WAIT_MS, log_in
from tests.support.harness import Seeded, ServeApp
from visits import service
from visits.models import VisitChannel


async def test_the_overdue_tab_and_the_elders_visit_status(
    region: Seeded, browser: Browser, artifacts_dir: Path, serve_app: ServeApp
) -> None:
    plan = region.plan
    township = plan.townships[0]
    operator = next(o for o in plan.operators if o.region_code == township.code)
    villages = {v.code for v in plan.villages if v.parent_code == township.code}
    visited, unvisited = [e for e in plan.elders if e.village_code in villages][:2]
    elsewhere = next(e for e in plan.elders if e.village_code not in villages)
    async with transaction(region.sessions) as session:
        elder = await service.find_elder(session, visited.code)
        lonely = await service.find_elder(session, unvisited.code)
        assert elder is not None and lonely is not None
        result = await service.record_visit(
            session,
            channel=VisitChannel.console,
            now=SystemClock().now(),
            timezone=builders.TZ,
            elder_id=elder.id,
        )
        assert result.counted

    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        try:
            await log_in(page, base_url, operator.username, operator.password)
            await expect(page.locator("#tab-alerts")).to_have_text("紧急警报", timeout=WAIT_MS)
            await expect(page.locator("#queue")).to_be_visible()
            await expect(page.locator("#overdue-count")).not_to_have_text("…", timeout=WAIT_MS)
            await page.click("#tab-overdue")
            table = page.locator("#overdue")
            await expect(table).to_be_visible(timeout=WAIT_MS)
            await expect(page.locator("#queue")).to_be_hidden()  # not mixed with emergencies
            row = table.locator(f"tr[data-elder='{lonely.id}']")
            await expect(row).to_contain_text(unvisited.name)
            await expect(row.locator("td").last).not_to_have_text("0")
            await expect(table.locator(f"tr[data-elder='{elder.id}']")).to_have_count(0)
            await expect(table).not_to_contain_text(elsewhere.code)  # another township's
            count = await table.locator("tbody tr").count()
            await expect(page.locator("#overdue-count")).to_have_text(str(count))
            await page.screenshot(path=str(artifacts_dir / "overdue-tab.png"), full_page=True)

            await row.locator("a").click()
            card = page.locator("#elder-visits")
            await expect(card.locator("h3")).to_have_text("探访情况", timeout=WAIT_MS)
            await expect(page.locator("#visit-overdue")).to_contain_text("逾期未探访")
            await expect(card).to_contain_text("上次探访")

            await page.goto(f"{base_url}/console#/elder/{elder.id}")
            await expect(page.locator("#visit-overdue")).to_have_text("按期", timeout=WAIT_MS)
            await expect(page.locator("#elder-visits")).to_contain_text("本期已探访")
            await page.screenshot(path=str(artifacts_dir / "elder-visits.png"), full_page=True)
        finally:
            await context.close()
