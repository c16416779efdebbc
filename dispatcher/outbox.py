"""The SMS outbox: SMS written in the transaction that decides to send them, which also
NOTIFYs the outbox workers; a worker sends them after the commit (`dispatcher.worker`). An
idempotency key per alert, responder and step means a step that runs twice writes one SMS.

The SMS about an alert take it as an `AlertRef`; what an SMS's fate does to its alert (a
failed call-out, a number near its daily limit) is reported through `AlertResponses`.
Per-number daily limits: see `dispatcher.worker.send_due`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.db import SessionMaker, notify_on_commit, transaction
from anxin.logging import get_logger, mask_phone
from anxin.models import Elder, Region, Responder
from dispatcher import templates
from dispatcher.models import (
    SMS_DEFAULT_PRIORITY,
    FamilyOptOut,
    SmsInFlight,
    SmsMessage,
    SmsStatus,
)
from dispatcher.reports import AlertRef, AlertResponses

log = get_logger("dispatcher")


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


async def answer_responder(
    session: AsyncSession, responder: Responder, text: str, purpose: str, now: datetime
) -> None:
    """An answer to a responder's reply (no key: each reply gets its own)."""
    await queue_sms(
        session,
        to=responder.phone,
        body=text,
        key=None,
        now=now,
        responder_id=responder.id,
        purpose=purpose,
    )


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


async def call_out_sms(
    session: AsyncSession, *, alert: AlertRef, responder_id: int, role: str, step: int
) -> dict[str, Any] | None:
    """The call-out SMS asking this responder to go (a dict of `queue_sms`'s arguments, not
    yet written: the ladder writes it with its attempt row); None when the responder or the
    elder is gone."""
    responder = await session.get(Responder, responder_id)
    elder = await session.get(Elder, alert.elder_id)
    if responder is None or elder is None:
        return None
    line = next((c for c in alert.ranking if c["responder_id"] == responder_id), {})
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
    return {
        "to": responder.phone,
        "body": body,
        "key": f"alert:{alert.id}:responder:{responder_id}:step:{step}",
        "alert_id": alert.id,
        "responder_id": responder_id,
        "purpose": "dispatch",
        "priority": alert.priority,
    }


async def notify_guardians(
    session: AsyncSession, alert: AlertRef, elder: Elder, now: datetime
) -> None:
    """Guardians get an informational SMS (never asked to respond)."""
    await notify_guardians_many(session, [(alert, elder)], now)


async def notify_guardians_many(
    session: AsyncSession, alerts_of: Sequence[tuple[AlertRef, Elder]], now: datetime
) -> None:
    """`notify_guardians` for a batch of alerts, in one INSERT. One SMS per alert and guardian
    ever (the idempotency key), however often this runs."""
    opted_out = await _opted_out(
        session, {p for _, elder in alerts_of if elder.consent for p in elder.guardian_phones or []}
    )
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
        if phone not in opted_out
    ]
    await queue_sms_many(session, rows, now)


async def _opted_out(session: AsyncSession, phones: set[str]) -> set[str]:
    """Which of these numbers replied 退订 (and not 订阅 since)."""
    if not phones:
        return set()
    rows = await session.execute(
        select(col(FamilyOptOut.phone)).where(col(FamilyOptOut.phone).in_(phones))
    )
    return set(rows.scalars())


async def tell_family_all_clear(
    session: AsyncSession, alert: AlertRef, outcome: str, now: datetime
) -> None:
    """The alert is resolved: each number told when it started (a `guardian` SMS was written,
    so consent held then) hears it is over and how, in plain words (`templates.all_clear_sms`),
    once (the key), unless it has opted out since."""
    rows = await session.execute(
        select(col(SmsMessage.to_phone))
        .where(
            col(SmsMessage.alert_id) == alert.id,
            col(SmsMessage.direction) == "out",
            col(SmsMessage.purpose) == "guardian",
        )
        .distinct()
    )
    told = set(rows.scalars())
    phones = told - await _opted_out(session, told)
    elder = await session.get(Elder, alert.elder_id) if phones else None
    if elder is None:
        return
    body = templates.all_clear_sms(elder.name, alert.kind, outcome)
    await queue_sms_many(
        session,
        [
            {
                "to": phone,
                "body": body,
                "key": f"alert:{alert.id}:all_clear:{phone}",
                "alert_id": alert.id,
                "purpose": "all_clear",
            }
            for phone in sorted(phones)
        ],
        now,
    )


async def _responder(session: AsyncSession, responder_id: int | None) -> Responder | None:
    return None if responder_id is None else await session.get(Responder, responder_id)


async def tell_pressed_again(
    session: AsyncSession, alert: AlertRef, now: datetime, *, window: int
) -> None:
    """To the taker: the elder pressed again. Once per `window` (a count the caller keeps)."""
    taker = await _responder(session, alert.accepted_by)
    elder = await session.get(Elder, alert.elder_id)
    if taker is None or elder is None:
        return
    await queue_sms(
        session,
        to=taker.phone,
        body=templates.pressed_again_sms(alert.code, elder.name, alert.trigger_count, taker.lang),
        key=f"alert:{alert.id}:pressed_again:w{window}",
        now=now,
        alert_id=alert.id,
        responder_id=taker.id,
        purpose="pressed_again",
    )


async def tell_others_handled(
    session: AsyncSession, alert: AlertRef, taker_id: int, others: Sequence[int], now: datetime
) -> None:
    """To the others asked (`others`, the ladder's list): someone has taken it."""
    taker = await _responder(session, taker_id)
    if taker is None:
        return
    rows = await session.execute(select(Responder).where(col(Responder.id).in_(others)))
    for other in rows.scalars():
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
    session: AsyncSession, alert: AlertRef, responder_ids: Sequence[int], step: int, now: datetime
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
    session: AsyncSession, alert: AlertRef, responder_id: int, now: datetime
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
    session: AsyncSession,
    sms: SmsMessage,
    count: int,
    limit: int,
    now: datetime,
    *,
    responses: AlertResponses,
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
        await responses.note(
            session,
            alert_id=sms.alert_id,
            action="sms_limit_near",
            now=now,
            responder_id=sms.responder_id,
            count=count,
            limit=limit,
        )


async def daily_limit_reached(
    session: AsyncSession, sms: SmsMessage, limit: int, now: datetime, *, responses: AlertResponses
) -> None:
    """Not sent: the carrier would refuse it. A dispatch moves on to the next responder now."""
    reason = f"已达该号码每日短信上限（{limit}条）/ daily SMS limit for this number reached"
    sms.warning = reason
    log.warning("sms_daily_limit_reached", to=mask_phone(sms.to_phone), purpose=sms.purpose)
    if sms.alert_id is not None:
        await responses.note(
            session,
            alert_id=sms.alert_id,
            action="sms_limit_reached",
            now=now,
            responder_id=sms.responder_id,
            limit=limit,
        )
    await sms_failed(session, sms, reason, now, responses=responses)


async def sms_failed(
    session: AsyncSession, sms: SmsMessage, reason: str, now: datetime, *, responses: AlertResponses
) -> None:
    """A dispatch SMS that cannot reach its responder moves the ladder on at once."""
    sms.status = SmsStatus.failed
    sms.last_error = reason[:256]
    sms.updated_at = now
    if sms.purpose == "dispatch" and sms.alert_id is not None and sms.responder_id is not None:
        await responses.delivery_failed(
            session, alert_id=sms.alert_id, responder_id=sms.responder_id, reason=reason, now=now
        )
