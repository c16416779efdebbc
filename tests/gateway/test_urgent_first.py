"""An SOS is stored and acked ahead of the rest of its batch (a township's `power_lost` reports
arriving in the same moment), each device's events keeping their order."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlmodel import col

from anxin.mqtt import BrokerAddress
from anxin.schemas import RejectReason, event_json
from gateway import ingest
from gateway.models import Event
from tests.support.broker import Mosquitto, TestDevice, device_ids_of_kind, running_gateway
from tests.support.harness import Seeded


def _event(event_id: str, type_: str) -> ingest.ParsedEvent | ingest.Rejection:
    return ingest.parse_event(event_json(event_id, type_))


def test_an_sos_device_goes_first_with_its_earlier_events_in_order() -> None:
    batch = [
        ("hub-1", _event("p1", "power_lost")),
        ("btn-2", _event("c1", "cancel")),
        ("hub-3", _event("p3", "power_lost")),
        ("btn-2", _event("s1", "sos")),
        ("hub-4", ingest.Rejection(RejectReason.invalid_json, "not json")),
        ("btn-2", _event("t1", "low_battery")),
    ]
    # Everything btn-2 sent, in the order sent (its cancel stays before its new SOS), then the
    # rest.
    assert ingest.urgent_first(batch) == [[1, 3, 5], [0, 2, 4]]


def test_a_flooding_button_goes_after_a_press_elsewhere() -> None:
    stuck = [("btn-9", _event(f"f{i}", "sos")) for i in range(ingest.FLOODING_EVENTS + 1)]
    batch = [
        *stuck[:2],
        ("btn-2", _event("s1", "sos")),
        *stuck[2:],
        ("hub-1", _event("p", "power_lost")),
    ]
    assert ingest.urgent_first(batch) == [[2], [0, 1, 3, 4], [5]]


def test_a_batch_without_an_sos_is_one_group() -> None:
    batch = [("hub-1", _event("p1", "power_lost")), ("hub-2", _event("o1", "offline"))]
    assert ingest.urgent_first(batch) == [[0, 1]]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["sos", "fall", "power_lost", "cancel", "test"]),
        ),
        max_size=30,
    )
)
def test_every_event_is_kept_once_and_each_device_keeps_its_order(
    sent: list[tuple[str, str]],
) -> None:
    batch = [(device, _event(f"e{i}", type_)) for i, (device, type_) in enumerate(sent)]
    groups = ingest.urgent_first(batch)
    order = [i for g in groups for i in g]
    assert sorted(order) == list(range(len(batch)))
    for device in {d for d, _ in batch}:
        positions = [i for i in order if batch[i][0] == device]
        assert positions == sorted(positions)
        # A device's events are all in one group.
        assert sum(any(batch[i][0] == device for i in g) for g in groups) == 1
    urgent = {d for d, t in sent if t in ("sos", "fall")}
    not_urgent = {d for d, _ in sent} - urgent
    assert not_urgent.isdisjoint(batch[i][0] for g in groups[:-1] for i in g)
    if urgent:
        assert {batch[i][0] for i in groups[0]} <= urgent


async def test_an_sos_sent_after_a_townships_power_reports_is_stored_before_them(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    address = BrokerAddress.parse(mosquitto.url())
    hubs = [
        TestDevice(address, d, will=False)
        for d in list(device_ids_of_kind(region.plan, "hub"))[:12]
    ]
    button = TestDevice(address, next(device_ids_of_kind(region.plan, "sos_button")), will=False)
    # One lane and a long batch window: the reports and the SOS are one batch.
    async with running_gateway(region.sessions, mosquitto.url(), batch_ms=400, event_workers=1):
        for device in [*hubs, button]:
            await device.connect()
        try:
            for n, hub in enumerate(hubs):
                hub.client.publish_nowait(
                    f"anxin/v1/dev/{hub.device_id}/event", event_json(f"cut-{n}", "power_lost"), 1
                )
            button.client.publish_nowait(
                f"anxin/v1/dev/{button.device_id}/event", event_json("help-1", "sos"), 1
            )
            sos_ack = await button.ack_for("help-1")
            report_acks = await asyncio.gather(
                *(hub.ack_for(f"cut-{n}") for n, hub in enumerate(hubs))
            )
        finally:
            for device in [*hubs, button]:
                await device.close()
    assert sos_ack["status"] == "accepted" and str(sos_ack["alert_id"]).startswith("A")
    assert all(a["status"] == "accepted" for a in report_acks)
    async with region.sessions() as session:
        rows = (await session.execute(select(col(Event.type), col(Event.received_at)))).all()
    stored_at = {str(t): at for t, at in rows if str(t) == "sos"}
    reports = [at for t, at in rows if str(t) == "power_lost"]
    assert len(reports) == len(hubs)
    # Sent last, stored first: its transaction committed before theirs began.
    assert stored_at["sos"] < min(reports)
