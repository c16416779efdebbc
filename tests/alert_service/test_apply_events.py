"""The gateway applies a batch of stored events at once (`intake.apply_events`).

Raising and joining alerts is done for the whole batch in a few statements; an elder with any
other event goes event by event. Whatever the mix, the outcome must be what applying the same
events one at a time gives: the same alerts, trigger counts, timelines and cancel marks, and
two gateways applying overlapping batches at once still make one alert per elder.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import intake
from alert_service.models import Alert, AlertTimelineEntry, RuleTimer
from anxin.db import SessionMaker, transaction
from anxin.models import Elder
from tests.builders import TZ, Home, home
from tests.support.harness import Seeded

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

# Per elder, the events of one gateway batch: presses that raise and join, a press and its
# cancel (applied one by one), smoke plus a test press, a lone press; and a power cut's: the
# hub's power_lost twice (one alert, one escalation timer), hub and button offline then the hub
# back (a welfare check raised, joined and closed), a press beside a power_lost.
PATTERNS: list[list[tuple[str, str]]] = [
    [("sos_button", "sos"), ("sos_button", "sos"), ("sos_button", "sos")],
    [("sos_button", "sos"), ("sos_button", "sos_cancel"), ("sos_button", "sos")],
    [("smoke_detector", "smoke"), ("sos_button", "test"), ("smoke_detector", "smoke")],
    [("sos_button", "sos")],
    [("hub", "power_lost"), ("hub", "power_lost")],
    [("hub", "offline"), ("sos_button", "offline"), ("hub", "online")],
    [("sos_button", "sos"), ("hub", "power_lost")],
]


async def homes(
    sessions: SessionMaker, first: int, n: int, *, living_alone: bool | None = None
) -> list[Home]:
    return [await home(sessions, index=first + i, living_alone=living_alone) for i in range(n)]


async def elders_of(session: AsyncSession, where: list[Home]) -> dict[int, Elder]:
    found = {h.elder_id: await session.get(Elder, h.elder_id) for h in where}
    return {k: v for k, v in found.items() if v is not None}


def batch_of(where: list[Home]) -> list[tuple[Home, str, str]]:
    return [
        (h, kind, event)
        for h, pattern in zip(where, PATTERNS, strict=True)
        for kind, event in pattern
    ]


def stored(session_elders: dict[int, Elder], h: Home, kind: str, event: str) -> intake.StoredEvent:
    device = h.devices.get(kind) or h.devices["sos_button"]
    return intake.StoredEvent(device, session_elders[h.elder_id], event, {})


async def outcome(sessions: SessionMaker, where: list[Home]) -> list[object]:
    """Per elder, in order: its alerts (kind, priority, trigger count, cancel mark, status) and
    their timelines' kinds of action (a batch's presses of one alert are one "triggered_again"
    entry, one by one they are one each), then its rule timers."""
    out: list[object] = []
    async with sessions() as session:
        for h in where:
            alerts = (
                await session.execute(
                    select(Alert).where(col(Alert.elder_id) == h.elder_id).order_by(col(Alert.id))
                )
            ).scalars()
            for a in alerts:
                actions = (
                    await session.execute(
                        select(col(AlertTimelineEntry.action)).where(
                            col(AlertTimelineEntry.alert_id) == a.id
                        )
                    )
                ).scalars()
                out.append(
                    (
                        a.kind,
                        a.priority,
                        a.trigger_count,
                        a.cancel_requested,
                        a.status,
                        a.ranked_at,
                        sorted(set(actions)),
                    )
                )
            timers = (
                await session.execute(
                    select(RuleTimer).where(col(RuleTimer.elder_id) == h.elder_id)
                )
            ).scalars()
            out.append(sorted((t.kind, t.due_at, t.cancelled) for t in timers))
            out.append("|")
    return out


async def test_a_batch_gives_what_one_event_at_a_time_gives(region: Seeded) -> None:
    sessions = region.sessions
    # Elders living alone: a power cut starts an escalation timer for them, and a silent hub or
    # button raises a welfare check.
    n = len(PATTERNS)
    batched = await homes(sessions, 0, n, living_alone=True)
    one_by_one = await homes(sessions, n, n, living_alone=True)

    async with transaction(sessions) as session:
        elders = await elders_of(session, batched)
        events = [stored(elders, *e) for e in batch_of(batched)]
        ids = await intake.apply_events(session, events, T0, TZ)
    single: list[int | None] = []
    for h, kind, event in batch_of(one_by_one):
        async with transaction(sessions) as session:
            elder = await session.get(Elder, h.elder_id)
            assert elder is not None
            single.append(
                await intake.apply_event(
                    session,
                    device=h.devices.get(kind) or h.devices["sos_button"],
                    elder=elder,
                    event_type=event,
                    data={},
                    now=T0,
                    timezone=TZ,
                )
            )

    assert await outcome(sessions, batched) == await outcome(sessions, one_by_one)
    # The same alert ids where one by one gives the same alert: presses join their alert.
    assert [i is None for i in ids] == [i is None for i in single]
    assert len(set(ids[0:3])) == 1 and ids[0] is not None
    async with sessions() as session:
        sos = (
            (await session.execute(select(Alert).where(col(Alert.elder_id) == batched[0].elder_id)))
            .scalars()
            .one()
        )
    assert sos.trigger_count == 3  # three presses, one alert
    async with sessions() as session:
        again = (
            (
                await session.execute(
                    select(AlertTimelineEntry).where(
                        col(AlertTimelineEntry.alert_id) == sos.id,
                        col(AlertTimelineEntry.action) == "triggered_again",
                    )
                )
            )
            .scalars()
            .all()
        )
    # The two presses after the first are one timeline entry with the count.
    assert [(e.detail["trigger_count"], e.detail["presses"]) for e in again] == [(3, 2)]
    assert (sos.ranked_at, sos.next_check_at) == (None, T0)  # the watchers start its response

    # The power cut's: two reports, one power_lost alert and one escalation timer; a welfare
    # check raised by the silent hub, joined by the button, closed when the hub came back.
    async with sessions() as session:
        by_elder = {
            h.elder_id: [
                (a.kind, a.trigger_count, a.status, a.outcome)
                for a in (
                    await session.execute(
                        select(Alert)
                        .where(col(Alert.elder_id) == h.elder_id)
                        .order_by(col(Alert.id))
                    )
                ).scalars()
            ]
            for h in batched[4:6]
        }
        timers = (
            await session.execute(
                select(col(RuleTimer.kind)).where(col(RuleTimer.elder_id) == batched[4].elder_id)
            )
        ).scalars()
        assert list(timers) == ["power_lost"]
    assert by_elder[batched[4].elder_id] == [("power_lost", 2, "raised", None)]
    assert by_elder[batched[5].elder_id] == [("offline", 2, "resolved", "device_recovered")]


async def test_two_gateways_applying_overlapping_batches_make_one_alert_per_elder(
    region: Seeded,
) -> None:
    sessions = region.sessions
    where = await homes(sessions, 20, 30)

    async def gateway(presses_per_elder: int) -> list[int | None]:
        async with transaction(sessions) as session:
            elders = await elders_of(session, where)
            events = [
                stored(elders, h, "sos_button", "sos")
                for h in where
                for _ in range(presses_per_elder)
            ]
            return await intake.apply_events(session, events, T0, TZ)

    first, second = await asyncio.gather(gateway(2), gateway(3))

    async with sessions() as session:
        alerts = (
            (
                await session.execute(
                    select(Alert).where(col(Alert.elder_id).in_([h.elder_id for h in where]))
                )
            )
            .scalars()
            .all()
        )
    assert len(alerts) == len(where)
    assert {a.trigger_count for a in alerts} == {5}
    by_elder = {a.elder_id: a.id for a in alerts}
    expected = [by_elder[h.elder_id] for h in where for _ in range(2)]
    assert first == expected
    assert second == [by_elder[h.elder_id] for h in where for _ in range(3)]
