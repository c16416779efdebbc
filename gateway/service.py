"""Gateway database functions: store a batch of events once each, heartbeats in bulk, liveness.

All run inside the caller's transaction; the worker acks to the broker only after it commits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import intake, rules
from alert_service import timeline as alert_timeline
from anxin.logging import get_logger
from anxin.models import Device, Elder, pk
from anxin.schemas import Ack, EventType, Heartbeat, RejectReason, alert_code
from gateway import ingest
from gateway.models import DeadLetter, Event
from visits import service as visits_service

log = get_logger("gateway")
MISSED_BEATS_OFFLINE = 3


@dataclass(frozen=True)
class Incoming:
    topic: str
    device_id: str
    payload: bytes
    parsed: ingest.ParsedEvent | ingest.Rejection | None = None  # None: parsed when stored


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
    return rules.vitals_state(intake.profile_of(elder, tz), payload["data"])


# One round trip per batch: the rows of registered, enabled devices are inserted (each key once)
# and, for every message in order, the statement answers what the device is (registered?
# enabled? which elder? the row versions of both, for the cache below), whether this message's
# row was inserted now, and the row that was there before. Enabled-ness is read by the very
# statement that inserts, so a device disabled a moment ago is rejected at once. Arrays, not N
# VALUES rows: one statement of fixed shape, parsed and planned once per connection.
_INSERT_EVENTS = text(
    """
    WITH b AS (
        SELECT * FROM unnest(CAST(:device_ids AS text[]), CAST(:event_ids AS text[]),
                             CAST(:types AS text[]), CAST(:device_ts AS timestamptz[]),
                             CAST(:payloads AS text[]))
               WITH ORDINALITY AS b(device_id, event_id, type, device_ts, payload, ord)
    ), ins AS (
        INSERT INTO events (device_id, event_id, type, elder_id, device_ts, received_at, payload)
        SELECT b.device_id, b.event_id, b.type, d.elder_id, b.device_ts, :now, b.payload::jsonb
          FROM b JOIN devices d ON d.id = b.device_id AND d.enabled
         ORDER BY b.ord
        ON CONFLICT ON CONSTRAINT uq_events_device_event DO NOTHING
        RETURNING id, device_id, event_id
    )
    SELECT d.enabled, d.elder_id, d.xmin::text, e.xmin::text, ins.id, old.id, old.alert_id
      FROM b
      LEFT JOIN devices d ON d.id = b.device_id
      LEFT JOIN elders e ON e.id = d.elder_id
      LEFT JOIN ins ON ins.device_id = b.device_id AND ins.event_id = b.event_id
      LEFT JOIN events old ON old.device_id = b.device_id AND old.event_id = b.event_id
     ORDER BY b.ord
    """
)


class DeviceCache:
    """Device and Elder rows for `apply_event`, kept between batches of one worker.

    Never stale: an entry is used only while the row versions (`xmin`) the insert statement
    reads for that device and elder are the ones it was loaded at; any update of either row
    (registry edit, heartbeat) makes the next batch load it again. Enabled-ness is not taken from
    here at all but from the insert itself. Loading ORM rows per batch was ~25 % of the event
    loop's time at full rate (docs/sizing.md). One per worker. Cleared after any failed batch (a rollback expires
    the rows loaded in it)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self.devices: dict[str, tuple[str, Device]] = {}
        self.elders: dict[int, tuple[str, Elder]] = {}

    def clear(self) -> None:
        self.devices.clear()
        self.elders.clear()

    async def rows(
        self, session: AsyncSession, wanted: dict[str, tuple[str, int, str]]
    ) -> dict[str, tuple[Device, Elder]]:
        """`wanted`: device id → (device xmin, elder id, elder xmin), as the statement read them.
        Returns the rows: those loaded now attached to `session`, cached ones detached."""
        if len(self.devices) > self.max_entries or len(self.elders) > self.max_entries:
            self.clear()
        stale_devices = [
            d
            for d, (dx, _, _) in wanted.items()
            if (hit := self.devices.get(d)) is None or hit[0] != dx
        ]
        elder_versions = {e: ex for _, e, ex in wanted.values()}
        stale_elders = [
            e
            for e, ex in elder_versions.items()
            if (cached := self.elders.get(e)) is None or cached[0] != ex
        ]
        # Loaded first (attached by the query), then the hits are attached: no identity clash.
        if stale_devices:
            devices = await session.execute(select(Device).where(col(Device.id).in_(stale_devices)))
            for device in devices.scalars():
                self.devices[device.id] = (wanted[device.id][0], device)
        if stale_elders:
            elders = await session.execute(select(Elder).where(col(Elder.id).in_(stale_elders)))
            for elder in elders.scalars():
                assert elder.id is not None
                self.elders[elder.id] = (elder_versions[elder.id], elder)
        # Hits are not attached to this session: the rules only read their columns (loaded,
        # never expired: expire_on_commit is off, and a rollback clears the cache), and
        # attaching ~2 rows per event cost 6-12 % of the gateway's CPU (docs/sizing.md).
        out: dict[str, tuple[Device, Elder]] = {}
        for device_id, (_, elder_id, _) in wanted.items():
            d = self.devices.get(device_id)
            e = self.elders.get(elder_id)
            if d is None or e is None:
                continue  # deleted meanwhile: the insert's foreign key had it already
            out[device_id] = (d[1], e[1])
        return out


