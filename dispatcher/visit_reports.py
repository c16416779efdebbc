"""The seam to the care visits: an aide's `访 E0012 [异常 …]` SMS, parsed by
`dispatcher.replies`, is handed to `VisitReports.visit`, implemented by `visits.replies`
`VisitReplies` and wired in the composition root (`anxin.app`: `app.state.visit_reports`), so
the dispatcher never imports visits (the layers: gateway → visits → alert_service →
dispatcher), as `dispatcher.reports.AlertResponses` keeps it from alert_service."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from anxin.models import Responder
from dispatcher.replies import Reply


class VisitReports(Protocol):
    async def visit(
        self,
        session: AsyncSession,
        *,
        responder: Responder,
        reply: Reply,
        sms_id: int | None,
        now: datetime,
    ) -> str:
        """Record a responder's visit report (`reply.kind` is `visit`; `reply.elder_code` may be
        None) and queue the answer SMS; runs in the caller's transaction, never commits.
        `sms_id` is the stored inbound SMS. Returns what it did (for the log and the tests),
        e.g. "visit:counted" or "visit:rejected:not_assigned"."""
        ...
