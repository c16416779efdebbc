"""The watcher: fires due ladder steps and rule timers. Any number can run (SKIP LOCKED).

Each tick claims a batch of due rows with `FOR UPDATE SKIP LOCKED` and handles it in one
transaction: a second watcher skips the rows this one holds, and a watcher killed mid-batch
leaves nothing behind (its transaction rolls back and the rows are due again for the next).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from alert_service import due as alert_due
from alert_service import intake
from anxin import metrics
from anxin.clock import Clock
from anxin.db import Idle, SessionMaker, first_of, listening, transaction
from anxin.logging import get_logger

log = get_logger("alert_service.watcher")
BATCH_SIZE = 100
# Timers due within this of each other are handled in one pass (one transaction), rather
# than waking up for each: a little lateness for much less work under load.
COALESCE_S = 0.05
# Device-trouble alerts (P3) are started this many a transaction, in a lane of their own beside
# the P1/P2 one (`run_watcher`): a township's power cut raises hundreds at once.
NON_URGENT_BATCH = 5
# ... and at most one such batch every this long while more are due: a township's power cut
# (dozens of `power_lost` alerts at once) is started over a second or so, each batch with its
# guardian SMS, rather than taking every core of a small server at once. P1/P2 alerts wait
# for none of it: a NOTIFY wakes the watcher for them at once.
NON_URGENT_PAUSE_S = 0.2


async def tick(
    sessions: SessionMaker, clock: Clock, timezone: str, *, batch_size: int = BATCH_SIZE
) -> int:
    """One pass of both lanes in turn (what `run_watcher` runs side by side): every due timer at
    the clock's `now`, P3 alerts a batch at most. Returns how many it handled."""
    urgent, _ = await urgent_pass(sessions, clock, timezone, batch_size=batch_size)
    rest, _, _ = await non_urgent_pass(sessions, clock, min(batch_size, NON_URGENT_BATCH))
    return urgent + rest


async def urgent_pass(
    sessions: SessionMaker, clock: Clock, timezone: str, *, batch_size: int = BATCH_SIZE
) -> tuple[int, datetime | None]:
    """Due rule timers and P1/P2 alerts, in one transaction; and when the next of them is due."""
    try:
        with metrics.timed_commit("alerts"):
            async with transaction(sessions) as session:
                now = clock.now()
                # A rule timer raises a P2: fired first, so its response starts in this pass.
                fired = await alert_due.run_due_rule_timers(session, now, timezone, batch_size)
                urgent = await alert_due.run_due_alerts(session, now, batch_size, urgent=True)
                next_due = await alert_due.next_due_at(session, urgent=True)
        return fired + urgent, next_due
    except Exception as exc:
        # One bad row must not hold up every other alert: redo the batch row by row, each in
        # a savepoint, and put the failing ones off for a while.
        log.warning("watcher_batch_failed", error=repr(exc), lane="urgent")
        async with transaction(sessions) as session:
            now = clock.now()
            fired = await alert_due.run_due_rule_timers(
                session, now, timezone, batch_size, isolate=True
            )
            advanced = await alert_due.run_due_alerts(
                session, now, batch_size, isolate=True, urgent=True
            )
        return fired + advanced, None


async def non_urgent_pass(
    sessions: SessionMaker, clock: Clock, limit: int = NON_URGENT_BATCH
) -> tuple[int, datetime | None, bool]:
    """Up to `limit` due P3 alerts in one transaction; when the next is due, and whether the
    batch was full (more may be due now)."""
    try:
        async with transaction(sessions) as session:
            now = clock.now()
            rest = await alert_due.run_due_alerts(session, now, limit, urgent=False)
            next_due = await alert_due.next_due_at(session, urgent=False)
        return rest, next_due, rest >= limit
    except Exception as exc:
        log.warning("watcher_batch_failed", error=repr(exc), lane="non_urgent")
        async with transaction(sessions) as session:
            rest = await alert_due.run_due_alerts(
                session, clock.now(), limit, isolate=True, urgent=False
            )
        return rest, None, rest >= limit


