"""Care visits in the database: plans per region, owners, recording a visit (SMS, device,
operator), major changes, where each elder stands now and the month's visit rate.

Every function runs in the caller's transaction and never commits; arguments are keyword-only.
How to call them (issue 18 items 4 and 7 build on these):

    plan = await effective_plans(session, village_ids={village_id})      # village → VisitPlan
    result = await record_visit(session, elder_code="E0012", channel=VisitChannel.sms,
                                responder=aide, now=now, timezone=tz, note="异常 摔过一次",
                                concern=True)
    result.counted, result.reason, result.alert_id                       # what happened
    await mark_major_change(session, elder_id=e, note="住院", operator_id=op, now=now)
    rows = await elder_statuses(session, village_ids=scope, now=now, timezone=tz)
    [r for r in rows if r.status.overdue]                                # the overdue tab
    [r for r in rows if r.owner_id == aide_id and r.status.due_by]      # an aide's digest
    figures = await month_figures(session, region_ids=scope, month="2026-11", now=now,
                                  timezone=tz)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import rules
from alert_service.intake import raise_or_join
from alert_service.regions import region_chains
from alert_service.timeline import add_timeline
from anxin.logging import get_logger
from anxin.models import Elder, Region, Responder, pk
from anxin.schemas import ResponderKind
from dispatcher import outbox
from dispatcher.models import SmsMessage
from visits import digest, schedule
from visits.models import (
    MajorChange,
    RegionVisitPlan,
    RejectReason,
    Visit,
    VisitChannel,
    VisitMode,
    VisitOwner,
    VisitStatus,
)

log = get_logger("visits")

# The alert a concern found on a visit opens (one open per elder, as every kind).
CONCERN_KIND = "visit_concern"
# A device's or an operator's clock a little ahead is not a visit "in the future".
FUTURE_TOLERANCE = timedelta(minutes=5)


def categories_of(elder: Elder) -> frozenset[str]:
    """The elder's civil-affairs categories (the flags set), as `schedule.CATEGORIES` names them."""
    return frozenset(name for name in schedule.CATEGORIES if getattr(elder, name, False))


# --- plans ------------------------------------------------------------------------------------


async def region_plan(session: AsyncSession, *, region_id: int) -> dict[str, Any]:
    """A region's own settings (empty: it inherits everything)."""
    row = await session.get(RegionVisitPlan, region_id)
    return dict(row.plan) if row is not None else {}


