"""CONTRACT.md §1 over a real Mosquitto and Postgres: every reject reason gets its ack and dead
letter, damaged optional fields still alert, resends are duplicates, MQTT 5 and 3.1.1."""

from __future__ import annotations

import json
from functools import partial

import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from alert_service.models import Alert
from anxin.db import SessionMaker, transaction
from anxin.models import Device
from anxin.mqtt import BrokerAddress
from anxin.schemas import MAX_EVENT_BYTES, event_json
from gateway.ingest import truncate_payload
from gateway.models import DeadLetter, Event
from tests.support.broker import (
    Mosquitto,
    TestDevice,
    connected_device,
    device_ids_of_kind,
    running_gateway,
)
from tests.support.harness import Seeded, eventually


async def _dead_letters(sessions: SessionMaker) -> list[DeadLetter]:
    async with sessions() as session:
        rows = await session.execute(select(DeadLetter).order_by(col(DeadLetter.id)))
        return list(rows.scalars())


async def _next_rejection(device: TestDevice, key: str, before: int) -> dict[str, object]:
    async def arrived() -> dict[str, object] | None:
        got = device.acks.get(key, [])
        return got[before] if len(got) > before else None

    return await eventually(arrived, what=f"ack {key} #{before + 1}")


async def test_every_reject_reason_gets_its_ack_and_dead_letter_and_the_gateway_carries_on(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    sos_ids = list(device_ids_of_kind(region.plan, "sos_button"))
    good, disabled = sos_ids[0], sos_ids[1]
    async with transaction(region.sessions) as session:
        await session.execute(
            update(Device).where(col(Device.id) == disabled).values(enabled=False)
        )
    address = BrokerAddress.parse(mosquitto.url())
    oversized = event_json("big-1", "sos", data={"pad": "x" * MAX_EVENT_BYTES})
    # The event id last, and past 1 MiB (read only from an object that begins with it).
    id_last = json.dumps(
        {"data": {"pad": "x" * MAX_EVENT_BYTES}, "type": "sos", "event_id": "big-2"}
    )
    huge = event_json("big-3", "sos", data={"pad": "x" * (1 << 20)})
    # (device, payload, expected reason, event_id the ack carries)
    cases: list[tuple[str, bytes, str, str | None]] = [
        (good, b"{not json", "invalid_json", None),
        (good, b"\xff\xfe\x00garbage", "invalid_json", None),
        (good, json.dumps({"type": "sos"}).encode(), "invalid_payload", None),
        (good, json.dumps({"event_id": 42, "type": "sos"}).encode(), "invalid_payload", None),
        (good, json.dumps({"event_id": "", "type": "sos"}).encode(), "invalid_payload", None),
        (good, json.dumps({"event_id": "x" * 65, "type": "sos"}).encode(), "invalid_payload", None),
        (good, b"[1, 2, 3]", "invalid_payload", None),
        (good, json.dumps({"event_id": "t-1", "type": 7}).encode(), "invalid_payload", "t-1"),
        (good, json.dumps({"event_id": "t-2"}).encode(), "invalid_payload", "t-2"),
        (good, event_json("u-1", "dance"), "unknown_type", "u-1"),
        # Too large, but the event id can be read: the ack names it (CONTRACT §5).
        (good, oversized, "too_large", "big-1"),
        (good, id_last.encode(), "too_large", "big-2"),
        (good, huge, "too_large", "big-3"),
        (good, b"garbage " * MAX_EVENT_BYTES, "too_large", None),
        ("ghost-device-1", event_json("g-1", "sos"), "unknown_device", "g-1"),
        (disabled, event_json("d-1", "sos"), "disabled_device", "d-1"),
    ]
    async with running_gateway(region.sessions, mosquitto.url()) as gateway:
        devices: dict[str, TestDevice] = {}
        try:
            for device_id in {c[0] for c in cases}:
                devices[device_id] = TestDevice(address, device_id, will=False)
                await devices[device_id].connect()
            for n, (device_id, payload, reason, event_id) in enumerate(cases, start=1):
                device = devices[device_id]
                key = str(event_id)
                before = len(device.acks.get(key, []))
                await device.publish("event", payload)
                ack = await _next_rejection(device, key, before)
                assert ack["status"] == "rejected", (reason, ack)
                assert ack["reason"] == reason, (payload[:60], ack)
                # Always there: `null` when the payload could not be read.
                assert "event_id" in ack and ack["event_id"] == event_id, (payload[:60], ack)
                letters = await eventually(
                    partial(_at_least, region.sessions, n), what="dead letter"
                )
                letter = letters[n - 1]
                assert letter.reason == reason
                assert letter.topic == f"anxin/v1/dev/{device_id}/event"
                assert letter.device_id == device_id
                assert letter.detail
                assert len(letter.payload) <= 1024
                assert letter.payload == truncate_payload(payload)
            assert gateway.stats.rejected == len(cases)
            assert gateway.stats.rejected_by_reason["invalid_payload"] == 7

            # …and carries on: the next sound SOS is accepted and raises an alert.
            sos = devices[good]
            await sos.publish("event", event_json("ok-1", "sos"))
            ack = await sos.ack_for("ok-1")
            assert ack["status"] == "accepted" and str(ack["alert_id"]).startswith("A")
        finally:
            for device in devices.values():
                await device.close()
    async with region.sessions() as session:
        stored = await session.scalar(select(func.count()).select_from(Event))
    assert stored == 1  # only the sound one


async def _at_least(sessions: SessionMaker, n: int) -> list[DeadLetter] | None:
    letters = await _dead_letters(sessions)
    return letters if len(letters) >= n else None


async def test_an_event_on_a_malformed_topic_is_kept_as_a_dead_letter(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    address = BrokerAddress.parse(mosquitto.url())
    async with (
        running_gateway(region.sessions, mosquitto.url()),
        connected_device(address, "x", will=False) as device,
    ):
        await device.client.publish("anxin/v1/dev/bad.id!/event", event_json("s-1", "sos"), 1)
        letters = await eventually(lambda: _at_least(region.sessions, 1), what="dead letter")
    assert letters[0].topic == "anxin/v1/dev/bad.id!/event"
    assert letters[0].reason == "invalid_payload"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ({"ts": "yesterday"}, ["ts"]),
        ({"ts": 12}, ["ts"]),
        ({"ts": True}, ["ts"]),
        ({"data": "not an object"}, ["data"]),
        ({"data": [1, 2], "ts": -5}, ["ts", "data"]),
    ],
)
async def test_sos_with_damaged_optional_fields_is_still_accepted_with_an_alert(
    region: Seeded, mosquitto: Mosquitto, damage: dict[str, object], expected: list[str]
) -> None:
    device_id = next(device_ids_of_kind(region.plan, "sos_button"))
    body = {"event_id": "dmg-1", "type": "sos", **damage}
    async with (
        running_gateway(region.sessions, mosquitto.url()),
        connected_device(BrokerAddress.parse(mosquitto.url()), device_id) as device,
    ):
        await device.publish("event", json.dumps(body).encode())
        ack = await device.ack_for("dmg-1")
    assert ack["status"] == "accepted"
    alert_id = int(str(ack["alert_id"]).removeprefix("A"))
    async with region.sessions() as session:
        alert = await session.get(Alert, alert_id)
        event = (
            await session.execute(select(Event).where(col(Event.event_id) == "dmg-1"))
        ).scalar_one()
    assert alert is not None and alert.kind == "sos" and alert.priority == 1
    assert event.alert_id == alert_id
    if "ts" in expected:
        assert event.device_ts is None  # unusable, dropped; the receive time starts the clock
    assert event.payload == body  # kept as sent, for the record


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_accept_then_duplicate_with_the_original_alert_over_mqtt5_and_311(
    region: Seeded, mosquitto: Mosquitto, protocol: str
) -> None:
    """Both protocol versions, for the gateway and for the device."""
    device_id = next(device_ids_of_kind(region.plan, "sos_button"))
    url = mosquitto.url(protocol=protocol)
    async with (
        running_gateway(region.sessions, url),
        connected_device(BrokerAddress.parse(url), device_id) as device,
    ):
        await device.publish("event", event_json("dup-1", "sos", ts=1_732_345_678_123))
        first = await device.ack_for("dup-1")
        assert first["status"] == "accepted"
        await device.publish("event", event_json("dup-1", "sos", ts=1_732_345_678_123))

        async def second() -> dict[str, object] | None:
            got = device.acks.get("dup-1", [])
            return got[1] if len(got) > 1 else None

        again = await eventually(second, what="ack of the resend")
    assert again == {"event_id": "dup-1", "status": "duplicate", "alert_id": first["alert_id"]}
    async with region.sessions() as session:
        stored = await session.scalar(
            select(func.count()).select_from(Event).where(col(Event.event_id) == "dup-1")
        )
    assert stored == 1