# The alert each stored event raised or joined, for the whole batch in one statement.
_LINK_EVENTS = text(
    """
    UPDATE events e SET alert_id = l.alert_id
      FROM unnest(CAST(:ids AS bigint[]), CAST(:alert_ids AS bigint[])) AS l(id, alert_id)
     WHERE e.id = l.id
    """
)


async def store_events(
    session: AsyncSession,
    batch: list[Incoming],
    now: datetime,
    timezone: str,
    cache: DeviceCache | None = None,
) -> list[Ack]:
    """Validate, store once and apply a batch of events; one ack per message, in order."""
    acks: list[Ack | None] = [None] * len(batch)
    parsed_ok: list[tuple[int, Incoming, ingest.ParsedEvent]] = []
    for i, msg in enumerate(batch):
        parsed = msg.parsed if msg.parsed is not None else ingest.parse_event(msg.payload)
        if isinstance(parsed, ingest.Rejection):
            _reject(session, acks, i, msg, parsed.event_id, parsed.reason, parsed.detail, now)
        else:
            parsed_ok.append((i, msg, parsed))
    if not parsed_ok:
        return [a for a in acks if a is not None]
    result = await session.execute(
        _INSERT_EVENTS,
        {
            "device_ids": [m.device_id for _, m, _ in parsed_ok],
            "event_ids": [p.event_id for _, _, p in parsed_ok],
            "types": [p.type.value for _, _, p in parsed_ok],
            "device_ts": [p.device_ts for _, _, p in parsed_ok],
            "payloads": [
                p.text if p.text is not None else json.dumps(p.raw, ensure_ascii=False)
                for _, _, p in parsed_ok
            ],
            "now": now,
        },
    )
    answers = result.all()
    # Rejections first, then the devices the stored rows need for the rules.
    wanted: dict[str, tuple[str, int, str]] = {}
    stored: list[tuple[int, Incoming, ingest.ParsedEvent, int]] = []
    unseen: list[tuple[int, Incoming, ingest.ParsedEvent]] = []
    seen: set[tuple[str, str]] = set()
    for (i, msg, parsed), (enabled, elder_id, dxmin, exmin, new_pk, old_pk, old_alert) in zip(
        parsed_ok, answers, strict=True
    ):
        if enabled is None:
            _reject(
                session,
                acks,
                i,
                msg,
                parsed.event_id,
                RejectReason.unknown_device,
                "device is not registered",
                now,
            )
            continue
        if not enabled:
            _reject(
                session,
                acks,
                i,
                msg,
                parsed.event_id,
                RejectReason.disabled_device,
                "device is disabled",
                now,
            )
            continue
        key = (msg.device_id, parsed.event_id)
        if new_pk is not None and key not in seen:
            seen.add(key)
            wanted[msg.device_id] = (dxmin, elder_id, exmin)
            stored.append((i, msg, parsed, int(new_pk)))
        elif old_pk is not None:
            acks[i] = Ack(
                event_id=parsed.event_id, status="duplicate", alert_id=alert_code(old_alert)
            )
        else:
            # A resend within this batch, or a row another replica committed while this
            # statement waited on its key: its alert id is read after the rules ran.
            unseen.append((i, msg, parsed))
    if stored:
        found = await (cache or DeviceCache()).rows(session, wanted)
        # Applied in elder order (stable: a device's events keep their order), so two replicas'
        # batches lock the same elders' alerts in the same order and cannot deadlock.
        stored.sort(key=lambda row: wanted[row[1].device_id][1])
        to_apply: list[intake.StoredEvent] = []
        for _, msg, parsed, event_pk in stored:
            device, elder = found[msg.device_id]
            previous = "normal"
            if parsed.type is EventType.vitals:
                previous = await _previous_vitals(session, device.id, event_pk, elder, timezone)
            to_apply.append(
                intake.StoredEvent(device, elder, parsed.type.value, parsed.data, previous)
            )
        alert_ids = await intake.apply_events(session, to_apply, now, timezone)
        linked = [(row[3], a) for row, a in zip(stored, alert_ids, strict=True) if a is not None]
        if linked:
            await session.execute(
                _LINK_EVENTS,
                {"ids": [e for e, _ in linked], "alert_ids": [a for _, a in linked]},
            )
        for (i, _, parsed, _), alert_id in zip(stored, alert_ids, strict=True):
            acks[i] = Ack(
                event_id=parsed.event_id, status="accepted", alert_id=alert_code(alert_id)
            )
        for _, msg, parsed, event_pk in stored:
            if parsed.type is EventType.visit:
                # A hub's visit button: the visit recorded in the event's transaction.
                device, elder = found[msg.device_id]
                await visits_service.record_device_visit(
                    session,
                    device_id=device.id,
                    elder_id=pk(elder),
                    event_id=event_pk,
                    data=parsed.data,
                    visited_at=parsed.device_ts,
                    now=now,
                    timezone=timezone,
                )
    if unseen:
        keys = list({(m.device_id, p.event_id) for _, m, p in unseen})
        earlier = await session.execute(
            select(col(Event.device_id), col(Event.event_id), col(Event.alert_id)).where(
                tuple_(col(Event.device_id), col(Event.event_id)).in_(keys)
            )
        )
        # A row inserted by this very batch has its alert_id set above, in this transaction.
        alert_of = {(d, e): a for d, e, a in earlier}
        for i, msg, parsed in unseen:
            acks[i] = Ack(
                event_id=parsed.event_id,
                status="duplicate",
                alert_id=alert_code(alert_of.get((msg.device_id, parsed.event_id))),
            )
    return [a for a in acks if a is not None]