async def set_region_plan(
    session: AsyncSession, *, region_id: int, changes: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Change a region's own settings: a key set to None goes back to inheriting. Raises
    ValueError (naming the key) for a bad setting. Returns the region's own settings."""
    own = await region_plan(session, region_id=region_id)
    for key, value in changes.items():
        if value is None:
            own.pop(key, None)
        else:
            schedule.check_override({key: value})
            own[key] = value
    row = await session.get(RegionVisitPlan, region_id)
    if row is None:
        session.add(RegionVisitPlan(region_id=region_id, plan=own, updated_at=now))
    else:
        row.plan, row.updated_at = own, now
    await session.flush()
    return own


async def effective_plans(
    session: AsyncSession, *, village_ids: set[int]
) -> dict[int, schedule.VisitPlan]:
    """Each village's plan: the product defaults, then its county's, township's and own settings."""
    chains = await region_chains(session, village_ids)
    ids = {r.id for chain in chains.values() for r in chain}
    rows = await session.execute(
        select(RegionVisitPlan).where(col(RegionVisitPlan.region_id).in_(ids))
    )
    own = {row.region_id: row.plan for row in rows.scalars()}
    return {
        village: schedule.plan_for([own.get(pk(r), {}) for r in chain])
        for village, chain in chains.items()
    }


# --- owners -----------------------------------------------------------------------------------


async def owners(session: AsyncSession, *, elders: Iterable[Elder]) -> dict[int, int | None]:
    """Who owns each elder's visits: the explicit `VisitOwner`, else the elder's village's first
    aide (lowest id; None when the village has no aide)."""
    return await _owners(session, {pk(e): e.village_id for e in elders})


async def _owners(session: AsyncSession, village_of: dict[int, int]) -> dict[int, int | None]:
    villages = set(village_of.values())
    explicit = dict(
        (
            await session.execute(
                select(col(VisitOwner.elder_id), col(VisitOwner.responder_id))
                .join(Elder, col(Elder.id) == col(VisitOwner.elder_id))
                .where(col(Elder.village_id).in_(villages))
            )
        ).all()
    )
    first_aide = dict(
        (
            await session.execute(
                select(col(Responder.village_id), func.min(col(Responder.id)))
                .where(
                    col(Responder.village_id).in_(villages),
                    col(Responder.kind) == ResponderKind.aide,
                )
                .group_by(col(Responder.village_id))
            )
        ).all()
    )
    return {e: explicit.get(e, first_aide.get(v)) for e, v in village_of.items()}


async def set_owner(
    session: AsyncSession, *, elder_id: int, responder_id: int | None, now: datetime
) -> None:
    """Make an aide the owner of an elder's visits (None: back to the village's first aide)."""
    row = await session.get(VisitOwner, elder_id)
    if responder_id is None:
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(VisitOwner(elder_id=elder_id, responder_id=responder_id, assigned_at=now))
    else:
        row.responder_id, row.assigned_at = responder_id, now
    await session.flush()


# --- recording a visit ------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitResult:
    visit: Visit
    elder: Elder | None
    alert_id: int | None = None  # the alert a concern opened or joined

    @property
    def counted(self) -> bool:
        return self.visit.status == VisitStatus.counted

    @property
    def reason(self) -> RejectReason | None:
        return RejectReason(self.visit.reject_reason) if self.visit.reject_reason else None


async def find_elder(session: AsyncSession, code: str) -> Elder | None:
    """An elder by code, case-insensitively (an aide types `e0012` as often as `E0012`)."""
    rows = await session.execute(
        select(Elder).where(func.upper(col(Elder.code)) == code.strip().upper())
    )
    return rows.scalars().first()


async def record_visit(
    session: AsyncSession,
    *,
    channel: VisitChannel,
    now: datetime,
    timezone: str,
    elder_code: str | None = None,
    elder_id: int | None = None,
    visited_at: datetime | None = None,
    mode: VisitMode = VisitMode.home,
    responder: Responder | None = None,
    operator_id: int | None = None,
    device_id: str | None = None,
    event_id: int | None = None,
    sms_id: int | None = None,
    note: str = "",
    concern: bool = False,
    urgent: bool = False,
    respond_now: bool = True,
) -> VisitResult:
    """Record one reported visit; every report is stored, counted or rejected with its reason:

    - unknown elder code or archived elder; an SMS from an aide who does not own the elder's
      visits (`not_assigned`); a time after `now` (beyond `FUTURE_TOLERANCE`); a second visit
      the same local day (`same_day`, one counted per elder and day, by a unique index);
    - a concern (`concern`) on a known elder opens or joins a `visit_concern` alert, P2 if
      `urgent` (the 15-minute clock and the ladder run) else P3, with the visit on its
      timeline — even when the report itself is not counted: what was seen still matters.
      `respond_now` False (the gateway's ack path): a P2's response is left to the watchers,
      as `alert_service.intake.raise_or_join` does.
    """
    at = visited_at or now
    elder = await session.get(Elder, elder_id) if elder_id is not None else None
    if elder is None and elder_code:
        elder = await find_elder(session, elder_code)
    reason: RejectReason | None = None
    if elder is None:
        reason = RejectReason.unknown_elder
    elif elder.archived_at is not None:
        reason = RejectReason.archived
    elif at > now + FUTURE_TOLERANCE:
        reason = RejectReason.future
    elif channel is VisitChannel.sms and responder is not None:
        owner = (await owners(session, elders=[elder]))[pk(elder)]
        if owner != responder.id:
            reason = RejectReason.not_assigned
    values: dict[str, Any] = {
        "elder_id": elder.id if elder is not None else None,
        "elder_code": (elder.code if elder is not None else (elder_code or ""))[:32],
        "visited_at": at,
        "local_date": schedule.local_date(at, timezone),
        "recorded_at": now,
        "mode": mode.value,
        "channel": channel.value,
        "responder_id": responder.id if responder is not None else None,
        "operator_id": operator_id,
        "device_id": device_id,
        "event_id": event_id,
        "sms_id": sms_id,
        "note": note[:500],
        "concern": concern,
    }
    visit_id: int | None = None
    if reason is None:
        inserted = await session.execute(
            insert(Visit)
            .values(status=VisitStatus.counted, **values)
            .on_conflict_do_nothing(
                index_elements=["elder_id", "local_date"],
                # A literal, as the partial index's own predicate (a bound value matches none).
                index_where=text("status = 'counted'"),
            )
            .returning(col(Visit.id))
        )
        visit_id = inserted.scalar()
        if visit_id is None:
            reason = RejectReason.same_day
    if visit_id is None:
        inserted = await session.execute(
            insert(Visit)
            .values(status=VisitStatus.rejected, reject_reason=reason, **values)
            .returning(col(Visit.id))
        )
        visit_id = inserted.scalar_one()
    visit = await session.get(Visit, visit_id)
    assert visit is not None
    alert_id: int | None = None
    if concern and elder is not None and elder.archived_at is None:
        alert_id = await _open_concern(
            session, elder, visit, urgent=urgent, now=now, respond_now=respond_now
        )
        visit.alert_id = alert_id
    log.info(
        "visit_recorded",
        visit=visit_id,
        elder=visit.elder_code,
        channel=channel.value,
        status=visit.status,
        reason=visit.reject_reason,
        concern=concern,
    )
    return VisitResult(visit=visit, elder=elder, alert_id=alert_id)


async def record_device_visit(
    session: AsyncSession,
    *,
    device_id: str,
    elder_id: int,
    event_id: int,
    data: dict[str, Any],
    visited_at: datetime | None,
    now: datetime,
    timezone: str,
) -> VisitResult:
    """A home hub's `visit` event (its visit button), stored by the gateway as `event_id`: a
    home visit unless `data["mode"]` says "phone"; `concern`, `urgent` and `note` as the SMS's.
    The visit's time is the device's `ts` when it sent one (a visit from a hub that was
    offline counts on its day), else now."""
    mode = VisitMode.phone if data.get("mode") == "phone" else VisitMode.home
    note = data.get("note")
    return await record_visit(
        session,
        channel=VisitChannel.device,
        now=now,
        timezone=timezone,
        elder_id=elder_id,
        visited_at=visited_at,
        mode=mode,
        device_id=device_id,
        event_id=event_id,
        note=note if isinstance(note, str) else "",
        concern=data.get("concern") is True,
        urgent=data.get("urgent") is True,
        respond_now=False,
    )


def _actor(visit: Visit) -> str:
    if visit.responder_id is not None:
        return f"responder:{visit.responder_id}"
    if visit.operator_id is not None:
        return f"operator:{visit.operator_id}"
    return f"device:{visit.device_id}"


async def _open_concern(
    session: AsyncSession,
    elder: Elder,
    visit: Visit,
    *,
    urgent: bool,
    now: datetime,
    respond_now: bool,
) -> int:
    decision = rules.RaiseAlert(CONCERN_KIND, rules.P2 if urgent else rules.P3)
    alert = await raise_or_join(
        session, elder, decision, visit.device_id, now, _actor(visit), respond_now=respond_now
    )
    await add_timeline(
        session,
        pk(alert),
        now,
        _actor(visit),
        "visit",
        visit_id=visit.id,
        mode=visit.mode,
        channel=visit.channel,
        note=visit.note,
        visited_at=visit.visited_at.isoformat(),
    )
    return pk(alert)


async def mark_major_change(
    session: AsyncSession,
    *,
    elder_id: int,
    note: str,
    operator_id: int | None,
    now: datetime,
) -> MajorChange:
    """A major change in the elder's life: a visit is due within the plan's hours (24 h)."""
    elder = await session.get(Elder, elder_id)
    if elder is None:
        raise LookupError(f"no elder {elder_id}")
    plan = (await effective_plans(session, village_ids={elder.village_id})).get(
        elder.village_id, schedule.VisitPlan()
    )
    change = MajorChange(
        elder_id=elder_id,
        marked_at=now,
        due_by=now + timedelta(hours=plan.major_change_hours),
        note=note[:500],
        operator_id=operator_id,
    )
    session.add(change)
    await session.flush()
    return change


async def elder_visits(session: AsyncSession, *, elder_id: int, limit: int = 50) -> list[Visit]:
    """The elder's visits, newest first, rejected ones included (the record)."""
    rows = await session.execute(
        select(Visit)
        .where(col(Visit.elder_id) == elder_id)
        .order_by(col(Visit.visited_at).desc(), col(Visit.id).desc())
        .limit(limit)
    )
    return list(rows.scalars())


# --- facts for the pure schedule --------------------------------------------------------------


def _facts(elder: Elder, owner: int | None, timezone: str) -> schedule.ElderFacts:
    archived = elder.archived_at
    return schedule.ElderFacts(
        elder_id=pk(elder),
        village_id=elder.village_id,
        categories=categories_of(elder),
        owner_id=owner,
        archived_on=schedule.local_date(archived, timezone) if archived is not None else None,
    )


async def _elders_in(
    session: AsyncSession, village_ids: set[int], *, archived_since: datetime | None
) -> list[Elder]:
    query = select(Elder).where(col(Elder.village_id).in_(village_ids))
    if archived_since is None:
        query = query.where(col(Elder.archived_at).is_(None))
    else:
        query = query.where(
            (col(Elder.archived_at).is_(None)) | (col(Elder.archived_at) >= archived_since)
        )
    return list((await session.execute(query.order_by(col(Elder.id)))).scalars())


def _elders_of(village_ids: set[int]) -> Any:
    """The ids of the villages' elders, as a subquery (10⁵ ids are not sent as parameters)."""
    return select(col(Elder.id)).where(col(Elder.village_id).in_(village_ids))


class _ElderRow(NamedTuple):
    id: int
    code: str
    name: str
    village_id: int
    archived_at: datetime | None
    flags: tuple[bool, ...]  # in `schedule.CATEGORIES` order


async def _elder_rows(
    session: AsyncSession, village_ids: set[int], *, archived_since: datetime
) -> list[_ElderRow]:
    """The villages' elders (not archived before `archived_since`) as plain rows: 10⁵ ORM
    objects took seconds to build for columns the figures only read."""
    flags = [getattr(Elder, name) for name in schedule.CATEGORIES]
    rows = await session.execute(
        select(
            col(Elder.id),
            col(Elder.code),
            col(Elder.name),
            col(Elder.village_id),
            col(Elder.archived_at),
            *flags,
        )
        .where(
            col(Elder.village_id).in_(village_ids),
            col(Elder.archived_at).is_(None) | (col(Elder.archived_at) >= archived_since),
        )
        .order_by(col(Elder.id))
    )
    return [_ElderRow(r[0], r[1], r[2], r[3], r[4], tuple(r[5:])) for r in rows]


async def _visit_facts(
    session: AsyncSession, village_ids: set[int], first: date, last: date
) -> list[schedule.VisitFact]:
    rows = await session.execute(
        select(
            col(Visit.elder_id),
            col(Visit.visited_at),
            col(Visit.local_date),
            col(Visit.status),
            col(Visit.reject_reason),
        ).where(
            col(Visit.elder_id).in_(_elders_of(village_ids)),
            col(Visit.local_date) >= first,
            col(Visit.local_date) <= last,
        )
    )
    return [
        schedule.VisitFact(e, at, day, status == VisitStatus.counted, why)
        for e, at, day, status, why in rows
        if e is not None
    ]


async def _change_facts(
    session: AsyncSession, village_ids: set[int], since: datetime, until: datetime
) -> list[schedule.MajorChangeFact]:
    rows = await session.execute(
        select(
            col(MajorChange.elder_id), col(MajorChange.marked_at), col(MajorChange.due_by)
        ).where(
            col(MajorChange.elder_id).in_(_elders_of(village_ids)),
            col(MajorChange.due_by) >= since,
            col(MajorChange.due_by) < until,
        )
    )
    return [schedule.MajorChangeFact(e, m, d) for e, m, d in rows]


# --- each elder now ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ElderVisitStatus:
    elder: Elder
    owner_id: int | None
    status: schedule.ElderStatus


async def elder_statuses(
    session: AsyncSession, *, village_ids: set[int], now: datetime, timezone: str
) -> list[ElderVisitStatus]:
    """Where each (not archived) elder of the villages stands now: tier, current period,
    visited or due by when, overdue since when, an open major change (`schedule.elder_status`)."""
    elders = await _elders_in(session, village_ids, archived_since=None)
    if not elders:
        return []
    owner_of = await owners(session, elders=elders)
    plans = await effective_plans(session, village_ids={e.village_id for e in elders})
    today = schedule.local_date(now, timezone)
    # The current and the previous period of the longest frequency (a quarter) start after this.
    first = today.replace(day=1) - timedelta(days=190)
    visits = await _visit_facts(session, village_ids, first, today + timedelta(days=1))
    changes = await _change_facts(
        session, village_ids, now - timedelta(days=30), now + timedelta(days=8)
    )
    visits_of: dict[int, list[schedule.VisitFact]] = {}
    for v in visits:
        visits_of.setdefault(v.elder_id, []).append(v)
    changes_of: dict[int, list[schedule.MajorChangeFact]] = {}
    for c in changes:
        changes_of.setdefault(c.elder_id, []).append(c)
    default = schedule.VisitPlan()
    return [
        ElderVisitStatus(
            elder=e,
            owner_id=owner_of[pk(e)],
            status=schedule.elder_status(
                _facts(e, owner_of[pk(e)], timezone),
                plans.get(e.village_id, default),
                visits_of.get(pk(e), []),
                changes_of.get(pk(e), []),
                now,
                timezone,
            ),
        )
        for e in elders
    ]


# --- the month's figures ----------------------------------------------------------------------


@dataclass(frozen=True)
class MissedVisit:
    elder_id: int
    elder_code: str
    elder_name: str
    village_id: int
    tier: str
    kind: str
    start: date
    end: date
    reason: str
    detail: str | None
    owner_id: int | None
    owner_name: str | None


@dataclass(frozen=True)
class RegionVisitRate:
    region_id: int
    code: str
    name: str
    level: str
    month: str
    due: int
    visited: int
    pending: int
    elders_due: int
    elders_all_visited: int
    rate: float | None
    missed_count: int
    missed: list[MissedVisit]  # a village's only (a township's are its villages')


async def month_figures(
    session: AsyncSession,
    *,
    region_ids: set[int],
    month: str,
    now: datetime,
    timezone: str,
) -> list[RegionVisitRate]:
    """The month's visit rate (visited ÷ due) for every region in `region_ids` that has elders
    due (villages, townships, county), with who was missed and why. Raises ValueError for a bad
    month. Only elders of the villages in `region_ids` count (an operator's scope)."""
    start, end = schedule.month_bounds(month, timezone)
    regions = list(
        (await session.execute(select(Region).where(col(Region.id).in_(region_ids)))).scalars()
    )
    villages = {pk(r) for r in regions if r.level == "village"}
    elders = await _elder_rows(session, villages, archived_since=start) if villages else []
    if not elders:
        return []
    village_of = {e.id: e.village_id for e in elders}
    owner_of = await _owners(session, village_of)
    plans = await effective_plans(session, village_ids=set(village_of.values()))
    first_day = start.date().replace(month=3 * ((start.month - 1) // 3) + 1) - timedelta(days=8)
    last_day = (end - timedelta(days=1)).date() + timedelta(days=31)
    visits = await _visit_facts(session, villages, first_day, last_day)
    changes = await _change_facts(
        session, villages, start - timedelta(days=1), end + timedelta(days=1)
    )
    combos: dict[tuple[bool, ...], frozenset[str]] = {}  # a few dozen for 10⁵ elders
    for e in elders:
        if e.flags not in combos:
            combos[e.flags] = frozenset(
                c for c, flag in zip(schedule.CATEGORIES, e.flags, strict=True) if flag
            )
    facts = [
        schedule.ElderFacts(
            elder_id=e.id,
            village_id=e.village_id,
            categories=combos[e.flags],
            owner_id=owner_of[e.id],
            archived_on=(
                schedule.local_date(e.archived_at, timezone) if e.archived_at is not None else None
            ),
        )
        for e in elders
    ]
    dues = schedule.month_dues(facts, plans, month, changes, timezone)
    outcomes = schedule.assess(dues, visits, owner_of, now, timezone)
    parents = {pk(r): r.parent_id for r in regions}
    rates = schedule.visit_rates(outcomes, village_of, parents, month)
    by_id = {pk(r): r for r in regions}
    elder_by_id = {e.id: e for e in elders}
    owner_ids = {o for o in owner_of.values() if o is not None}
    owner_names = dict(
        (
            await session.execute(
                select(col(Responder.id), col(Responder.name)).where(
                    col(Responder.id).in_(owner_ids)
                )
            )
        ).all()
    )
    out: list[RegionVisitRate] = []
    for rate in rates:
        region = by_id.get(rate.region_id)
        if region is None:
            continue
        missed = []
        for o in rate.missed:
            e = elder_by_id[o.due.elder_id]
            owner = owner_of[e.id]
            missed.append(
                MissedVisit(
                    elder_id=e.id,
                    elder_code=e.code,
                    elder_name=e.name,
                    village_id=e.village_id,
                    tier=o.due.tier,
                    kind=o.due.kind.value,
                    start=o.due.start,
                    end=o.due.end,
                    reason=o.reason or "",
                    detail=o.detail,
                    owner_id=owner,
                    owner_name=owner_names.get(owner) if owner is not None else None,
                )
            )
        out.append(
            RegionVisitRate(
                region_id=rate.region_id,
                code=region.code,
                name=region.name,
                level=region.level,
                month=month,
                due=rate.due,
                visited=rate.visited,
                pending=rate.pending,
                elders_due=rate.elders_due,
                elders_all_visited=rate.elders_all_visited,
                rate=rate.rate,
                missed_count=rate.missed_count,
                missed=missed,
            )
        )
    level_order = {"county": 0, "township": 1, "village": 2}
    out.sort(key=lambda r: (level_order.get(r.level, 3), r.code))
    return out


# --- where elders stand now, from one query per table (the overdue tab, the digest) -----------


@dataclass(frozen=True)
class ElderNow:
    """`ElderVisitStatus` from plain rows: what the overdue tab and the weekly digest read."""

    elder_id: int
    code: str
    name: str
    village_id: int
    owner_id: int | None
    status: schedule.ElderStatus


async def _last_counted(
    session: AsyncSession, village_ids: set[int]
) -> dict[int, schedule.VisitFact]:
    """Each elder's latest counted visit, one row per elder (DISTINCT ON): the status needs
    only that one (overdue is "none since the previous period began")."""
    rows = await session.execute(
        select(col(Visit.elder_id), col(Visit.visited_at), col(Visit.local_date))
        .ext(distinct_on(col(Visit.elder_id)))
        .where(
            col(Visit.elder_id).in_(_elders_of(village_ids)),
            col(Visit.status) == VisitStatus.counted,
        )
        .order_by(col(Visit.elder_id), col(Visit.visited_at).desc())
    )
    return {e: schedule.VisitFact(e, at, day) for e, at, day in rows if e is not None}


async def elders_now(
    session: AsyncSession, *, village_ids: set[int], now: datetime, timezone: str
) -> list[ElderNow]:
    """Where each (not archived) elder of the villages stands now, as `elder_statuses` says,
    from plain rows and each elder's last counted visit (county-wide, `elder_statuses` built
    10⁵ ORM elders and half a year of visits)."""
    if not village_ids:
        return []
    elders = [
        e
        for e in await _elder_rows(session, village_ids, archived_since=now)
        if e.archived_at is None
    ]
    if not elders:
        return []
    village_of = {e.id: e.village_id for e in elders}
    owner_of = await _owners(session, village_of)
    plans = await effective_plans(session, village_ids=set(village_of.values()))
    last = await _last_counted(session, village_ids)
    changes_of: dict[int, list[schedule.MajorChangeFact]] = {}
    for c in await _change_facts(
        session, village_ids, now - timedelta(days=30), now + timedelta(days=8)
    ):
        changes_of.setdefault(c.elder_id, []).append(c)
    default = schedule.VisitPlan()
    combos: dict[tuple[bool, ...], frozenset[str]] = {}  # a few dozen for 10⁵ elders
    out: list[ElderNow] = []
    for e in elders:
        if e.flags not in combos:
            combos[e.flags] = frozenset(
                c for c, flag in zip(schedule.CATEGORIES, e.flags, strict=True) if flag
            )
        facts = schedule.ElderFacts(
            elder_id=e.id,
            village_id=e.village_id,
            categories=combos[e.flags],
            owner_id=owner_of[e.id],
        )
        seen = last.get(e.id)
        status = schedule.elder_status(
            facts,
            plans.get(e.village_id, default),
            [seen] if seen is not None else [],
            changes_of.get(e.id, []),
            now,
            timezone,
        )
        out.append(ElderNow(e.id, e.code, e.name, e.village_id, owner_of[e.id], status))
    return out


@dataclass(frozen=True)
class OverdueVisit:
    elder_id: int
    elder_code: str
    elder_name: str
    village_id: int
    village_name: str
    tier: str
    owner_id: int | None
    owner_name: str | None
    last_visit: date | None
    due_date: date  # the last day the missed visit could be made
    days_overdue: int
    major_change: bool  # a major change's 24-hour visit is past its deadline


def _overdue_due(status: schedule.ElderStatus, timezone: str) -> tuple[date, bool] | None:
    """The day the overdue visit was due by, and whether it is a major change's."""
    dues: list[tuple[date, bool]] = []
    if status.overdue_since is not None:
        dues.append((status.overdue_since - timedelta(days=1), False))
    if status.major_change_overdue and status.major_change_due_by is not None:
        dues.append((schedule.local_date(status.major_change_due_by, timezone), True))
    return min(dues) if dues else None


async def overdue_visits(
    session: AsyncSession, *, village_ids: set[int], now: datetime, timezone: str
) -> list[OverdueVisit]:
    """The overdue elders of the villages (the operators' 逾期探访 tab), longest overdue first."""
    today = schedule.local_date(now, timezone)
    late = [
        (row, due)
        for row in await elders_now(session, village_ids=village_ids, now=now, timezone=timezone)
        if (due := _overdue_due(row.status, timezone)) is not None
    ]
    if not late:
        return []
    names = dict(
        (
            await session.execute(
                select(col(Region.id), col(Region.name)).where(
                    col(Region.id).in_({r.village_id for r, _ in late})
                )
            )
        ).all()
    )
    aides = dict(
        (
            await session.execute(
                select(col(Responder.id), col(Responder.name)).where(
                    col(Responder.id).in_({r.owner_id for r, _ in late if r.owner_id})
                )
            )
        ).all()
    )
    out = [
        OverdueVisit(
            elder_id=row.elder_id,
            elder_code=row.code,
            elder_name=row.name,
            village_id=row.village_id,
            village_name=names.get(row.village_id, ""),
            tier=row.status.tier,
            owner_id=row.owner_id,
            owner_name=aides.get(row.owner_id) if row.owner_id is not None else None,
            last_visit=row.status.last_visit,
            due_date=day,
            days_overdue=max(0, (today - day).days),
            major_change=major,
        )
        for row, (day, major) in late
    ]
    out.sort(key=lambda o: (o.due_date, o.elder_code))
    return out


# --- the weekly digest ------------------------------------------------------------------------

# Below the outbox's default (3) and every call-out: a digest is claimed after everything else.
DIGEST_PRIORITY = 5
DIGEST_PURPOSE = "visit_digest"


@dataclass
class DigestRun:
    """What one run of `queue_digests` did, per aide (responder id)."""

    week: str
    queued: dict[int, str]  # the text written (or, dry, that would be)
    already: list[int]  # this week's digest was written before
    deferred: list[int]  # the number is near its daily limit: the reserve is kept, try later


async def queue_digests(
    session: AsyncSession,
    *,
    now: datetime,
    timezone: str,
    daily_limit: int,
    dry_run: bool = False,
) -> DigestRun:
    """Write each aide's digest of the visits due this week into the SMS outbox, once per aide
    and ISO week (the idempotency key), at `DIGEST_PRIORITY`. An aide with nothing due gets
    none. The reserve: an aide whose number has had the warning share of the daily limit
    (`outbox.daily_warn_at`, 80 %: 40 of 50) in the last 24 h gets no digest now — the rest is
    kept for call-outs — and is tried again at the next run."""
    week = digest.iso_week(now, timezone)
    end = digest.week_end(now, timezone)
    villages = {
        v
        for v in (
            await session.execute(select(col(Region.id)).where(col(Region.level) == "village"))
        ).scalars()
        if v is not None
    }
    lines: dict[int, list[digest.DigestLine]] = {}
    for row in await elders_now(session, village_ids=villages, now=now, timezone=timezone):
        if row.owner_id is not None and digest.due_this_week(row.status, end):
            lines.setdefault(row.owner_id, []).append(
                digest.DigestLine(row.code, row.name, row.status.overdue, row.status.due_by)
            )
    run = DigestRun(week=week, queued={}, already=[], deferred=[])
    if not lines:
        return run
    aides = list(
        (await session.execute(select(Responder).where(col(Responder.id).in_(lines)))).scalars()
    )
    sent = await outbox.sent_in_last_day(session, {a.phone for a in aides}, now)
    per_phone: dict[str, int] = {}
    for (phone, _), n in sent.items():
        per_phone[phone] = per_phone.get(phone, 0) + n
    reserve_from = outbox.daily_warn_at(daily_limit)
    for aide in sorted(aides, key=pk):
        key = digest.digest_key(pk(aide), week)
        if await _digest_written(session, key):
            run.already.append(pk(aide))
            continue
        if per_phone.get(aide.phone, 0) >= reserve_from:
            run.deferred.append(pk(aide))
            log.info("visit_digest_deferred", responder=aide.id, week=week)
            continue
        text = digest.digest_text(lines[pk(aide)], aide.lang)
        if not dry_run:
            await outbox.queue_sms(
                session,
                to=aide.phone,
                body=text,
                key=key,
                now=now,
                responder_id=pk(aide),
                purpose=DIGEST_PURPOSE,
                priority=DIGEST_PRIORITY,
            )
        run.queued[pk(aide)] = text
    log.info(
        "visit_digests",
        week=week,
        queued=len(run.queued),
        already=len(run.already),
        deferred=len(run.deferred),
        dry_run=dry_run,
    )
    return run


async def _digest_written(session: AsyncSession, key: str) -> bool:
    found = await session.execute(
        select(col(SmsMessage.id)).where(col(SmsMessage.idempotency_key) == key)
    )
    return found.first() is not None
