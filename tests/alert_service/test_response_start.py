"""The gateway's ack path makes an alert durable; the watcher starts its response.

The gateway's transaction stores the event and the alert (`ranked_at` NULL, `next_check_at`
now) and NOTIFYs the watchers; a watcher then ranks the responders, tells the guardians and
asks step 0, for a whole batch of new alerts at once. Whatever happens in between — a watcher
dying mid-batch, two watchers at once — each alert gets exactly one ranking, one guardian
notice per guardian and one first SMS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import insert, select, text
from sqlmodel import col

from alert_service import due as alert_due
from alert_service import intake, watcher
from alert_service.models import Alert, AlertTimelineEntry
from anxin.clock import FakeClock
from anxin.db import SessionMaker, transaction
from anxin.models import Elder
from dispatcher.models import SmsMessage
from tests.builders import TZ, Home, alert, home, outbox, phone_of, steps
from tests.support.harness import Seeded, eventually

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


async def gateway_sos(sessions: SessionMaker, where: Home, now: datetime) -> int:
    """What the gateway does with an SOS: apply it in its own transaction, nothing more."""
    device = where.devices["sos_button"]
    async with transaction(sessions) as session:
        elder = await session.get(Elder, where.elder_id)
        assert elder is not None
        alert_id = await intake.apply_event(
            session, device=device, elder=elder, event_type="sos", data={}, now=now, timezone=TZ
        )
    assert alert_id is not None
    return alert_id


async def sms_per_alert(sessions: SessionMaker) -> dict[int, Counter[str]]:
    async with sessions() as session:
        rows = await session.execute(select(col(SmsMessage.alert_id), col(SmsMessage.purpose)))
        counts: dict[int, Counter[str]] = {}
        for alert_id, purpose in rows:
            assert alert_id is not None
            counts.setdefault(alert_id, Counter())[purpose] += 1
        return counts


async def ranked_entries(sessions: SessionMaker) -> Counter[int]:
    async with sessions() as session:
        rows = await session.execute(
            select(col(AlertTimelineEntry.alert_id)).where(
                col(AlertTimelineEntry.action) == "ranked"
            )
        )
        return Counter(rows.scalars())


async def due_now(sessions: SessionMaker, now: datetime) -> int:
    async with sessions() as session:
        rows = await session.execute(select(col(Alert.id)).where(col(Alert.next_check_at) <= now))
        return len(rows.all())


async def test_the_ack_path_stores_the_alert_and_the_watcher_starts_its_response(
    region: Seeded,
) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    where = await home(sessions)
    alert_id = await gateway_sos(sessions, where, T0)

    # Acked: the alert is durable and due now, and nobody has been texted yet.
    stored = await alert(sessions, alert_id)
    assert (stored.status, stored.ranking, stored.ranked_at) == ("raised", [], None)
    assert stored.next_check_at == T0
    assert await outbox(sessions, alert_id) == []

    assert await watcher.tick(sessions, clock, TZ) == 1
    started = await alert(sessions, alert_id)
    assert started.ranked_at == T0 and started.status == "dispatching" and started.ranking
    nearest = started.ranking[0]["responder_id"]
    dispatch = await outbox(sessions, alert_id, "dispatch")
    assert [(s.to_phone, s.created_at) for s in dispatch] == [
        (await phone_of(sessions, nearest), T0)
    ]
    guardians = await outbox(sessions, alert_id, "guardian")
    assert sorted(s.to_phone for s in guardians) == sorted(where.elder.guardian_phones)
    assert [action for _, _, action in await steps(sessions, alert_id)] == [
        "raised",
        "ranked",
        "asked",
    ]

    # Looked at again at the same instant: nothing more is sent.
    clock.set(T0)
    await watcher.tick(sessions, clock, TZ)
    assert len(await outbox(sessions, alert_id)) == len(dispatch) + len(guardians)


async def test_a_watcher_that_dies_mid_batch_leaves_the_alerts_to_the_next(
    region: Seeded,
) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    ids = [await gateway_sos(sessions, await home(sessions, index=i), T0) for i in range(5)]

    class Killed(Exception):
        pass

    # The first watcher does the whole batch's work, then dies before its commit.
    with contextlib.suppress(Killed):
        async with transaction(sessions) as session:
            assert await alert_due.run_due_alerts(session, T0) == 5
            raise Killed
    assert await sms_per_alert(sessions) == {}
    assert await due_now(sessions, T0) == 5

    # The next watcher finds them all still due and starts each once.
    assert await watcher.tick(sessions, clock, TZ) == 5
    sent = await sms_per_alert(sessions)
    assert sorted(sent) == sorted(ids)
    assert all(c["dispatch"] == 1 for c in sent.values())
    assert await ranked_entries(sessions) == Counter({i: 1 for i in ids})


async def test_two_watchers_at_once_start_every_new_alert_exactly_once(region: Seeded) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    homes = [await home(sessions, index=i) for i in range(40)]
    ids = [await gateway_sos(sessions, where, T0) for where in homes]

    async def one_watcher() -> None:
        # Small batches, so the two keep meeting over the same rows (SKIP LOCKED).
        while await watcher.tick(sessions, clock, TZ, batch_size=7):
            pass

    await asyncio.gather(one_watcher(), one_watcher())

    assert await due_now(sessions, T0) == 0
    sent = await sms_per_alert(sessions)
    assert sorted(sent) == sorted(ids)
    guardians = {
        h.elder_id: len(h.elder.guardian_phones or []) if h.elder.consent else 0 for h in homes
    }
    async with sessions() as session:
        rows = await session.execute(select(col(Alert.id), col(Alert.elder_id)))
        elder_of = {alert_id: elder_id for alert_id, elder_id in rows}
    for alert_id, counts in sent.items():
        assert counts["dispatch"] == 1, alert_id
        assert counts["guardian"] == guardians[elder_of[alert_id]], alert_id
    assert await ranked_entries(sessions) == Counter({i: 1 for i in ids})


async def test_the_watcher_wakes_on_the_gateways_notify_not_its_poll(region: Seeded) -> None:
    """The watcher's poll is an hour here: only the NOTIFY of the raising transaction can
    wake it in time for this test to see step 0."""
    sessions, clock = region.sessions, FakeClock(T0)
    stop, idle = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(
        watcher.run_watcher(sessions, clock, TZ, poll_seconds=3600, stop=stop, idle=idle)
    )
    try:
        # Its first tick finds nothing due; then it sleeps on the poll, listening.
        await eventually(lambda: asyncio.sleep(0, idle.is_set()), what="the watcher waiting")
        alert_id = await gateway_sos(sessions, await home(sessions), T0)

        async def asked() -> list[SmsMessage] | None:
            return await outbox(sessions, alert_id, "dispatch") or None

        sms = await eventually(asked, what="step 0 after the NOTIFY")
        assert len(sms) == 1
    finally:
        stop.set()
        await running


async def test_an_sos_is_started_before_a_township_of_welfare_checks_due_ahead_of_it(
    region: Seeded,
) -> None:
    """A power cut: the silent SOS buttons of elders living alone raise welfare checks (P3, to
    look in within 2 hours), all due for their response to start. An SOS raised a second later
    is started in the watcher's next pass however many of them wait, and they are started a
    small batch a transaction, so none of those transactions can hold the SOS up for long."""
    sessions = region.sessions
    silent = [
        await home(sessions, living_alone=True, index=i)
        for i in range(watcher.NON_URGENT_BATCH + 3)
    ]
    async with transaction(sessions) as session:
        elders = {h.elder_id: await session.get(Elder, h.elder_id) for h in silent}
        await intake.apply_events(
            session,
            [
                intake.StoredEvent(h.devices["sos_button"], elder, "offline", {})
                for h in silent
                if (elder := elders[h.elder_id]) is not None
            ],
            T0,
            TZ,
        )
    pressing = await home(sessions, living_alone=False, index=0)
    sos = await gateway_sos(sessions, pressing, T0.replace(second=1))

    clock = FakeClock(T0.replace(second=1))
    # A batch of 5: by due time alone, the five oldest welfare checks would fill it.
    assert await watcher.tick(sessions, clock, TZ, batch_size=5) == 1 + 5
    assert [s.purpose for s in await outbox(sessions, sos, "dispatch")] == ["dispatch"]
    started = await ranked_entries(sessions)
    assert started[sos] == 1 and len(started) == 1 + 5

    # The rest, a batch a transaction: each pass starts at most NON_URGENT_BATCH of them.
    while await watcher.tick(sessions, clock, TZ):
        pass
    async with sessions() as session:
        waiting = (
            await session.execute(select(Alert).where(col(Alert.ranked_at).is_(None)))
        ).scalars()
        assert [a.code for a in waiting if a.respond_by is not None] == []
    started = await ranked_entries(sessions)
    assert len(started) == 1 + len(silent) and set(started.values()) == {1}


async def test_an_sos_is_started_while_a_welfare_check_start_is_held_up(region: Seeded) -> None:
    """The watcher's two lanes: a batch of P3 starts that is slow to commit holds no SOS up.
    Here the welfare check's guardian SMS waits on another transaction that has written the
    same idempotency key and not yet committed; meanwhile an SOS gets its call-out."""
    sessions = region.sessions
    silent = await home(sessions, living_alone=True, index=0)
    async with transaction(sessions) as session:
        elder = await session.get(Elder, silent.elder_id)
        assert elder is not None and elder.consent and elder.guardian_phones
        guardian = elder.guardian_phones[0]
        await intake.apply_events(
            session,
            [intake.StoredEvent(silent.devices["sos_button"], elder, "offline", {})],
            T0,
            TZ,
        )
    async with sessions() as session:
        welfare = (
            await session.execute(select(Alert).where(col(Alert.elder_id) == silent.elder_id))
        ).scalar_one()
    welfare_id = welfare.id
    assert welfare_id is not None and welfare.priority == 3 and welfare.ranked_at is None

    stop = asyncio.Event()
    async with sessions() as blocker:
        await blocker.execute(
            insert(SmsMessage).values(
                direction="out",
                idempotency_key=f"alert:{welfare_id}:guardian:{guardian}",
                purpose="guardian",
                to_phone=guardian,
                from_phone="",
                body="held",
                status="queued",
                attempts=0,
                created_at=T0,
                next_attempt_at=T0,
            )
        )
        clock = FakeClock(T0.replace(second=1))
        running = asyncio.create_task(
            watcher.run_watcher(sessions, clock, TZ, poll_seconds=3600, stop=stop)
        )
        try:

            async def welfare_start_waits() -> bool:
                async with sessions() as session:
                    waiting = await session.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                return bool(waiting)

            await eventually(welfare_start_waits, what="the welfare check's start to wait")
            sos = await gateway_sos(sessions, await home(sessions, index=1), T0.replace(second=1))

            async def asked() -> list[SmsMessage] | None:
                return await outbox(sessions, sos, "dispatch") or None

            await eventually(asked, what="the SOS's call-out while the welfare check waits")
            assert (await alert(sessions, welfare_id)).ranked_at is None  # still held up
            await blocker.rollback()

            async def welfare_started() -> bool:
                return (await alert(sessions, welfare_id)).ranked_at is not None

            await eventually(welfare_started, what="the welfare check once let go")
        finally:
            stop.set()
            await blocker.rollback()
            await running
