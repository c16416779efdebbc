"""The registry API (CONTRACT.md §4): regions, centres, elders, devices, responders and the
map's points. Every list and every write is scoped to the operator's
region and below; every read of an elder's record and every change is in the audit log.

Validation is in the input models (types, ranges, E.164 phones) and in `_check_*` (references
that must exist inside the operator's scope, unique codes and numbers).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Body,
    File,
    HTTPException,
    Path,
    Query,
    Request,
    UploadFile,
    status,
)
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from anxin import auth
from anxin.models import Device, Elder, Region, Responder, ServiceCentre, pk
from anxin.schemas import DEVICE_ID_RE, OperatorRole, RegionLevel, ResponderKind
from anxin.web import (
    CurrentOperator,
    Operator,
    RowId,
    Session,
    Text,
    audit,
    context,
    filters_given,
    invalid,
)
from registry import service
from registry.apply import apply_sheets
from registry.columns import CATEGORY_WORDS, RegistryKind
from registry.files import RegistryFileError, parse_file
from registry.schemas import (
    CentreIn,
    CentreOut,
    DeviceCreate,
    DeviceIn,
    DeviceOut,
    ElderIn,
    ElderOut,
    MapOut,
    MapPoint,
    RegionIn,
    RegionOut,
    ResponderIn,
    ResponderOut,
    from_row,
)
from registry.scope import keep_to_scope

router = APIRouter(prefix="/api", tags=["registry"])


# --- scope and permissions ------------------------------------------------------------------


def _forbidden(message: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, message)


def _require_editor(operator: Operator) -> None:
    if not operator.can_act:
        raise _forbidden("只读账号 / viewers cannot change the registry")


def _is_region_admin(operator: Operator) -> bool:
    return operator.user.role in (OperatorRole.admin, OperatorRole.county_operator)


def _require_region_admin(operator: Operator) -> None:
    """Regions and centres shape the whole network: only admins and county operators."""
    if not _is_region_admin(operator):
        raise _forbidden("仅县级管理员可修改 / only county operators and admins may change this")


def _conflict(message: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, message)


def _not_found(what: str) -> HTTPException:
    # Outside the operator's region looks exactly like not there.
    return HTTPException(status.HTTP_404_NOT_FOUND, f"没有这个{what} / no such {what}")


def _invalid(field: str, message: str) -> HTTPException:
    return invalid("body", field, message)


def _now(request: Request) -> datetime:
    return context(request).clock.now()


def _audit_list(
    session: AsyncSession,
    operator: Operator,
    request: Request,
    what: str,
    count: int,
    filters: dict[str, Any] | None = None,
) -> None:
    """A list read on the record too (elders' and aides' records are personal data, PIPL): what
    was listed, how many rows, and the filters it was asked with where the list has filters."""
    given = {} if filters is None else {"filters": filters}
    audit(session, operator, _now(request), f"list_{what}s", what, "", count=count, **given)


async def _region_in_scope(
    session: AsyncSession, operator: Operator, region_id: int | None, field: str, *levels: str
) -> Region:
    region = await service.get_region(
        session=session, region_id=region_id, region_ids=operator.region_ids
    )
    if region is None:
        raise _invalid(field, "不在您的辖区内 / not in your region")
    if levels and region.level not in levels:
        raise _invalid(field, f"应为{'/'.join(levels)} / must be a {' or '.join(levels)}")
    return region


async def _taken(
    session: AsyncSession, model: Any, field: str, value: Any, own_id: Any = None
) -> bool:
    return await service.taken(
        session=session, model=model, field=field, value=value, own_id=own_id
    )


# --- regions ----------------------------------------------------------------------------------


PARENT_LEVEL: dict[str, str] = {
    RegionLevel.township: RegionLevel.county,
    RegionLevel.village: RegionLevel.township,
}


@router.get("/regions", response_model=list[RegionOut])
async def list_regions(
    session: Session, operator: CurrentOperator, request: Request
) -> list[RegionOut]:
    rows = await service.list_regions(session=session, region_ids=operator.region_ids)
    out = [from_row(RegionOut, r, elders=elders) for r, elders in rows]
    _audit_list(session, operator, request, "region", len(out))
    return out


async def _check_region(
    session: AsyncSession, operator: Operator, body: RegionIn, own_id: int | None
) -> None:
    await _region_in_scope(session, operator, body.parent_id, "parent_id", PARENT_LEVEL[body.level])
    if await _taken(session, Region, "code", body.code, own_id):
        raise _invalid("code", "编码已存在 / this code is taken")


@router.post("/regions", response_model=RegionOut, status_code=201)
async def create_region(
    body: RegionIn, session: Session, operator: CurrentOperator, request: Request
) -> RegionOut:
    _require_region_admin(operator)
    await _check_region(session, operator, body, None)
    region = Region(**body.model_dump(), circuity=1.4, ladder={})
    session.add(region)
    await session.flush()
    audit(session, operator, _now(request), "create_region", "region", region.id)
    return from_row(RegionOut, region)


@router.put("/regions/{region_id}", response_model=RegionOut)
async def update_region(
    region_id: RowId, body: RegionIn, session: Session, operator: CurrentOperator, request: Request
) -> RegionOut:
    _require_region_admin(operator)
    region = await service.get_region(
        session=session, region_id=region_id, region_ids=operator.region_ids
    )
    if region is None or region.level == "county":
        raise _not_found("地区 region")
    if body.level != region.level:
        raise _invalid("level", "不能修改级别 / the level cannot change")
    await _check_region(session, operator, body, region_id)
    if body.parent_id == region_id:
        raise _invalid("parent_id", "不能是自己 / cannot be its own parent")
    for key, value in body.model_dump().items():
        setattr(region, key, value)
    audit(session, operator, _now(request), "update_region", "region", region_id)
    return from_row(RegionOut, region)


@router.delete(
    "/regions/{region_id}",
    status_code=204,
    responses={409: {"description": "the region still has children, elders or history"}},
)
async def delete_region(
    region_id: RowId, session: Session, operator: CurrentOperator, request: Request
) -> None:
    """Delete an empty township or village (county operators and admins). A region that still
    has child regions, elders (archived too), a centre, aides, operator accounts or alerts on
    record is refused with 409 and what is left in it: the history that names it stays whole."""
    _require_region_admin(operator)
    region = await service.get_region(
        session=session, region_id=region_id, region_ids=operator.region_ids, lock=True
    )
    if region is None or region.level == "county":
        raise _not_found("地区 region")
    left = await service.region_holdings(session=session, region_id=region_id)
    if left:
        raise _conflict(
            f"“{region.name}”下还有"
            + "、".join(f"{n}{zh}" for n, zh, _ in left)
            + "，不能删除 / the region still has "
            + ", ".join(f"{n} {en}" for n, _, en in left)
            + ": it cannot be deleted"
        )
    code, name = region.code, region.name
    if not await service.delete_region(session=session, region=region):
        raise _conflict(
            f"“{name}”仍被其他记录引用，不能删除 / the region is still referred to: "
            "it cannot be deleted"
        )
    audit(
        session, operator, _now(request), "delete_region", "region", region_id, code=code, name=name
    )


# --- centres ----------------------------------------------------------------------------------


@router.get("/centres", response_model=list[CentreOut])
async def list_centres(
    session: Session, operator: CurrentOperator, request: Request
) -> list[CentreOut]:
    rows = await service.list_centres(session=session, region_ids=operator.region_ids)
    out = [from_row(CentreOut, c, region=name) for c, name in rows]
    _audit_list(session, operator, request, "centre", len(out))
    return out


async def _check_centre(
    session: AsyncSession, operator: Operator, body: CentreIn, own_id: int | None
) -> Region:
    region = await _region_in_scope(
        session, operator, body.region_id, "region_id", "township", "county"
    )
    own_responder = await service.centre_responder_id(session=session, centre_id=own_id)
    if await _taken(session, Responder, "phone", body.duty_phone, own_responder):
        raise _invalid("duty_phone", "号码已被使用 / this number is already registered")
    return region


@router.post("/centres", response_model=CentreOut, status_code=201)
async def create_centre(
    body: CentreIn, session: Session, operator: CurrentOperator, request: Request
) -> CentreOut:
    _require_region_admin(operator)
    region = await _check_centre(session, operator, body, None)
    centre = ServiceCentre(**body.model_dump(), level=region.level)
    session.add(centre)
    await session.flush()
    await service.sync_centre_responder(session=session, centre=centre)
    audit(session, operator, _now(request), "create_centre", "centre", centre.id)
    return from_row(CentreOut, centre, region=region.name)


@router.put("/centres/{centre_id}", response_model=CentreOut)
async def update_centre(
    centre_id: RowId, body: CentreIn, session: Session, operator: CurrentOperator, request: Request
) -> CentreOut:
    _require_region_admin(operator)
    centre = await service.get_centre(
        session=session, centre_id=centre_id, region_ids=operator.region_ids
    )
    if centre is None:
        raise _not_found("服务中心 centre")
    region = await _check_centre(session, operator, body, centre_id)
    for key, value in body.model_dump().items():
        setattr(centre, key, value)
    centre.level = region.level
    await service.sync_centre_responder(session=session, centre=centre)
    audit(session, operator, _now(request), "update_centre", "centre", centre_id)
    return from_row(CentreOut, centre, region=region.name)


# --- elders -----------------------------------------------------------------------------------


@router.get("/elders", response_model=list[ElderOut])
async def list_elders(
    session: Session,
    operator: CurrentOperator,
    request: Request,
    q: Annotated[Text, Query(max_length=32)] = "",
    village_id: RowId | None = None,
    category: Annotated[
        str | None,
        Query(
            description="only elders with this category or flag (extreme_poverty, dementia, "
            "wanders …; the Chinese word 特困, 失智 … too)",
            max_length=32,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
    archived: Annotated[
        bool, Query(description="list archived (removed) elders instead of current ones")
    ] = False,
) -> list[ElderOut]:
    flag = CATEGORY_WORDS.get(category) if category else None
    if category and flag is None:
        raise invalid("query", "category", f"不认识的类别“{category}” / unknown category")
    rows = await service.list_elders(
        session=session,
        region_ids=operator.region_ids,
        q=q,
        village_id=village_id,
        category=flag,
        archived=archived,
        limit=limit,
        offset=offset,
    )
    ids = [pk(e) for e, _ in rows]
    devices = await service.devices_of(session=session, elder_ids=ids)
    open_counts = await service.open_alert_counts(session=session, elder_ids=ids)
    filters = filters_given(
        q=q, village_id=village_id, category=flag, offset=offset, archived=archived
    )
    _audit_list(session, operator, request, "elder", len(rows), filters)
    return [
        from_row(
            ElderOut,
            e,
            village=village,
            devices=devices.get(pk(e), []),
            open_alerts=open_counts.get(pk(e), 0),
        )
        for e, village in rows
    ]


async def _scoped_elder(session: AsyncSession, operator: Operator, elder_id: int) -> Elder:
    elder = await service.get_elder(
        session=session, elder_id=elder_id, region_ids=operator.region_ids
    )
    if elder is None:
        raise _not_found("老人 elder")
    return elder


@router.get("/elders/{elder_id}", response_model=ElderOut)
async def get_elder(
    elder_id: RowId, session: Session, operator: CurrentOperator, request: Request
) -> ElderOut:
    elder = await _scoped_elder(session, operator, elder_id)
    village = await service.region_name(session=session, region_id=elder.village_id)
    devices = await service.devices_of(session=session, elder_ids=[elder_id])
    audit(session, operator, _now(request), "read_elder", "elder", elder_id)
    return from_row(ElderOut, elder, village=village, devices=devices.get(elder_id, []))


async def _check_elder(
    session: AsyncSession, operator: Operator, body: ElderIn, own_id: int | None
) -> Region:
    village = await _region_in_scope(session, operator, body.village_id, "village_id", "village")
    if await _taken(session, Elder, "code", body.code, own_id):
        raise _invalid("code", "编号已存在 / this code is taken")
    return village


@router.post("/elders", response_model=ElderOut, status_code=201)
async def create_elder(
    body: ElderIn, session: Session, operator: CurrentOperator, request: Request
) -> ElderOut:
    _require_editor(operator)
    village = await _check_elder(session, operator, body, None)
    elder = Elder(**body.model_dump(), thresholds={})
    session.add(elder)
    await session.flush()
    audit(session, operator, _now(request), "create_elder", "elder", elder.id)
    return from_row(ElderOut, elder, village=village.name)


@router.put("/elders/{elder_id}", response_model=ElderOut)
async def update_elder(
    elder_id: RowId, body: ElderIn, session: Session, operator: CurrentOperator, request: Request
) -> ElderOut:
    _require_editor(operator)
    elder = await _scoped_elder(session, operator, elder_id)
    return await _update_elder(session, operator, request, elder, body)


@router.patch("/elders/{elder_id}", response_model=ElderOut)
async def patch_elder(
    elder_id: RowId,
    changes: Annotated[
        dict[str, Any],
        Body(
            description="any of the elder's fields (those of PUT); the others keep what is "
            'stored, e.g. {"dementia": true}',
            examples=[{"dementia": True, "low_income": True}],
        ),
    ],
    session: Session,
    operator: CurrentOperator,
    request: Request,
) -> ElderOut:
    """Change some of an elder's fields, such as one category, without sending the rest."""
    _require_editor(operator)
    elder = await _scoped_elder(session, operator, elder_id)
    unknown = sorted(set(changes) - set(ElderIn.model_fields))
    if unknown:
        raise invalid("body", unknown[0], "没有这个字段 / no such field")
    try:
        # A stored value PUT would refuse is refused here too, at its field.
        stored = ElderIn.model_validate(elder, from_attributes=True).model_dump()
        body = ElderIn.model_validate({**stored, **changes})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    return await _update_elder(session, operator, request, elder, body)


