"""Gateway database functions: store a batch of events once each, heartbeats in bulk, liveness.

All run inside the caller's transaction; the worker acks to the broker only after it commits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

import alert_service.service as alerts
from alert_service import rules
from anxin.logging import get_logger
from anxin.models import Device, Elder
from anxin.schemas import Ack, Heartbeat, RejectReason, alert_code
from gateway import ingest
from gateway.models import DeadLetter, Event

log = get_logger("gateway")
MISSED_BEATS_OFFLINE = 3


@dataclass(frozen=True)
class Incoming:
    topic: str
    device_id: str
    payload: bytes


async def _devices(session: AsyncSession, ids: set[str]) -> dict[str, tuple[Device, Elder]]:
    if not ids:
        return {}
    rows = await session.execute(
        select(Device, Elder)
        .join(Elder, col(Elder.id) == col(Device.elder_id))
        .where(col(Device.id).in_(ids))
    )
    return {device.id: (device, elder) for device, elder in rows}


def _dead_letter(msg: Incoming, reason: RejectReason, detail: str, now: datetime) -> DeadLetter:
    return DeadLetter(
        received_at=now,
        topic=msg.topic[:256],
        device_id=msg.device_id[:64] or None,
        reason=reason,
        detail=detail[:512],
        payload=ingest.truncate_payload(msg.payload),
    )


async def _previous_vitals(
    session: AsyncSession, device_id: str, before_id: int, elder: Elder, tz: str
) -> str:
    row = await session.execute(
        select(col(Event.payload))
        .where(
            col(Event.device_id) == device_id,
            col(Event.type) == "vitals",
            col(Event.id) < before_id,
        )
        .order_by(col(Event.id).desc())
        .limit(1)
    )
    payload = row.scalar()
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        return "normal"
    return rules.vitals_state(alerts.profile_of(elder, tz), payload["data"])


_INSERT_EVENTS = text(
    """
    INSERT INTO events (device_id, event_id, type, elder_id, device_ts, received_at, payload)
    SELECT b.device_id, b.event_id, b.type, b.elder_id, b.device_ts, :now, b.payload::jsonb
      FROM unnest(CAST(:device_ids AS text[]), CAST(:event_ids AS text[]),
                  CAST(:types AS text[]), CAST(:elder_ids AS int[]),
                  CAST(:device_ts AS timestamptz[]), CAST(:payloads AS text[]))
           AS b(device_id, event_id, type, elder_id, device_ts, payload)
    ON CONFLICT ON CONSTRAINT uq_events_device_event DO NOTHING
    RETURNING id, device_id, event_id
    """
)


async def store_events(
    session: AsyncSession, batch: list[Incoming], now: datetime, timezone: str
) -> list[Ack]:
    """Validate, store once and apply a batch of events; one ack per message, in order."""
    acks: list[Ack | None] = [None] * len(batch)
    devices = await _devices(session, {m.device_id for m in batch})
    rows: list[dict[str, Any]] = []
    row_index: list[int] = []
    for i, msg in enumerate(batch):
        parsed = ingest.parse_event(msg.payload)
        found = devices.get(msg.device_id)
        event_id = (
            parsed.event_id if isinstance(parsed, ingest.ParsedEvent | ingest.Rejection) else None
        )
        reason: RejectReason | None = None
        detail = ""
        if isinstance(parsed, ingest.Rejection):
            reason, detail = parsed.reason, parsed.detail
        elif found is None:
            reason, detail = RejectReason.unknown_device, "device is not registered"
        elif not found[0].enabled:
            reason, detail = RejectReason.disabled_device, "device is disabled"
        if reason is not None:
            session.add(_dead_letter(msg, reason, detail, now))
            acks[i] = Ack(event_id=event_id, status="rejected", reason=reason)
            log.info("event_rejected", device=msg.device_id, reason=reason, detail=detail)
            continue
        assert isinstance(parsed, ingest.ParsedEvent) and found is not None
        rows.append(
            {
                "device_id": msg.device_id,
                "event_id": parsed.event_id,
                "type": parsed.type.value,
                "elder_id": found[1].id,
                "device_ts": parsed.device_ts,
                "received_at": now,
                "payload": parsed.raw,
            }
        )
        row_index.append(i)
    if rows:
        # One statement of fixed shape whatever the batch size (arrays, not N VALUES rows): it
        # is parsed and planned once per connection, and nothing is compiled per batch.
        inserted = await session.execute(
            _INSERT_EVENTS,
            {
                "device_ids": [r["device_id"] for r in rows],
                "event_ids": [r["event_id"] for r in rows],
                "types": [r["type"] for r in rows],
                "elder_ids": [r["elder_id"] for r in rows],
                "device_ts": [r["device_ts"] for r in rows],
                "payloads": [json.dumps(r["payload"], ensure_ascii=False) for r in rows],
                "now": now,
            },
        )
        new_ids: dict[tuple[str, str], int] = {
            (d, e): int(event_pk) for event_pk, d, e in inserted if event_pk is not None
        }
        seen: set[tuple[str, str]] = set()
        duplicates: list[tuple[str, str]] = []
        for row, i in zip(rows, row_index, strict=True):
            key = (row["device_id"], row["event_id"])
            if key in new_ids and key not in seen:
                seen.add(key)
                device, elder = devices[row["device_id"]]
                previous = "normal"
                if row["type"] == "vitals":
                    previous = await _previous_vitals(
                        session, device.id, new_ids[key], elder, timezone
                    )
                alert_id = await alerts.apply_event(
                    session,
                    device=device,
                    elder=elder,
                    event_type=row["type"],
                    data=row["payload"].get("data")
                    if isinstance(row["payload"].get("data"), dict)
                    else {},
                    now=now,
                    timezone=timezone,
                    previous_vitals=previous,
                )
                if alert_id is not None:
                    await session.execute(
                        update(Event).where(col(Event.id) == new_ids[key]).values(alert_id=alert_id)
                    )
                acks[i] = Ack(
                    event_id=row["event_id"], status="accepted", alert_id=alert_code(alert_id)
                )
            else:
                duplicates.append(key)
        if duplicates:
            earlier = await session.execute(
                select(col(Event.device_id), col(Event.event_id), col(Event.alert_id)).where(
                    tuple_(col(Event.device_id), col(Event.event_id)).in_(duplicates)
                )
            )
            # A row inserted by this very batch has its alert_id set above, in this transaction.
            alert_of = {(d, e): a for d, e, a in earlier}
            for row, i in zip(rows, row_index, strict=True):
                key = (row["device_id"], row["event_id"])
                if acks[i] is None:
                    acks[i] = Ack(
                        event_id=row["event_id"],
                        status="duplicate",
                        alert_id=alert_code(alert_of.get(key)),
                    )
    return [a for a in acks if a is not None]


async def record_heartbeats(
    session: AsyncSession, beats: dict[str, tuple[Heartbeat, datetime]], now: datetime
) -> list[str]:
    """One UPDATE for a whole batch of heartbeats; returns devices that came back online."""
    if not beats:
        return []
    ids = list(beats)
    seen = [beats[i][1] for i in ids]
    battery = [beats[i][0].battery for i in ids]
    rssi = [beats[i][0].rssi for i in ids]
    result = await session.execute(
        text(
            """
            WITH beat AS (
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:seen AS timestamptz[]),
                                     CAST(:battery AS int[]), CAST(:rssi AS int[]))
                       AS b(id, seen, battery, rssi)
            ), old AS (
                SELECT d.id, d.online FROM devices d JOIN beat ON beat.id = d.id
                WHERE d.enabled ORDER BY d.id FOR UPDATE OF d
            )
            UPDATE devices d
               SET last_seen_at = beat.seen,
                   offline_after = beat.seen + make_interval(secs => d.heartbeat_interval_s * :missed),
                   battery = COALESCE(beat.battery, d.battery),
                   rssi = COALESCE(beat.rssi, d.rssi),
                   online = true
              FROM beat, old
             WHERE d.id = beat.id AND old.id = d.id
         RETURNING d.id, old.online
            """
        ),
        {
            "ids": ids,
            "seen": seen,
            "battery": battery,
            "rssi": rssi,
            "missed": MISSED_BEATS_OFFLINE,
        },
    )
    back = [device_id for device_id, was_online in result if not was_online]
    for device_id in back:
        await _transition(session, device_id, "online", now, source="heartbeat")
    return back


async def _transition(
    session: AsyncSession,
    device_id: str,
    kind: str,
    now: datetime,
    *,
    source: str,
    timezone: str = "Asia/Shanghai",
) -> int | None:
    """Offline and back-online are events too: stored, and seen by the alert service."""
    found = (await _devices(session, {device_id})).get(device_id)
    if found is None:
        return None
    device, elder = found
    event_id = f"sys-{kind}-{int(now.timestamp() * 1000)}"
    await session.execute(
        insert(Event)
        .values(
            device_id=device_id,
            event_id=event_id,
            type=kind,
            elder_id=elder.id,
            received_at=now,
            payload={"source": source},
        )
        .on_conflict_do_nothing(constraint="uq_events_device_event")
    )
    return await alerts.apply_event(
        session, device=device, elder=elder, event_type=kind, data={}, now=now, timezone=timezone
    )


async def mark_online(session: AsyncSession, device_id: str, now: datetime) -> bool:
    """A device said `online` (on every connect): alive now, its deadline moved to 3 of its own
    heartbeat intervals from now. Returns whether this was a back-online transition."""
    result = await session.execute(
        text(
            """
            WITH old AS (
                SELECT id, online FROM devices WHERE id = :id AND enabled FOR UPDATE
            )
            UPDATE devices d
               SET online = true,
                   last_seen_at = GREATEST(COALESCE(d.last_seen_at, :now), :now),
                   offline_after = :now + make_interval(secs => d.heartbeat_interval_s * :missed)
              FROM old
             WHERE d.id = old.id
         RETURNING old.online
            """
        ),
        {"id": device_id, "now": now, "missed": MISSED_BEATS_OFFLINE},
    )
    was_online = result.scalar()
    if was_online is None or was_online:
        return False
    await _transition(session, device_id, "online", now, source="status")
    return True


async def mark_offline(
    session: AsyncSession,
    device_id: str,
    now: datetime,
    *,
    source: str,
    unless_seen_after: datetime | None = None,
) -> bool:
    """Offline at once (a last will). With `unless_seen_after`, only if nothing was heard from
    the device after that time: a heartbeat or `online` since then means the will is stale."""
    condition = [col(Device.id) == device_id, col(Device.online).is_(True)]
    if unless_seen_after is not None:
        condition.append(
            or_(
                col(Device.last_seen_at).is_(None),
                col(Device.last_seen_at) <= unless_seen_after,
            )
        )
    result = await session.execute(
        update(Device).where(*condition).values(online=False).returning(col(Device.id))
    )
    if result.scalar() is None:
        return False
    await _transition(session, device_id, "offline", now, source=source)
    return True


async def sweep_silent(session: AsyncSession, now: datetime, limit: int = 1000) -> list[str]:
    """Devices past their deadline (3 missed heartbeats) go offline. Uses the partial index, so
    the cost is the number of silent devices, not the number of devices."""
    result = await session.execute(
        text(
            """
            WITH due AS (
                SELECT id FROM devices
                 WHERE online AND enabled AND offline_after <= :now
                 ORDER BY offline_after LIMIT :limit FOR UPDATE SKIP LOCKED
            )
            UPDATE devices d SET online = false FROM due WHERE d.id = due.id RETURNING d.id
            """
        ),
        {"now": now, "limit": limit},
    )
    silent = [str(r) for r in result.scalars()]
    for device_id in silent:
        await _transition(session, device_id, "offline", now, source="missed_heartbeats")
    return silent
