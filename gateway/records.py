"""The gateway's records as operators read them: dead letters and device health, each scoped
to the operator's region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.models import Device, Elder, Region
from gateway.models import DeadLetter
from gateway.schemas import TownshipHealth

LOW_BATTERY: Final = 20


async def list_dead_letters(
    *, session: AsyncSession, region_ids: set[int], home_region_id: int, limit: int
) -> Sequence[DeadLetter]:
    """Rejected device messages of the region's devices, newest first. A message from an
    unknown device belongs to no region: only a top-level region (the county) sees those."""
    scoped_devices = (
        select(col(Device.id))
        .join(Elder, col(Elder.id) == col(Device.elder_id))
        .where(col(Elder.village_id).in_(region_ids))
    )
    home = await session.get(Region, home_region_id)
    visible: Any = col(DeadLetter.device_id).in_(scoped_devices)
    if home is not None and home.parent_id is None:
        known = select(col(Device.id))
        visible = or_(
            visible, col(DeadLetter.device_id).is_(None), col(DeadLetter.device_id).not_in(known)
        )
    rows = await session.execute(
        select(DeadLetter).where(visible).order_by(col(DeadLetter.received_at).desc()).limit(limit)
    )
    return rows.scalars().all()


async def device_health(*, session: AsyncSession, region_ids: set[int]) -> list[TownshipHealth]:
    """Devices online, offline, low on battery and disabled per township of the region."""
    village = Region.__table__.alias("village")  # type: ignore[attr-defined]
    township = Region.__table__.alias("township")  # type: ignore[attr-defined]
    enabled = col(Device.enabled)
    rows = await session.execute(
        select(
            township.c.id,
            township.c.name,
            func.count(),
            func.count().filter(enabled & col(Device.online)),
            func.count().filter(enabled & ~col(Device.online)),
            func.count().filter(enabled & (col(Device.battery) < LOW_BATTERY)),
            func.count().filter(~enabled),
        )
        .select_from(Device)
        .join(Elder, col(Elder.id) == col(Device.elder_id))
        .join(village, village.c.id == col(Elder.village_id))
        .join(township, township.c.id == village.c.parent_id)
        .where(col(Elder.village_id).in_(region_ids), col(Device.archived_at).is_(None))
        .group_by(township.c.id, township.c.name, township.c.code)
        .order_by(township.c.code)
    )
    return [
        TownshipHealth(
            township_id=tid,
            township=name,
            devices=total,
            online=online,
            offline=offline,
            low_battery=low,
            disabled=disabled,
        )
        for tid, name, total, online, offline, low, disabled in rows
    ]
