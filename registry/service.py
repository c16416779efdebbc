"""Writing the registry: checked sheets into the database, one transaction per file.

Rules a user can rely on (docs/operations.md repeats them):

* **Row by row.** A refused row is reported with its row and column and nothing of it is
  stored; the good rows of the file are imported.
* **Nothing half-imported.** A file (every sheet of a workbook) is one transaction: if the
  database refuses anything while writing, nothing of the file is stored. `strict=True`
  (`--strict`) refuses the whole file as soon as one row is bad; `dry_run=True` checks only.
* **Idempotent.** Natural keys — region code, centre's region, elder code, device id, aide's
  phone — decide between create and update; importing the same file twice changes nothing
  the second time. A blank optional number (coordinates, intervals) keeps what is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service.models import OPEN_STATUSES, Alert, DispatchAttempt, RuleTimer
from anxin.auth import hash_device_password, verify_mosquitto_hash
from anxin.db import SessionMaker
from anxin.models import (
    AuditLog,
    Device,
    Elder,
    OperatorUser,
    Region,
    Responder,
    ServiceCentre,
    pk,
)
from anxin.schemas import DeviceKind, RegionLevel, ResponderKind
from registry.columns import (
    APPLY_ORDER,
    DEFAULT_HEARTBEAT_S,
    ELDER_FLAGS,
    LEVEL_RANK,
    LEVEL_ZH,
    RegistryKind,
    centre_responder,
)
from registry.files import RegistryFileError, parse_file
from registry.report import Finding, ImportReport, SheetReport
from registry.sheets import ParsedRow, ParsedSheet, keys_of

CENTRE_SETUP_MINUTES: Final = 5.0
AIDE_SETUP_MINUTES: Final = 2.0


@dataclass
class RegionView:
    id: int
    code: str
    name: str
    level: str
    parent_id: int | None
    lat: float | None
    lon: float | None

    @classmethod
    def of(cls, r: Region) -> RegionView:
        return cls(pk(r), r.code, r.name, r.level, r.parent_id, r.lat, r.lon)


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


def _village_problem(reason: str, text: str) -> str:
    if reason == "not_village":
        return f"“{text}”是乡镇或县的编码，不是村 / {text!r} is not a village"
    if reason == "ambiguous":
        return (
            f"有多个村叫“{text}”：请填村编码或所属乡镇 / several villages are called {text!r}: "
            "give the village code or the township"
        )
    return f"找不到村“{text}”：请先导入区域表 / unknown village {text!r}: import the regions first"


def _resolve_village(
    regions: Regions,
    parsed: ParsedRow,
    sheet: str,
    refused: dict[str, tuple[str, int]] | None = None,
) -> tuple[RegionView | None, Finding | None]:
    code = parsed.values.get("village_code") or ""
    text = code or parsed.values.get("village") or ""
    column = parsed.columns.get("village_code" if code else "village")
    if not text:
        return None, Finding(sheet, parsed.row, column, "必填项为空 / required, empty")
    village, reason = regions.find_village(text, parsed.values.get("township") or "")
    if village is None:
        refused = refused or {}
        where = next(
            (refused[n] for n in (text, text.removesuffix("村"), text + "村") if n in refused),
            None,
        )
        if reason == "unknown" and where is not None:
            return None, Finding(sheet, parsed.row, column, _refused_in_file("村", text, where))
        return None, Finding(sheet, parsed.row, column, _village_problem(reason, text))
    return village, None


def _coordinates(
    parsed: ParsedRow,
    existing: Any | None,
    village: RegionView,
    sheet: str,
    report: SheetReport,
) -> tuple[float, float] | Finding:
    """Coordinates from the row, else what is stored, else the village centre (with a notice:
    the aide's estimated arrival is rough until the home's own position is known)."""
    if "lat" in parsed.values:
        return parsed.values["lat"], parsed.values["lon"]
    if existing is not None:
        return existing.lat, existing.lon
    if village.lat is not None and village.lon is not None:
        report.notices.append(
            Finding(
                sheet,
                parsed.row,
                parsed.columns.get("lat"),
                "没有经纬度，暂用村中心位置 / no coordinates: using the village centre",
            )
        )
        return village.lat, village.lon
    return Finding(
        sheet,
        parsed.row,
        parsed.columns.get("lat"),
        "缺少经纬度，村也没有位置 / coordinates needed (the village has none either)",
    )


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


async def _apply_regions(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await Regions.load(session)
    rows = {r.code: r for r in (await session.execute(select(Region))).scalars()}
    upserts = Upserts(session, Region, report, at_once=True)
    # Parents first, whatever the row order.
    ordered = sorted(sheet.rows, key=lambda p: LEVEL_RANK[p.values["level"]])
    for parsed in ordered:
        v = parsed.values
        level: RegionLevel = v["level"]
        parent_code: str = v.get("parent", "")
        parent_id: int | None = None
        expected_parent = {
            RegionLevel.county: None,
            RegionLevel.township: RegionLevel.county,
            RegionLevel.village: RegionLevel.township,
        }[level]
        parent_column = parsed.columns.get("parent")
        if expected_parent is None:
            if parent_code:
                report.refused.append(
                    Finding(
                        sheet.table_name,
                        parsed.row,
                        parent_column,
                        "县是最高一级，不能有上级 / a county has no parent region",
                    )
                )
                continue
        else:
            parent = regions.by_code.get(parent_code) if parent_code else None
            if parent is None or parent.level != expected_parent:
                wanted = LEVEL_ZH[expected_parent]
                report.refused.append(
                    Finding(
                        sheet.table_name,
                        parsed.row,
                        parent_column,
                        (
                            f"上级编码“{parent_code}”不存在 / unknown parent {parent_code!r}"
                            if parent is None and parent_code
                            else f"{LEVEL_ZH[level]}的上级必须是{wanted} / a {level.value}'s "
                            f"parent must be a {expected_parent.value}"
                        ),
                    )
                )
                continue
            parent_id = parent.id
        existing = rows.get(v["code"])
        if existing is not None and existing.level != level:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("level"),
                    f"编码已是{LEVEL_ZH[RegionLevel(existing.level)]}，不能改为{LEVEL_ZH[level]} / "
                    "a region's level cannot change",
                )
            )
            continue
        values: dict[str, Any] = {
            "name": v["name"],
            "level": level.value,
            "parent_id": parent_id,
        }
        for name in ("lat", "lon", "response_minutes", "circuity"):
            if name in v:
                values[name] = v[name]
        region: Region = await upserts.put(existing, values, code=v["code"])
        rows[region.code] = region
        regions.add(RegionView.of(region))
    await session.flush()


async def _apply_centres(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await Regions.load(session)
    centres = {c.region_id: c for c in (await session.execute(select(ServiceCentre))).scalars()}
    upserts = Upserts(session, ServiceCentre, report, at_once=True)
    phones = [p.values["duty_phone"] for p in sheet.rows]
    holders = {
        r.phone: r
        for r in (
            await session.execute(select(Responder).where(col(Responder.phone).in_(phones)))
        ).scalars()
    }
    for parsed in sheet.rows:
        v = parsed.values
        region = regions.by_code.get(v["region"])
        if region is None:
            by_name = [r for r in regions.by_id.values() if r.name == v["region"]]
            region = by_name[0] if len(by_name) == 1 else None
        if region is None or region.level == RegionLevel.village:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("region"),
                    (
                        f"找不到区域“{v['region']}” / unknown region {v['region']!r}"
                        if region is None
                        else "服务中心只设在乡镇或县 / centres belong to a township or county"
                    ),
                )
            )
            continue
        existing = centres.get(region.id)
        holder = holders.get(v["duty_phone"])
        if holder is not None and (existing is None or holder.centre_id != existing.id):
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("duty_phone"),
                    f"这个号码已属于“{holder.name}” / this number already belongs to {holder.name}",
                )
            )
            continue
        lat_lon = (
            (v["lat"], v["lon"])
            if "lat" in v
            else (existing.lat, existing.lon)
            if existing is not None
            else (region.lat, region.lon)
        )
        if lat_lon[0] is None or lat_lon[1] is None:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("lat"),
                    "缺少经纬度 / coordinates needed",
                )
            )
            continue
        values: dict[str, Any] = {
            "level": region.level,
            "name": v["name"],
            "duty_phone": v["duty_phone"],
            "lat": lat_lon[0],
            "lon": lat_lon[1],
            "has_vehicle": v.get("has_vehicle", True),
        }
        centre: ServiceCentre = await upserts.put(existing, values, region_id=region.id)
        centres[region.id] = centre
        await sync_centre_responder(session=session, centre=centre)
    await session.flush()


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


def _placed(
    regions: Regions, sheet: ParsedSheet, parsed: ParsedRow, row: Any | None, report: SheetReport
) -> dict[str, Any] | None:
    """An elder's or an aide's name, village and position; None (and the refusal reported)
    when the village or the coordinates cannot be found."""
    village, problem = _resolve_village(regions, parsed, sheet.table_name, sheet.parents_refused)
    if village is None:
        report.refused.extend([problem] if problem else [])
        return None
    where = _coordinates(parsed, row, village, sheet.table_name, report)
    if isinstance(where, Finding):
        report.refused.append(where)
        return None
    lat, lon = where
    return {"name": parsed.values["name"], "village_id": village.id, "lat": lat, "lon": lon}


async def _existing_by(
    session: AsyncSession, model: Any, key: Any, keys: list[Any]
) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    # Chunks keep each statement's parameter list small for city-sized files.
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        for row in (await session.execute(select(model).where(key.in_(chunk)))).scalars():
            found[getattr(row, key.key)] = row
    return found


async def _apply_elders(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await Regions.load(session)
    existing = await _existing_by(
        session, Elder, col(Elder.code), [p.values["code"] for p in sheet.rows]
    )
    defaults = {
        "address": "",
        "guardian_phones": [],
        "consent": True,
        "night_start": "22:00",
        "night_end": "06:00",
        "thresholds": {},
        **dict.fromkeys(ELDER_FLAGS, False),
    }
    upserts = Upserts(session, Elder, report, defaults=defaults)
    for parsed in sheet.rows:
        v = parsed.values
        row = existing.get(v["code"])
        values = _placed(regions, sheet, parsed, row, report)
        if values is None:
            continue
        for name in ("address", "guardian_phones", "consent", "night_start", "night_end"):
            if name in v:
                values[name] = v[name]
        # A 类别 column alone ("独居、失能") sets its flags and clears the others.
        flags_given = any(name in v for name in ELDER_FLAGS) or "categories" in parsed.columns
        for name in ELDER_FLAGS:
            if flags_given:
                values[name] = bool(v.get(name, False))
        await upserts.put(row, values, code=v["code"])
    await upserts.write()


async def _apply_devices(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    elders = await _existing_by(
        session, Elder, col(Elder.code), sorted({p.values["elder_code"] for p in sheet.rows})
    )
    existing = await _existing_by(
        session, Device, col(Device.id), [p.values["device_id"] for p in sheet.rows]
    )
    defaults = {"enabled": True, "online": False, "password_hash": ""}
    upserts = Upserts(session, Device, report, defaults=defaults)
    for parsed in sheet.rows:
        v = parsed.values
        elder = elders.get(v["elder_code"])
        if elder is None:
            refused_elder = sheet.parents_refused.get(v["elder_code"])
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("elder_code"),
                    _refused_in_file("老人", v["elder_code"], refused_elder)
                    if refused_elder
                    else f"找不到老人编号“{v['elder_code']}”：请先导入老人表 / unknown elder "
                    f"{v['elder_code']!r}: import the elders first",
                )
            )
            continue
        kind: DeviceKind = v["kind"]
        row = existing.get(v["device_id"])
        values: dict[str, Any] = {"kind": kind.value, "elder_id": elder.id}
        if "heartbeat_interval_s" in v:
            values["heartbeat_interval_s"] = v["heartbeat_interval_s"]
        if "enabled" in v:
            values["enabled"] = v["enabled"]
        password = v.get("password", "")
        # A password already stored stays as it is: re-hashing it would be a change every time.
        if password and not (
            row is not None and verify_mosquitto_hash(row.password_hash, password)
        ):
            values["password_hash"] = hash_device_password(password)
        if row is None:
            if not password:
                report.notices.append(
                    Finding(
                        sheet.table_name,
                        parsed.row,
                        parsed.columns.get("password") or parsed.columns.get("device_id"),
                        "没有设备密码：设备暂时无法登录 MQTT / no device password: the device "
                        "cannot log in to the broker until one is set",
                    )
                )
            values.setdefault("heartbeat_interval_s", DEFAULT_HEARTBEAT_S.get(kind, 60))
        await upserts.put(row, values, id=v["device_id"])
    await upserts.write()


async def _apply_aides(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await Regions.load(session)
    existing = await _existing_by(
        session, Responder, col(Responder.phone), [p.values["phone"] for p in sheet.rows]
    )
    defaults = {
        "kind": ResponderKind.aide.value,
        "travel_mode": "ebike",
        "setup_minutes": AIDE_SETUP_MINUTES,
        "on_duty": True,
        "lang": "zh",
        "centre_id": None,
    }
    upserts = Upserts(session, Responder, report, defaults=defaults)
    for parsed in sheet.rows:
        v = parsed.values
        row = existing.get(v["phone"])
        if row is not None and row.kind != ResponderKind.aide:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("phone"),
                    f"这个号码是“{row.name}”的值班电话 / this number is a centre's duty phone",
                )
            )
            continue
        values = _placed(regions, sheet, parsed, row, report)
        if values is None:
            continue
        for name in ("travel_mode", "setup_minutes", "on_duty", "lang"):
            if name in v:
                values[name] = v[name]
        await upserts.put(row, values, phone=v["phone"])
    await upserts.write()


_APPLY: Final[dict[RegistryKind, Callable[[AsyncSession, ParsedSheet, SheetReport], Any]]] = {
    RegistryKind.regions: _apply_regions,
    RegistryKind.centres: _apply_centres,
    RegistryKind.elders: _apply_elders,
    RegistryKind.devices: _apply_devices,
    RegistryKind.aides: _apply_aides,
}


# Whose rows a sheet's rows name: a device its elder, an elder or an aide its village.
_PARENT_KIND: Final = {
    RegistryKind.devices: RegistryKind.elders,
    RegistryKind.elders: RegistryKind.regions,
    RegistryKind.aides: RegistryKind.regions,
}


def _refused_keys(sheet: ParsedSheet, report: SheetReport) -> dict[str, int]:
    """The keys of every row of the sheet refused so far, while parsing or while applying."""
    assert sheet.kind is not None
    keys = dict(sheet.refused_keys)
    refused_rows = {f.row for f in report.refused if f.row is not None}
    for parsed in sheet.rows:
        if parsed.row in refused_rows:
            for key in keys_of(sheet.kind, parsed.values):
                keys.setdefault(key, parsed.row)
    return keys


def _refused_in_file(what: str, key: str, where: tuple[str, int]) -> str:
    sheet, row = where
    return (
        f"{what}“{key}”在本文件中被拒绝（{sheet} 第{row}行）：请先改正那一行 / its "
        f"{'elder' if what == '老人' else 'village'} {key!r} was refused in this file "
        f"({sheet} row {row}): fix that row first"
    )


async def apply_sheets(
    sessions: SessionMaker,
    sheets: Sequence[ParsedSheet],
    *,
    source: str,
    now: datetime,
    dry_run: bool = False,
    strict: bool = False,
    actor: str = "cli",
    operator_id: int | None = None,
) -> ImportReport:
    """Write checked sheets in one transaction, parents first; return what happened.

    Rows refused while parsing, or here because a reference is missing, are left out and
    reported. `strict`: any refusal → nothing stored. `dry_run`: everything is checked against
    the database, then rolled back.
    """
    report = ImportReport(source=source, dry_run=dry_run, strict=strict)
    by_kind: dict[RegistryKind | None, list[tuple[ParsedSheet, SheetReport]]] = {}
    for sheet in sheets:
        sheet_report = SheetReport(
            sheet.table_name,
            sheet.kind,
            rows=sheet.total_rows,
            refused=list(sheet.refused),
            notices=list(sheet.notices),
        )
        report.sheets.append(sheet_report)
        by_kind.setdefault(sheet.kind, []).append((sheet, sheet_report))

    async with sessions() as session:
        transaction = await session.begin()
        try:
            refused_by_kind: dict[RegistryKind, dict[str, tuple[str, int]]] = {}
            for kind in APPLY_ORDER:
                for sheet, sheet_report in by_kind.get(kind, []):
                    parent = _PARENT_KIND.get(kind)
                    sheet.parents_refused = refused_by_kind.get(parent, {}) if parent else {}
                    await _APPLY[kind](session, sheet, sheet_report)
                    refused = refused_by_kind.setdefault(kind, {})
                    for key, row in _refused_keys(sheet, sheet_report).items():
                        refused.setdefault(key, (sheet.table_name, row))
            session.add(
                AuditLog(
                    at=now,
                    operator_id=operator_id,
                    action="registry_import",
                    target_type="file",
                    target_id=Path(source).name[:64],
                    detail={
                        "actor": actor,
                        "created": sum(s.created for s in report.sheets),
                        "updated": sum(s.updated for s in report.sheets),
                        "refused_rows": sum(s.refused_rows for s in report.sheets),
                    },
                )
            )
            await session.flush()
        except Exception as exc:
            await transaction.rollback()
            report.failure = f"数据库拒绝写入 / the database refused the import: {exc}"[:500]
            _zero_counts(report)
            return report
        if strict and report.refused:
            await transaction.rollback()
            report.failure = (
                "严格模式：有被拒绝的行，整个文件未导入 / strict: rows were refused, so no row "
                "of this file was imported"
            )
            _zero_counts(report)
            return report
        if dry_run:
            await transaction.rollback()
            return report
        await transaction.commit()
        report.committed = True
    return report


def _zero_counts(report: ImportReport) -> None:
    for s in report.sheets:
        s.created = s.updated = s.unchanged = 0


async def import_registry_file(
    sessions: SessionMaker,
    data: bytes,
    filename: str,
    *,
    now: datetime,
    kind: RegistryKind | None = None,
    dry_run: bool = False,
    strict: bool = False,
    actor: str = "cli",
    operator_id: int | None = None,
) -> ImportReport:
    """Read, check and apply one CSV or .xlsx file (the CLI and the web API both call this)."""
    try:
        sheets = parse_file(data, filename, kind)
    except RegistryFileError as exc:
        return ImportReport(source=filename, dry_run=dry_run, strict=strict, failure=str(exc))
    return await apply_sheets(
        sessions,
        sheets,
        source=filename,
        now=now,
        dry_run=dry_run,
        strict=strict,
        actor=actor,
        operator_id=operator_id,
    )


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
    archived: bool = False,
    limit: int,
    offset: int = 0,
) -> list[tuple[Elder, str]]:
    """Elders by code with their village's name; `q` matches name or code, or a village name."""
    archived_at = col(Elder.archived_at)
    query = (
        select(Elder, col(Region.name))
        .join(Region, col(Region.id) == col(Elder.village_id))
        .where(col(Elder.village_id).in_(region_ids))
        .where(archived_at.is_not(None) if archived else archived_at.is_(None))
    )
    if village_id is not None:
        query = query.where(col(Elder.village_id) == village_id)
    if q:
        # The search text is a bound parameter, and its own % and _ are literal characters.
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                col(Elder.name).ilike(like, escape="\\"),
                col(Elder.code).ilike(like, escape="\\"),
                col(Region.name) == q,
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
