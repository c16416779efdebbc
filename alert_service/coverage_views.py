"""`GET /api/figures/coverage`: who no aide can reach within the response minutes, in the
operator's own regions (the pure list is `alert_service/coverage.py`, the queries
`coverage_service.py`); and `GET/PUT /api/regions/{id}/travel-speeds`, the speeds a region's
responders travel at (merged county → township → village by `dispatcher.routing.speeds_for`)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from alert_service import coverage_service, regions
from alert_service.ladder_views import _may_change, _scoped_region
from anxin.web import CurrentOperator, RowId, Session, audit, context
from dispatcher import routing

router = APIRouter()

# How far back the figures page lists the 下班 warnings.
WARNINGS_SHOWN = timedelta(hours=24)


class ElderReachOut(BaseModel):
    elder_id: int
    code: str
    name: str
    village_id: int
    village: str
    township: str
    respond_minutes: int
    aide_id: int | None
    aide_name: str | None
    eta_minutes: float | None
    source: str | None
    seasonal: bool
    covered: bool


class VillageGapOut(BaseModel):
    village_id: int
    village: str
    township: str
    elders: int


class CoverageWarningOut(BaseModel):
    at: datetime
    region_id: int
    detail: dict[str, Any]


class CoverageOut(BaseModel):
    at: datetime
    elders: int
    covered: int
    uncovered: list[ElderReachOut]
    villages_without_aide: list[VillageGapOut]
    warnings: list[CoverageWarningOut]
    # Every elder's fastest on-duty aide (only with ?all=true: a county has thousands).
    reach: list[ElderReachOut] | None = None


def _reach(e: Any) -> ElderReachOut:
    return ElderReachOut(**dataclasses.asdict(e), covered=e.covered)


@router.get("/api/figures/coverage", response_model=CoverageOut, tags=["figures"])
async def coverage_figures(
    session: Session, operator: CurrentOperator, request: Request, all: bool = False
) -> CoverageOut:
    """Each elder's fastest on-duty aide by estimated arrival; the elders none can reach within
    their region's response minutes and the villages with no aide on duty; the warnings of the
    last 24 hours (an aide's 下班 that left a gap). Only the operator's own regions."""
    now = context(request).clock.now()
    found = await coverage_service.coverage_in(session, region_ids=operator.region_ids, now=now)
    warnings = await coverage_service.recent_warnings(
        session, region_ids=operator.region_ids, since=now - WARNINGS_SHOWN
    )
    uncovered = found.uncovered
    audit(session, operator, now, "read_figures", "figures", "coverage", uncovered=len(uncovered))
    return CoverageOut(
        at=now,
        elders=len(found.elders),
        covered=len(found.elders) - len(uncovered),
        uncovered=[_reach(e) for e in uncovered],
        villages_without_aide=[
            VillageGapOut(**dataclasses.asdict(v)) for v in found.villages_without_aide
        ],
        warnings=[
            CoverageWarningOut(at=w.at, region_id=int(w.target_id), detail=w.detail)
            for w in warnings
        ],
        reach=[_reach(e) for e in found.elders] if all else None,
    )


Speed = Annotated[float, Field(ge=routing.SPEED_RANGE_KMH[0], le=routing.SPEED_RANGE_KMH[1])]


class TravelSpeedsOut(BaseModel):
    region_id: int
    # km/h per travel mode: what this region sets itself, and what its responders travel at
    # (with the parents' settings and the defaults).
    own: dict[routing.TravelMode, float]
    effective: dict[routing.TravelMode, float]
    can_edit: bool


async def _speeds_out(
    session: Session, operator: CurrentOperator, region_id: int, own: dict[str, Any] | None
) -> TravelSpeedsOut:
    chain = await regions.region_chain(session, region_id)
    return TravelSpeedsOut(
        region_id=region_id,
        own={routing.TravelMode(k): v for k, v in (own or {}).items()},
        effective=routing.speeds_for([r.travel_speeds for r in chain]),
        can_edit=_may_change(operator),
    )


@router.get("/api/regions/{region_id}/travel-speeds", response_model=TravelSpeedsOut)
async def read_travel_speeds(
    region_id: RowId, session: Session, operator: CurrentOperator, request: Request
) -> TravelSpeedsOut:
    region = await _scoped_region(session, operator, region_id)
    audit(
        session, operator, context(request).clock.now(), "read_travel_speeds", "region", region_id
    )
    return await _speeds_out(session, operator, region_id, region.travel_speeds)


@router.put("/api/regions/{region_id}/travel-speeds", response_model=TravelSpeedsOut)
async def change_travel_speeds(
    region_id: RowId,
    body: dict[routing.TravelMode, Speed],
    session: Session,
    operator: CurrentOperator,
    request: Request,
) -> TravelSpeedsOut:
    """Set a region's own speeds, km/h per mode (e.g. {"horseback": 6}); `{}` clears them. Like
    the ladder: county operators and admins, for rankings from then on."""
    region = await _scoped_region(session, operator, region_id)
    if not _may_change(operator):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "仅县级操作员可修改 / only county operators may change this"
        )
    before = dict(region.travel_speeds or {})
    region.travel_speeds = {mode.value: speed for mode, speed in body.items()} or None
    now = context(request).clock.now()
    audit(
        session,
        operator,
        now,
        "change_travel_speeds",
        "region",
        region_id,
        before=before,
        after=region.travel_speeds or {},
    )
    await session.flush()
    return await _speeds_out(session, operator, region_id, region.travel_speeds)
