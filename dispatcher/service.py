"""Dispatcher database functions: who to ask, the SMS outbox, delivery receipts and replies.

SMS rows are written in the transaction that decides to send them (the outbox), which also
NOTIFYs the outbox workers; a worker sends them after the commit. An idempotency key per alert,
responder and step means a step that runs twice writes one SMS.

Routing uses the imported travel-time table (`travel_times`, see `import_travel_times`) where
it has an entry for a responder and the elder's home, the straight-line estimate elsewhere.
Per-number daily limits: see `dispatcher.worker.send_due`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, union_all, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from alert_service import ladder as alert_ladder
from alert_service import rules
from alert_service import timeline as alert_timeline
from alert_service.models import Alert, AlertStatus, AttemptAnswer, DispatchAttempt
from anxin.db import SessionMaker, notify_on_commit, transaction
from anxin.logging import get_logger, mask_phone
from anxin.models import Elder, Region, Responder, ServiceCentre, pk
from dispatcher import routing, templates
from dispatcher.models import (
    SMS_DEFAULT_PRIORITY,
    SmsInFlight,
    SmsMessage,
    SmsStatus,
    TravelTime,
)
from dispatcher.replies import ReplyKind, parse_reply
from dispatcher.travel_table import TravelTimeError, TravelTimeRow
from dispatcher.twilio_provider import receipt_failure_reason

log = get_logger("dispatcher")


# --- who to ask -----------------------------------------------------------------------------


async def rank_for_alert(
    session: AsyncSession, elder: Elder, chain: list[Region], now: datetime
) -> list[dict[str, Any]]:
    """Rank on-duty aides of the elder's township, then its centres, by estimated arrival."""
    return (await rank_for_alerts(session, [(elder, chain)], now))[0]


async def rank_for_alerts(
    session: AsyncSession,
    homes: Sequence[tuple[Elder, Sequence[Region]]],
    now: datetime,
    *,
    keep: list[object] | None = None,
) -> list[list[dict[str, Any]]]:
    """`rank_for_alert` for many elders at once (the watcher's batch): three queries whatever
    their number, then the pure ranking per elder. `homes` pairs each elder with the region
    chain of their village (nearest first); the rankings come back in the same order.

    `keep` receives the responder rows loaded: while the caller holds them, the session's
    identity map answers `session.get(Responder, id)` for them without a query."""
    if not homes:
        return []
    township_of = [next((r for r in chain if r.level == "township"), None) for _, chain in homes]
    county_of = [next((r for r in chain if r.level == "county"), None) for _, chain in homes]
    township_ids = {pk(t) for t in township_of if t is not None}
    lone_villages = {
        e.village_id for (e, _), t in zip(homes, township_of, strict=True) if t is None
    }
    centre_regions = township_ids | {pk(c) for c in county_of if c is not None}
    # One query for both kinds: the aides of every village under those townships (or of a
    # village with no township), and the duty responders of their township and county centres.
    aide_places: list[ColumnElement[bool]] = []
    if township_ids:
        aide_places.append(col(Region.parent_id).in_(township_ids))
    if lone_villages:
        aide_places.append(col(Responder.village_id).in_(lone_villages))
    wanted: list[ColumnElement[bool]] = [col(ServiceCentre.region_id).in_(centre_regions)]
    if aide_places:
        wanted.append(and_(col(Responder.kind) == "aide", or_(*aide_places)))
    rows = list(
        await session.execute(
            select(Responder, col(Region.parent_id), ServiceCentre)
            .outerjoin(Region, col(Region.id) == col(Responder.village_id))
            .outerjoin(ServiceCentre, col(ServiceCentre.id) == col(Responder.centre_id))
            .where(or_(*wanted))
        )
    )
    aides_of_township: dict[int, list[Responder]] = {}
    aides_of_village: dict[int, list[Responder]] = {}
    centres_of: dict[int, list[tuple[Responder, ServiceCentre]]] = {}
    for responder, parent_id, centre in rows:
        if centre is not None and centre.region_id in centre_regions:
            centres_of.setdefault(centre.region_id, []).append((responder, centre))
        if responder.kind != "aide":
            continue
        if parent_id in township_ids:
            aides_of_township.setdefault(parent_id, []).append(responder)
        if responder.village_id in lone_villages:
            aides_of_village.setdefault(responder.village_id, []).append(responder)
    if keep is not None:
        keep.extend(responder for responder, _, _ in rows)
    # Only these responders' commitments and counts matter: a city has many more. One query:
    # a P1 they have taken (marked -1), and how often each was asked in the last 24 hours.
    candidate_ids = {pk(responder) for responder, _, _ in rows}
    load: Any = await session.execute(
        union_all(
            select(col(Alert.accepted_by), literal(-1)).where(
                col(Alert.priority) == 1,
                col(Alert.status).in_(("accepted", "on_scene")),
                col(Alert.accepted_by).in_(candidate_ids),
            ),
            select(col(DispatchAttempt.responder_id), func.count())
            .where(
                col(DispatchAttempt.asked_at) >= now - timedelta(hours=24),
                col(DispatchAttempt.responder_id).in_(candidate_ids),
            )
            .group_by(col(DispatchAttempt.responder_id)),
        )
    )
    committed: set[int] = set()
    today: dict[int, int] = {}
    for row in load:
        responder_id, n = int(row[0]), int(row[1])
        if n < 0:
            committed.add(responder_id)
        else:
            today[responder_id] = n
    tables = await travel_tables_for(session, {pk(e) for e, _ in homes})
    rankings: list[list[dict[str, Any]]] = []
    for (elder, chain), township, county in zip(homes, township_of, county_of, strict=True):
        aides = (
            aides_of_township.get(pk(township), [])
            if township is not None
            else aides_of_village.get(elder.village_id, [])
        )
        centres = [
            pair
            for region in (township, county)
            if region is not None
            for pair in centres_of.get(pk(region), [])
        ]
        candidates = [
            routing.Candidate(
                responder_id=pk(a),
                kind="aide",
                name=a.name,
                village_id=a.village_id,
                location=routing.LatLon(a.lat, a.lon),
                travel_mode=routing.TravelMode(a.travel_mode),
                on_duty=a.on_duty,
                committed_to_p1=pk(a) in committed,
                dispatches_today=int(today.get(pk(a), 0)),
                setup_minutes=a.setup_minutes,
            )
            for a in aides
        ] + [
            routing.Candidate(
                responder_id=pk(r),
                kind="township_centre" if c.level == "township" else "county_centre",
                name=c.name,
                village_id=None,
                location=routing.LatLon(r.lat, r.lon),
                travel_mode=routing.TravelMode(r.travel_mode),
                on_duty=True,
                committed_to_p1=False,
                dispatches_today=int(today.get(pk(r), 0)),
                setup_minutes=r.setup_minutes,
            )
            for r, c in centres
        ]
        ranked = routing.nearest_responders(
            routing.LatLon(elder.lat, elder.lon),
            elder.village_id,
            candidates,
            circuity=next((r.circuity for r in chain if r.circuity), 1.4),
            travel_table=tables.get(pk(elder), {}),
        )
        rankings.append(
            [
                {
                    "responder_id": r.responder_id,
                    "kind": r.kind,
                    "name": r.name,
                    "distance_km": round(r.distance_km, 2),
                    "eta_minutes": round(r.eta_minutes, 1),
                    "source": r.source,
                }
                for r in ranked
            ]
        )
    return rankings


