"""Coverage from the database: every elder of some regions ranked as an alert would be
(`dispatcher.ranking.rank_for_alerts`, in one batch), then the pure `alert_service.coverage`.
And the township operator's warning when an aide's 下班 leaves elders or a village uncovered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service.coverage import Coverage, CoverageHome, Village, coverage
from alert_service.regions import region_chains
from anxin import auth
from anxin.logging import get_logger
from anxin.models import AuditLog, Elder, Region, Responder, pk
from dispatcher import ranking

log = get_logger("alert_service")

# Elders ranked per call: the ranking is pure Python (≈0.3 ms an elder with 40 aides in the
# township), so a county of 10,000 in one call would hold the event loop for seconds; by
# villages in chunks, the loop serves others between chunks' queries.
RANK_CHUNK = 200

# The audit-log action of a coverage warning (a row the figures page lists for the region).
WARNING_ACTION = "coverage_warning"


async def _idle(
    session: AsyncSession, responder_ids: set[int], now: datetime
) -> ranking.ResponderLoad:
    # Coverage asks who could go, not who is busy this minute: no one counts as committed.
    return ranking.ResponderLoad(committed=set(), asked_today={})


async def coverage_in(session: AsyncSession, *, region_ids: set[int], now: datetime) -> Coverage:
    """Coverage of the elders (not archived) and villages in `region_ids` at `now`."""
    villages = list(
        (
            await session.execute(
                select(Region).where(col(Region.level) == "village", col(Region.id).in_(region_ids))
            )
        ).scalars()
    )
    village_ids = {pk(v) for v in villages}
    # Ids first (plain tuples), the rows chunk by chunk: 10,000 ORM rows built at once held
    # the event loop for most of a second.
    elder_ids = list(
        (
            await session.execute(
                select(col(Elder.id))
                .where(col(Elder.village_id).in_(village_ids), col(Elder.archived_at).is_(None))
                .order_by(col(Elder.village_id), col(Elder.id))
            )
        ).scalars()
    )
    chains = await region_chains(session, village_ids)
    elders: list[Elder] = []
    rankings: list[list[dict[str, Any]]] = []
    for start in range(0, len(elder_ids), RANK_CHUNK):
        wanted = elder_ids[start : start + RANK_CHUNK]
        rows = (await session.execute(select(Elder).where(col(Elder.id).in_(wanted)))).scalars()
        by_id = {pk(e): e for e in rows}
        chunk = [by_id[i] for i in wanted if i in by_id]
        elders += chunk
        rankings += await ranking.rank_for_alerts(
            session, [(e, chains[e.village_id]) for e in chunk], now, load=_idle
        )
    on_duty: dict[int, int] = {}
    for village_id, count in (
        await session.execute(
            select(col(Responder.village_id), func.count())
            .where(
                col(Responder.kind) == "aide",
                col(Responder.on_duty),
                col(Responder.village_id).in_(village_ids),
            )
            .group_by(col(Responder.village_id))
        )
    ).tuples():
        if village_id is not None:
            on_duty[village_id] = count

    def township(village_id: int) -> str:
        return next((r.name for r in chains[village_id] if r.level == "township"), "")

    homes = [
        CoverageHome(
            elder_id=pk(e),
            code=e.code,
            name=e.name,
            village_id=e.village_id,
            village=chains[e.village_id][0].name,
            township=township(e.village_id),
            respond_minutes=chains[e.village_id][0].response_minutes,
            season=ranking.season_of(e),
        )
        for e in elders
    ]
    places = [Village(pk(v), v.name, township(pk(v))) for v in villages]
    return coverage(homes, rankings, places, on_duty, now)


async def warn_after_off_duty(
    session: AsyncSession, *, responder: Responder, now: datetime
) -> Coverage | None:
    """After an aide's 下班: the coverage of their township; when some village has no aide on
    duty or some elder no aide in time, a warning for the township's operators (an audit-log
    row the figures page lists, and a log event). Returns the coverage it warned of, if any."""
    if responder.kind != "aide" or responder.village_id is None or responder.on_duty:
        return None
    chain = (await region_chains(session, {responder.village_id})).get(responder.village_id, [])
    township = next((r for r in chain if r.level == "township"), chain[0] if chain else None)
    if township is None:
        return None
    await session.flush()  # the 下班 itself, for the queries below
    try:
        # In a savepoint: a failure here must not lose the 下班 (nor its answer SMS).
        async with session.begin_nested():
            found = await coverage_in(
                session, region_ids=await auth.regions_under(session, pk(township)), now=now
            )
    except Exception:
        log.exception("coverage_warning_failed", responder_id=pk(responder))
        return None
    uncovered = found.uncovered
    if not uncovered and not found.villages_without_aide:
        return None
    villages = [v.village for v in found.villages_without_aide]
    session.add(
        AuditLog(
            at=now,
            operator_id=None,
            action=WARNING_ACTION,
            target_type="region",
            target_id=str(pk(township)),
            detail={
                "responder_id": pk(responder),
                "responder": responder.name,
                "village": chain[0].name if chain else "",
                "villages_without_aide": villages,
                "uncovered": [e.code for e in uncovered],
            },
        )
    )
    log.warning(
        "coverage_gap",
        township=township.code,
        responder_id=pk(responder),
        villages_without_aide=villages,
        uncovered=len(uncovered),
    )
    return found


async def recent_warnings(
    session: AsyncSession, *, region_ids: set[int], since: datetime
) -> list[AuditLog]:
    """The coverage warnings for these regions since `since`, newest first."""
    rows = await session.execute(
        select(AuditLog)
        .where(
            col(AuditLog.action) == WARNING_ACTION,
            col(AuditLog.at) >= since,
            col(AuditLog.target_id).in_([str(r) for r in region_ids]),
        )
        .order_by(col(AuditLog.at).desc())
        .limit(50)
    )
    return list(rows.scalars())
