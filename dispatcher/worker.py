"""The outbox sender: claims queued SMS, hands them to the provider, retries with backoff."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from anxin import metrics
from anxin.clock import Clock
from anxin.db import SessionMaker, first_of, listening, transaction
from anxin.logging import get_logger, mask_phone
from dispatcher import service
from dispatcher.models import SmsMessage, SmsStatus
from dispatcher.providers import SmsProvider
from dispatcher.twilio_provider import SmsSendError

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


async def send_due(
    sessions: SessionMaker,
    provider: SmsProvider,
    clock: Clock,
    *,
    status_callback: str | None,
    max_attempts: int = 8,
    limit: int = 50,
    daily_limit: int = service.DAILY_LIMIT_PER_NUMBER,
    daily_warn_at: int = service.DAILY_LIMIT_WARN_AT,
) -> int:
    """One pass of the outbox. Returns how many SMS it handled.

    The claimed rows stay locked (FOR UPDATE SKIP LOCKED) until this pass commits, so another
    worker never picks them up; a crash before the commit leaves them queued, to be sent again
    (at least once: an aide may, rarely, get an SMS twice, never zero times).

    Per-number daily limit: an SMS to a number that has had `daily_limit` SMS of the same
    template (purpose) in the last 24 hours is not sent — the carrier would refuse it — and
    fails with a readable reason; a dispatch then moves the ladder on to the next responder at
    once. From `daily_warn_at` on, the SMS row carries a `warning`, the alert's timeline gets
    `sms_limit_near` and the log a warning, so an operator can step in first. Two workers may
    overshoot the limit by a message or two: the count is read per batch.
    """
    async with transaction(sessions) as session:
        now = clock.now()
        batch = await service.claim_due_sms(session, now, limit)
        if not batch:
            return 0
        counts = await service.sent_in_last_day(session, {sms.to_phone for sms in batch}, now)
        sendable: list[SmsMessage] = []
        for sms in batch:
            key = (sms.to_phone, sms.purpose)
            count = counts.get(key, 0) + 1
            if count > daily_limit:
                sms.updated_at = now
                await service.daily_limit_reached(session, sms, daily_limit, now)
                continue
            counts[key] = count
            if count >= daily_warn_at:
                await service.daily_limit_near(session, sms, count, daily_limit, now)
            sendable.append(sms)
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
                if retryable and sms.attempts < max_attempts:
                    sms.next_attempt_at = now + service.retry_delay(sms.attempts)
                    log.warning("sms_retry", sms=sms.id, attempts=sms.attempts, reason=reason)
                    metrics.count_sms("retry")
                else:
                    log.warning(
                        "sms_failed", sms=sms.id, to=mask_phone(sms.to_phone), reason=reason
                    )
                    await service.sms_failed(session, sms, reason, now)
                    metrics.count_sms("failed")
            else:
                sms.status = SmsStatus.sent if result else SmsStatus.outbox
                sms.provider_sid = result
                sms.sent_at = now
                log.info("sms_sent", sms=sms.id, to=mask_phone(sms.to_phone), purpose=sms.purpose)
                metrics.count_sms(str(sms.status))
        return len(batch)


async def run_outbox(
    sessions: SessionMaker,
    provider: SmsProvider,
    clock: Clock,
    *,
    status_callback: str | None,
    poll_seconds: float,
    max_attempts: int,
    stop: asyncio.Event,
    listen: bool = True,
    batch_size: int = 50,
    concurrent_passes: int = 2,
) -> None:
    """Send the outbox until `stop` is set.

    With `listen`, the worker LISTENs on the channel that `queue_sms` NOTIFYs in the queuing
    transaction, so a new SMS is picked up as soon as that transaction commits instead of at
    the next poll; polling every `poll_seconds` stays as the safety net (retries that fall
    due, a lost listening connection, a pooler that cannot LISTEN).

    `concurrent_passes` passes run at once, each with its own claimed batch (SKIP LOCKED keeps
    them apart as it keeps replicas apart): while one waits for the provider, another talks
    to the database, which roughly doubles one worker's throughput (bench/bench_outbox.py).
    A NOTIFY wakes one idle pass, not all: the others would only find its SMS claimed.
    """
    try:
        wakeups = _Wakeups(max(1, concurrent_passes))
        async with _listening(sessions, wakeups, enabled=listen):
            await asyncio.gather(
                *(
                    _passes(
                        sessions,
                        provider,
                        clock,
                        wakeups,
                        n,
                        status_callback=status_callback,
                        poll_seconds=poll_seconds,
                        max_attempts=max_attempts,
                        batch_size=batch_size,
                        stop=stop,
                    )
                    for n in range(len(wakeups.events))
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
    status_callback: str | None,
    poll_seconds: float,
    max_attempts: int,
    batch_size: int,
    stop: asyncio.Event,
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
                status_callback=status_callback,
                max_attempts=max_attempts,
                limit=batch_size,
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
                await first_of(stop, wakeup, timeout=poll_seconds)
            finally:
                wakeups.idle[n] = False


@contextlib.asynccontextmanager
async def _listening(
    sessions: SessionMaker, wakeups: _Wakeups, *, enabled: bool
) -> AsyncIterator[None]:
    """LISTEN on the outbox channel on a connection of our own; polling alone if that fails."""
    if not enabled:
        yield
        return
    async with listening(sessions, service.OUTBOX_CHANNEL, wakeups.notify):
        yield
