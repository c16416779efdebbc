"""`GET /api/figures/coverage`: who no aide can reach within the response minutes, in the
operator's own regions (the pure list is `alert_service/coverage.py`, the queries
`coverage_service.py`)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from alert_service import coverage_service
from anxin.web import CurrentOperator, Session, audit, context

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