async def travel_table_for(session: AsyncSession, elder_id: int) -> dict[int, float]:
    """Routed minutes to this elder's home, per responder (only those someone imported)."""
    return (await travel_tables_for(session, {elder_id})).get(elder_id, {})


async def travel_tables_for(
    session: AsyncSession, elder_ids: set[int]
) -> dict[int, dict[int, float]]:
    """`travel_table_for` for many elders in one query: elder_id → responder_id → minutes."""
    rows = await session.execute(
        select(
            col(TravelTime.elder_id), col(TravelTime.responder_id), col(TravelTime.minutes)
        ).where(col(TravelTime.elder_id).in_(elder_ids))
    )
    tables: dict[int, dict[int, float]] = {}
    for elder_id, responder_id, minutes in rows:
        tables.setdefault(elder_id, {})[responder_id] = float(minutes)
    return tables


# Rows per statement: Postgres takes at most 32,767 bind parameters in one.
_IMPORT_CHUNK = 2000


async def import_travel_times(
    session: AsyncSession, rows: list[TravelTimeRow], *, source: str, now: datetime
) -> tuple[int, list[TravelTimeError]]:
    """Store routed travel times (a newer import of the same pair replaces the older one).

    Returns how many were stored and the rows naming an unknown elder or responder.
    """
    stored = 0
    errors: list[TravelTimeError] = []
    for start in range(0, len(rows), _IMPORT_CHUNK):
        chunk_stored, chunk_errors = await _import_chunk(
            session, rows[start : start + _IMPORT_CHUNK], source=source, now=now
        )
        stored += chunk_stored
        errors.extend(chunk_errors)
    return stored, errors


