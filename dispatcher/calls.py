"""Voice call-outs (issue 19): written by the ladder in its transaction, placed once by the
calls worker after the commit, as the SMS outbox does (`dispatcher.outbox`, `dispatcher.worker`).

Once only: one row per alert, responder and ladder step (idempotency key); claimed FOR UPDATE
SKIP LOCKED; an in-flight mark committed before the provider's POST, so the pass that claims a
call again after a crash asks the provider (`VoiceProvider.find_placed`) before ringing the
aide a second time. Per-number daily limit (`ANXIN_VOICE_DAILY_LIMIT`): at the limit a call is
not placed and counts as unanswered. What comes back (the key, the outcome) is
`dispatcher.inbound.call_keypress` / `call_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.clock import Clock
from anxin.db import Idle, SessionMaker, first_of, listening, notify_on_commit, transaction
from anxin.logging import get_logger, mask_phone
from anxin.models import Elder, Region, Responder, pk
from dispatcher import templates
from dispatcher.models import CallInFlight, CallStatus, VoiceCall
from dispatcher.providers import SmsSendError, VoiceProvider
from dispatcher.reports import AlertRef, AlertResponses

log = get_logger("dispatcher.calls")

CALLS_CHANNEL = "anxin_calls"
# As the SMS outbox's IN_FLIGHT_SETTLE: a POST still on its way has landed by then.
IN_FLIGHT_SETTLE = timedelta(seconds=10)
DAY = timedelta(hours=24)
# A voice notification per number per day (carriers cap these as they cap SMS).
DAILY_LIMIT_PER_NUMBER = 20


def call_key(alert_id: int | None, responder_id: int, step: int) -> str:
    """One call per alert, responder and ladder step, however often the ladder runs."""
    return f"alert:{alert_id}:responder:{responder_id}:step:{step}:call"


async def queue_call(
    session: AsyncSession,
    *,
    alert: AlertRef,
    responder_id: int,
    role: str,
    step: int,
    reason: str,
    now: datetime,
) -> bool:
    """Write the call-out call asking this responder (the ladder's transaction; NOTIFYs the
    calls worker on commit). False when it was written already, or the responder or the elder
    is gone."""
    responder = await session.get(Responder, responder_id)
    elder = await session.get(Elder, alert.elder_id)
    if responder is None or elder is None:
        return False
    village = await session.get(Region, elder.village_id)
    line = next((c for c in alert.ranking if c["responder_id"] == responder_id), {})
    speech = templates.call_speech(
        elder_name=elder.name,
        village=village.name if village else "",
        kind=alert.kind,
        distance_km=float(line.get("distance_km") or 0.0),
        eta_minutes=float(line.get("eta_minutes") or 0.0),
        escalated=role != "aide",
    )
    result = await session.execute(
        insert(VoiceCall)
        .values(
            idempotency_key=call_key(alert.id, responder_id, step),
            alert_id=alert.id,
            responder_id=responder_id,
            step=step,
            reason=reason[:16],
            priority=alert.priority,
            to_phone=responder.phone,
            speech_text=speech[:1000],
            status=CallStatus.queued,
            provider="",
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(col(VoiceCall.id))
    )
    if result.first() is None:
        return False
    await notify_on_commit(session, CALLS_CHANNEL)
    return True


async def claim_due_calls(session: AsyncSession, now: datetime, limit: int) -> list[VoiceCall]:
    result = await session.execute(
        select(VoiceCall)
        .where(col(VoiceCall.status) == CallStatus.queued, col(VoiceCall.next_attempt_at) <= now)
        .order_by(col(VoiceCall.priority), col(VoiceCall.next_attempt_at), col(VoiceCall.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(result.scalars())


async def placed_in_last_day(
    session: AsyncSession, phones: set[str], now: datetime
) -> dict[str, int]:
    """Calls a provider took per number in the 24 hours before `now`."""
    if not phones:
        return {}
    rows = await session.execute(
        select(col(VoiceCall.to_phone), func.count())
        .where(
            col(VoiceCall.provider_sid).is_not(None),
            col(VoiceCall.placed_at) >= now - DAY,
            col(VoiceCall.to_phone).in_(phones),
        )
        .group_by(col(VoiceCall.to_phone))
    )
    return {phone: int(n) for phone, n in rows}


async def _mark_in_flight(sessions: SessionMaker, call_ids: list[int], now: datetime) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            insert(CallInFlight)
            .values([{"call_id": i, "since": now} for i in call_ids])
            .on_conflict_do_update(index_elements=["call_id"], set_={"since": now})
        )


async def _in_flight_since(session: AsyncSession, call_ids: list[int]) -> dict[int, datetime]:
    rows = await session.execute(
        select(col(CallInFlight.call_id), col(CallInFlight.since)).where(
            col(CallInFlight.call_id).in_(call_ids)
        )
    )
    return {int(call_id): since for call_id, since in rows}


async def _clear_in_flight(session: AsyncSession, call_ids: list[int]) -> None:
    if call_ids:
        await session.execute(delete(CallInFlight).where(col(CallInFlight.call_id).in_(call_ids)))


async def _settle_in_flight(session: AsyncSession, call_ids: list[int]) -> None:
    if call_ids:
        await session.execute(
            update(CallInFlight)
            .where(col(CallInFlight.call_id).in_(call_ids))
            .values(since=CallInFlight.since - IN_FLIGHT_SETTLE)
        )


async def call_failed(
    session: AsyncSession,
    call: VoiceCall,
    reason: str,
    now: datetime,
    *,
    responses: AlertResponses,
    moves_on: bool = True,
) -> None:
    """The call was not placed: as an unanswered call, the ladder moves on (`moves_on`)."""
    call.status = CallStatus.failed
    call.last_error = reason[:256]
    call.updated_at = call.ended_at = now
    if call.alert_id is None or call.responder_id is None:
        return
    if moves_on:
        await responses.delivery_failed(
            session,
            alert_id=call.alert_id,
            responder_id=call.responder_id,
            reason=reason,
            now=now,
            channel="voice",
        )
    else:
        await responses.note(
            session,
            alert_id=call.alert_id,
            action="call_not_placed",
            now=now,
            responder_id=call.responder_id,
            reason=reason,
        )


def _retry_delay(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s … capped at 30 s: a call is worth placing only while the aide can help."""
    return timedelta(seconds=min(30, 2 ** max(0, attempts - 1)))


