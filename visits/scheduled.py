"""The alerts role's weekly digest loop (issue 18 item 4): from the set local weekday and hour
(`ANXIN_VISIT_DIGEST_WEEKDAY`, `ANXIN_VISIT_DIGEST_HOUR`: Monday 08:00) each aide's digest of
the visits due this week is written into the SMS outbox, once per aide and ISO week.

Once per week and aide however many alerts roles run and however often they restart: the
outbox's idempotency key (`visit-digest:<responder>:<week>`) writes one SMS. A role checks
every `poll_seconds`; once a week's run has written or found every aide's digest it rests
until the next week (after a restart it runs once more, writing nothing new). An aide kept
back by the daily-limit reserve is tried again at the next check."""

from __future__ import annotations

import asyncio
import contextlib

from anxin.clock import Clock
from anxin.db import SessionMaker, transaction
from anxin.logging import get_logger
from visits import digest
from visits.service import queue_digests

log = get_logger("visits")

POLL_SECONDS = 600.0


async def digest_pass(
    sessions: SessionMaker,
    clock: Clock,
    *,
    timezone: str,
    weekday: int,
    hour: int,
    daily_limit: int,
) -> str | None:
    """One check: the week whose digests are all written (None: not yet due, or some aide was
    deferred and is to be tried again)."""
    now = clock.now()
    if not digest.is_due(now, timezone, weekday=weekday, hour=hour):
        return None
    async with transaction(sessions) as session:
        run = await queue_digests(session, now=now, timezone=timezone, daily_limit=daily_limit)
    return None if run.deferred else run.week


async def run_digests(
    sessions: SessionMaker,
    clock: Clock,
    *,
    timezone: str,
    weekday: int,
    hour: int,
    daily_limit: int,
    stop: asyncio.Event,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Check until `stop` is set; a failed check is logged and tried at the next poll."""
    done: str | None = None
    while not stop.is_set():
        if done != digest.iso_week(clock.now(), timezone):
            try:
                done = await digest_pass(
                    sessions,
                    clock,
                    timezone=timezone,
                    weekday=weekday,
                    hour=hour,
                    daily_limit=daily_limit,
                )
            except Exception:  # the next poll tries again; the role goes on
                log.exception("visit_digest_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_seconds)
