"""The dispatcher test bench (the `bench` fixture of tests/dispatcher/conftest.py) of real parts: Postgres with the demo county, the web app's signed
Twilio webhooks, the project's Twilio-compatible endpoint and the real `twilio` client.

Nothing runs by itself: a test raises an alert, runs the outbox when it wants SMS to go out,
and moves a fake clock, so every step is visible and nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col

from alert_service import intake, rules
from alert_service import ladder as alert_ladder
from alert_service.models import Alert, AlertTimelineEntry, DispatchAttempt
from alert_service.responses import LadderResponses
from anxin.clock import FakeClock
from anxin.db import SessionMaker, transaction
from anxin.models import Elder, Responder
from anxin.settings import Settings
from dispatcher.models import SmsMessage
from dispatcher.twilio_provider import TwilioSmsProvider
from dispatcher.twilio_sandbox import SmsSandbox
from dispatcher.worker import run_outbox, send_due
from tests.support.harness import Seeded

PLATFORM_NUMBER = "+8610690000000"
# The elder most dispatch tests raise an alert for.
ELDER = "E0001"


@dataclass
class DispatchBench:
    sessions: SessionMaker
    seeded: Seeded
    clock: FakeClock
    sandbox: SmsSandbox
    provider: TwilioSmsProvider
    web_url: str
    settings: Settings
    http: httpx.AsyncClient

    @property
    def status_callback(self) -> str:
        return self.web_url + "/twilio/status"

    async def send_outbox(self, **kwargs: Any) -> int:
        """Run outbox passes until nothing is due at the clock's `now`; how many SMS handled."""
        handled = 0
        while n := await send_due(
            self.sessions,
            self.provider,
            self.clock,
            responses=LadderResponses(),
            status_callback=self.status_callback,
            **kwargs,
        ):
            handled += n
        return handled

    @contextlib.asynccontextmanager
    async def running_outbox(
        self, *, status_callback: str | None, idle: asyncio.Event | None = None
    ) -> AsyncIterator[None]:
        """The outbox worker running (its own provider, as a dispatcher process has), polling
        only hourly: what it sends while this block runs, a NOTIFY woke it for. `idle` is set
        while all its passes wait for work."""
        provider = TwilioSmsProvider(
            account_sid=self.sandbox.account_sid,
            auth_token=self.sandbox.auth_token,
            from_number=PLATFORM_NUMBER,
            base_url=self.settings.twilio_base_url,
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_outbox(
                self.sessions,
                provider,
                self.clock,
                responses=LadderResponses(),
                status_callback=status_callback,
                poll_seconds=3600,
                max_attempts=8,
                stop=stop,
                idle=idle,
            )
        )
        try:
            yield
        finally:
            stop.set()
            await worker

    async def raise_alert(self, elder_code: str, kind: str = "sos") -> Alert:
        """What the gateway does with an SOS: the alert, its ranking and step 0, in one commit."""
        async with transaction(self.sessions) as session:
            elder = await self.elder(elder_code, session)
            return await intake.raise_or_join(
                session,
                elder,
                rules.RaiseAlert(kind, rules.IMMEDIATE_PRIORITY[kind]),
                None,
                self.clock.now(),
                "test",
            )

    async def elder(self, code: str, session: Any = None) -> Elder:
        if session is None:
            async with self.sessions() as own:
                return await self.elder(code, own)
        elder: Elder = (
            await session.execute(select(Elder).where(col(Elder.code) == code))
        ).scalar_one()
        return elder

    async def alert(self, alert_id: int | None) -> Alert:
        async with self.sessions() as session:
            alert = await session.get(Alert, alert_id)
        assert alert is not None
        return alert

    async def responder(self, responder_id: int) -> Responder:
        async with self.sessions() as session:
            responder = await session.get(Responder, responder_id)
        assert responder is not None
        return responder

    async def attempts(self, alert_id: int | None) -> list[DispatchAttempt]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(DispatchAttempt)
                .where(col(DispatchAttempt.alert_id) == alert_id)
                .order_by(col(DispatchAttempt.step), col(DispatchAttempt.id))
            )
            return list(rows.scalars())

    async def asked(self, alert_id: int | None) -> list[Responder]:
        """Everyone asked for this alert, in the order they were asked."""
        return [await self.responder(a.responder_id) for a in await self.attempts(alert_id)]

    async def sms_to(self, phone: str, purpose: str | None = None) -> list[SmsMessage]:
        async with self.sessions() as session:
            query = select(SmsMessage).where(
                col(SmsMessage.direction) == "out", col(SmsMessage.to_phone) == phone
            )
            if purpose is not None:
                query = query.where(col(SmsMessage.purpose) == purpose)
            rows = await session.execute(query.order_by(col(SmsMessage.id)))
            return list(rows.scalars())

    async def timeline(self, alert_id: int | None) -> list[AlertTimelineEntry]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(AlertTimelineEntry)
                .where(col(AlertTimelineEntry.alert_id) == alert_id)
                .order_by(col(AlertTimelineEntry.id))
            )
            return list(rows.scalars())

    async def reply(self, phone: str, body: str) -> int:
        """The aide's phone texts the platform: a signed POST to /twilio/inbound; HTTP status."""
        return await self.sandbox.reply(phone, body)


async def operator_resolves(bench: DispatchBench, alert_id: int | None) -> None:
    assert alert_id is not None
    async with transaction(bench.sessions) as session:
        alert = await alert_ladder.lock_alert(session, alert_id)
        assert alert is not None
        await alert_ladder.resolve(
            session, alert, bench.clock.now(), actor="operator:t", outcome="handled"
        )
