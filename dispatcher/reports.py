"""The seam back to the alerts: what the dispatcher reports, and what it reads of an alert.

The direction is alert_service → dispatcher only: the ladder calls the dispatcher to rank
responders and write SMS; the dispatcher never imports alert_service. What comes back from
the phones (a parsed reply, a failed delivery, a warning for the timeline) goes through
`AlertResponses`, implemented by `alert_service.responses` and wired in the composition root
(`anxin.app`, `anxin.runtime`), as the SMS provider is (`dispatcher.providers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from anxin.models import Responder
from dispatcher.replies import Reply


class AlertRef(Protocol):
    """What an SMS about an alert needs to know of it (an `alert_service` Alert row is one)."""

    @property
    def id(self) -> int | None: ...
    @property
    def code(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def elder_id(self) -> int: ...
    @property
    def accepted_by(self) -> int | None: ...
    @property
    def trigger_count(self) -> int: ...
    @property
    def ranking(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class TextAlert:
    """The alert a help word from a family number raised or joined."""

    alert_id: int
    code: str
    raised_at: datetime
    joined: bool


class AlertResponses(Protocol):
    """What a reply or a delivery outcome does to an alert. Each runs in the caller's
    transaction and never commits."""

    async def reply(
        self, session: AsyncSession, *, responder: Responder, reply: Reply, now: datetime
    ) -> str:
        """Apply a responder's reply about an alert (1/0/2/3); returns what it did."""
        ...

    async def delivery_failed(
        self,
        session: AsyncSession,
        *,
        alert_id: int,
        responder_id: int,
        reason: str,
        now: datetime,
        channel: str = "sms",
    ) -> None:
        """A call-out cannot reach its responder (`channel` "sms": the SMS failed; "voice": the
        call went unanswered, busy or failed): the ladder moves on at once — or, for a failed
        SMS when the alert's ladder calls, the same responder's phone is called first."""
        ...

    async def note(
        self, session: AsyncSession, *, alert_id: int, action: str, now: datetime, **detail: Any
    ) -> None:
        """A line on the alert's timeline (e.g. a number near its daily SMS limit)."""
        ...

    async def duty_changed(
        self, session: AsyncSession, *, responder: Responder, now: datetime
    ) -> None:
        """A responder went on or off duty (上班/下班, already set on the row): off duty, the
        township's operators are warned when a village or an elder is left uncovered."""
        ...

    async def text_alert(
        self, session: AsyncSession, *, elder_id: int, phone: str, sms_id: int | None, now: datetime
    ) -> TextAlert | None:
        """A help word from the elder's or a guardian's number: a P1 for the elder, through the
        same intake as a device's, or the elder's open alert joined. None: no such elder (or
        archived)."""
        ...

    async def family_message(
        self,
        session: AsyncSession,
        *,
        elder_id: int,
        phone: str,
        body: str,
        sms_id: int | None,
        now: datetime,
    ) -> int | None:
        """Any other SMS from the family ("我去", "1", free text): a line on the elder's open
        alert's timeline, if there is one (its id returned; None: no open alert)."""
        ...
