"""Past months of closed alerts, for the figures: some in time, some late, per township."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service.models import Alert
from anxin.models import Elder, Region


async def seed_closed_alerts(
    session: AsyncSession, now: datetime, months: int = 5, per_township: int = 8, seed: int = 7
) -> int:
    """Closed P1 alerts over the last `months` months; returns how many were breached."""
    rng = random.Random(seed)
    village = Region.__table__.alias("village")  # type: ignore[attr-defined]
    rows = list(
        await session.execute(
            select(Elder, village.c.parent_id)
            .join(village, village.c.id == col(Elder.village_id))
            .order_by(col(Elder.id))
        )
    )
    townships = sorted({township_id for _, township_id in rows})
    county_id = (await session.get(Region, townships[0])).parent_id  # type: ignore[union-attr]
    breached = 0
    for month in range(1, months + 1):
        for township_id in townships:
            elders = [e for e, t in rows if t == township_id]
            for i in range(per_township):
                elder = elders[i % len(elders)]
                raised = now - timedelta(days=30 * month, hours=i * 7)
                accept_s = rng.uniform(40, 240)
                on_scene_s = accept_s + rng.uniform(
                    300, 1000 if township_id != townships[-1] else 1300
                )
                late = on_scene_s > 15 * 60
                breached += late
                session.add(
                    Alert(
                        elder_id=elder.id,
                        village_id=elder.village_id,
                        township_id=township_id,
                        county_id=county_id,
                        kind="sos",
                        priority=1,
                        status="resolved",
                        raised_at=raised,
                        respond_by=raised + timedelta(minutes=15),
                        accepted_at=raised + timedelta(seconds=accept_s),
                        on_scene_at=raised + timedelta(seconds=on_scene_s),
                        resolved_at=raised + timedelta(seconds=on_scene_s + 900),
                        resolved_by="responder:1",
                        outcome="handled",
                        last_trigger_at=raised,
                        breached=late,
                    )
                )
    return breached