async def _import_chunk(
    session: AsyncSession, rows: list[TravelTimeRow], *, source: str, now: datetime
) -> tuple[int, list[TravelTimeError]]:
    elder_codes = {r.elder_code for r in rows}
    phones = {r.responder_phone for r in rows}
    elder_rows = await session.execute(
        select(col(Elder.code), col(Elder.id)).where(col(Elder.code).in_(elder_codes))
    )
    elders = {code: elder_id for code, elder_id in elder_rows if elder_id is not None}
    responder_rows = await session.execute(
        select(col(Responder.phone), col(Responder.id)).where(col(Responder.phone).in_(phones))
    )
    responders = {phone: rid for phone, rid in responder_rows if rid is not None}
    errors: list[TravelTimeError] = []
    values: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        elder_id, responder_id = elders.get(row.elder_code), responders.get(row.responder_phone)
        if elder_id is None:
            errors.append(
                TravelTimeError(
                    row.line,
                    f"unknown elder {row.elder_code}",
                    f"找不到老人编号“{row.elder_code}”：请先导入老人表",
                )
            )
        elif responder_id is None:
            masked = mask_phone(row.responder_phone)
            errors.append(
                TravelTimeError(
                    row.line,
                    f"unknown responder {masked}",
                    f"找不到电话为 {masked} 的助老员或服务中心：请先导入助老员表",
                )
            )
        else:
            # A pair listed twice: the later line wins, as it would in the spreadsheet.
            values[(elder_id, responder_id)] = {
                "elder_id": elder_id,
                "responder_id": responder_id,
                "minutes": row.minutes,
                "source": source[:64],
                "imported_at": now,
            }
    if values:
        statement = insert(TravelTime).values(list(values.values()))
        await session.execute(
            statement.on_conflict_do_update(
                constraint="uq_travel_time_elder_responder",
                set_={
                    "minutes": statement.excluded.minutes,
                    "source": statement.excluded.source,
                    "imported_at": statement.excluded.imported_at,
                },
            )
        )
    return len(values), errors


# --- the outbox -----------------------------------------------------------------------------


# queue_sms NOTIFYs these channels; outbox workers LISTEN on them (dispatcher.worker). An SMS
# of URGENT_SMS_PRIORITY or more urgent (the call-outs of P1/P2 alerts, on the 15-minute
# clock) wakes the worker's urgent pass, which sends nothing else; the rest wake the others.
OUTBOX_CHANNEL = "anxin_outbox"
OUTBOX_URGENT_CHANNEL = "anxin_outbox_urgent"
URGENT_SMS_PRIORITY = 2


async def _wake_outbox(session: AsyncSession, priorities: set[int]) -> None:
    """NOTIFY the outbox workers, once per transaction and channel; Postgres delivers it on
    commit."""
    if any(p <= URGENT_SMS_PRIORITY for p in priorities):
        await notify_on_commit(session, OUTBOX_URGENT_CHANNEL)
    if any(p > URGENT_SMS_PRIORITY for p in priorities):
        await notify_on_commit(session, OUTBOX_CHANNEL)


async def queue_sms(
    session: AsyncSession,
    *,
    to: str,
    body: str,
    key: str | None,
    now: datetime,
    alert_id: int | None = None,
    responder_id: int | None = None,
    purpose: str = "",
    priority: int = SMS_DEFAULT_PRIORITY,
) -> bool:
    """Write an SMS into the outbox; returns False when its key was already written."""
    written = await queue_sms_many(
        session,
        [
            {
                "to": to,
                "body": body,
                "key": key,
                "alert_id": alert_id,
                "responder_id": responder_id,
                "purpose": purpose,
                "priority": priority,
            }
        ],
        now,
    )
    return written == 1


