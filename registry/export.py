"""Registry export: every kind in the layout `anxin registry import` reads back (export → import
changes nothing), with Chinese or English headers; device passwords are never exported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.db import SessionMaker
from anxin.models import Device, Elder, Region, Responder, ServiceCentre
from anxin.schemas import DEVICE_KIND_ZH, DeviceKind, RegionLevel, ResponderKind
from registry.columns import (
    APPLY_ORDER,
    COLUMNS,
    ELDER_FLAGS,
    LEVEL_RANK,
    LEVEL_ZH,
    TRAVEL_MODE_ZH,
    ColumnSpec,
    RegistryKind,
)
from registry.files import tables_to_csv, tables_to_xlsx
from registry.service import Regions


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "、".join(str(v) for v in value)
    return str(value)


def export_headers(kind: RegistryKind, english: bool = False) -> list[str]:
    return [spec.en if english else spec.zh for spec in _export_columns(kind)]


def _export_columns(kind: RegistryKind) -> list[ColumnSpec]:
    # Each category has its column (是/否); a 类别 column beside them would say it twice.
    return [s for s in COLUMNS[kind] if s.field != "categories" and s.field != "password"]


async def export_tables(
    session: AsyncSession, english: bool = False
) -> dict[RegistryKind, list[list[str]]]:
    """Every kind as rows of text (header first), in the layout import reads back."""
    regions = await Regions.load(session)

    def name_of(region_id: int | None) -> str:
        region = regions.by_id.get(region_id) if region_id is not None else None
        return region.name if region else ""

    def code_of(region_id: int | None) -> str:
        region = regions.by_id.get(region_id) if region_id is not None else None
        return region.code if region else ""

    def township_name(region_id: int | None) -> str:
        township = regions.township_of(region_id) if region_id is not None else None
        return township.name if township else ""

    def placed(person: Elder | Responder) -> dict[str, Any]:
        # An elder's or an aide's name, village and position: the columns the import places by.
        return {
            "name": person.name,
            "township": township_name(person.village_id),
            "village": name_of(person.village_id),
            "village_code": code_of(person.village_id),
            "lat": person.lat,
            "lon": person.lon,
        }

    level_text = (lambda lv: lv) if english else (lambda lv: LEVEL_ZH[RegionLevel(lv)])
    kind_text = (lambda k: k) if english else (lambda k: DEVICE_KIND_ZH[DeviceKind(k)])
    mode_text = (lambda m: m) if english else (lambda m: TRAVEL_MODE_ZH.get(m, m))

    tables: dict[RegistryKind, list[list[str]]] = {
        kind: [export_headers(kind, english)] for kind in RegistryKind
    }
    region_rows = sorted(
        (await session.execute(select(Region))).scalars(),
        key=lambda r: (LEVEL_RANK[RegionLevel(r.level)], r.code),
    )
    for r in region_rows:
        values = {
            "code": r.code,
            "name": r.name,
            "level": level_text(r.level),
            "parent": code_of(r.parent_id),
            "lat": r.lat,
            "lon": r.lon,
            "response_minutes": r.response_minutes,
            "circuity": r.circuity,
        }
        tables[RegistryKind.regions].append(_row(RegistryKind.regions, values))
    centres = (
        await session.execute(select(ServiceCentre).order_by(col(ServiceCentre.id)))
    ).scalars()
    for c in centres:
        values = {
            "region": code_of(c.region_id),
            "region_name": name_of(c.region_id),
            "name": c.name,
            "duty_phone": c.duty_phone,
            "lat": c.lat,
            "lon": c.lon,
            "has_vehicle": c.has_vehicle,
        }
        tables[RegistryKind.centres].append(_row(RegistryKind.centres, values))
    elder_codes: dict[int, tuple[str, str]] = {}
    for e in (await session.execute(select(Elder).order_by(col(Elder.code)))).scalars():
        assert e.id is not None
        elder_codes[e.id] = (e.code, e.name)
        values = {
            "code": e.code,
            **placed(e),
            "address": e.address,
            **{flag: getattr(e, flag) for flag in ELDER_FLAGS},
            "guardian_phones": list(e.guardian_phones or []),
            "consent": e.consent,
            "night_start": e.night_start,
            "night_end": e.night_end,
            "season_address": e.season_address or "",
            "season_lat": e.season_lat,
            "season_lon": e.season_lon,
            "season_start": e.season_start or "",
            "season_end": e.season_end or "",
        }
        tables[RegistryKind.elders].append(_row(RegistryKind.elders, values))
    for d in (await session.execute(select(Device).order_by(col(Device.id)))).scalars():
        code, name = elder_codes.get(d.elder_id, ("", ""))
        values = {
            "device_id": d.id,
            "kind": kind_text(d.kind),
            "elder_code": code,
            "elder_name": name,
            "heartbeat_interval_s": d.heartbeat_interval_s,
            "enabled": d.enabled,
        }
        tables[RegistryKind.devices].append(_row(RegistryKind.devices, values))
    aides = (
        await session.execute(
            select(Responder)
            .where(col(Responder.kind) == ResponderKind.aide)
            .order_by(col(Responder.village_id), col(Responder.phone))
        )
    ).scalars()
    for a in aides:
        values = {
            **placed(a),
            "phone": a.phone,
            "travel_mode": mode_text(a.travel_mode),
            "setup_minutes": a.setup_minutes,
            "on_duty": a.on_duty,
            "lang": a.lang if english else ("英文" if a.lang == "en" else "中文"),
        }
        tables[RegistryKind.aides].append(_row(RegistryKind.aides, values))
    return tables


def _row(kind: RegistryKind, values: dict[str, Any]) -> list[str]:
    return [_fmt(values.get(spec.field)) for spec in _export_columns(kind)]


def write_export(tables: dict[RegistryKind, list[list[str]]], target: Path) -> list[Path]:
    """`.xlsx` → one workbook with a sheet per kind; otherwise a directory of CSV files."""
    if target.suffix.lower() == ".xlsx":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tables_to_xlsx(tables))
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kind in APPLY_ORDER:
        path = target / f"{kind.value}.csv"
        path.write_bytes(tables_to_csv(tables[kind]))
        written.append(path)
    return written


async def export_registry(
    sessions: SessionMaker, target: Path, *, english: bool = False
) -> list[Path]:
    """Export the whole registry to `target` (.xlsx workbook, or a directory of CSV files)."""
    async with sessions() as session:
        tables = await export_tables(session, english)
    return await asyncio.to_thread(write_export, tables, target)
