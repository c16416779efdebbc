"""The registry's records in the database: the one create-or-update (`Upserts`) every write
uses, the centre's duty responder kept in step with its centre, the regions as the import and
the export look them up, and the keyword-only functions the API calls (`registry/views.py`).
The import's writing step, a file's sheets into the database, is `registry/apply.py`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import String, cast, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service.models import OPEN_STATUSES, Alert, DispatchAttempt, RuleTimer
from anxin.models import Device, Elder, OperatorUser, Region, Responder, ServiceCentre, pk
from anxin.schemas import RegionLevel, ResponderKind
from registry.columns import CENTRE_SETUP_MINUTES, centre_responder
from registry.report import SheetReport
from registry.schemas import RegionView


class Regions:
    """Every region, by id, code and name (regions are few: thousands in a city)."""

    def __init__(self, rows: Iterable[Region]) -> None:
        self.by_id: dict[int, RegionView] = {}
        self.by_code: dict[str, RegionView] = {}
        for r in rows:
            self.add(RegionView.of(r))

    @classmethod
    async def load(cls, session: AsyncSession) -> Regions:
        return cls((await session.execute(select(Region))).scalars())

    def village_candidates(self, text: str, township: str) -> list[RegionView]:
        """The villages `text` may name: by code, else by name (`柳树坪` or `柳树坪村`) narrowed
        by the township when one is given."""
        by_code = self.by_code.get(text)
        if by_code is not None:
            return [by_code] if by_code.level == RegionLevel.village else []
        names = {text, text.removesuffix("村"), text + "村"}
        found = [
            r for r in self.by_id.values() if r.level == RegionLevel.village and r.name in names
        ]
        if township:
            found = [c for c in found if self._township_matches(c, township)]
        return found

    def find_village(self, village: str, township: str) -> tuple[RegionView | None, str]:
        """The one village `village` names, else None and why (not_village, ambiguous, unknown)."""
        candidates = self.village_candidates(village, township)
        if len(candidates) == 1:
            return candidates[0], ""
        if village in self.by_code:
            return None, "not_village"
        return None, "ambiguous" if candidates else "unknown"

    def add(self, view: RegionView) -> None:
        self.by_id[view.id] = view
        self.by_code[view.code] = view

    def _township_matches(self, village: RegionView, township: str) -> bool:
        parent = self.by_id.get(village.parent_id) if village.parent_id else None
        if parent is None:
            return False
        return township in (parent.code, parent.name) or parent.name.rstrip(
            "镇乡"
        ) == township.rstrip("镇乡")

    def township_of(self, region_id: int) -> RegionView | None:
        region = self.by_id.get(region_id)
        return self.by_id.get(region.parent_id) if region and region.parent_id else None


def _differs(row: Any, values: dict[str, Any]) -> bool:
    return any(getattr(row, name) != value for name, value in values.items())


class Upserts:
    """Create, update or leave as it is: the one decision made for every row of every sheet (and
    a centre's duty responder), counted in the sheet's report.

    `at_once`: each row is written as it is decided and `put` returns it (regions and centres,
    whose ids the next rows need). Otherwise rows are collected and `write` stores them in two
    statements, one INSERT and one UPDATE by primary key (city-sized sheets of elders, devices
    and aides)."""

    def __init__(
        self,
        session: AsyncSession,
        model: Any,
        report: SheetReport | None = None,
        *,
        defaults: dict[str, Any] | None = None,
        at_once: bool = False,
    ) -> None:
        self.session, self.model, self.report = session, model, report
        self.defaults = defaults or {}
        self.at_once = at_once
        self.inserts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []

    def _count(self, what: str) -> None:
        if self.report is not None:
            setattr(self.report, what, getattr(self.report, what) + 1)

    async def put(self, existing: Any | None, values: dict[str, Any], **key: Any) -> Any:
        """Store `values` on `existing`, or a new row of them with its natural `key`."""
        if existing is None:
            self._count("created")
            fields = {**self.defaults, **values, **key}
            if not self.at_once:
                self.inserts.append(fields)
                return None
            row = self.model(**fields)
            self.session.add(row)
            await self.session.flush()
            return row
        if not _differs(existing, values):
            self._count("unchanged")
        elif self.at_once:
            self._count("updated")
            for name, value in values.items():
                setattr(existing, name, value)
        else:
            self._count("updated")
            self.updates.append({"id": existing.id, **values})
        return existing

    async def write(self) -> None:
        if self.inserts:
            await self.session.execute(self.model.__table__.insert(), self.inserts)
        if self.updates:
            # ORM bulk UPDATE by primary key: one statement, many parameter sets.
            await self.session.execute(update(self.model), self.updates)


async def sync_centre_responder(*, session: AsyncSession, centre: ServiceCentre) -> None:
    """Keep the responder through which the dispatcher reaches a centre in step with it: the
    centre's duty phone and place. Made once as "<centre>值班"; afterwards its name is left as
    the operators set it. The API and the import both call this."""
    responder = (
        await session.execute(select(Responder).where(col(Responder.centre_id) == centre.id))
    ).scalar_one_or_none()
    name, kind = centre_responder(centre.name, centre.level)
    values: dict[str, Any] = {
        "kind": kind,
        "phone": centre.duty_phone,
        "lat": centre.lat,
        "lon": centre.lon,
    }
    if responder is None:
        values["name"] = name
    upserts = Upserts(
        session,
        Responder,
        defaults={"travel_mode": "car", "setup_minutes": CENTRE_SETUP_MINUTES},
        at_once=True,
    )
    await upserts.put(responder, values, centre_id=centre.id)


# --- the records, as the API reads and changes them -------------------------------------------
# `get_*` answer None for a row that is not there or outside `region_ids` (the view says 404
# to both: outside the operator's region looks exactly like not there).


async def taken(
    *, session: AsyncSession, model: Any, field: str, value: Any, own_id: Any = None
) -> bool:
    """Whether another row of `model` already has this unique value."""
    query = select(func.count()).select_from(model).where(getattr(model, field) == value)
    if own_id is not None:
        query = query.where(model.id != own_id)
    return bool(await session.scalar(query))


async def get_region(
    *, session: AsyncSession, region_id: int | None, region_ids: set[int], lock: bool = False
) -> Region | None:
    region = (
        await session.get(Region, region_id, with_for_update=lock)
        if region_id is not None
        else None
    )
    return region if region is not None and region.id in region_ids else None


async def region_name(*, session: AsyncSession, region_id: int) -> str:
    region = await session.get(Region, region_id)
    return region.name if region else ""


async def list_regions(*, session: AsyncSession, region_ids: set[int]) -> list[tuple[Region, int]]:
    """The regions by code, each with its number of current elders."""
    counted = await session.execute(
        select(col(Elder.village_id), func.count())
        .where(col(Elder.village_id).in_(region_ids), col(Elder.archived_at).is_(None))
        .group_by(col(Elder.village_id))
    )
    counts = {village_id: int(n) for village_id, n in counted}
    regions = await session.execute(
        select(Region).where(col(Region.id).in_(region_ids)).order_by(col(Region.code))
    )
    return [(r, counts.get(pk(r), 0)) for r in regions.scalars()]


# What keeps a region from being deleted, and how a person is told.
REGION_HOLDERS: Final[list[tuple[Any, Any, str, str]]] = [
    (Region, Region.parent_id, "个下级区域", "child regions"),
    (Elder, Elder.village_id, "位老人（含已归档）", "elders (archived ones too)"),
    (ServiceCentre, ServiceCentre.region_id, "个服务中心", "service centres"),
    (Responder, Responder.village_id, "位助老员", "aides"),
    (OperatorUser, OperatorUser.region_id, "个操作员账号", "operator accounts"),
    (Alert, Alert.village_id, "条警报记录", "alerts on record"),
]


async def region_holdings(*, session: AsyncSession, region_id: int) -> list[tuple[int, str, str]]:
    """What is still in a region (count, Chinese, English), of REGION_HOLDERS."""
    left: list[tuple[int, str, str]] = []
    for model, column, zh, en in REGION_HOLDERS:
        n = await session.scalar(
            select(func.count()).select_from(model).where(col(column) == region_id)
        )
        if n:
            left.append((int(n), zh, en))
    return left


async def delete_region(*, session: AsyncSession, region: Region) -> bool:
    """Delete a region; False (nothing deleted) when a row still refers to it."""
    try:
        # A savepoint: a reference added since the counts (or a table not counted) leaves the
        # transaction usable, not a failed commit after the answer.
        async with session.begin_nested():
            await session.delete(region)
    except IntegrityError:
        return False
    return True


async def get_centre(
    *, session: AsyncSession, centre_id: int, region_ids: set[int]
) -> ServiceCentre | None:
    centre = await session.get(ServiceCentre, centre_id)
    return centre if centre is not None and centre.region_id in region_ids else None


async def list_centres(
    *, session: AsyncSession, region_ids: set[int]
) -> list[tuple[ServiceCentre, str]]:
    """The centres with their region's name."""
    rows = await session.execute(
        select(ServiceCentre, col(Region.name))
        .join(Region, col(Region.id) == col(ServiceCentre.region_id))
        .where(col(ServiceCentre.region_id).in_(region_ids))
        .order_by(col(ServiceCentre.id))
    )
    return [(c, name) for c, name in rows]


async def centre_responder_id(*, session: AsyncSession, centre_id: int | None) -> int | None:
    if centre_id is None:
        return None
    found = await session.scalar(
        select(col(Responder.id)).where(col(Responder.centre_id) == centre_id)
    )
    return int(found) if found is not None else None


async def get_elder(
    *, session: AsyncSession, elder_id: int, region_ids: set[int], lock: bool = False
) -> Elder | None:
    elder = await session.get(Elder, elder_id, with_for_update=lock)
    return elder if elder is not None and elder.village_id in region_ids else None


async def list_elders(
    *,
    session: AsyncSession,
    region_ids: set[int],
    q: str = "",
    village_id: int | None = None,
    category: str | None = None,
    archived: bool = False,
    limit: int,
    offset: int = 0,
) -> list[tuple[Elder, str]]:
    """Elders by code with their village's name; `q` matches name or code, a village name, or
    (a phone-in's caller) part of a guardian's number;
    `category` is one of `registry.columns.ELDER_FLAGS` the elder has."""
    archived_at = col(Elder.archived_at)
    query = (
        select(Elder, col(Region.name))
        .join(Region, col(Region.id) == col(Elder.village_id))
        .where(col(Elder.village_id).in_(region_ids))
        .where(archived_at.is_not(None) if archived else archived_at.is_(None))
    )
    if village_id is not None:
        query = query.where(col(Elder.village_id) == village_id)
    if category is not None:
        query = query.where(col(getattr(Elder, category)).is_(True))
    if q:
        # The search text is a bound parameter, and its own % and _ are literal characters.
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                col(Elder.name).ilike(like, escape="\\"),
                col(Elder.code).ilike(like, escape="\\"),
                col(Region.name) == q,
                cast(col(Elder.guardian_phones), String).like(like, escape="\\"),
            )
        )
    rows = await session.execute(query.order_by(col(Elder.code)).limit(limit).offset(offset))
    return [(e, village) for e, village in rows]


