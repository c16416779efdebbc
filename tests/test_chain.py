"""The whole chain through real parts: MQTT → gateway → Postgres → alert → SMS → replies."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert, AlertTimelineEntry
from anxin.models import Responder
from anxin.mqtt import MqttClient, MqttMessage
from anxin.schemas import event_json, topic
from dispatcher.models import SmsMessage
from tests.support.harness import RunningPlatform, Seeded, eventually


async def _alert(platform: RunningPlatform, alert_id: int) -> Alert | None:
    async with platform.services.sessions() as session:
        return await session.get(Alert, alert_id)


async def test_sos_over_mqtt_is_stored_acked_dispatched_and_closed_by_sms_replies(
    platform: RunningPlatform, region: Seeded
) -> None:
    elder = region.plan.elders[0]
    sos = next(
        d for d in region.plan.devices if d.elder_code == elder.code and d.kind == "sos_button"
    )
    device = MqttClient(platform.mqtt, f"test-{sos.device_id}")
    acks = device.subscribe(topic(sos.device_id, "ack"), 1)
    await device.connect()
    try:
        await device.publish(topic(sos.device_id, "event"), event_json("e2e-1", "sos"), 1)
        ack = json.loads((await eventually(lambda: _next(acks), what="device ack")).payload)
        assert ack["status"] == "accepted"
        assert ack["event_id"] == "e2e-1"
        alert_id = int(ack["alert_id"].removeprefix("A"))

        alert = await _alert(platform, alert_id)
        assert alert is not None  # durable when acked
        assert (alert.kind, alert.priority) == ("sos", 1)

        # The watcher, woken by the gateway's NOTIFY, ranks the responders a moment later.
        async def ranked() -> Alert | None:
            found = await _alert(platform, alert_id)
            return found if found is not None and found.ranking else None

        alert = await eventually(ranked, what="the alert ranked")
        assert alert.respond_by == alert.raised_at + timedelta(minutes=15)

        # The nearest on-duty aide gets the call-out SMS through the real twilio library.
        nearest = alert.ranking[0]
        assert nearest["kind"] == "aide"
        async with platform.services.sessions() as session:
            aide = await session.get(Responder, nearest["responder_id"])
        assert aide is not None and aide.on_duty
        sms = await platform.sandbox.next_message(aide.phone, timeout=20)
        assert alert.code in sms.body and elder.name in sms.body

        async def outbox_row() -> SmsMessage | None:
            async with platform.services.sessions() as session:
                rows = await session.execute(
                    select(SmsMessage).where(
                        col(SmsMessage.alert_id) == alert_id, col(SmsMessage.purpose) == "dispatch"
                    )
                )
                row = rows.scalars().first()
                return row if row is not None and row.provider_sid == sms.sid else None

        await eventually(outbox_row, what="the dispatch SMS row with its provider id")

        # The aide replies 1, 2, 3 from a basic phone: signed webhooks move the alert along.
        for reply, status in (("1", "accepted"), ("2", "on_scene"), ("3", "resolved")):
            assert await platform.sandbox.reply(aide.phone, f"{reply} {alert.code}") == 200

            async def reached(status: str = status) -> Alert | None:
                current = await _alert(platform, alert_id)
                return current if current is not None and current.status == status else None

            current = await eventually(reached, what=f"alert {status}")
        assert current.accepted_by == aide.id
        assert current.on_scene_at is not None and current.respond_by is not None
        assert current.on_scene_at <= current.respond_by
        assert current.outcome == "handled"

        async with platform.services.sessions() as session:
            actions = (
                (
                    await session.execute(
                        select(col(AlertTimelineEntry.action))
                        .where(col(AlertTimelineEntry.alert_id) == alert_id)
                        .order_by(col(AlertTimelineEntry.id))
                    )
                )
                .scalars()
                .all()
            )
        for step in ("raised", "asked", "accepted", "on_scene", "resolved"):
            assert step in actions

        # The device resends the same event (its ack was lost, say): stored once, same alert.
        await device.publish(topic(sos.device_id, "event"), event_json("e2e-1", "sos"), 1)
        again = json.loads((await eventually(lambda: _next(acks), what="second ack")).payload)
        assert again == {"event_id": "e2e-1", "status": "duplicate", "alert_id": alert.code}
    finally:
        await device.close()


async def _next(queue: asyncio.Queue[MqttMessage]) -> MqttMessage | None:
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        return None