async def test_the_default_broker_carries_the_protocol_too(region: Seeded, mqtt_url: str) -> None:
    """The suite's broker (amqtt 3.1.1 locally, the machine's Mosquitto under CI)."""
    device_id = list(device_ids_of_kind(region.plan, "sos_button"))[2]
    async with (
        running_gateway(region.sessions, mqtt_url, shared_subscription=False),
        connected_device(BrokerAddress.parse(mqtt_url), device_id) as device,
    ):
        await device.publish("event", event_json("def-1", "sos"))
        assert (await device.ack_for("def-1"))["status"] in ("accepted", "duplicate")
        await device.publish("event", b"{broken")
        rejected = await _next_rejection(device, "None", 0)
    assert rejected["reason"] == "invalid_json"


async def test_bytes_postgres_refuses_never_block_the_batch_they_came_in(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    """JSON may carry NUL and lone surrogates, and nest deep; Postgres text and jsonb refuse
    the first two. They are cleaned (an SOS still alerts), and the batch around them passes."""
    device_id = next(device_ids_of_kind(region.plan, "sos_button"))
    nasty = [
        ("nul-1", b'{"event_id": "nul-1", "type": "sos", "data": {"note\\u0000": "a\\u0000b"}}'),
        ("sur-1", b'{"event_id": "sur-1", "type": "sos", "data": {"x": "\\ud800"}}'),
        (
            "deep-1",
            b'{"event_id": "deep-1", "type": "sos", "data": ' + b"[" * 600 + b"]" * 600 + b"}",
        ),
        ("ok-9", event_json("ok-9", "test")),
    ]
    async with (
        running_gateway(region.sessions, mosquitto.url(), batch_ms=200, client_id="gw-n"),
        connected_device(BrokerAddress.parse(mosquitto.url()), device_id, will=False) as device,
    ):
        for _, payload in nasty:
            device.client.publish_nowait(f"anxin/v1/dev/{device_id}/event", payload, 1)
        acks = [await device.ack_for(event_id) for event_id, _ in nasty]
    assert [a["status"] for a in acks] == ["accepted"] * 4
    assert all(str(a["alert_id"]).startswith("A") for a in acks[:3])
    # A NUL in the event id itself cannot be cleaned without changing the id: rejected.
    # (The same replica id: a replica of another id would still hold a share of the group.)
    async with (
        running_gateway(region.sessions, mosquitto.url(), client_id="gw-n"),
        connected_device(BrokerAddress.parse(mosquitto.url()), device_id, will=False) as device,
    ):
        await device.publish("event", b'{"event_id": "bad\\u0000id", "type": "sos"}')
        rejected = await _next_rejection(device, "None", 0)
    assert rejected["reason"] == "invalid_payload"


async def test_a_device_disabled_while_the_gateway_runs_is_rejected_on_its_next_event(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    """The gateway keeps device rows between batches; a registry change must still count from
    the very next event (no time window in which a disabled device is accepted)."""
    device_id = list(device_ids_of_kind(region.plan, "sos_button"))[2]

    async def set_enabled(enabled: bool) -> None:
        async with transaction(region.sessions) as session:
            await session.execute(
                update(Device).where(col(Device.id) == device_id).values(enabled=enabled)
            )

    async with (
        running_gateway(region.sessions, mosquitto.url(), client_id="gw-dis"),
        connected_device(BrokerAddress.parse(mosquitto.url()), device_id, will=False) as device,
    ):
        await device.publish("event", event_json("before-1", "test"))
        assert (await device.ack_for("before-1"))["status"] == "accepted"
        await set_enabled(False)
        await device.publish("event", event_json("while-1", "test"))
        ack = await device.ack_for("while-1")
        assert ack["status"] == "rejected" and ack["reason"] == "disabled_device"
        await set_enabled(True)
        await device.publish("event", event_json("after-1", "sos"))
        ack = await device.ack_for("after-1")
        assert ack["status"] == "accepted" and str(ack["alert_id"]).startswith("A")
    async with region.sessions() as session:
        stored = await session.execute(
            select(col(Event.event_id)).where(col(Event.device_id) == device_id)
        )
        assert sorted(stored.scalars()) == ["after-1", "before-1"]
