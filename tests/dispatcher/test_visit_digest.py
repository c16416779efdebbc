"""The aides' weekly digest of visits due, through the real outbox to the Twilio-compatible
sandbox: one SMS per aide and week however often the check runs (a restart, a second alerts
role), a new one next week, none for an aide near the daily limit (the reserve kept for
call-outs), and a call-out queued after the digests goes out first (issue 18 item 4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from anxin.db import transaction
from anxin.models import Responder
from dispatcher import outbox
from dispatcher.models import SmsMessage, SmsStatus
from tests.support.dispatch import ELDER, DispatchBench
from visits import scheduled, service

TZ = "Asia/Shanghai"
MONDAY_9 = datetime(2026, 11, 30, 1, tzinfo=UTC)  # Monday 09:00 in Shanghai


async def check(bench: DispatchBench) -> str | None:
    """One check of the alerts role's loop (Monday 08:00, the defaults)."""
    return await scheduled.digest_pass(
        bench.sessions, bench.clock, timezone=TZ, weekday=1, hour=8, daily_limit=50
    )


async def owners(bench: DispatchBench) -> dict[int, Responder]:
    """The aides who own some elder's visits (in the demo county none has been visited, so
    each has elders overdue and gets a digest)."""
    async with bench.sessions() as session:
        ids = {
            r.owner_id
            for r in await service.elders_now(
                session,
                village_ids={e.village_id for e in [await bench.elder(ELDER, session)]},
                now=bench.clock.now(),
                timezone=TZ,
            )
        }
        rows = await session.execute(select(Responder).where(col(Responder.id).in_(ids)))
        return {r.id: r for r in rows.scalars() if r.id is not None}


async def test_each_aide_gets_one_digest_a_week_through_the_sandbox(bench: DispatchBench) -> None:
    bench.clock.set(MONDAY_9 - timedelta(hours=2))  # Monday 07:00: not yet
    assert await check(bench) is None
    await bench.send_outbox()
    aides = await owners(bench)
    assert aides
    aide = next(iter(aides.values()))
    assert bench.sandbox.messages_to(aide.phone) == []

    bench.clock.set(MONDAY_9)
    assert await check(bench) == "2026-W49"
    assert await check(bench) == "2026-W49"  # a restart, a second alerts role: nothing new
    await bench.send_outbox()
    [sms] = bench.sandbox.messages_to(aide.phone)
    assert sms.body.startswith("【安心】本周待探访：") and sms.body.endswith("位")
    assert len(sms.body) <= 134
    [row] = await bench.sms_to(aide.phone, service.DIGEST_PURPOSE)
    assert row.idempotency_key == f"visit-digest:{aide.id}:2026-W49"
    assert row.priority == service.DIGEST_PRIORITY and row.status != SmsStatus.failed

    bench.clock.advance(timedelta(days=3))  # Thursday: same week, still one
    await check(bench)
    await bench.send_outbox()
    assert len(bench.sandbox.messages_to(aide.phone)) == 1

    bench.clock.set(MONDAY_9 + timedelta(days=7))  # next Monday: the next week's
    assert await check(bench) == "2026-W50"
    await bench.send_outbox()
    assert len(bench.sandbox.messages_to(aide.phone)) == 2


async def test_an_aide_near_the_daily_limit_gets_the_digest_later(bench: DispatchBench) -> None:
    bench.clock.set(MONDAY_9)
    aide = next(iter((await owners(bench)).values()))
    sent_at = bench.clock.now() - timedelta(hours=1)
    async with transaction(bench.sessions) as session:
        for i in range(outbox.daily_warn_at(50)):  # 40 of 50 in the last 24 h, any template
            session.add(
                SmsMessage(
                    direction="out",
                    purpose="dispatch" if i % 2 else "help",
                    to_phone=aide.phone,
                    body="earlier",
                    status=SmsStatus.delivered,
                    provider_sid=f"SMearlier{i}",
                    attempts=1,
                    created_at=sent_at,
                    sent_at=sent_at,
                )
            )
    assert await check(bench) is None  # deferred: the loop tries again
    await bench.send_outbox()
    assert bench.sandbox.messages_to(aide.phone) == []
    assert await bench.sms_to(aide.phone, service.DIGEST_PURPOSE) == []

    bench.clock.advance(timedelta(hours=24))  # Tuesday: the day's SMS have aged out
    assert await check(bench) == "2026-W49"
    await bench.send_outbox()
    assert len(bench.sandbox.messages_to(aide.phone)) == 1


async def test_a_call_out_queued_after_the_digests_is_sent_first(bench: DispatchBench) -> None:
    bench.clock.set(MONDAY_9)
    assert await check(bench) == "2026-W49"
    alert = await bench.raise_alert(ELDER)
    async with transaction(bench.sessions) as session:
        first = await outbox.claim_due_sms(session, bench.clock.now(), limit=1)
    assert [(s.purpose, s.alert_id) for s in first] == [("dispatch", alert.id)]