async def _update_elder(
    session: AsyncSession, operator: Operator, request: Request, elder: Elder, body: ElderIn
) -> ElderOut:
    elder_id = pk(elder)
    if elder.archived_at is not None:
        raise _conflict(ELDER_ARCHIVED)
    village = await _check_elder(session, operator, body, elder_id)
    changed = [k for k, v in body.model_dump().items() if getattr(elder, k) != v]
    for key, value in body.model_dump().items():
        setattr(elder, key, value)
    # Field names only: the audit log must not become a second copy of personal data.
    audit(session, operator, _now(request), "update_elder", "elder", elder_id, changed=changed)
    devices = await service.devices_of(session=session, elder_ids=[elder_id])
    return from_row(ElderOut, elder, village=village.name, devices=devices.get(elder_id, []))


ELDER_ARCHIVED = "这位老人已归档 / this elder is archived"


@router.delete(
    "/elders/{elder_id}",
    response_model=ElderOut,
    responses={409: {"description": "the elder has an open alert"}},
)
async def archive_elder(
    elder_id: RowId, session: Session, operator: CurrentOperator, request: Request
) -> ElderOut:
    """Remove an elder from the registry by archiving the record: deleting it would lose the
    history that names it (alerts, SMS, the monthly figures, the audit log). The elder leaves
    the lists (`GET /api/elders?archived=true` shows them), their devices are archived and
    disabled (rejected with `disabled_device`, no broker login), their pending rule timers are
    cancelled, and no new alert is raised for them. Refused with 409 while an alert of theirs is
    open: resolve it first. Removing an archived elder again changes nothing."""
    _require_editor(operator)
    now = _now(request)
    elder = await service.get_elder(
        session=session, elder_id=elder_id, region_ids=operator.region_ids, lock=True
    )
    if elder is None:
        raise _not_found("老人 elder")
    village = await service.region_name(session=session, region_id=elder.village_id)
    if elder.archived_at is None:
        archive = await service.archive_elder(session=session, elder=elder, now=now)
        if archive.open_alerts:
            codes = archive.open_alerts
            raise _conflict(
                f"这位老人还有未结束的警报 {'、'.join(codes)}，请先处理完毕再归档 / the elder "
                f"has an open alert ({', '.join(codes)}): resolve it before archiving"
            )
        audit(session, operator, now, "archive_elder", "elder", elder_id, devices=archive.devices)
    return from_row(ElderOut, elder, village=village)


