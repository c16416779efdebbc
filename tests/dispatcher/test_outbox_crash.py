"""A dispatcher that dies in the middle of a pass texts nobody twice and nobody zero times.

The fault suite (issue 8) SIGKILLed both dispatchers mid-burst and 40 aides got their call-out
twice: the pass had handed the SMS to the provider and died before committing that it had.
Here the same two deaths, on a fake clock: after the POSTs (the provider has the SMS, the
database does not know), and before them (nobody has it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alert_service.responses import LadderResponses
from anxin.clock import FakeClock
from dispatcher import outbox as dispatch_outbox
from dispatcher.models import SmsInFlight, SmsMessage, SmsStatus
from dispatcher.twilio_provider import SmsSendError, TwilioSmsProvider
from dispatcher.worker import send_due
from tests.support.dispatch import ELDER, DispatchBench
from tests.support.harness import eventually


class Killed(Exception):
    """The process dying: nothing after this point of the pass happens."""


class DiesAfterPosts(FakeClock):
    """The pass reads the clock again once its POSTs are answered: it dies right there."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock.now())
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        if self.reads == 2:
            raise Killed
        return super().now()


async def queued_outbox(bench: DispatchBench) -> list[tuple[str, str]]:
    """(phone, body) of every outgoing SMS, whatever its state."""
    async with bench.sessions() as session:
        rows = await session.execute(select(SmsMessage).where(col(SmsMessage.direction) == "out"))
        return [(s.to_phone, s.body) for s in rows.scalars()]


def received(bench: DispatchBench) -> Counter[tuple[str, str]]:
    return Counter((m.to, m.body) for m in bench.sandbox.messages)


async def in_flight(bench: DispatchBench) -> int:
    async with bench.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(SmsInFlight)) or 0)


# Without delivery receipts (a provider whose callbacks are lost), only asking it can tell.
@pytest.mark.parametrize("receipts", [True, False], ids=["with receipts", "without receipts"])
async def test_a_pass_that_dies_after_its_posts_sends_nothing_again(
    bench: DispatchBench, receipts: bool
) -> None:
    await bench.raise_alert(ELDER)
    outbox = await queued_outbox(bench)
    assert outbox  # the call-out to the nearest aide, at least

    with contextlib.suppress(Killed):
        await send_due(
            bench.sessions,
            bench.provider,
            DiesAfterPosts(bench.clock),
            responses=LadderResponses(),
            status_callback=bench.status_callback if receipts else None,
        )
    # The phones have them; the database still says queued, with the in-flight marks.
    assert received(bench) == Counter(outbox)
    assert await in_flight(bench) == len(outbox)
    posts = bench.sandbox.requests_received

    # Straight after, the next pass does not know yet whether they went out: it waits.
    await bench.send_outbox()
    assert bench.sandbox.requests_received == posts
    # Once the settle time has passed it asks the provider, finds them and records them sent
    # (unless the provider's delivery receipts, which name the row, have done so already).
    bench.clock.advance(dispatch_outbox.IN_FLIGHT_SETTLE)
    await bench.send_outbox()

    assert bench.sandbox.requests_received == posts
    assert received(bench) == Counter(outbox)  # each exactly once
    sms = [s for phone, _ in outbox for s in await bench.sms_to(phone)]
    assert {s.status for s in sms} <= {SmsStatus.sent, SmsStatus.delivered}
    sids = {m.sid for m in bench.sandbox.messages}
    assert {s.provider_sid for s in sms} == sids
    assert await in_flight(bench) == 0


class NeverAnswers:
    """A provider whose POST never leaves: the pass dies while waiting on it."""

    name = "twilio"

    def __init__(self) -> None:
        self.waiting = 0

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str:
        self.waiting += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        raise AssertionError("not asked: this provider is gone")

    async def aclose(self) -> None:
        return None


async def test_a_pass_that_dies_before_its_posts_sends_each_sms_once(bench: DispatchBench) -> None:
    await bench.raise_alert(ELDER)
    outbox = await queued_outbox(bench)
    stuck = NeverAnswers()
    dying = asyncio.create_task(
        send_due(
            bench.sessions,
            stuck,
            bench.clock,
            responses=LadderResponses(),
            status_callback=bench.status_callback,
        )
    )

    async def all_waiting() -> bool:
        return stuck.waiting == len(outbox)

    await eventually(all_waiting, what="the pass waits on its POSTs")
    dying.cancel()  # the process dies: its transaction is rolled back, the marks stay
    await asyncio.gather(dying, return_exceptions=True)
    assert await in_flight(bench) == len(outbox)
    assert received(bench) == Counter()

    bench.clock.advance(dispatch_outbox.IN_FLIGHT_SETTLE)
    await bench.send_outbox()

    # The provider had none of them: each is sent now, once.
    assert received(bench) == Counter(outbox)
    assert await in_flight(bench) == 0


class LosesTheFirstConnection:
    """The real provider, but the first POST's connection drops before any answer: whether
    the provider got it is unknown. Here it did not."""

    name = "twilio"

    def __init__(self, provider: TwilioSmsProvider) -> None:
        self.provider = provider
        self.dropped = 0

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str:
        if not self.dropped:
            self.dropped += 1
            raise SmsSendError(
                "连接 Twilio 失败 / cannot reach Twilio (ClientOSError)", retryable=True
            )
        return await self.provider.send(to=to, body=body, status_callback=status_callback)

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        return await self.provider.find_sent(to=to, body=body, since=since)

    async def aclose(self) -> None:
        return None


async def test_a_lost_connection_is_retried_at_the_usual_backoff_and_sends_once(
    bench: DispatchBench,
) -> None:
    """The pass that lost the connection lives on, so its POST is over: the next attempt asks
    the provider after the usual 1 s backoff, not after the crash settle time."""
    await bench.raise_alert(ELDER)
    outbox = await queued_outbox(bench)
    flaky = LosesTheFirstConnection(bench.provider)
    await send_due(
        bench.sessions, flaky, bench.clock, responses=LadderResponses(), status_callback=None
    )
    assert flaky.dropped == 1

    bench.clock.advance(dispatch_outbox.retry_delay(1))
    while await send_due(
        bench.sessions, flaky, bench.clock, responses=LadderResponses(), status_callback=None
    ):
        pass

    assert received(bench) == Counter(outbox)
    assert await in_flight(bench) == 0
