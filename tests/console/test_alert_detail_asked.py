"""An alert's detail (`GET /api/alerts/{id}`) lists who was asked, as its queue row does: after
the ranking and call-out, and after the first aide declines by SMS and the next is asked.
Every role running, the SOS over the real broker, the replies through signed webhooks."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col

from anxin.models import Responder
from tests.builders import login, sos_button_in
from tests.support.broker import press
from tests.support.harness import RunningPlatform, Seeded, eventually


async def test_the_alert_detail_lists_who_was_asked_as_the_queue_row_does(
    platform: RunningPlatform, region: Seeded
) -> None:
    _, button = sos_button_in(region.plan, "T01")
    alert_id = (await press(platform, button.device_id))["alert_id"]
    async with httpx.AsyncClient(base_url=platform.web_url) as http:
        t01 = await login(http, "t01", "anxin-t01")

        async def queue_row(asked: int) -> dict[str, Any] | None:
            rows = (await http.get("/api/alerts?open_only=true", headers=t01)).json()
            row = next((r for r in rows if r["id"] == alert_id), None)
            return row if row is not None and len(row["asked"]) >= asked else None

        called = await eventually(lambda: queue_row(1), what="the call-out in the queue")
        detail = (await http.get(f"/api/alerts/{alert_id}", headers=t01)).json()
        assert called["asked"] and called["asked"][0]["answer"] == "pending"
        assert detail["asked"] == called["asked"]

        # The first aide declines by SMS; the next one is asked at once.
        first = detail["attempts"][0]["responder_id"]
        async with platform.sessions() as session:
            phone = (
                await session.execute(
                    select(col(Responder.phone)).where(col(Responder.id) == first)
                )
            ).scalar_one()
        assert await platform.sandbox.reply(phone, f"0 A{alert_id}") == 200
        moved = await eventually(lambda: queue_row(2), what="the next aide asked")
        detail = (await http.get(f"/api/alerts/{alert_id}", headers=t01)).json()
        assert [a["answer"] for a in moved["asked"][:2]] == ["declined", "pending"]
        assert detail["asked"] == moved["asked"]
