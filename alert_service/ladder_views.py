"""A region's escalation ladder through the API: read it, change it (county operators).

A region's `ladder` holds only the settings it sets itself; the county's come first, the
village's own last (`regions.ladder_for`), and the product's defaults fill the rest. A change
applies to alerts raised after it: each alert keeps the ladder snapshotted when it was raised.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from alert_service import regions
from anxin.models import Region
from anxin.schemas import OperatorRole
from anxin.web import Ctx, CurrentOperator, RowId, Session, audit

router = APIRouter(prefix="/api/regions", tags=["regions"])

FIFTEEN_MINUTES_S = 15 * 60


class LadderIn(BaseModel):
    """The settings this region sets itself; a field left out (or null) is inherited."""

    model_config = ConfigDict(extra="forbid")

    # An aide must be asked again well inside the 15 minutes, or the ladder never moves on.
    accept_timeout_s: float | None = Field(None, gt=0, lt=FIFTEEN_MINUTES_S)
    max_aides: int | None = Field(None, ge=1, le=10)
    at_risk_s: float | None = Field(None, gt=0, lt=FIFTEEN_MINUTES_S)
    centre_answer_s: float | None = Field(None, gt=0, lt=FIFTEEN_MINUTES_S)
    reminder_grace_s: float | None = Field(None, gt=0, le=3600)
    notify_guardians: bool | None = None
    # Voice call-outs (issue 19): how long a silent SMS waits for the phone call, which
    # priorities call (P1, P2), and whether at night the phone rings at once.
    voice_after_s: float | None = Field(None, ge=0, lt=FIFTEEN_MINUTES_S)
    voice_priorities: list[Literal[1, 2]] | None = Field(None, max_length=2)
    voice_at_night: bool | None = None


class LadderOut(BaseModel):
    region_id: int
    # What this region sets itself, and what an alert raised in it now runs (with the
    # parents' settings and the defaults).
    own: dict[str, Any]
    effective: dict[str, Any]
    can_edit: bool


def _may_change(operator: CurrentOperator) -> bool:
    """The ladder is the county's promise of 15 minutes: township operators read it, only
    county operators and admins change it."""
    return operator.can_act and operator.user.role in (
        OperatorRole.admin,
        OperatorRole.county_operator,
    )


async def _scoped_region(session: Session, operator: CurrentOperator, region_id: int) -> Region:
    region = await session.get(Region, region_id)
    if region is None or region_id not in operator.region_ids:
        # Outside the operator's region looks exactly like not there.
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个地区 / no such region")
    return region


async def _out(session: Session, operator: CurrentOperator, region: Region) -> LadderOut:
    assert region.id is not None
    chain = await regions.region_chain(session, region.id)
    return LadderOut(
        region_id=region.id,
        own=dict(region.ladder or {}),
        effective=regions.ladder_for(chain).snapshot(),
        can_edit=_may_change(operator),
    )


@router.get("/{region_id}/ladder", response_model=LadderOut)
async def read_ladder(
    region_id: RowId, ctx: Ctx, session: Session, operator: CurrentOperator
) -> LadderOut:
    region = await _scoped_region(session, operator, region_id)
    audit(session, operator, ctx.clock.now(), "read_ladder", "region", region_id)
    return await _out(session, operator, region)


@router.put("/{region_id}/ladder", response_model=LadderOut)
async def change_ladder(
    region_id: RowId, body: LadderIn, ctx: Ctx, session: Session, operator: CurrentOperator
) -> LadderOut:
    region = await _scoped_region(session, operator, region_id)
    if not _may_change(operator):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "仅县级操作员可修改 / only county operators may change this"
        )
    before = dict(region.ladder or {})
    region.ladder = body.model_dump(exclude_none=True)
    audit(
        session,
        operator,
        ctx.clock.now(),
        "change_ladder",
        "region",
        region_id,
        before=before,
        after=region.ladder,
    )
    await session.flush()
    return await _out(session, operator, region)
