"""What an elder's family texted is on the elder's page, in a real Chromium (issue 20 item 2): a
guardian's help text (with the alert it raised, a link) and a free-text reply, newest first."""

from __future__ import annotations

from playwright.async_api import Browser, expect
from sqlalchemy import select, update
from sqlmodel import col

from alert_service.responses import LadderResponses
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import Elder
from anxin.settings import Settings
from dispatcher import inbound
from tests.builders import village_codes
from tests.support.browser import WAIT_MS, log_in
from tests.support.harness import Seeded, ServeApp

GUARDIAN = "+8613700000201"


async def test_the_familys_texts_are_listed_on_the_elders_page(
    region: Seeded, browser: Browser, serve_app: ServeApp
) -> None:
    spec = next(e for e in region.plan.elders if e.village_code in village_codes(region, "T01"))
    clock = FakeClock()
    async with transaction(region.sessions) as session:
        await session.execute(
            update(Elder).where(col(Elder.code) == spec.code).values(guardian_phones=[GUARDIAN])
        )
    outcomes = []
    for i, body in enumerate(("救命，我妈摔了", "我马上回去")):
        async with transaction(region.sessions) as session:
            outcomes.append(
                await inbound.handle_inbound(
                    session,
                    responses=LadderResponses(),
                    from_phone=GUARDIAN,
                    to_phone="+8610690000000",
                    body=body,
                    sid=f"SMfamily{i}",
                    now=clock.now(),
                )
            )
        clock.advance(60)
    assert outcomes[0].startswith("text_alert:raised:A") and outcomes[1].startswith(
        "family_message:A"
    )
    code = outcomes[0].rsplit(":", 1)[1]
    async with region.sessions() as session:
        elder = (
            await session.execute(select(Elder).where(col(Elder.code) == spec.code))
        ).scalar_one()

    errors: list[str] = []
    async with serve_app(create_app(Settings(), region.sessions)) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            await log_in(page, base_url, "t01", "anxin-t01")
            await page.goto(f"{base_url}/#/elder/{elder.id}")
            card = page.locator("#family-messages")
            await expect(card.locator("h3")).to_have_text("家属短信", timeout=WAIT_MS)
            rows = card.locator("tbody tr")
            await expect(rows).to_have_count(2, timeout=WAIT_MS)
            await expect(rows.nth(0)).to_contain_text("我马上回去")
            await expect(rows.nth(0)).to_contain_text("家属短信")
            await expect(rows.nth(1)).to_contain_text("救命，我妈摔了")
            await expect(rows.nth(1)).to_contain_text("短信求助")
            await expect(rows.nth(1).locator("a")).to_have_text(code)
            await expect(rows.nth(1)).to_contain_text(GUARDIAN)
            await rows.nth(1).locator("a").click()
            await expect(page).to_have_url(f"{base_url}/#/alert/{code[1:]}", timeout=WAIT_MS)
        finally:
            await context.close()
    assert errors == []
