"""Where an alert belongs: a village's chain of regions (village, township, county) and the
ladder their settings make (the county's first, the village's own last)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Select,
    bindparam,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from alert_service import rules
from anxin.models import Region


async def region_chain(session: AsyncSession, village_id: int) -> list[Region]:
    """The village, its township and its county (nearest first)."""
    return (await region_chains(session, {village_id})).get(village_id, [])


def _region_walk() -> Select[Any]:
    """Each village's chain up `parent_id`, for the `village_ids` bound at execution."""
    walk = (
        select(
            col(Region.id).label("start"),
            col(Region.id).label("region_id"),
            literal(0).label("depth"),
        )
        .where(col(Region.id).in_(bindparam("village_ids", expanding=True)))
        .cte("region_walk", recursive=True)
    )
    up = aliased(Region)
    walk = walk.union_all(
        select(walk.c.start, col(up.parent_id), walk.c.depth + 1)
        .join(up, col(up.id) == walk.c.region_id)
        .where(col(up.parent_id).is_not(None), walk.c.depth < 3)
    )
    return (
        select(Region, walk.c.start)
        .join(walk, walk.c.region_id == col(Region.id))
        .order_by(walk.c.start, walk.c.depth)
    )


# Built once: a CTE and an alias copy every column of the table they wrap, in reference
# cycles. Built per call, on the gateway's ack path, they were most of the cyclic garbage
# behind its 30–70 ms collector pauses (docs/sizing.md).
_REGION_WALK = _region_walk()


async def region_chains(session: AsyncSession, village_ids: set[int]) -> dict[int, list[Region]]:
    """`region_chain` for many villages in one query (a recursive walk up `parent_id`)."""
    if not village_ids:
        return {}
    rows = await session.execute(_REGION_WALK, {"village_ids": sorted(village_ids)})
    chains: dict[int, list[Region]] = {}
    for region, start in rows:
        chains.setdefault(start, []).append(region)
    return chains


def ladder_for(chain: list[Region]) -> rules.Ladder:
    merged: dict[str, Any] = {}
    for region in reversed(chain):  # county first, the village's own settings last
        merged.update(region.ladder or {})
    respond = chain[0].response_minutes if chain else 15
    merged.setdefault("respond_minutes", respond)
    return rules.Ladder.from_snapshot(merged)