async def _check_in_flight(
    provider: VoiceProvider, call: VoiceCall, since: datetime, now: datetime
) -> str:
    """`placed` (recorded, not placed again), `place`, or `later` (not knowable yet)."""
    if now - since < IN_FLIGHT_SETTLE:
        call.next_attempt_at = since + IN_FLIGHT_SETTLE
        return "later"
    try:
        sid = await provider.find_placed(to=call.to_phone, call_ref=str(call.id), since=since)
    except Exception as exc:
        call.next_attempt_at = now + _retry_delay(max(1, call.attempts))
        log.warning("call_in_flight_unknown", call=call.id, error=repr(exc))
        return "later"
    if sid is None:
        return "place"
    call.status, call.provider_sid, call.placed_at, call.updated_at = "placed", sid, now, now
    call.provider = provider.name
    log.info("call_found_placed", call=call.id, to=mask_phone(call.to_phone))
    return "placed"


async def _place(provider: VoiceProvider, call: VoiceCall, callback_base: str) -> str | None:
    ref = str(call.id)
    return await provider.call(
        to=call.to_phone,
        speech_text=call.speech_text,
        call_ref=ref,
        status_callback=f"{callback_base}/twilio/call/status?call={ref}",
        gather_callback=f"{callback_base}/twilio/call/gather?call={ref}",
    )