def _reject(
    session: AsyncSession,
    acks: list[Ack | None],
    i: int,
    msg: Incoming,
    event_id: str | None,
    reason: RejectReason,
    detail: str,
    now: datetime,
) -> None:
    session.add(_dead_letter(msg, reason, detail, now))
    acks[i] = Ack(event_id=event_id, status="rejected", reason=reason)
    log.info("event_rejected", device=msg.device_id, reason=reason, detail=detail)


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
    await _transitions(session, back, "online", now, source="heartbeat")
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
    return (
        await _transitions(session, [device_id], kind, now, source=source, timezone=timezone)
    ).get(device_id)


_INSERT_TRANSITIONS = text(
    """
    INSERT INTO events (device_id, event_id, type, elder_id, received_at, payload)
    SELECT d.id, :event_id, :kind, d.elder_id, :now, CAST(:payload AS jsonb)
      FROM devices d WHERE d.id = ANY(CAST(:ids AS text[]))
    ON CONFLICT ON CONSTRAINT uq_events_device_event DO NOTHING
    """
)


async def _transitions(
    session: AsyncSession,
    device_ids: list[str],
    kind: str,
    now: datetime,
    *,
    source: str,
    timezone: str = "Asia/Shanghai",
) -> dict[str, int | None]:
    """Many devices' transitions at once (a township's power cut): one read of their rows and
    one INSERT of their events, then each through the alert service's rules."""
    if not device_ids:
        return {}
    found = await _devices(session, set(device_ids))
    await session.execute(
        _INSERT_TRANSITIONS,
        {
            "ids": list(found),
            "event_id": f"sys-{kind}-{int(now.timestamp() * 1000)}",
            "kind": kind,
            "now": now,
            "payload": json.dumps({"source": source}),
        },
    )
    # Applied as a gateway batch is (elder order): a township's worth of transitions is a few
    # statements, not several per device.
    ordered = sorted(
        dict.fromkeys(d for d in device_ids if d in found), key=lambda d: (pk(found[d][1]), d)
    )
    alert_ids = await intake.apply_events(
        session,
        [
            intake.StoredEvent(device=found[d][0], elder=found[d][1], event_type=kind, data={})
            for d in ordered
        ],
        now,
        timezone,
    )
    return dict(zip(ordered, alert_ids, strict=True))


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


