"""A calls worker that dies between placing a call and committing it rings nobody twice (issue
19, as tests/dispatcher/test_outbox_crash.py for SMS): the in-flight mark committed before the
POST makes the next pass ask the provider (`find_placed`, Twilio's Calls list) first."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from alert_service.responses import LadderResponses
from anxin.clock import FakeClock
from dispatcher import calls
from dispatcher.models import CallInFlight, CallStatus
from dispatcher.twilio_sandbox import Callee
from tests.builders import tick_at
from tests.support.dispatch import ELDER, DispatchBench
from tests.support.voice import calls_of, place_calls, voice_on, voice_provider


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


async def in_flight(bench: DispatchBench) -> int:
    async with bench.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(CallInFlight)) or 0)


# Without callbacks (lost webhooks), only asking the provider can tell.
@pytest.mark.parametrize("callbacks", [True, False], ids=["with callbacks", "without callbacks"])
async def test_a_pass_that_dies_after_placing_a_call_never_places_it_again(
    bench: DispatchBench, callbacks: bool
) -> None:
    await voice_on(bench, voice_after_s=60)
    provider = voice_provider(bench)
    callback_base = bench.web_url if callbacks else "http://127.0.0.1:9"
    try:
        alert = await bench.raise_alert(ELDER)
        (aide,) = await bench.asked(alert.id)
        await bench.send_outbox()
        bench.sandbox.set_callee(aide.phone, Callee("ring"))
        bench.sandbox.ring_seconds = 3600  # it rings on while the worker dies and comes back
        await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))

        with contextlib.suppress(Killed):
            await calls.place_due(
                bench.sessions,
                provider,
                DiesAfterPosts(bench.clock),
                responses=LadderResponses(),
                callback_base=callback_base,
            )
        assert bench.sandbox.call_requests_received == 1
        (row,) = await calls_of(bench, alert.id)
        if not callbacks:
            assert row.status == CallStatus.queued and await in_flight(bench) == 1

        # The restarted worker: too early to know, it waits; then it asks and does not call.
        await place_calls(bench, provider, callback_base=callback_base)
        bench.clock.advance(calls.IN_FLIGHT_SETTLE.total_seconds())
        await place_calls(bench, provider, callback_base=callback_base)
        assert bench.sandbox.call_requests_received == 1
        (row,) = await calls_of(bench, alert.id)
        (placed,) = bench.sandbox.calls
        assert row.provider_sid == placed.sid and row.status != CallStatus.queued
        assert await in_flight(bench) == 0
    finally:
        await provider.aclose()


async def test_a_pass_that_dies_before_the_provider_answers_places_the_call_once(
    bench: DispatchBench,
) -> None:
    """Provider down (HTTP 500) twice, then up: one call placed, never zero, never two."""
    await voice_on(bench, voice_after_s=60)
    provider = voice_provider(bench)
    try:
        alert = await bench.raise_alert(ELDER)
        (aide,) = await bench.asked(alert.id)
        await bench.send_outbox()
        bench.sandbox.set_callee(aide.phone, Callee("pick_up", key="1"))
        await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
        bench.sandbox.fail_next(2)
        for _ in range(4):
            await place_calls(bench, provider)
            bench.clock.advance(5)
        assert len(bench.sandbox.calls) == 1
        (row,) = await calls_of(bench, alert.id)
        assert row.attempts == 3 and row.provider_sid == bench.sandbox.calls[0].sid
    finally:
        await provider.aclose()