async def devices_of(*, session: AsyncSession, elder_ids: list[int]) -> dict[int, list[Device]]:
    """The current devices of each elder."""
    devices = await session.execute(
        select(Device)
        .where(col(Device.elder_id).in_(elder_ids), col(Device.archived_at).is_(None))
        .order_by(col(Device.id))
    )
    by_elder: dict[int, list[Device]] = {}
    for device in devices.scalars():
        by_elder.setdefault(device.elder_id, []).append(device)
    return by_elder


async def open_alert_counts(*, session: AsyncSession, elder_ids: list[int]) -> dict[int, int]:
    counted = await session.execute(
        select(col(Alert.elder_id), func.count())
        .where(col(Alert.elder_id).in_(elder_ids), col(Alert.status).in_(OPEN_STATUSES))
        .group_by(col(Alert.elder_id))
    )
    return {elder_id: int(n) for elder_id, n in counted}


@dataclass
class ElderArchive:
    devices: list[str]  # the devices archived with the elder
    open_alerts: list[str]  # codes of the elder's open alerts: then nothing is archived


async def archive_elder(*, session: AsyncSession, elder: Elder, now: datetime) -> ElderArchive:
    """Archive an elder with their devices and cancel their pending rule timers. With an alert
    of theirs open the caller must refuse (and its transaction roll back the devices)."""
    # Devices first: from here on the gateway rejects them, so no alert is raised while the
    # open alerts are counted.
    archived = await session.execute(
        update(Device)
        .where(col(Device.elder_id) == elder.id, col(Device.archived_at).is_(None))
        .values(enabled=False, archived_at=now)
        .returning(col(Device.id))
    )
    device_ids = sorted(archived.scalars())
    open_ids = await session.execute(
        select(col(Alert.id)).where(
            col(Alert.elder_id) == elder.id, col(Alert.status).in_(OPEN_STATUSES)
        )
    )
    open_codes = [f"A{alert_id}" for alert_id in open_ids.scalars()]
    if open_codes:
        return ElderArchive(device_ids, open_codes)
    await session.execute(
        update(RuleTimer)
        .where(col(RuleTimer.elder_id) == elder.id, col(RuleTimer.fired_at).is_(None))
        .values(cancelled=True)
    )
    elder.archived_at = now
    return ElderArchive(device_ids, [])