async def sweep_silent(
    session: AsyncSession,
    now: datetime,
    limit: int = 1000,
    *,
    share_expiry_s: float = 300.0,
    sweeper_id: str | None = None,
) -> list[str]:
    """Devices past their deadline (3 missed heartbeats) go offline, unless they are still in
    their grace after the platform's downtime (`sweep_grace_from`): those get their deadline
    moved to the end of it instead, once each. Uses the partial index, so the cost is the
    number of devices past their deadline, not the number of devices.

    `sweeper_id`: the gateway sweeping is listening, whatever its liveness row says (its own
    loop writes that row, and may not have yet for a clock just moved on), so it is never
    one of the shared replicas away."""
    result = await session.execute(
        text(
            """
            WITH g AS (
                SELECT """
            + _GRACE_FROM
            + """ AS grace_from FROM gateway_liveness
            ), due AS (
                SELECT id, (SELECT grace_from FROM g)
                           + make_interval(secs => heartbeat_interval_s * :missed) AS grace_end
                  FROM devices
                 WHERE online AND enabled AND offline_after <= :now
                 ORDER BY offline_after LIMIT :limit FOR UPDATE SKIP LOCKED
            )
            UPDATE devices d
               SET online = COALESCE(due.grace_end > :now, false),
                   offline_after = CASE WHEN due.grace_end > :now THEN due.grace_end
                                        ELSE d.offline_after END
              FROM due WHERE d.id = due.id
         RETURNING d.id, d.online
            """
        ),
        {
            "now": now,
            "limit": limit,
            "missed": MISSED_BEATS_OFFLINE,
            "missing": timedelta(seconds=REPLICA_MISSING_S),
            "expiry": timedelta(seconds=share_expiry_s),
            "sweeper": sweeper_id,
        },
    )
    silent = [str(d) for d, spared in result if not spared]
    await _transitions(session, silent, "offline", now, source="missed_heartbeats")
    return silent


async def mark_statuses(
    session: AsyncSession,
    latest: dict[str, tuple[bytes, datetime]],
    now: datetime,
    *,
    source: str = "last_will",
) -> tuple[list[str], list[str]]:
    """A batch of `status` messages (the latest per device): `offline` as `mark_offline` with
    `unless_seen_after` its receive time, `online` as `mark_online`, each in one statement for
    all devices and the transitions batched. Returns (gone offline, back online)."""
    offline = [(d, at) for d, (state, at) in latest.items() if state == b"offline"]
    online = [(d, at) for d, (state, at) in latest.items() if state == b"online"]
    gone: list[str] = []
    back: list[str] = []
    if offline:
        result = await session.execute(
            text(
                """
                UPDATE devices d SET online = false
                  FROM unnest(CAST(:ids AS text[]), CAST(:received AS timestamptz[]))
                       AS s(id, received)
                 WHERE d.id = s.id AND d.online
                   AND (d.last_seen_at IS NULL OR d.last_seen_at <= s.received)
             RETURNING d.id
                """
            ),
            {"ids": [d for d, _ in offline], "received": [at for _, at in offline]},
        )
        gone = [str(r) for r in result.scalars()]
        await _transitions(session, gone, "offline", now, source=source)
    if online:
        result = await session.execute(
            text(
                """
                WITH s AS (
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:received AS timestamptz[]))
                           AS s(id, received)
                ), old AS (
                    SELECT d.id, d.online FROM devices d JOIN s ON s.id = d.id
                     WHERE d.enabled ORDER BY d.id FOR UPDATE OF d
                )
                UPDATE devices d
                   SET online = true,
                       last_seen_at = GREATEST(COALESCE(d.last_seen_at, s.received), s.received),
                       offline_after = s.received
                           + make_interval(secs => d.heartbeat_interval_s * :missed)
                  FROM s, old
                 WHERE d.id = s.id AND old.id = d.id
             RETURNING d.id, old.online
                """
            ),
            {
                "ids": [d for d, _ in online],
                "received": [at for _, at in online],
                "missed": MISSED_BEATS_OFFLINE,
            },
        )
        back = [str(d) for d, was_online in result if not was_online]
        await _transitions(session, back, "online", now, source="status")
    return gone, back


