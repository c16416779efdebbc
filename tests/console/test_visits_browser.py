"""The figures page's care-visit section in a real Chromium: a township operator reads last
month's visit rate for their township and villages, who was missed and why, and downloads the
.xlsx the county sends upward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from openpyxl import load_workbook
from playwright.async_api import Browser, expect

from anxin.app import create_app
from anxin.db import transaction
from anxin.settings import Settings
from tests import builders
from tests.support.browser import WAIT_MS, log_in
from tests.support.harness import Seeded, ServeApp
from visits import schedule, service
from visits.models import VisitChannel


def _mid_last_month() -> datetime:
    """The 12th of last month, 10:00 in Shanghai (the section shows last month by default)."""
    today = datetime.now(ZoneInfo(builders.TZ))
    last = today.replace(day=1) - timedelta(days=1)
    return last.replace(day=12, hour=10, minute=0, second=0, microsecond=0).astimezone(UTC)


async def test_a_township_operator_reads_last_months_visit_rate(
    region: Seeded, browser: Browser, artifacts_dir: Path, serve_app: ServeApp
) -> None:
    plan = region.plan
    township = plan.townships[0]
    operator = next(o for o in plan.operators if o.region_code == township.code)
    villages = {v.code: v for v in plan.villages if v.parent_code == township.code}
    visited = next(e for e in plan.elders if e.village_code in villages)
    when = _mid_last_month()
    async with transaction(region.sessions) as session:
        elder = await service.find_elder(session, visited.code)
        assert elder is not None
        result = await service.record_visit(
            session,
            channel=VisitChannel.console,
            now=when,
            timezone=builders.TZ,
            elder_id=elder.id,
        )
        assert result.counted
        plan_ = schedule.VisitPlan()
        every = plan_.every(plan_.tier_of(service.categories_of(elder)))
        period = schedule.period_of(every, schedule.local_date(when, builders.TZ))
        assert period is not None

    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url:
        context = await browser.new_context(
            viewport={"width": 1440, "height": 900}, locale="zh-CN", accept_downloads=True
        )
        page = await context.new_page()
        try:
            await log_in(page, base_url, operator.username, operator.password)
            await page.click("#nav a[data-route=figures]")
            section = page.locator("#visits")
            await expect(section.locator("h3")).to_have_text("探访关爱：月探访率", timeout=WAIT_MS)
            await expect(page.locator("#visits-month")).to_have_value(when.strftime("%Y-%m"))
            row = page.locator(f"#visits-table tr[data-code={township.code}]")
            await expect(row).to_contain_text(township.name)
            await expect(row).to_contain_text("乡镇")
            home_row = page.locator(f"#visits-table tr[data-code={visited.village_code}]")
            await expect(home_row.locator("td").nth(3)).not_to_have_text("0")
            missed = page.locator("#visits-missed")
            await expect(missed).to_contain_text("未探访")
            # the period visited is not missed (its other weeks may be, for a weekly elder)
            made = missed.locator("tr", has_text=visited.code).filter(
                has_text=f"{period.start} – {period.end}"
            )
            await expect(made).to_have_count(0)
            async with page.expect_download() as downloading:
                await page.click("#visits-xlsx")
            download = await downloading.value
            target = artifacts_dir / "visits-browser.xlsx"
            await download.save_as(target)
            book = load_workbook(target)
            assert book.sheetnames == ["探访率", "未探访名单"]
            codes = [r[1] for r in book["探访率"].iter_rows(min_row=2, values_only=True)]
            assert township.code in codes and set(codes) <= {township.code, *villages}
            await page.screenshot(path=str(artifacts_dir / "visits-figures.png"), full_page=True)
        finally:
            await context.close()