TROUBLE_KINDS: Final = ("offline", "low_battery", "tamper", "power_lost")


async def get_device(
    *, session: AsyncSession, device_id: str, region_ids: set[int]
) -> tuple[Device, Elder] | None:
    """A device (locked for update) and its elder."""
    device = await session.get(Device, device_id, with_for_update=True)
    owner = await session.get(Elder, device.elder_id) if device else None
    if device is None or owner is None or owner.village_id not in region_ids:
        return None
    return device, owner


async def list_devices(
    *,
    session: AsyncSession,
    region_ids: set[int],
    elder_id: int | None = None,
    archived: bool = False,
    limit: int,
) -> list[tuple[Device, str, str]]:
    """Devices by id with their elder's and village's names."""
    archived_at = col(Device.archived_at)
    query = (
        select(Device, col(Elder.name), col(Region.name))
        .join(Elder, col(Elder.id) == col(Device.elder_id))
        .join(Region, col(Region.id) == col(Elder.village_id))
        .where(col(Elder.village_id).in_(region_ids))
        .where(archived_at.is_not(None) if archived else archived_at.is_(None))
    )
    if elder_id is not None:
        query = query.where(col(Device.elder_id) == elder_id)
    rows = await session.execute(query.order_by(col(Device.id)).limit(limit))
    return [(d, elder, village) for d, elder, village in rows]