# --- devices ----------------------------------------------------------------------------------


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(
    session: Session,
    operator: CurrentOperator,
    request: Request,
    elder_id: RowId | None = None,
    trouble_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=2000)] = 1000,
    archived: Annotated[
        bool, Query(description="list archived (removed) devices instead of current ones")
    ] = False,
) -> list[DeviceOut]:
    rows = await service.list_devices(
        session=session,
        region_ids=operator.region_ids,
        elder_id=elder_id,
        archived=archived,
        limit=limit,
    )
    trouble = await service.trouble_of(session=session, device_ids=[d.id for d, _, _ in rows])
    out = [
        from_row(DeviceOut, d, elder=elder, village=village, trouble=trouble.get(d.id, []))
        for d, elder, village in rows
    ]
    if trouble_only:
        out = [d for d in out if d.trouble]
    filters = filters_given(elder_id=elder_id, trouble_only=trouble_only, archived=archived)
    _audit_list(session, operator, request, "device", len(out), filters)
    return out


@router.post("/devices", response_model=DeviceOut, status_code=201)
async def create_device(
    body: DeviceCreate, session: Session, operator: CurrentOperator, request: Request
) -> DeviceOut:
    _require_editor(operator)
    elder = await _elder_for_device(session, operator, body.elder_id)
    if await _taken(session, Device, "id", body.id):
        raise _invalid("id", "设备号已存在 / this device id is taken")
    password = body.password or secrets.token_urlsafe(12)
    device = Device(
        id=body.id,
        kind=body.kind,
        elder_id=body.elder_id,
        heartbeat_interval_s=body.heartbeat_interval_s,
        enabled=body.enabled,
        password_hash=auth.hash_device_password(password),
    )
    session.add(device)
    await session.flush()
    audit(session, operator, _now(request), "create_device", "device", device.id)
    village = await service.region_name(session=session, region_id=elder.village_id)
    out = from_row(DeviceOut, device, elder=elder.name, village=village, trouble=[])
    out.password = password
    return out


