"""The SMS provider seam: Twilio (real, or any Twilio-compatible endpoint) or the outbox only."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from anxin.settings import Settings


class SmsProvider(Protocol):
    name: str

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str | None:
        """Hand one SMS to the provider; returns its id, or None when kept in the outbox only."""
        ...

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        """The id of a message with this body the provider took for `to` since `since`."""
        ...

    async def aclose(self) -> None: ...


class OutboxOnlyProvider:
    """No credentials: SMS stay in the outbox, shown in the console, never sent."""

    name = "outbox"

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str | None:
        return None

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def make_provider(settings: Settings) -> SmsProvider:
    if not settings.twilio_configured:
        return OutboxOnlyProvider()
    from dispatcher.twilio_provider import TwilioSmsProvider

    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
    return TwilioSmsProvider(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        from_number=settings.twilio_from,
        base_url=settings.twilio_base_url,
    )