def wait_before_next_tick(
    next_due: datetime | None, now: datetime, *, poll_seconds: float
) -> float:
    """Sleep until the next known timer, but never longer than the poll: other processes (the
    gateway, SMS replies) set timers too, and a poll bounds how late the watcher sees them.
    Timers due within COALESCE_S of each other are taken in one pass."""
    if next_due is None:
        return poll_seconds
    return min(poll_seconds, max(COALESCE_S, (next_due - now).total_seconds()))


async def run_watcher(
    sessions: SessionMaker,
    clock: Clock,
    timezone: str,
    *,
    poll_seconds: float,
    stop: asyncio.Event,
    batch_size: int = BATCH_SIZE,
    listen: bool = True,
    idle: asyncio.Event | None = None,
) -> None:
    """Tick until `stop` is set: at the next known timer, at the poll, and — with `listen` — as
    soon as a gateway commits a new alert (it NOTIFYs `intake.ALERTS_CHANNEL`), whose ranking,
    guardian SMS and step 0 this watcher then does. The poll stays as the safety net (a lost
    listening connection, a pooler that cannot LISTEN).

    Two lanes run side by side, each with its own transaction: P1/P2 alerts and rule timers,
    and P3 alerts. An SOS that arrives while a batch of a township's welfare checks is being
    started is started at once, not after that batch's commit. `idle` is set while both lanes
    wait for work."""
    wake_urgent, wake_rest = asyncio.Event(), asyncio.Event()
    waiting = Idle(2, idle)

    def woken() -> None:
        wake_urgent.set()
        wake_rest.set()

    async with contextlib.AsyncExitStack() as stack:
        if listen:
            await stack.enter_async_context(listening(sessions, intake.ALERTS_CHANNEL, woken))
        await asyncio.gather(
            _urgent_lane(
                sessions, clock, timezone, poll_seconds, stop, wake_urgent, batch_size, waiting
            ),
            _non_urgent_lane(sessions, clock, poll_seconds, stop, wake_rest, waiting),
        )


async def _urgent_lane(
    sessions: SessionMaker,
    clock: Clock,
    timezone: str,
    poll_seconds: float,
    stop: asyncio.Event,
    wakeup: asyncio.Event,
    batch_size: int,
    waiting: Idle,
) -> None:
    while not stop.is_set():
        # Cleared before the pass: a NOTIFY that arrives during it triggers another.
        wakeup.clear()
        next_due: datetime | None = None
        try:
            handled, next_due = await urgent_pass(sessions, clock, timezone, batch_size=batch_size)
        except Exception as exc:  # the database may be restarting: back off, never die
            log.warning("watcher_error", error=repr(exc), lane="urgent")
            handled = 0
            await asyncio.sleep(1)
        if handled >= batch_size:
            continue  # a full batch: more are due now
        wait = wait_before_next_tick(next_due, clock.now(), poll_seconds=poll_seconds)
        async with waiting.waiting_for_work():
            await first_of(stop, wakeup, timeout=wait)


async def _non_urgent_lane(
    sessions: SessionMaker,
    clock: Clock,
    poll_seconds: float,
    stop: asyncio.Event,
    wakeup: asyncio.Event,
    waiting: Idle,
) -> None:
    while not stop.is_set():
        wakeup.clear()
        next_due: datetime | None = None
        try:
            _, next_due, full = await non_urgent_pass(sessions, clock)
        except Exception as exc:
            log.warning("watcher_error", error=repr(exc), lane="non_urgent")
            full = False
            await asyncio.sleep(1)
        if full:
            # More are due: the next batch after a pause, so that a township's trouble is
            # started over a second or so instead of taking every core at once.
            await first_of(stop, timeout=NON_URGENT_PAUSE_S)
            continue
        wait = wait_before_next_tick(next_due, clock.now(), poll_seconds=poll_seconds)
        async with waiting.waiting_for_work():
            await first_of(stop, wakeup, timeout=wait)