async def place_due(
    sessions: SessionMaker,
    provider: VoiceProvider,
    clock: Clock,
    *,
    responses: AlertResponses,
    callback_base: str,
    daily_limit: int = DAILY_LIMIT_PER_NUMBER,
    max_attempts: int = 5,
    limit: int = 50,
) -> int:
    """One pass: claim queued calls, place them, commit their outcome. Returns how many."""
    async with transaction(sessions) as session:
        now = clock.now()
        batch = await claim_due_calls(session, now, limit)
        if not batch:
            return 0
        in_flight = await _in_flight_since(session, [pk(c) for c in batch])
        counts = await placed_in_last_day(session, {c.to_phone for c in batch}, now)
        settled: list[int] = []
        unanswered: list[int] = []
        placeable: list[VoiceCall] = []
        for call in batch:
            since = in_flight.get(pk(call))
            if since is not None:
                verdict = await _check_in_flight(provider, call, since, now)
                if verdict == "placed":
                    settled.append(pk(call))
                if verdict != "place":
                    continue
            count = counts.get(call.to_phone, 0) + 1
            if count > daily_limit:
                reason = f"已达该号码每日语音上限（{daily_limit}次）/ daily voice limit reached"
                log.warning("call_daily_limit_reached", to=mask_phone(call.to_phone))
                await call_failed(session, call, reason, now, responses=responses)
                settled.append(pk(call))
                continue
            counts[call.to_phone] = count
            placeable.append(call)
        if placeable:
            await _mark_in_flight(sessions, [pk(c) for c in placeable], now)
        results = await asyncio.gather(
            *(_place(provider, c, callback_base) for c in placeable), return_exceptions=True
        )
        now = clock.now()
        placed: list[VoiceCall] = []
        for call, result in zip(placeable, results, strict=True):
            call.attempts += 1
            call.updated_at = now
            call.provider = provider.name
            if isinstance(result, BaseException):
                reason, retryable = (
                    (result.reason, result.retryable)
                    if isinstance(result, SmsSendError)
                    else (f"呼叫出错 / unexpected call error ({type(result).__name__})", True)
                )
                answered = isinstance(result, SmsSendError) and result.http_status is not None
                (settled if answered else unanswered).append(pk(call))
                call.last_error = reason[:256]
                if retryable and call.attempts < max_attempts:
                    call.next_attempt_at = now + _retry_delay(call.attempts)
                    log.warning("call_retry", call=call.id, attempts=call.attempts, reason=reason)
                else:
                    log.warning("call_failed", call=call.id, to=mask_phone(call.to_phone))
                    await call_failed(session, call, reason, now, responses=responses)
                continue
            settled.append(pk(call))
            if result is None:
                # No voice provider: kept for the timeline. After a failed SMS there is no
                # other way to reach them: the ladder moves on; otherwise the SMS's wait runs.
                await call_failed(
                    session,
                    call,
                    "未配置语音通道 / no voice provider",
                    now,
                    responses=responses,
                    moves_on=call.reason == "sms_failed",
                )
                call.status = CallStatus.outbox
                continue
            if call.provider_sid is None:
                call.provider_sid = result
            if call.status == CallStatus.queued:
                call.status = CallStatus.placed
            call.placed_at = call.placed_at or now
            log.info("call_placed", call=call.id, to=mask_phone(call.to_phone))
            placed.append(call)
        # Timeline rows last: their inserts take key-share locks on the alerts, which must not
        # come before a failed call's lock of its alert in this pass (a lock upgrade that can
        # deadlock with a webhook doing the same).
        for call in placed:
            if call.alert_id is not None:
                await responses.note(
                    session,
                    alert_id=call.alert_id,
                    action="call_placed",
                    now=now,
                    responder_id=call.responder_id,
                )
        await _clear_in_flight(session, settled)
        await _settle_in_flight(session, unanswered)
        return len(batch)


async def run_calls(
    sessions: SessionMaker,
    provider: VoiceProvider,
    clock: Clock,
    *,
    responses: AlertResponses,
    callback_base: str,
    poll_seconds: float,
    stop: asyncio.Event,
    daily_limit: int = DAILY_LIMIT_PER_NUMBER,
    listen: bool = True,
    idle: asyncio.Event | None = None,
) -> None:
    """Place call-outs until `stop` is set: woken by the ladder's NOTIFY, polling as a safety
    net (`idle` is set while it waits for work)."""
    wakeup = asyncio.Event()
    waiting = Idle(1, idle)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if listen:
                await stack.enter_async_context(listening(sessions, CALLS_CHANNEL, wakeup.set))
            while not stop.is_set():
                wakeup.clear()
                try:
                    handled = await place_due(
                        sessions,
                        provider,
                        clock,
                        responses=responses,
                        callback_base=callback_base,
                        daily_limit=daily_limit,
                    )
                except Exception as exc:  # the database may be restarting: back off, never die
                    log.warning("calls_error", error=repr(exc))
                    handled = 0
                    await asyncio.sleep(1)
                if not handled:
                    async with waiting.waiting_for_work():
                        await first_of(stop, wakeup, timeout=poll_seconds)
    finally:
        await provider.aclose()