async def _elder_for_device(session: AsyncSession, operator: Operator, elder_id: int) -> Elder:
    elder = await service.get_elder(
        session=session, elder_id=elder_id, region_ids=operator.region_ids
    )
    if elder is None:
        raise _invalid("elder_id", "不在您的辖区内 / not in your region")
    if elder.archived_at is not None:
        raise _invalid("elder_id", ELDER_ARCHIVED)
    return elder


@router.put("/devices/{device_id}", response_model=DeviceOut)
async def update_device(
    device_id: Annotated[str, Path(pattern=DEVICE_ID_RE.pattern)],
    body: DeviceIn,
    session: Session,
    operator: CurrentOperator,
    request: Request,
) -> DeviceOut:
    _require_editor(operator)
    device, _ = await _scoped_device(session, operator, device_id)
    if device.archived_at is not None:
        raise _conflict(DEVICE_ARCHIVED)
    elder = await _elder_for_device(session, operator, body.elder_id)
    for key, value in body.model_dump().items():
        setattr(device, key, value)
    audit(session, operator, _now(request), "update_device", "device", device_id)
    village = await service.region_name(session=session, region_id=elder.village_id)
    trouble = await service.trouble_of(session=session, device_ids=[device_id])
    return from_row(
        DeviceOut, device, elder=elder.name, village=village, trouble=trouble.get(device_id, [])
    )


