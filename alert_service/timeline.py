"""The alert timeline: every step, answer and action, one row each (written in the caller's
transaction; none commits)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from alert_service.models import (
    AlertTimelineEntry,
)


async def add_timeline(
    session: AsyncSession,
    alert_id: int,
    at: datetime,
    actor: str,
    action: str,
    **detail: Any,
) -> None:
    session.add(
        AlertTimelineEntry(
            alert_id=alert_id,
            at=at.replace(microsecond=0),
            actor=actor,
            action=action,
            detail=detail,
        )
    )


_PLATFORM_GAP = text(
    """
    INSERT INTO alert_timeline (alert_id, at, actor, action, detail)
    SELECT id, :at, 'system', 'platform_gap', CAST(:detail AS json)
      FROM alerts WHERE status <> 'resolved' AND raised_at < :until
    """
)


async def record_platform_gap(session: AsyncSession, *, since: datetime, until: datetime) -> int:
    """Every alert open across the platform's downtime gets one timeline entry for the gap
    (平台中断 25 分钟, 10:02–10:27): an operator reading it later knows why nothing happened
    then. Its age is left as it is: raised_at and respond_by are the alert's own. Returns how
    many alerts got one."""
    minutes = max(1, round((until - since).total_seconds() / 60))
    detail = {"minutes": minutes, "since": since.isoformat(), "until": until.isoformat()}
    result = await session.execute(
        _PLATFORM_GAP,
        {"at": until.replace(microsecond=0), "until": until, "detail": json.dumps(detail)},
    )
    return int(getattr(result, "rowcount", 0) or 0)
