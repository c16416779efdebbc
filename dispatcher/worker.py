"""The outbox sender: claims queued SMS, hands them to the provider, retries with backoff."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Literal

from anxin import metrics
from anxin.clock import Clock
from anxin.db import Idle, SessionMaker, first_of, listening, transaction
from anxin.logging import get_logger, mask_phone
from anxin.models import pk
from dispatcher import outbox
from dispatcher.models import SmsMessage, SmsStatus
from dispatcher.providers import SmsProvider, SmsSendError
from dispatcher.reports import AlertResponses

log = get_logger("dispatcher.worker")


async def _send(provider: SmsProvider, sms: SmsMessage, status_callback: str | None) -> str | None:
    # The row id in the callback URL finds the row even before its SID is stored.
    callback = f"{status_callback}?sms={sms.id}" if status_callback else None
    return await provider.send(to=sms.to_phone, body=sms.body, status_callback=callback)


def _failure(error: BaseException) -> tuple[str, bool]:
    """(readable reason for the SMS row, whether a retry may help)."""
    if isinstance(error, SmsSendError):
        return error.reason, error.retryable
    return f"发送出错 / unexpected send error ({type(error).__name__})", True


def _maybe_accepted(error: BaseException) -> bool:
    """Whether the provider may have taken the SMS despite the error: no answer came back
    (connection lost, timeout), as opposed to a refusal it answered with."""
    return not (isinstance(error, SmsSendError) and error.http_status is not None)


async def _check_in_flight(
    provider: SmsProvider, sms: SmsMessage, since: datetime, now: datetime
) -> Literal["sent", "send", "later"]:
    """An SMS an earlier pass handed over without committing the outcome (it died, or got no
    answer): `sent` when the provider has it (recorded here, not sent again), `send` when it
    has not, `later` while that cannot be known yet (its next attempt is put off)."""
    if now - since < outbox.IN_FLIGHT_SETTLE:
        sms.next_attempt_at = since + outbox.IN_FLIGHT_SETTLE
        return "later"
    try:
        sid = await provider.find_sent(to=sms.to_phone, body=sms.body, since=since)
    except Exception as exc:
        sms.next_attempt_at = now + outbox.retry_delay(max(1, sms.attempts))
        log.warning("sms_in_flight_unknown", sms=sms.id, error=repr(exc))
        return "later"
    if sid is None:
        return "send"
    sms.status, sms.provider_sid, sms.sent_at, sms.updated_at = SmsStatus.sent, sid, now, now
    log.info("sms_found_sent", sms=sms.id, to=mask_phone(sms.to_phone), purpose=sms.purpose)
    metrics.count_sms("found_sent")
    return "sent"


async def send_due(
    sessions: SessionMaker,
    provider: SmsProvider,
    clock: Clock,
    *,
    responses: AlertResponses,
    status_callback: str | None,
    max_attempts: int = 8,
    limit: int = 50,
    daily_limit: int = outbox.DAILY_LIMIT_PER_NUMBER,
    daily_warn_at: int | None = None,
    max_priority: int | None = None,
) -> int:
    """One pass of the outbox (with `max_priority`, of the SMS at least that urgent). Returns
    how many SMS it handled.

    The claimed rows stay locked (FOR UPDATE SKIP LOCKED) until this pass commits, so another
    worker never picks them up; a crash before the commit leaves them queued, to be sent again:
    never zero times. And not twice: just before the POSTs the pass commits an in-flight mark
    for them (`SmsInFlight`), so the pass that claims one again after a crash first asks the
    provider whether it has that message (after `IN_FLIGHT_SETTLE`, so that a POST still on its
    way has landed) and records it as sent if so.

    Per-number daily limit: an SMS to a number that has had `daily_limit` SMS of the same
    template (purpose) in the last 24 hours is not sent — the carrier would refuse it — and
    fails with a readable reason; a dispatch then moves the ladder on to the next responder at
    once. From `daily_warn_at` on, the SMS row carries a `warning`, the alert's timeline gets
    `sms_limit_near` and the log a warning, so an operator can step in first. Two workers may
    overshoot the limit by a message or two: the count is read per batch.
    """
    if daily_warn_at is None:
        daily_warn_at = outbox.daily_warn_at(daily_limit)
    async with transaction(sessions) as session:
        now = clock.now()
        batch = await outbox.claim_due_sms(session, now, limit, max_priority)
        if not batch:
            return 0
        in_flight = await outbox.in_flight_since(session, [pk(sms) for sms in batch])
        counts = await outbox.sent_in_last_day(session, {sms.to_phone for sms in batch}, now)
        settled: list[int] = []  # SMS whose outcome this pass commits
        unanswered: list[int] = []  # POSTs that ended without an answer: over, outcome unknown
        sendable: list[SmsMessage] = []
        for sms in batch:
            since = in_flight.get(pk(sms))
            if since is not None:
                verdict = await _check_in_flight(provider, sms, since, now)
                if verdict == "sent":
                    settled.append(pk(sms))
                if verdict != "send":
                    continue
            key = (sms.to_phone, sms.purpose)
            count = counts.get(key, 0) + 1
            if count > daily_limit:
                sms.updated_at = now
                await outbox.daily_limit_reached(
                    session, sms, daily_limit, now, responses=responses
                )
                settled.append(pk(sms))
                continue
            counts[key] = count
            if count >= daily_warn_at:
                await outbox.daily_limit_near(
                    session, sms, count, daily_limit, now, responses=responses
                )
            sendable.append(sms)
        if sendable:
            await outbox.mark_in_flight(sessions, [pk(sms) for sms in sendable], now)
        results = await asyncio.gather(
            *(_send(provider, sms, status_callback) for sms in sendable), return_exceptions=True
        )
        now = clock.now()
        for sms, result in zip(sendable, results, strict=True):
            sms.attempts += 1
            sms.updated_at = now
            if isinstance(result, BaseException):
                reason, retryable = _failure(result)
                sms.last_error = reason[:256]
                if not _maybe_accepted(result):
                    settled.append(pk(sms))
                else:
                    unanswered.append(pk(sms))
                if retryable and sms.attempts < max_attempts:
                    sms.next_attempt_at = now + outbox.retry_delay(sms.attempts)
                    log.warning("sms_retry", sms=sms.id, attempts=sms.attempts, reason=reason)
                    metrics.count_sms("retry")
                else:
                    log.warning(
                        "sms_failed", sms=sms.id, to=mask_phone(sms.to_phone), reason=reason
                    )
                    await outbox.sms_failed(session, sms, reason, now, responses=responses)
                    metrics.count_sms("failed")
            else:
                settled.append(pk(sms))
                sms.status = SmsStatus.sent if result else SmsStatus.outbox
                sms.provider_sid = result
                sms.sent_at = now
                log.info("sms_sent", sms=sms.id, to=mask_phone(sms.to_phone), purpose=sms.purpose)
                metrics.count_sms(str(sms.status))
        await outbox.clear_in_flight(session, settled)
        # This pass is alive and its POSTs are over: the next may ask the provider at once.
        await outbox.settle_in_flight(session, unanswered)
        return len(batch)


async def run_outbox(
    sessions: SessionMaker,
    provider: SmsProvider,
    clock: Clock,
    *,
    responses: AlertResponses,
    status_callback: str | None,
    poll_seconds: float,
    max_attempts: int,
    stop: asyncio.Event,
    listen: bool = True,
    batch_size: int = 50,
    concurrent_passes: int = 2,
    daily_limit: int = outbox.DAILY_LIMIT_PER_NUMBER,
    idle: asyncio.Event | None = None,
) -> None:
    """Send the outbox until `stop` is set (`idle` is set while every pass waits for work).

    With `listen`, the worker LISTENs on the channel that `queue_sms` NOTIFYs in the queuing
    transaction, so a new SMS is picked up as soon as that transaction commits instead of at
    the next poll; polling every `poll_seconds` stays as the safety net (retries that fall
    due, a lost listening connection, a pooler that cannot LISTEN).

    `concurrent_passes` passes run at once, each with its own claimed batch (SKIP LOCKED keeps
    them apart as it keeps replicas apart): while one waits for the provider, another talks
    to the database, which roughly doubles one worker's throughput (bench/bench_outbox.py).
    A NOTIFY wakes one idle pass, not all: the others would only find its SMS claimed.

    One more pass sends only the urgent SMS (`outbox.URGENT_SMS_PRIORITY`: the call-outs of
    P1/P2 alerts), woken by a channel of its own. A township's power cut queues a hundred
    guardian notices and welfare-check asks at once, and the passes POSTing them take a good
    tenth of a second each; an SOS call-out queued meanwhile goes out at once rather than after
    them. The other passes take urgent SMS too (first, by priority), so a busy or failed
    urgent pass delays nothing.
    """
    try:
        wakeups = _Wakeups(max(1, concurrent_passes))
        urgent = _Wakeups(1)
        waiting = Idle(len(wakeups.events) + 1, idle)
        async with contextlib.AsyncExitStack() as listeners:
            if listen:
                await listeners.enter_async_context(
                    listening(sessions, outbox.OUTBOX_CHANNEL, wakeups.notify)
                )
                await listeners.enter_async_context(
                    listening(sessions, outbox.OUTBOX_URGENT_CHANNEL, urgent.notify)
                )
            lanes: list[tuple[_Wakeups, int, int | None]] = [
                (wakeups, n, None) for n in range(len(wakeups.events))
            ]
            lanes.append((urgent, 0, outbox.URGENT_SMS_PRIORITY))
            await asyncio.gather(
                *(
                    _passes(
                        sessions,
                        provider,
                        clock,
                        lane_wakeups,
                        n,
                        responses=responses,
                        status_callback=status_callback,
                        poll_seconds=poll_seconds,
                        max_attempts=max_attempts,
                        batch_size=batch_size,
                        daily_limit=daily_limit,
                        max_priority=max_priority,
                        stop=stop,
                        waiting=waiting,
                    )
                    for lane_wakeups, n, max_priority in lanes
                )
            )
    finally:
        await provider.aclose()


class _Wakeups:
    """The passes' wake-up events. A NOTIFY (one new batch of SMS committed) wakes one idle
    pass; when none is idle, every pass looks again after the one it is in (its claim may
    have missed the new rows). A pass that claimed a full batch wakes another: there may be
    more."""

    def __init__(self, passes: int) -> None:
        self.events = [asyncio.Event() for _ in range(passes)]
        self.idle = [False] * passes

    def notify(self) -> None:
        for event, idle in zip(self.events, self.idle, strict=True):
            if idle and not event.is_set():
                event.set()
                return
        for event in self.events:
            event.set()


async def _passes(
    sessions: SessionMaker,
    provider: SmsProvider,
    clock: Clock,
    wakeups: _Wakeups,
    n: int,
    *,
    responses: AlertResponses,
    status_callback: str | None,
    poll_seconds: float,
    max_attempts: int,
    batch_size: int,
    daily_limit: int,
    max_priority: int | None,
    stop: asyncio.Event,
    waiting: Idle,
) -> None:
    wakeup = wakeups.events[n]
    while not stop.is_set():
        # Cleared before the pass: a NOTIFY that arrives during it triggers another.
        wakeup.clear()
        try:
            handled = await send_due(
                sessions,
                provider,
                clock,
                responses=responses,
                status_callback=status_callback,
                max_attempts=max_attempts,
                limit=batch_size,
                daily_limit=daily_limit,
                max_priority=max_priority,
            )
        except Exception as exc:  # the database may be restarting: back off, never die
            log.warning("outbox_error", error=repr(exc))
            handled = 0
            await asyncio.sleep(1)
        if handled >= batch_size:
            wakeups.notify()  # more may be queued: another pass takes the next batch
        elif not handled:
            wakeups.idle[n] = True
            try:
                async with waiting.waiting_for_work():
                    await first_of(stop, wakeup, timeout=poll_seconds)
            finally:
                wakeups.idle[n] = False