# --- the platform's own liveness ------------------------------------------------------------
# Each gateway's sweeper writes its `gateway_liveness` row every couple of seconds while it is
# connected to the broker and the database answers. No row newer than this: nobody listened,
# and the devices' silence over that time is the platform's, not theirs.
LIVENESS_GAP_S = 30.0
# A shared replica not heard from for this long is away: the broker holds its share of the
# heartbeats for its session (`share_expiry_s`), and the others do not hear those devices.
REPLICA_MISSING_S = LIVENESS_GAP_S
# Serialises gateways coming back together, so that the first one alone records the gap.
_LIVENESS_LOCK = 0x616E78696E

# From when devices' silence counts: the latest grace any gateway's return gave them; now,
# while a shared replica is away (a hold); the end of its session if it never came back.
_GRACE_FROM = """max(GREATEST(
                    grace_from,
                    CASE WHEN shared AND gateway_id IS DISTINCT FROM CAST(:sweeper AS text)
                              AND alive_at < CAST(:now AS timestamptz)
                                             - CAST(:missing AS interval)
                         THEN LEAST(alive_at + CAST(:expiry AS interval),
                                    CAST(:now AS timestamptz)) END))"""

_UPSERT_LIVENESS = text(
    """
    INSERT INTO gateway_liveness (gateway_id, alive_at, grace_from, shared)
    VALUES (:id, :now, CAST(:grace_from AS timestamptz), :shared)
    ON CONFLICT (gateway_id) DO UPDATE
       SET alive_at = EXCLUDED.alive_at,
           shared = EXCLUDED.shared,
           grace_from = COALESCE(EXCLUDED.grace_from, gateway_liveness.grace_from)
    """
)


@dataclass(frozen=True)
class Gap:
    """The platform's downtime: no gateway was listening from `since` until `until`."""

    since: datetime
    until: datetime


async def gateway_alive(
    session: AsyncSession, *, gateway_id: str, now: datetime, shared: bool, resuming: bool
) -> Gap | None:
    """This gateway is listening now (connected to the broker, the database answering).

    `resuming`: its first tick after a start, a reconnect or an outage of the database. Then,
    if no gateway had been alive for `LIVENESS_GAP_S`, the platform was down: devices get their
    grace from now (`sweep_silent`), every open alert records the gap, and the gap is returned.
    A shared replica back from its own absence gives the same grace (its share of the
    heartbeats was held for it), without a gap: the platform was listening meanwhile."""
    if not resuming:
        await session.execute(
            _UPSERT_LIVENESS, {"id": gateway_id, "now": now, "grace_from": None, "shared": shared}
        )
        return None
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LIVENESS_LOCK})
    last_any, last_own = (
        await session.execute(
            text(
                "SELECT max(alive_at), max(alive_at) FILTER (WHERE gateway_id = :id) "
                "FROM gateway_liveness"
            ),
            {"id": gateway_id},
        )
    ).one()
    away = timedelta(seconds=LIVENESS_GAP_S)
    gap = Gap(last_any, now) if last_any is not None and now - last_any > away else None
    came_back = last_own is None or now - last_own > away
    await session.execute(
        _UPSERT_LIVENESS,
        {
            "id": gateway_id,
            "now": now,
            "grace_from": now if gap is not None or (shared and came_back) else None,
            "shared": shared,
        },
    )
    if gap is not None:
        alerts_open = await alert_timeline.record_platform_gap(
            session, since=gap.since, until=gap.until
        )
        log.warning(
            "platform_gap",
            since=gap.since.isoformat(),
            until=gap.until.isoformat(),
            minutes=round((gap.until - gap.since).total_seconds() / 60),
            open_alerts=alerts_open,
        )
    return gap
