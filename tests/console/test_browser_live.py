"""The console in a real headless Chromium: 改派给 from the page, and what the page says when the
server goes away and comes back on the same port.

Waits are generous on purpose: they guard against a hang; speed is never asserted here.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from playwright.async_api import Browser, ConsoleMessage, expect
from sqlalchemy import select
from sqlmodel import col

from alert_service import intake, rules
from alert_service.models import Alert, DispatchAttempt
from anxin.app import create_app
from anxin.clock import SystemClock
from anxin.db import transaction
from anxin.models import Elder, Responder
from anxin.settings import Settings
from device_sim.harness import serve_app
from dispatcher import templates
from tests.builders import sos_button_in
from tests.support.broker import press_sos
from tests.support.browser import WAIT_MS, accept_dialog, log_in
from tests.support.harness import RunningPlatform, Seeded, eventually


async def test_reassign_in_the_console_asks_the_chosen_aide_and_stands_the_first_down(
    platform: RunningPlatform, region: Seeded, browser: Browser, artifacts_dir: Path
) -> None:
    _, button = sos_button_in(region.plan, "T01")
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    page.on("dialog", accept_dialog)
    try:
        await log_in(page, platform.web_url, "t01", "anxin-t01")
        alert_id = await press_sos(platform, button, f"reassign-{uuid.uuid4().hex[:8]}")

        async def first_asked() -> tuple[Alert, Responder] | None:
            async with platform.sessions() as session:
                attempt = (
                    (
                        await session.execute(
                            select(DispatchAttempt).where(col(DispatchAttempt.alert_id) == alert_id)
                        )
                    )
                    .scalars()
                    .first()
                )
                alert = await session.get(Alert, alert_id)
                if attempt is None or alert is None:
                    return None
                responder = await session.get(Responder, attempt.responder_id)
                return (alert, responder) if responder else None

        alert, first = await eventually(first_asked, what="the first aide asked")
        chosen_id = next(
            c["responder_id"]
            for c in alert.ranking
            if c["kind"] == "aide" and c["responder_id"] != first.id
        )
        async with platform.sessions() as session:
            chosen = await session.get(Responder, chosen_id)
        assert chosen is not None

        await page.goto(f"{platform.web_url}/#/alert/{alert_id}")
        ranking = page.locator("#ranking")
        await expect(ranking.locator(f"tr[data-responder='{first.id}']")).to_contain_text(
            "等待回复", timeout=WAIT_MS
        )
        await page.select_option("#reassign-responder", str(chosen_id))
        await page.click("#do-reassign")
        # The toast (4 s, so looked at first) says it is done, in the header, over no text.
        toast = page.locator("#toasts .toast")
        await expect(toast).to_have_text("已完成")
        box, header = await toast.bounding_box(), await page.locator("#top").bounding_box()
        assert box is not None and header is not None
        assert (
            box["y"] >= header["y"] and box["y"] + box["height"] <= header["y"] + header["height"]
        )

        await expect(ranking.locator(f"tr[data-responder='{first.id}']")).to_contain_text(
            "已改派他人", timeout=WAIT_MS
        )
        await expect(ranking.locator(f"tr[data-responder='{chosen_id}']")).to_contain_text(
            "等待回复"
        )
        await expect(page.locator("#timeline")).to_contain_text("撤回派单（已改派）")
        await expect(page.locator("#sms")).to_contain_text("已改派他人，无需前往", timeout=WAIT_MS)
        await page.screenshot(path=str(artifacts_dir / "console-reassigned.png"), full_page=True)

        # What the aides' phones received: a call-out for the chosen one, stand down for the first.
        withdrawn = templates.reassigned_sms(alert.code, first.lang)

        async def stood_down() -> bool:
            texts = [m.body for m in platform.sandbox.messages_to(first.phone)]
            return bool(texts) and texts[-1] == withdrawn

        await eventually(stood_down, what="the first aide's stand-down SMS")
        call_outs = [m.body for m in platform.sandbox.messages_to(chosen.phone)]
        assert any(alert.code in body and "回1接单" in body for body in call_outs)

        # The first aide's late "1" does not take it.
        assert await platform.sandbox.reply(first.phone, "1") == 200
        async with platform.sessions() as session:
            current = await session.get(Alert, alert_id)
            assert current is not None and current.accepted_by is None
    finally:
        await context.close()


LOST = re.compile(r"与服务器的连接已断开，显示的是 \d\d:\d\d:\d\d 的数据")


async def test_the_console_says_when_the_server_is_gone_and_recovers_by_itself(
    region: Seeded, browser: Browser, artifacts_dir: Path
) -> None:
    now = SystemClock().now()
    async with transaction(region.sessions) as session:
        elder, other = (await session.execute(select(Elder).limit(2))).scalars()
        await intake.raise_or_join(
            session, elder, rules.RaiseAlert("sos", rules.P1), None, now, "t"
        )
        # A device offline, reported twice: its timeline must not say "pressed again".
        for _ in range(2):
            offline = await intake.raise_or_join(
                session, other, rules.RaiseAlert("offline", rules.P3), None, now, "device:hub-x"
            )
    errors: list[str] = []
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    page = await context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "404" in message.text:
            errors.append(message.text)

    page.on("console", on_console)
    try:
        async with serve_app(create_app(Settings(), region.sessions)) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            await page.goto(base_url + "/")
            await expect(page.locator("form#login")).to_be_visible(timeout=WAIT_MS)
            await expect(page.locator("#nav")).to_be_hidden()  # nothing to navigate to yet
            icon = await page.locator("link[rel=icon]").get_attribute("href")
            assert icon is not None
            for path in (icon, "/favicon.ico"):
                res = await page.request.get(base_url + path)
                assert res.status == 200 and res.headers["content-type"].startswith("image/")
            await log_in(page, base_url, "county", "anxin-county")
            await page.goto(f"{base_url}/#/alert/{offline.id}")
            timeline = page.locator("#timeline")
            await expect(timeline).to_contain_text("再次报告", timeout=WAIT_MS)
            await expect(timeline).not_to_contain_text("再次按键")
            # English: the header stays one 52 px line at 1,400 px.
            await page.click("#lang")
            await expect(page.locator("#nav a[data-route=figures]")).to_have_text("Figures")
            for part, limit in (("#top", 52), ("#nav", 60)):  # one line, not two
                box = await page.locator(part).bounding_box()
                assert box is not None and box["height"] <= limit, part
            await page.click("#lang")
            await page.goto(f"{base_url}/#/queue")
            await expect(page.locator("#queue-rows tr")).to_have_count(2, timeout=WAIT_MS)
            await expect(page.locator("#connection-lost")).to_be_hidden()
        # The server is gone (the page still open): the banner, greyed queue, stale countdowns.
        lost = page.locator("#connection-lost")
        await expect(lost).to_be_visible(timeout=WAIT_MS)
        await expect(lost).to_have_text(LOST)
        await expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
        await page.screenshot(path=str(artifacts_dir / "console-connection-lost.png"))
        await expect(page.locator("#queue-rows td.countdown .stale-mark")).to_have_text(
            ["未更新", "未更新"]
        )

        # Back on the same port: the banner goes by itself, with fresh data.
        async with serve_app(create_app(Settings(), region.sessions), port=port):
            await expect(lost).to_be_hidden(timeout=WAIT_MS)
            await expect(page.locator("#live")).to_have_class("live on")
            await expect(page.locator("body")).not_to_have_class(re.compile(r"\bstale\b"))
            await expect(page.locator("#queue-rows td.countdown .stale-mark")).to_have_count(0)
            await expect(page.locator("#queue-rows tr")).to_have_count(2)
            await page.screenshot(path=str(artifacts_dir / "console-reconnected.png"))
            await context.close()
    finally:
        await context.close()
    assert errors == []