async def trouble_of(*, session: AsyncSession, device_ids: list[str]) -> dict[str, list[str]]:
    """Open device-trouble alerts (offline, low battery, tamper, power lost) per device."""
    rows = await session.execute(
        select(col(Alert.device_id), col(Alert.kind)).where(
            col(Alert.device_id).in_(device_ids),
            col(Alert.kind).in_(TROUBLE_KINDS),
            col(Alert.status).in_(OPEN_STATUSES),
        )
    )
    out: dict[str, list[str]] = {}
    for device_id, kind in rows:
        if device_id is not None:
            out.setdefault(device_id, []).append(kind)
    return out


def _responders_in(region_ids: set[int]) -> Any:
    """Aides of the region's villages and the duty responders of its centres."""
    centre_ids = select(col(ServiceCentre.id)).where(col(ServiceCentre.region_id).in_(region_ids))
    return or_(col(Responder.village_id).in_(region_ids), col(Responder.centre_id).in_(centre_ids))


async def get_responder(
    *, session: AsyncSession, responder_id: int, region_ids: set[int]
) -> Responder | None:
    found = await session.execute(
        select(Responder).where(col(Responder.id) == responder_id, _responders_in(region_ids))
    )
    return found.scalars().first()


async def list_responders(
    *, session: AsyncSession, region_ids: set[int]
) -> list[tuple[Responder, str]]:
    """Responders by kind with their place: the aide's village or the centre's name."""
    rows = await session.execute(
        select(Responder, col(Region.name), col(ServiceCentre.name))
        .outerjoin(Region, col(Region.id) == col(Responder.village_id))
        .outerjoin(ServiceCentre, col(ServiceCentre.id) == col(Responder.centre_id))
        .where(_responders_in(region_ids))
        .order_by(col(Responder.kind), col(Responder.id))
    )
    return [(r, village or centre or "") for r, village, centre in rows]


async def dispatches_since(
    *, session: AsyncSession, responder_ids: list[int], since: datetime
) -> dict[int, tuple[int, int]]:
    """Per responder: how many times asked since `since`, and how many of those accepted."""
    counts = await session.execute(
        select(
            col(DispatchAttempt.responder_id),
            func.count(),
            func.count().filter(col(DispatchAttempt.answer) == "accepted"),
        )
        .where(
            col(DispatchAttempt.asked_at) >= since,
            col(DispatchAttempt.responder_id).in_(responder_ids),
        )
        .group_by(col(DispatchAttempt.responder_id))
    )
    return {rid: (int(n), int(accepted)) for rid, n, accepted in counts}


def local_midnight(now: datetime, timezone: str) -> datetime:
    """The start of today in the deployment's time zone ("today's dispatches")."""
    local = now.astimezone(ZoneInfo(timezone))
    return datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)


@dataclass
class MapRows:
    villages: list[Region]
    elders: list[Elder]
    aides: list[Responder]
    centres: list[ServiceCentre]


async def map_rows(*, session: AsyncSession, region_ids: set[int]) -> MapRows:
    """Villages with a position, current elders, aides and centres of the region."""
    villages = await session.execute(
        select(Region).where(
            col(Region.id).in_(region_ids),
            col(Region.level) == "village",
            col(Region.lat).is_not(None),
        )
    )
    elders = await session.execute(
        select(Elder).where(col(Elder.village_id).in_(region_ids), col(Elder.archived_at).is_(None))
    )
    responders = await session.execute(select(Responder).where(_responders_in(region_ids)))
    centres = await session.execute(
        select(ServiceCentre).where(col(ServiceCentre.region_id).in_(region_ids))
    )
    return MapRows(
        villages=list(villages.scalars()),
        elders=list(elders.scalars()),
        aides=[r for r in responders.scalars() if r.kind == ResponderKind.aide],
        centres=list(centres.scalars()),
    )
