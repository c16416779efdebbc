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

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.auth import hash_device_password, verify_mosquitto_hash
from anxin.db import SessionMaker
from anxin.models import AuditLog, Device, Elder, Region, Responder, ServiceCentre
from anxin.schemas import DeviceKind, RegionLevel, ResponderKind
from registry.columns import (
    AIDE_SETUP_MINUTES,
    APPLY_ORDER,
    CATEGORY_ZH,
    DEFAULT_HEARTBEAT_S,
    ELDER_FLAGS,
    LEVEL_RANK,
    LEVEL_ZH,
    RegistryKind,
)
from registry.files import RegistryFileError, parse_file
from registry.report import Finding, ImportReport, SheetReport
from registry.schemas import RegionView
from registry.service import Regions, Upserts, sync_centre_responder
from registry.sheets import ParsedRow, ParsedSheet, keys_of


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


# An elder's seasonal place (registry.columns): written when its columns are in the sheet.
SEASON = ("season_address", "season_lat", "season_lon", "season_start", "season_end")


async def _apply_elders(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await Regions.load(session)
    existing = await _existing_by(
        session, Elder, col(Elder.code), [p.values["code"] for p in sheet.rows]
    )
    defaults: dict[str, Any] = {
        "address": "",
        "guardian_phones": [],
        "consent": True,
        "night_start": "22:00",
        "night_end": "06:00",
        "thresholds": {},
        **dict.fromkeys(ELDER_FLAGS, False),
        **dict.fromkeys(SEASON, None),
    }
    upserts = Upserts(session, Elder, report, defaults=defaults)
    for parsed in sheet.rows:
        v = parsed.values
        row = existing.get(v["code"])
        values = _placed(regions, sheet, parsed, row, report)
        if values is None:
            continue
        for name in ("address", "guardian_phones", "consent", "night_start", "night_end", *SEASON):
            if name in v:
                values[name] = v[name]
        # A 类别 cell lists every category of its elder ("独居、失能"): a category it leaves out
        # is 否. Otherwise a flag is written only where the file has its column (or the cell
        # names it), so a sheet of just 独居 keeps the 失智 the console set, and a 类别 column
        # never clears 走失风险 (a night rule's, not a civil-affairs category).
        listed = "categories" in parsed.columns
        for name in ELDER_FLAGS:
            if name in v or (listed and name in CATEGORY_ZH):
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
