"""A home hub's visit button (the `visit` event, issue 18) over a real Mosquitto and Postgres:
acked as every event (the contract unchanged), the visit recorded in the event's transaction;
a second the same day, or one stamped in the future, kept as rejected; a concern opens an
alert with the visit on its timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert, AlertTimelineEntry
from anxin.clock import FakeClock
from anxin.mqtt import BrokerAddress
from anxin.schemas import event_json
from gateway.models import Event
from tests.support.broker import Mosquitto, connected_device, device_ids_of_kind, running_gateway
from tests.support.harness import Seeded
from visits.models import Visit

NOW = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def test_a_hubs_visit_button_records_a_visit(region: Seeded, mosquitto: Mosquitto) -> None:
    hub = next(device_ids_of_kind(region.plan, "hub"))
    clock = FakeClock(NOW)
    sent = [
        # an hour ago (the hub was offline a while): the visit counts at its own time
        event_json("visit-1", "visit", ts=ms(NOW - timedelta(hours=1))),
        event_json("visit-2", "visit", data={"mode": "phone"}),  # a second the same day
        event_json("visit-3", "visit", ts=ms(NOW + timedelta(days=2))),  # a clock gone wrong
    ]
    address = BrokerAddress.parse(mosquitto.url())
    async with (
        running_gateway(region.sessions, mosquitto.url(), clock=clock),
        connected_device(address, hub) as device,
    ):
        for i, payload in enumerate(sent, 1):
            await device.publish("event", payload)
            assert (await device.ack_for(f"visit-{i}"))["status"] == "accepted"
        clock.advance(timedelta(days=1))
        concern = {"concern": True, "note": "灶台没关"}
        await device.publish("event", event_json("visit-4", "visit", data=concern))
        ack = await device.ack_for("visit-4")
    assert ack["status"] == "accepted" and "alert_id" not in ack  # a visit raises nothing itself
    async with region.sessions() as session:
        visits = list((await session.execute(select(Visit).order_by(col(Visit.id)))).scalars())
        events = dict((await session.execute(select(col(Event.event_id), col(Event.id)))).all())
        alert = (await session.execute(select(Alert))).scalars().one()
        timeline = list(
            (
                await session.execute(
                    select(AlertTimelineEntry).where(col(AlertTimelineEntry.alert_id) == alert.id)
                )
            ).scalars()
        )
    assert [(v.status, v.reject_reason, v.mode, v.channel, v.device_id) for v in visits] == [
        ("counted", None, "home", "device", hub),
        ("rejected", "same_day", "phone", "device", hub),
        ("rejected", "future", "home", "device", hub),
        ("counted", None, "home", "device", hub),
    ]
    assert visits[0].visited_at == NOW - timedelta(hours=1)
    assert [v.event_id for v in visits] == [events[f"visit-{i}"] for i in range(1, 5)]
    assert (alert.kind, alert.priority, visits[3].alert_id) == ("visit_concern", 3, alert.id)
    assert any(t.action == "visit" and t.detail["note"] == "灶台没关" for t in timeline)
