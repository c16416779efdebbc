"""Voice call-outs on the dispatcher bench (issue 19): voice switched on for the seeded county,
the real `twilio` client placing calls at the project's Twilio-compatible sandbox, and the rows a
test reads back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlmodel import col

from alert_service.responses import LadderResponses
from anxin.clock import Clock
from anxin.db import transaction
from anxin.models import Region
from dispatcher import calls
from dispatcher.models import VoiceCall
from dispatcher.twilio_provider import TwilioVoiceProvider
from tests.builders import region_ladder
from tests.support.dispatch import PLATFORM_NUMBER, DispatchBench

# The spoken keys every call-out ends with (issue 19).
KEYS_SPOKEN = "接单请按1，不能去请按0，到达后请回复短信2"


async def voice_on(bench: DispatchBench, **changes: Any) -> None:
    """The seeded county's ladder with P1 calls (and `changes`), for alerts raised from now."""
    settings = region_ladder(voice_priorities=(1,), **changes)
    async with transaction(bench.sessions) as session:
        await session.execute(
            update(Region).where(col(Region.parent_id).is_(None)).values(ladder=settings)
        )


def voice_provider(bench: DispatchBench) -> TwilioVoiceProvider:
    return TwilioVoiceProvider(
        account_sid=bench.sandbox.account_sid,
        auth_token=bench.sandbox.auth_token,
        from_number=PLATFORM_NUMBER,
        base_url=bench.settings.twilio_base_url,
    )


async def place_calls(
    bench: DispatchBench,
    provider: TwilioVoiceProvider,
    clock: Clock | None = None,
    **kwargs: Any,
) -> int:
    """Calls-worker passes until nothing is due at the clock's now; how many calls handled."""
    handled = 0
    while n := await calls.place_due(
        bench.sessions,
        provider,
        clock or bench.clock,
        responses=LadderResponses(),
        **{"callback_base": bench.web_url, **kwargs},
    ):
        handled += n
    return handled


async def calls_of(bench: DispatchBench, alert_id: int | None) -> list[VoiceCall]:
    async with bench.sessions() as session:
        rows = await session.execute(
            select(VoiceCall).where(col(VoiceCall.alert_id) == alert_id).order_by(col(VoiceCall.id))
        )
        return list(rows.scalars())
