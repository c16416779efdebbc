"""Who to ask: the responders of an elder's township and its centres, ranked by estimated
arrival (the pure `dispatcher.routing` does the ranking); routed travel times imported from a
road router override the straight-line estimate where they have an entry.

How busy each candidate is (a P1 taken, asks in the last 24 hours) is the ladder's to know:
the caller passes it in (`LoadOf`), so this module reads no alert table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from anxin.logging import mask_phone
from anxin.models import Elder, Region, Responder, ServiceCentre, pk
from dispatcher import routing
from dispatcher.models import (
    TravelTime,
)
from dispatcher.travel_table import TravelTimeError, TravelTimeRow


@dataclass(frozen=True)
class ResponderLoad:
    """How busy the candidates are: those with a P1 taken and still open, and how often each
    was asked in the last 24 hours."""

    committed: set[int]
    asked_today: dict[int, int]


# The caller's reader of the load, for these responder ids at `now`.
LoadOf = Callable[[AsyncSession, set[int], datetime], Awaitable[ResponderLoad]]


async def rank_for_alerts(
    session: AsyncSession,
    homes: Sequence[tuple[Elder, Sequence[Region]]],
    now: datetime,
    *,
    load: LoadOf,
    keep: list[object] | None = None,
) -> list[list[dict[str, Any]]]:
    """Rank on-duty aides of each elder's township, then its centres, by estimated arrival:
    many elders at once (the watcher's batch), three queries whatever their number, then the
    pure ranking per elder. `homes` pairs each elder with the region
    chain of their village (nearest first); the rankings come back in the same order.

    `keep` receives the responder rows loaded: while the caller holds them, the session's
    identity map answers `session.get(Responder, id)` for them without a query."""
    if not homes:
        return []
    township_of = [next((r for r in chain if r.level == "township"), None) for _, chain in homes]
    county_of = [next((r for r in chain if r.level == "county"), None) for _, chain in homes]
    township_ids = {pk(t) for t in township_of if t is not None}
    lone_villages = {
        e.village_id for (e, _), t in zip(homes, township_of, strict=True) if t is None
    }
    centre_regions = township_ids | {pk(c) for c in county_of if c is not None}
    # One query for both kinds: the aides of every village under those townships (or of a
    # village with no township), and the duty responders of their township and county centres.
    aide_places: list[ColumnElement[bool]] = []
    if township_ids:
        aide_places.append(col(Region.parent_id).in_(township_ids))
    if lone_villages:
        aide_places.append(col(Responder.village_id).in_(lone_villages))
    wanted: list[ColumnElement[bool]] = [col(ServiceCentre.region_id).in_(centre_regions)]
    if aide_places:
        wanted.append(and_(col(Responder.kind) == "aide", or_(*aide_places)))
    rows = list(
        await session.execute(
            select(Responder, col(Region.parent_id), ServiceCentre)
            .outerjoin(Region, col(Region.id) == col(Responder.village_id))
            .outerjoin(ServiceCentre, col(ServiceCentre.id) == col(Responder.centre_id))
            .where(or_(*wanted))
        )
    )
    aides_of_township: dict[int, list[Responder]] = {}
    aides_of_village: dict[int, list[Responder]] = {}
    centres_of: dict[int, list[tuple[Responder, ServiceCentre]]] = {}
    for responder, parent_id, centre in rows:
        if centre is not None and centre.region_id in centre_regions:
            centres_of.setdefault(centre.region_id, []).append((responder, centre))
        if responder.kind != "aide":
            continue
        if parent_id in township_ids:
            aides_of_township.setdefault(parent_id, []).append(responder)
        if responder.village_id in lone_villages:
            aides_of_village.setdefault(responder.village_id, []).append(responder)
    if keep is not None:
        keep.extend(responder for responder, _, _ in rows)
    # Only these responders' commitments and counts matter: a city has many more.
    busy = await load(session, {pk(responder) for responder, _, _ in rows}, now)
    committed, today = busy.committed, busy.asked_today
    tables = await travel_tables_for(session, {pk(e) for e, _ in homes})
    rankings: list[list[dict[str, Any]]] = []
    built: dict[tuple[int, int], list[routing.Candidate]] = {}
    for (elder, chain), township, county in zip(homes, township_of, county_of, strict=True):
        # Every elder of a township has the same candidates: built once per township (the
        # attribute reads of ORM rows were most of the time for 10,000 elders at once).
        key = (
            pk(township) if township is not None else -elder.village_id,
            pk(county) if county is not None else 0,
        )
        candidates = built.get(key)
        if candidates is None:
            aides = (
                aides_of_township.get(pk(township), [])
                if township is not None
                else aides_of_village.get(elder.village_id, [])
            )
            centres = [
                pair
                for region in (township, county)
                if region is not None
                for pair in centres_of.get(pk(region), [])
            ]
            candidates = built[key] = [
                routing.Candidate(
                    responder_id=pk(a),
                    kind="aide",
                    name=a.name,
                    village_id=a.village_id,
                    location=routing.LatLon(a.lat, a.lon),
                    travel_mode=routing.TravelMode(a.travel_mode),
                    on_duty=a.on_duty,
                    committed_to_p1=pk(a) in committed,
                    dispatches_today=int(today.get(pk(a), 0)),
                    setup_minutes=a.setup_minutes,
                )
                for a in aides
            ] + [
                routing.Candidate(
                    responder_id=pk(r),
                    kind="township_centre" if c.level == "township" else "county_centre",
                    name=c.name,
                    village_id=None,
                    location=routing.LatLon(r.lat, r.lon),
                    travel_mode=routing.TravelMode(r.travel_mode),
                    on_duty=True,
                    committed_to_p1=False,
                    dispatches_today=int(today.get(pk(r), 0)),
                    setup_minutes=r.setup_minutes,
                )
                for r, c in centres
            ]
        home = routing.LatLon(elder.lat, elder.lon)
        season = season_of(elder)
        away = season is not None and routing.season_applies(season, now)
        ranked = routing.nearest_responders(
            routing.home_at(home, season, now),
            elder.village_id,
            candidates,
            circuity=next((r.circuity for r in chain if r.circuity), 1.4),
            # Routed minutes are to the home: at the seasonal place the estimate decides.
            travel_table={} if away else tables.get(pk(elder), {}),
            speeds=routing.speeds_for([r.travel_speeds for r in chain]),
        )
        rankings.append(
            [
                {
                    "responder_id": r.responder_id,
                    "kind": r.kind,
                    "name": r.name,
                    "distance_km": round(r.distance_km, 2),
                    "eta_minutes": round(r.eta_minutes, 1),
                    "source": r.source,
                }
                for r in ranked
            ]
        )
    return rankings


def season_of(elder: Elder) -> routing.Season | None:
    """The elder's seasonal place, when all of it is set (the registry takes all or none)."""
    if (
        elder.season_lat is None
        or elder.season_lon is None
        or not elder.season_start
        or not elder.season_end
    ):
        return None
    return routing.Season(
        routing.LatLon(elder.season_lat, elder.season_lon), elder.season_start, elder.season_end
    )


async def travel_tables_for(
    session: AsyncSession, elder_ids: set[int]
) -> dict[int, dict[int, float]]:
    """Routed minutes to these elders' homes, per responder (only those someone imported), in
    one query: elder_id → responder_id → minutes."""
    rows = await session.execute(
        select(
            col(TravelTime.elder_id), col(TravelTime.responder_id), col(TravelTime.minutes)
        ).where(col(TravelTime.elder_id).in_(elder_ids))
    )
    tables: dict[int, dict[int, float]] = {}
    for elder_id, responder_id, minutes in rows:
        tables.setdefault(elder_id, {})[responder_id] = float(minutes)
    return tables


# Rows per statement: Postgres takes at most 32,767 bind parameters in one.
_IMPORT_CHUNK = 2000


async def import_travel_times(
    session: AsyncSession, rows: list[TravelTimeRow], *, source: str, now: datetime
) -> tuple[int, list[TravelTimeError]]:
    """Store routed travel times (a newer import of the same pair replaces the older one).

    Returns how many were stored and the rows naming an unknown elder or responder.
    """
    stored = 0
    errors: list[TravelTimeError] = []
    for start in range(0, len(rows), _IMPORT_CHUNK):
        chunk_stored, chunk_errors = await _import_chunk(
            session, rows[start : start + _IMPORT_CHUNK], source=source, now=now
        )
        stored += chunk_stored
        errors.extend(chunk_errors)
    return stored, errors


async def _import_chunk(
    session: AsyncSession, rows: list[TravelTimeRow], *, source: str, now: datetime
) -> tuple[int, list[TravelTimeError]]:
    elder_codes = {r.elder_code for r in rows}
    phones = {r.responder_phone for r in rows}
    elder_rows = await session.execute(
        select(col(Elder.code), col(Elder.id)).where(col(Elder.code).in_(elder_codes))
    )
    elders = {code: elder_id for code, elder_id in elder_rows if elder_id is not None}
    responder_rows = await session.execute(
        select(col(Responder.phone), col(Responder.id)).where(col(Responder.phone).in_(phones))
    )
    responders = {phone: rid for phone, rid in responder_rows if rid is not None}
    errors: list[TravelTimeError] = []
    values: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        elder_id, responder_id = elders.get(row.elder_code), responders.get(row.responder_phone)
        if elder_id is None:
            errors.append(
                TravelTimeError(
                    row.line,
                    f"unknown elder {row.elder_code}",
                    f"找不到老人编号“{row.elder_code}”：请先导入老人表",
                )
            )
        elif responder_id is None:
            masked = mask_phone(row.responder_phone)
            errors.append(
                TravelTimeError(
                    row.line,
                    f"unknown responder {masked}",
                    f"找不到电话为 {masked} 的助老员或服务中心：请先导入助老员表",
                )
            )
        else:
            # A pair listed twice: the later line wins, as it would in the spreadsheet.
            values[(elder_id, responder_id)] = {
                "elder_id": elder_id,
                "responder_id": responder_id,
                "minutes": row.minutes,
                "source": source[:64],
                "imported_at": now,
            }
    if values:
        statement = insert(TravelTime).values(list(values.values()))
        await session.execute(
            statement.on_conflict_do_update(
                constraint="uq_travel_time_elder_responder",
                set_={
                    "minutes": statement.excluded.minutes,
                    "source": statement.excluded.source,
                    "imported_at": statement.excluded.imported_at,
                },
            )
        )
    return len(values), errors