async def queue_sms_many(
    session: AsyncSession, messages: list[dict[str, Any]], now: datetime
) -> int:
    """Write SMS into the outbox in one statement (each a dict of `queue_sms`'s arguments but
    `now`); returns how many were written (a key already written is skipped)."""
    if not messages:
        return 0
    result = await session.execute(
        insert(SmsMessage)
        .values(
            [
                {
                    "direction": "out",
                    "idempotency_key": m["key"],
                    "alert_id": m.get("alert_id"),
                    "responder_id": m.get("responder_id"),
                    "purpose": m.get("purpose", ""),
                    "priority": m.get("priority", SMS_DEFAULT_PRIORITY),
                    "to_phone": m["to"],
                    "from_phone": "",
                    "body": m["body"],
                    "status": SmsStatus.queued,
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                }
                for m in messages
            ]
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(col(SmsMessage.priority))
    )
    written = list(result.scalars())
    if written:
        await _wake_outbox(session, set(written))
    return len(written)


async def _village_name(session: AsyncSession, village_id: int) -> str:
    village = await session.get(Region, village_id)
    return village.name if village else ""


async def ask_responder(
    session: AsyncSession,
    alert: Alert,
    responder_id: int,
    role: str,
    *,
    step: int,
    now: datetime,
) -> None:
    assert alert.id is not None
    responder = await session.get(Responder, responder_id)
    elder = await session.get(Elder, alert.elder_id)
    if responder is None or elder is None:
        return
    line = next((c for c in alert.ranking if c["responder_id"] == responder_id), {})
    attempt = {
        "alert_id": alert.id,
        "responder_id": responder_id,
        "step": step,
        "role": role,
        "asked_at": now,
        "distance_km": line.get("distance_km"),
        "eta_minutes": line.get("eta_minutes"),
        "answer": AttemptAnswer.pending,
    }
    template = templates.dispatch_sms if role == "aide" else templates.centre_sms
    body = template(
        alert_code=alert.code,
        elder_name=elder.name,
        village=await _village_name(session, elder.village_id),
        address=elder.address,
        kind=alert.kind,
        distance_km=float(line.get("distance_km") or 0.0),
        eta_minutes=float(line.get("eta_minutes") or 0.0),
        lang=responder.lang,
    )
    sms = {
        "to": responder.phone,
        "body": body,
        "key": f"alert:{alert.id}:responder:{responder_id}:step:{step}",
        "alert_id": alert.id,
        "responder_id": responder_id,
        "purpose": "dispatch",
        "priority": alert.priority,
    }
    pending = session.info.get(_PENDING_ASKS)
    if isinstance(pending, _PendingAsks):
        pending.add(now, attempt, sms)
    else:
        await _write_asks(session, now, [attempt], [sms])


async def _write_asks(
    session: AsyncSession,
    now: datetime,
    attempts: list[dict[str, Any]],
    messages: list[dict[str, Any]],
) -> None:
    """The dispatch attempts and their call-out SMS, one INSERT each (keys make both once)."""
    await session.execute(
        insert(DispatchAttempt)
        .values(attempts)
        .on_conflict_do_nothing(constraint="uq_attempt_alert_responder_step")
    )
    await queue_sms_many(session, messages, now)


_PENDING_ASKS = "dispatcher.pending_asks"


@dataclass
class _PendingAsks:
    by_now: dict[datetime, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(
        default_factory=dict
    )

    def add(self, now: datetime, attempt: dict[str, Any], sms: dict[str, Any]) -> None:
        attempts, messages = self.by_now.setdefault(now, ([], []))
        attempts.append(attempt)
        messages.append(sms)


@contextlib.asynccontextmanager
async def batched_asks(session: AsyncSession) -> AsyncIterator[None]:
    """Within the block, `ask_responder` only collects its attempt row and call-out SMS; they
    are written when the block ends, in two statements for the whole block instead of two per
    ask (the watcher's batch). Nothing is written if the block raises (its transaction rolls
    back anyway). Inside the block the new attempts are not yet in the table: the caller keeps
    its own list (the watcher does)."""
    pending = _PendingAsks()
    session.info[_PENDING_ASKS] = pending
    try:
        yield
    finally:
        session.info.pop(_PENDING_ASKS, None)
    for now, (attempts, messages) in pending.by_now.items():
        await _write_asks(session, now, attempts, messages)


async def notify_guardians(
    session: AsyncSession, alert: Alert, elder: Elder, now: datetime
) -> None:
    """Guardians get an informational SMS (never asked to respond)."""
    await notify_guardians_many(session, [(alert, elder)], now)


async def notify_guardians_many(
    session: AsyncSession, alerts_of: Sequence[tuple[Alert, Elder]], now: datetime
) -> None:
    """`notify_guardians` for a batch of alerts, in one INSERT. One SMS per alert and guardian
    ever (the idempotency key), however often this runs."""
    rows = [
        {
            "to": phone,
            "body": templates.guardian_sms(elder.name, alert.kind, "zh"),
            "key": f"alert:{alert.id}:guardian:{phone}",
            "alert_id": alert.id,
            "responder_id": None,
            "purpose": "guardian",
        }
        for alert, elder in alerts_of
        if elder.consent
        for phone in elder.guardian_phones or []
    ]
    await queue_sms_many(session, rows, now)


async def _responder(session: AsyncSession, responder_id: int | None) -> Responder | None:
    return None if responder_id is None else await session.get(Responder, responder_id)


async def tell_pressed_again(session: AsyncSession, alert: Alert, now: datetime) -> None:
    taker = await _responder(session, alert.accepted_by)
    elder = await session.get(Elder, alert.elder_id)
    if taker is None or elder is None:
        return
    await queue_sms(
        session,
        to=taker.phone,
        body=templates.pressed_again_sms(alert.code, elder.name, alert.trigger_count, taker.lang),
        key=f"alert:{alert.id}:pressed_again:w{rules.pressed_again_window(alert.raised_at, now)}",
        now=now,
        alert_id=alert.id,
        responder_id=taker.id,
        purpose="pressed_again",
    )


async def tell_others_handled(
    session: AsyncSession, alert: Alert, taker_id: int, now: datetime
) -> None:
    taker = await _responder(session, taker_id)
    if taker is None:
        return
    others = (
        await session.execute(
            select(Responder)
            .join(DispatchAttempt, col(DispatchAttempt.responder_id) == col(Responder.id))
            .where(
                col(DispatchAttempt.alert_id) == alert.id,
                col(Responder.id) != taker_id,
                # Those the operator withdrew were told to stand down already (改派).
                col(DispatchAttempt.answer) != AttemptAnswer.withdrawn,
            )
            .distinct()
        )
    ).scalars()
    for other in others:
        await queue_sms(
            session,
            to=other.phone,
            body=templates.handled_by_sms(alert.code, taker.name, other.lang),
            key=f"alert:{alert.id}:handled:{other.id}",
            now=now,
            alert_id=alert.id,
            responder_id=other.id,
            purpose="handled_by",
        )


async def tell_reassigned(
    session: AsyncSession, alert: Alert, responder_ids: Sequence[int], step: int, now: datetime
) -> None:
    """To the aides whose request the operator withdrew (改派): someone else goes, stand down.
    Keyed by the step of the new ask, so each reassignment tells them once."""
    for responder_id in responder_ids:
        responder = await _responder(session, responder_id)
        if responder is None:
            continue
        await queue_sms(
            session,
            to=responder.phone,
            body=templates.reassigned_sms(alert.code, responder.lang),
            key=f"alert:{alert.id}:reassigned:{responder_id}:step:{step}",
            now=now,
            alert_id=alert.id,
            responder_id=responder_id,
            purpose="reassigned",
        )


async def remind_taker(
    session: AsyncSession, alert: Alert, responder_id: int, now: datetime
) -> None:
    taker = await _responder(session, responder_id)
    if taker is None:
        return
    await queue_sms(
        session,
        to=taker.phone,
        body=templates.reminder_sms(alert.code, taker.lang),
        key=f"alert:{alert.id}:reminder:{responder_id}",
        now=now,
        alert_id=alert.id,
        responder_id=responder_id,
        purpose="reminder",
        priority=alert.priority,
    )


async def claim_due_sms(
    session: AsyncSession, now: datetime, limit: int = 50, max_priority: int | None = None
) -> list[SmsMessage]:
    """Claim queued SMS (with `max_priority`, only those at least that urgent), a P1 call-out
    before any less urgent SMS (its POST goes first), and among equals the first queued first
    (SMS queued in one statement share their due time); the row locks are held until the
    caller's transaction ends, so a second worker skips them (FOR UPDATE SKIP LOCKED) and no
    SMS is sent twice."""
    urgent_enough = [col(SmsMessage.priority) <= max_priority] if max_priority is not None else []
    result = await session.execute(
        select(SmsMessage)
        .where(
            col(SmsMessage.status) == SmsStatus.queued,
            col(SmsMessage.next_attempt_at) <= now,
            *urgent_enough,
        )
        .order_by(col(SmsMessage.priority), col(SmsMessage.next_attempt_at), col(SmsMessage.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(result.scalars())


# A pass that died after marking an SMS in flight may have had its POST reach the provider a
# moment after it died: the provider is asked only once this long has passed.
IN_FLIGHT_SETTLE = timedelta(seconds=10)


async def in_flight_since(session: AsyncSession, sms_ids: list[int]) -> dict[int, datetime]:
    """SMS among these that an earlier pass handed over without committing the outcome."""
    rows = await session.execute(
        select(col(SmsInFlight.sms_id), col(SmsInFlight.since)).where(
            col(SmsInFlight.sms_id).in_(sms_ids)
        )
    )
    return {int(sms_id): since for sms_id, since in rows}


async def mark_in_flight(sessions: SessionMaker, sms_ids: list[int], now: datetime) -> None:
    """Committed before the POSTs, in a transaction of its own (see SmsInFlight)."""
    async with transaction(sessions) as session:
        await session.execute(
            insert(SmsInFlight)
            .values([{"sms_id": i, "since": now} for i in sms_ids])
            .on_conflict_do_update(index_elements=["sms_id"], set_={"since": now})
        )


async def settle_in_flight(session: AsyncSession, sms_ids: list[int]) -> None:
    """A POST that ended without an answer (connection lost, timeout) in a pass that lives on:
    nothing of it can still land, so no need to wait `IN_FLIGHT_SETTLE` before asking."""
    if sms_ids:
        await session.execute(
            update(SmsInFlight)
            .where(col(SmsInFlight.sms_id).in_(sms_ids))
            .values(since=SmsInFlight.since - IN_FLIGHT_SETTLE)
        )


async def clear_in_flight(session: AsyncSession, sms_ids: list[int]) -> None:
    if sms_ids:
        await session.execute(delete(SmsInFlight).where(col(SmsInFlight.sms_id).in_(sms_ids)))


def retry_delay(attempts: int) -> timedelta:
    """Backoff on provider errors: 1 s, 2 s, 4 s … capped at 60 s."""
    return timedelta(seconds=min(60, 2 ** max(0, attempts - 1)))


# Aliyun-like carriers take ~50 notifications per number per day per template (DESIGN.md).
DAILY_LIMIT_PER_NUMBER = 50
# From this many in a day the operator is warned: time to call the aide or add another one.
DAILY_LIMIT_WARN_AT = 40


def daily_warn_at(daily_limit: int) -> int:
    """The warning threshold for a configured limit (`ANXIN_SMS_DAILY_LIMIT`): 80 % of it."""
    return max(1, daily_limit * DAILY_LIMIT_WARN_AT // DAILY_LIMIT_PER_NUMBER)


DAY = timedelta(hours=24)


async def sent_in_last_day(
    session: AsyncSession, phones: set[str], now: datetime
) -> dict[tuple[str, str], int]:
    """SMS a provider accepted per (number, template) in the 24 hours before `now`.

    A rolling 24 hours rather than the calendar day: it is stricter, so it also keeps every
    calendar day (the carrier's count) under the limit, and needs no time zone.
    """
    if not phones:
        return {}
    rows = await session.execute(
        select(col(SmsMessage.to_phone), col(SmsMessage.purpose), func.count())
        .where(
            col(SmsMessage.direction) == "out",
            col(SmsMessage.provider_sid).is_not(None),
            col(SmsMessage.sent_at) >= now - DAY,
            col(SmsMessage.to_phone).in_(phones),
        )
        .group_by(col(SmsMessage.to_phone), col(SmsMessage.purpose))
    )
    return {(phone, purpose): int(n) for phone, purpose, n in rows}


async def daily_limit_near(
    session: AsyncSession, sms: SmsMessage, count: int, limit: int, now: datetime
) -> None:
    """Flag the SMS row, the alert's timeline and the log: this number is near its daily limit."""
    sms.warning = (
        f"该号码24小时内第{count}条（上限{limit}条）/ {count} of {limit} SMS to this number today"
    )
    log.warning(
        "sms_daily_limit_near",
        to=mask_phone(sms.to_phone),
        purpose=sms.purpose,
        count=count,
        limit=limit,
    )
    if sms.alert_id is not None:
        await alert_timeline.add_timeline(
            session,
            sms.alert_id,
            now,
            "system",
            "sms_limit_near",
            responder_id=sms.responder_id,
            count=count,
            limit=limit,
        )


async def daily_limit_reached(
    session: AsyncSession, sms: SmsMessage, limit: int, now: datetime
) -> None:
    """Not sent: the carrier would refuse it. A dispatch moves on to the next responder now."""
    reason = f"已达该号码每日短信上限（{limit}条）/ daily SMS limit for this number reached"
    sms.warning = reason
    log.warning("sms_daily_limit_reached", to=mask_phone(sms.to_phone), purpose=sms.purpose)
    if sms.alert_id is not None:
        await alert_timeline.add_timeline(
            session,
            sms.alert_id,
            now,
            "system",
            "sms_limit_reached",
            responder_id=sms.responder_id,
            limit=limit,
        )
    await sms_failed(session, sms, reason, now)


async def sms_failed(session: AsyncSession, sms: SmsMessage, reason: str, now: datetime) -> None:
    """A dispatch SMS that cannot reach its responder moves the ladder on at once."""
    sms.status = SmsStatus.failed
    sms.last_error = reason[:256]
    sms.updated_at = now
    if sms.purpose == "dispatch" and sms.alert_id is not None and sms.responder_id is not None:
        alert = await alert_ladder.lock_alert(session, sms.alert_id)
        if alert is not None and alert.status != AlertStatus.resolved:
            await alert_ladder.attempt_failed(session, alert, sms.responder_id, now, reason)


# --- receipts and replies -------------------------------------------------------------------

FAILED_RECEIPTS = {"undelivered": SmsStatus.undelivered, "failed": SmsStatus.failed}


@dataclass(frozen=True)
class Receipt:
    """One delivery receipt (a status callback), as Twilio posts it."""

    sid: str
    status: str
    error_code: str | None = None
    sms_id: int | None = None


async def handle_status(
    session: AsyncSession,
    sid: str,
    status: str,
    error_code: str | None,
    now: datetime,
    *,
    sms_id: int | None = None,
) -> bool:
    """Apply one delivery receipt. Returns False when it names no SMS of ours.

    The worker gives every SMS a status-callback URL carrying its row id, because a receipt can
    arrive before the worker has stored the provider's SID; looking the row up by id (its lock
    waits for the worker's commit) never loses one. The SID is the fallback for receipts
    configured elsewhere (e.g. on a Twilio messaging service).
    """
    return (await handle_statuses(session, [Receipt(sid, status, error_code, sms_id)], now))[0]


async def handle_statuses(
    session: AsyncSession, receipts: Sequence[Receipt], now: datetime
) -> list[bool]:
    """Apply delivery receipts in order (`handle_status` for many, one query to find and lock
    their rows); for each, whether it named an SMS of ours.

    Every row is locked up front, in id order, before any alert is: a failed receipt locks its
    alert after its SMS row, as the outbox worker does, so two of them never wait on each other.
    """
    ids = {r.sms_id for r in receipts if r.sms_id is not None}
    sids = {r.sid for r in receipts if r.sms_id is None and r.sid}
    if not ids and not sids:
        return [False] * len(receipts)
    rows = await session.execute(
        select(SmsMessage)
        .where(
            col(SmsMessage.direction) == "out",
            or_(col(SmsMessage.id).in_(ids), col(SmsMessage.provider_sid).in_(sids)),
        )
        .order_by(col(SmsMessage.id))
        .with_for_update()
    )
    found = list(rows.scalars())
    by_id = {pk(sms): sms for sms in found}
    by_sid = {sms.provider_sid: sms for sms in found if sms.provider_sid}
    applied: list[bool] = []
    for receipt in receipts:
        sms = by_id.get(receipt.sms_id) if receipt.sms_id is not None else by_sid.get(receipt.sid)
        applied.append(sms is not None and await _apply_receipt(session, sms, receipt, now))
        if sms is not None and sms.provider_sid:
            by_sid[sms.provider_sid] = sms  # a SID stored by an earlier receipt of this batch
    return applied


async def _apply_receipt(
    session: AsyncSession, sms: SmsMessage, receipt: Receipt, now: datetime
) -> bool:
    sid, status = receipt.sid, receipt.status
    if sms.provider_sid is not None and sid and sms.provider_sid != sid:
        return False
    if sms.provider_sid is None and sid:
        # The provider has it although the worker's commit was lost: never send it again.
        sms.provider_sid = sid[:64]
        sms.sent_at = sms.sent_at or now
        if sms.status == SmsStatus.queued:
            sms.status, sms.updated_at = SmsStatus.sent, now
        await clear_in_flight(session, [pk(sms)])
    if status in FAILED_RECEIPTS:
        if sms.status not in FAILED_RECEIPTS.values():
            await sms_failed(session, sms, receipt_failure_reason(status, receipt.error_code), now)
            sms.status = FAILED_RECEIPTS[status]
    elif status == "delivered" or (status == "sent" and sms.status == SmsStatus.queued):
        # (a queued row that gets a receipt stops being queued: it is not sent a second time)
        sms.status = status
        sms.updated_at = now
    return True


async def _open_attempts(
    session: AsyncSession, responder_id: int
) -> list[tuple[DispatchAttempt, Alert]]:
    rows = await session.execute(
        select(DispatchAttempt, Alert)
        .join(Alert, col(Alert.id) == col(DispatchAttempt.alert_id))
        .where(
            col(DispatchAttempt.responder_id) == responder_id,
            col(Alert.status) != AlertStatus.resolved,
        )
        .order_by(col(DispatchAttempt.asked_at).desc())
    )
    return list(rows)


async def handle_inbound(
    session: AsyncSession, *, from_phone: str, to_phone: str, body: str, sid: str, now: datetime
) -> str:
    """Apply one SMS reply. Returns what it did (for the log and the tests)."""
    if sid:
        seen = await session.execute(
            select(col(SmsMessage.id)).where(
                col(SmsMessage.provider_sid) == sid,
                col(SmsMessage.direction) == "in",
            )
        )
        if seen.first() is not None:
            return "duplicate"
    responder = (
        (await session.execute(select(Responder).where(col(Responder.phone) == from_phone)))
        .scalars()
        .first()
    )
    session.add(
        SmsMessage(
            direction="in",
            responder_id=responder.id if responder else None,
            to_phone=to_phone[:20],
            from_phone=from_phone[:20],
            body=body[:1600],
            status=SmsStatus.received,
            provider_sid=sid or None,
            created_at=now,
        )
    )
    if responder is None or responder.id is None:
        log.info("sms_from_unknown_number", phone=mask_phone(from_phone))
        return "unknown_number"
    reply = parse_reply(body)
    actor = f"responder:{responder.id}"
    lang = responder.lang

    async def answer(text: str, purpose: str) -> None:
        await queue_sms(
            session,
            to=responder.phone,
            body=text,
            key=None,
            now=now,
            responder_id=responder.id,
            purpose=purpose,
        )

    if reply.kind in (ReplyKind.on_duty, ReplyKind.off_duty):
        responder.on_duty = reply.kind == ReplyKind.on_duty
        await answer(templates.duty_sms(responder.on_duty, lang), "duty")
        return f"duty:{responder.on_duty}"
    if reply.kind == ReplyKind.help:
        await answer(templates.help_sms(lang), "help")
        return "help"

    open_attempts = await _open_attempts(session, responder.id)
    if reply.alert_code:
        open_attempts = [(a, al) for a, al in open_attempts if al.code == reply.alert_code]
    if reply.kind in (ReplyKind.on_scene, ReplyKind.done):
        # Arrival and completion are for the alert this aide took.
        taken = [(a, al) for a, al in open_attempts if al.accepted_by == responder.id]
        open_attempts = taken or open_attempts
    else:
        open_attempts = (
            [(a, al) for a, al in open_attempts if a.answer == AttemptAnswer.pending]
            or [(a, al) for a, al in open_attempts if a.answer != AttemptAnswer.withdrawn]
            or open_attempts
        )
    if not open_attempts:
        await answer(templates.help_sms(lang), "help")
        return "no_open_alert"
    attempt, alert_row = open_attempts[0]
    assert alert_row.id is not None
    if attempt.answer == AttemptAnswer.withdrawn and alert_row.accepted_by != responder.id:
        # The operator gave this alert to someone else (改派): a late reply takes nothing.
        await answer(templates.reassigned_sms(alert_row.code, lang), "reassigned")
        return f"reassigned:{alert_row.code}"
    alert = await alert_ladder.lock_alert(session, alert_row.id)
    if alert is None:
        return "no_open_alert"
    if reply.kind == ReplyKind.accept:
        if await alert_ladder.accept(session, alert, responder.id, now, actor):
            return f"accepted:{alert.code}"
        taker = await _responder(session, alert.accepted_by)
        await answer(
            templates.handled_by_sms(alert.code, taker.name if taker else "", lang), "handled_by"
        )
        return f"already_taken:{alert.code}"
    if reply.kind == ReplyKind.decline:
        await alert_ladder.decline(session, alert, responder.id, now, actor)
        return f"declined:{alert.code}"
    # CONTRACT §5: only the taker moves an alert on (an untaken one is taken by the `2`/`3`).
    if alert.accepted_by != responder.id and not await alert_ladder.accept(
        session, alert, responder.id, now, actor
    ):
        taker = await _responder(session, alert.accepted_by)
        await answer(
            templates.not_taker_sms(alert.code, taker.name if taker else "", lang), "not_taker"
        )
        return f"not_taker:{alert.code}"
    if reply.kind == ReplyKind.on_scene:
        await alert_ladder.on_scene(session, alert, now, actor)
        return f"on_scene:{alert.code}"
    # done
    if alert.on_scene_at is None:
        await alert_ladder.on_scene(session, alert, now, actor)
    await alert_ladder.resolve(session, alert, now, actor=actor, outcome=outcome_of(reply.outcome))
    return f"resolved:{alert.code}"


def outcome_of(word: str | None) -> str:
    if not word:
        return "handled"
    if "误" in word or "false" in word.lower():
        return "false_alarm"
    if "医" in word or "hospital" in word.lower() or "120" in word:
        return "hospital"
    return "handled"


async def mark_sent(session: AsyncSession, sms_id: int, *, sid: str | None, now: datetime) -> None:
    await session.execute(
        update(SmsMessage)
        .where(col(SmsMessage.id) == sms_id)
        .values(
            status=SmsStatus.sent if sid else SmsStatus.outbox,
            provider_sid=sid,
            sent_at=now,
            updated_at=now,
        )
    )


def masked(phone: str) -> str:
    return mask_phone(phone)