DEVICE_ARCHIVED = "这个设备已停用归档 / this device is archived"


async def _scoped_device(
    session: AsyncSession, operator: Operator, device_id: str
) -> tuple[Device, Elder]:
    found = await service.get_device(
        session=session, device_id=device_id, region_ids=operator.region_ids
    )
    if found is None:
        raise _not_found("设备 device")
    return found


@router.delete("/devices/{device_id}", response_model=DeviceOut)
async def archive_device(
    device_id: Annotated[str, Path(pattern=DEVICE_ID_RE.pattern)],
    session: Session,
    operator: CurrentOperator,
    request: Request,
) -> DeviceOut:
    """Remove a device by archiving it (its events stay on record): it is disabled for good, so
    the gateway rejects what it sends with `disabled_device` and `anxin devices
    export-mosquitto` leaves it out (no broker login). It leaves the lists
    (`GET /api/devices?archived=true` shows it) and its id stays taken. Open alerts it raised
    stay open for an operator to close. Removing it again changes nothing."""
    _require_editor(operator)
    now = _now(request)
    device, elder = await _scoped_device(session, operator, device_id)
    if device.archived_at is None:
        device.enabled, device.archived_at = False, now
        audit(session, operator, now, "archive_device", "device", device_id)
    village = await service.region_name(session=session, region_id=elder.village_id)
    return from_row(DeviceOut, device, elder=elder.name, village=village, trouble=[])


