"""The 代报警 form in a real headless Chromium (issue 20 item 1): a township operator finds the
elder by name, says what happened and who called, submits, and sees the alert in the live queue.
The time from opening the form to the alert's row in the queue is printed (the issue's 10 s of
clicks and typing; timing is not asserted here). A second call for the same elder joins it."""

from __future__ import annotations

import time

from playwright.async_api import Browser, expect
from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert
from anxin.app import create_app
from anxin.settings import Settings
from tests.builders import sos_button_in
from tests.support.browser import WAIT_MS, log_in
from tests.support.harness import Seeded, ServeApp


async def test_an_operator_raises_a_phone_in_from_the_form_and_it_is_in_the_queue(
    region: Seeded, serve_app: ServeApp, browser: Browser
) -> None:
    elder, _ = sos_button_in(region.plan, "T01")
    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        try:
            await log_in(page, base_url, "t01", "anxin-t01")
            started = time.perf_counter()
            await page.click("#nav a[data-route=phone-in]")
            form = page.locator("form#phone-in")
            await page.locator("#phone-in-search").fill(elder.name)
            await page.locator("#phone-in-results button.result", has_text=elder.code).click()
            await expect(page.locator("#phone-in-chosen")).to_contain_text(elder.code)
            await form.get_by_label("跌倒").check()
            await form.get_by_label("邻居").check()
            await form.locator("input[name=caller_phone]").fill("+8613800002222")
            await form.locator("textarea[name=note]").fill("邻居听到呼救")
            await form.get_by_role("button", name="报警").click()
            message = page.locator("#phone-in-message")
            await expect(message).to_contain_text("已报警", timeout=WAIT_MS)
            code = await message.locator("a").get_attribute("data-code")
            assert code is not None
            await page.click("#nav a[data-route=queue]")
            row = page.locator(f"#queue-rows tr[data-id='{code.removeprefix('A')}']")
            await expect(row).to_be_visible(timeout=WAIT_MS)
            elapsed = time.perf_counter() - started
            print(f"\nphone-in form opened → alert in the queue: {elapsed:.2f} s")
            await expect(row).to_contain_text(elder.name)
            await expect(row).to_contain_text("跌倒")

            async with region.sessions() as session:
                alert = (
                    await session.execute(select(Alert).where(col(Alert.id) == int(code[1:])))
                ).scalar_one()
            assert (alert.source, alert.caller_role, alert.caller_phone) == (
                "phone_in",
                "neighbour",
                "+8613800002222",
            )

            # A relative calls about the same elder: the form says it joined the open alert.
            await page.click("#nav a[data-route=phone-in]")
            await page.locator("#phone-in-search").fill(elder.code)
            await page.locator("#phone-in-search").press("Enter")
            await expect(page.locator("#phone-in-chosen")).to_contain_text(elder.code)
            await form.get_by_label("突发疾病").check()
            await form.get_by_label("家属").check()
            await form.get_by_role("button", name="报警").click()
            await expect(message).to_contain_text(f"已有进行中的警报 {code}", timeout=WAIT_MS)
            await expect(message).to_contain_text("并入")
        finally:
            await context.close()
