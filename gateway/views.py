"""The gateway's API (CONTRACT.md §4): dead letters and device health, scoped to the operator's
region; every list read is in the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from anxin.web import CurrentOperator, Session, audit, context, filters_given
from gateway import records
from gateway.schemas import DeadLetterOut, TownshipHealth

router = APIRouter(prefix="/api", tags=["gateway"])


@router.get("/dead-letters", response_model=list[DeadLetterOut])
async def list_dead_letters(
    session: Session,
    operator: CurrentOperator,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[DeadLetterOut]:
    """Rejected device messages. A message from an unknown device belongs to no region: only
    operators of a top-level region (the county) see those."""
    rows = await records.list_dead_letters(
        session=session,
        region_ids=operator.region_ids,
        home_region_id=operator.user.region_id,
        limit=limit,
    )
    out = [DeadLetterOut.model_validate(d, from_attributes=True) for d in rows]
    audit(
        session,
        operator,
        context(request).clock.now(),
        "list_dead_letters",
        "dead_letter",
        "",
        count=len(out),
        filters=filters_given(limit=limit),
    )
    return out


@router.get("/device-health", response_model=list[TownshipHealth])
async def device_health(
    session: Session, operator: CurrentOperator, request: Request
) -> list[TownshipHealth]:
    """Devices online, offline and low on battery per township (the figures page shows it too)."""
    out = await records.device_health(session=session, region_ids=operator.region_ids)
    now = context(request).clock.now()
    audit(session, operator, now, "list_device_health", "device", "", count=len(out))
    return out