# --- responders -------------------------------------------------------------------------------


@router.get("/responders", response_model=list[ResponderOut])
async def list_responders(
    session: Session, operator: CurrentOperator, request: Request
) -> list[ResponderOut]:
    ctx = context(request)
    since = service.local_midnight(ctx.clock.now(), ctx.settings.timezone)
    rows = await service.list_responders(session=session, region_ids=operator.region_ids)
    today = await service.dispatches_since(
        session=session, responder_ids=[pk(r) for r, _ in rows], since=since
    )
    _audit_list(session, operator, request, "responder", len(rows))
    return [
        from_row(
            ResponderOut,
            r,
            place=place,
            dispatches_today=today.get(pk(r), (0, 0))[0],
            accepted_today=today.get(pk(r), (0, 0))[1],
        )
        for r, place in rows
    ]


async def _check_responder(
    session: AsyncSession, operator: Operator, body: ResponderIn, own_id: int | None
) -> str:
    if await _taken(session, Responder, "phone", body.phone, own_id):
        raise _invalid("phone", "号码已被使用 / this number is already registered")
    if body.kind == ResponderKind.aide:
        village = await _region_in_scope(
            session, operator, body.village_id, "village_id", "village"
        )
        body.centre_id = None
        return village.name
    centre = (
        await service.get_centre(
            session=session, centre_id=body.centre_id, region_ids=operator.region_ids
        )
        if body.centre_id
        else None
    )
    if centre is None:
        raise _invalid("centre_id", "不在您的辖区内 / not in your region")
    body.village_id = None
    return centre.name


@router.post("/responders", response_model=ResponderOut, status_code=201)
async def create_responder(
    body: ResponderIn, session: Session, operator: CurrentOperator, request: Request
) -> ResponderOut:
    _require_editor(operator)
    place = await _check_responder(session, operator, body, None)
    responder = Responder(**body.model_dump())
    session.add(responder)
    await session.flush()
    audit(session, operator, _now(request), "create_responder", "responder", responder.id)
    return from_row(ResponderOut, responder, place=place)


