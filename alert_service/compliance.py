"""The 15-minute compliance figures' query: alerts of a period read for the pure
`alert_service.figures`."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import figures, rules
from alert_service.models import (
    Alert,
)
from anxin.models import Device


async def compliance(
    session: AsyncSession,
    region_ids: set[int],
    start: datetime,
    end: datetime,
    timezone: str,
    now: datetime,
    *,
    source: str | None = None,
) -> list[figures.MonthFigures]:
    """Figures per township and county in `region_ids`, for alerts raised in [start, end);
    `source` only those that came that way (device, phone_in, text_in)."""
    query = (
        select(
            col(Alert.township_id),
            col(Alert.county_id),
            col(Alert.priority),
            col(Alert.raised_at),
            col(Alert.respond_by),
            col(Alert.accepted_at),
            col(Alert.on_scene_at),
            col(Alert.resolved_at),
            col(Alert.breached),
            col(Alert.outcome),
            col(Alert.ladder),
            col(Device.kind),
        )
        .outerjoin(Device, col(Device.id) == col(Alert.device_id))
        .where(
            col(Alert.raised_at) >= start,
            col(Alert.raised_at) < end,
            col(Alert.village_id).in_(region_ids),
        )
    )
    if source is not None:
        query = query.where(col(Alert.source) == source)
    rows = await session.execute(query)
    facts = [
        figures.AlertFacts(
            township_id=township_id,
            county_id=county_id,
            priority=priority,
            raised_at=raised_at,
            clock_started_at=(
                respond_by
                - timedelta(minutes=rules.Ladder.from_snapshot(ladder or {}).respond_minutes)
                if respond_by is not None
                else None
            ),
            respond_by=respond_by,
            accepted_at=accepted_at,
            on_scene_at=on_scene_at,
            resolved_at=resolved_at,
            breached=breached,
            outcome=outcome,
            device_kind=device_kind,
        )
        for (
            township_id,
            county_id,
            priority,
            raised_at,
            respond_by,
            accepted_at,
            on_scene_at,
            resolved_at,
            breached,
            outcome,
            ladder,
            device_kind,
        ) in rows
    ]
    # A township operator sees their township's figures, not the county's (which would
    # include townships outside their remit).
    return [
        f for f in figures.compliance_figures(facts, timezone, now) if f.region_id in region_ids
    ]