@router.put("/responders/{responder_id}", response_model=ResponderOut)
async def update_responder(
    responder_id: RowId,
    body: ResponderIn,
    session: Session,
    operator: CurrentOperator,
    request: Request,
) -> ResponderOut:
    _require_editor(operator)
    responder = await service.get_responder(
        session=session, responder_id=responder_id, region_ids=operator.region_ids
    )
    if responder is None:
        raise _not_found("助老员 responder")
    place = await _check_responder(session, operator, body, responder_id)
    for key, value in body.model_dump().items():
        setattr(responder, key, value)
    audit(session, operator, _now(request), "update_responder", "responder", responder_id)
    return from_row(ResponderOut, responder, place=place)


# --- the map ----------------------------------------------------------------------------------


@router.get("/map", response_model=MapOut)
async def map_points(session: Session, operator: CurrentOperator, request: Request) -> MapOut:
    """Where elders, aides and centres are, for the console's offline map."""
    rows = await service.map_rows(session=session, region_ids=operator.region_ids)
    out = MapOut(
        villages=[
            MapPoint(id=pk(v), name=v.name, lat=v.lat or 0, lon=v.lon or 0) for v in rows.villages
        ],
        elders=[MapPoint(id=pk(e), name=e.name, lat=e.lat, lon=e.lon) for e in rows.elders],
        responders=[
            MapPoint(id=pk(r), name=r.name, lat=r.lat, lon=r.lon, kind=r.kind, on_duty=r.on_duty)
            for r in rows.aides
        ],
        centres=[
            MapPoint(id=pk(c), name=c.name, lat=c.lat, lon=c.lon, kind=c.level)
            for c in rows.centres
        ],
    )
    # Where elders live is personal data: reading the map is on the record.
    audit(session, operator, _now(request), "read_map", "elder", "", count=len(out.elders))
    return out


# --- registry import --------------------------------------------------------------------------

MAX_IMPORT_BYTES = 20 * 1024 * 1024  # a city's registry as .xlsx is a few MB


@router.post(
    "/registry/import",
    responses={
        413: {"description": "the file is larger than 20 MB"},
        422: {"description": "the file cannot be read (format, encoding)"},
    },
)
async def import_registry(
    file: Annotated[UploadFile, File(description="a .xlsx workbook or a .csv file")],
    session: Session,
    operator: CurrentOperator,
    request: Request,
    kind: Annotated[
        RegistryKind | None,
        Query(description="what the file holds when its name and headers do not say"),
    ] = None,
    dry_run: Annotated[bool, Query(description="check only; store nothing")] = False,
    strict: Annotated[bool, Query(description="store nothing if any row is refused")] = False,
) -> dict[str, Any]:
    """Import the registry from a spreadsheet (multipart field `file`), as `anxin registry
    import` does, and answer with its row-by-row report as JSON (`lines` is the text the
    command prints). Only rows inside the operator's region are imported; rows outside it, and
    rows naming an archived elder or device, are refused with their row and column. Regions and
    centres only by county operators and admins. The file is one transaction; audited."""
    _require_editor(operator)
    data = await file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "文件超过 20 MB / the file is over 20 MB"
        )
    name = PurePath((file.filename or "").replace("\\", "/")).name or "upload.csv"
    now = _now(request)
    try:
        # Parsing a large workbook is seconds of CPU: off the event loop.
        sheets = await asyncio.to_thread(parse_file, data, name, kind)
    except RegistryFileError as exc:
        raise HTTPException(422, str(exc)) from None
    await keep_to_scope(
        session,
        sheets,
        region_ids=operator.region_ids,
        may_shape_network=_is_region_admin(operator),
    )
    report = await apply_sheets(
        context(request).sessions,
        sheets,
        source=name,
        now=now,
        dry_run=dry_run,
        strict=strict,
        actor=operator.actor,
        operator_id=operator.id,
    )
    if not report.committed:
        # A committed import wrote its own audit row with the file; this one records the rest.
        audit(
            session,
            operator,
            now,
            "registry_import",
            "file",
            name[:64],
            committed=False,
            dry_run=dry_run,
            strict=strict,
            refused_rows=sum(s.refused_rows for s in report.sheets),
        )
    return {**report.as_dict(), "ok": report.ok, "lines": report.summary_lines()}
