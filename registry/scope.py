"""Which rows of a registry file an operator may import over the API: those that stay inside
their region.

`anxin registry import` is the civil-affairs office's own tool and imports any row. The API's
import (`POST /api/registry/import`) is an operator's, scoped like the rest of the API: before
`registry.service.apply_sheets` runs, `keep_to_scope` moves every row that would create or change
something outside the operator's region — or touch an archived elder or device — to its sheet's
refusals, with row and column, so the report says why. A row whose target cannot be placed
for certain inside the region is refused: of all the regions the importer could pick for it,
every one must be the operator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.models import Device, Elder, Region, Responder, ServiceCentre
from anxin.schemas import RegionLevel
from registry.columns import APPLY_ORDER, LEVEL_RANK, RegistryKind
from registry.report import Finding
from registry.sheets import ParsedRow, ParsedSheet

OUTSIDE: Final = "不在您的辖区内 / not in your region"
NETWORK_ONLY: Final = (
    "仅县级管理员可导入区域和服务中心 / only county operators and admins may import regions "
    "and centres"
)
ELDER_ARCHIVED: Final = "这位老人已归档，不能导入 / this elder is archived"
DEVICE_ARCHIVED: Final = "这个设备已停用归档，不能导入 / this device is archived"


@dataclass
class _Place:
    code: str
    name: str
    level: str
    parent_code: str | None
    inside: bool


class _Network:
    """Every region (stored, and created by rows of this file kept so far), and whether it is
    inside the operator's region."""

    def __init__(self, regions: list[Region], region_ids: set[int]) -> None:
        by_id = {r.id: r for r in regions}
        self.by_code: dict[str, _Place] = {}
        for r in regions:
            parent = by_id.get(r.parent_id) if r.parent_id is not None else None
            self.by_code[r.code] = _Place(
                r.code, r.name, r.level, parent.code if parent else None, r.id in region_ids
            )

    def inside(self, code: str | None) -> bool:
        place = self.by_code.get(code or "")
        return place is not None and place.inside

    def centre_candidates(self, text: str) -> list[_Place]:
        """The importer finds a centre's region by code, else by a unique name: both count."""
        found = [p for p in self.by_code.values() if p.name == text]
        by_code = self.by_code.get(text)
        return found + ([by_code] if by_code else [])

    def village_candidates(self, text: str, township: str) -> list[_Place]:
        """The villages the importer could resolve `text` to (by code, else by name narrowed by
        the township), as `registry.service.Regions.find_village` does."""
        by_code = self.by_code.get(text)
        if by_code is not None:
            return [by_code] if by_code.level == RegionLevel.village else []
        names = {text, text.removesuffix("村"), text + "村"}
        found = [p for p in self.by_code.values() if p.level == RegionLevel.village]
        found = [p for p in found if p.name in names]
        if township:
            found = [p for p in found if self._in_township(p, township)]
        return found

    def _in_township(self, village: _Place, township: str) -> bool:
        parent = self.by_code.get(village.parent_code or "")
        if parent is None:
            return False
        return township in (parent.code, parent.name) or parent.name.rstrip(
            "镇乡"
        ) == township.rstrip("镇乡")


def _refuse(sheet: ParsedSheet, parsed: ParsedRow, field: str, message: str) -> None:
    sheet.refused.append(Finding(sheet.table_name, parsed.row, parsed.columns.get(field), message))


async def _by(session: AsyncSession, model: Any, key: Any, keys: set[Any]) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    wanted = sorted(keys)
    for start in range(0, len(wanted), 5000):
        rows = await session.execute(select(model).where(key.in_(wanted[start : start + 5000])))
        found.update({getattr(r, key.key): r for r in rows.scalars()})
    return found


async def keep_to_scope(
    session: AsyncSession,
    sheets: list[ParsedSheet],
    *,
    region_ids: set[int],
    may_shape_network: bool,
) -> None:
    """Refuse, in place, every row of `sheets` that would reach outside `region_ids`.

    `may_shape_network`: the operator may change regions and centres (county operators and
    admins, as in the API); otherwise those sheets' rows are all refused."""
    network = _Network(list((await session.execute(select(Region))).scalars()), region_ids)
    rows = [p for s in sheets for p in s.rows]
    elders = await _by(
        session,
        Elder,
        col(Elder.code),
        {str(p.values[k]) for p in rows for k in ("code", "elder_code") if k in p.values},
    )
    devices = await _by(
        session,
        Device,
        col(Device.id),
        {p.values["device_id"] for p in rows if "device_id" in p.values},
    )
    device_elders = await _by(session, Elder, col(Elder.id), {d.elder_id for d in devices.values()})
    phones = await _by(
        session,
        Responder,
        col(Responder.phone),
        {p.values["phone"] for p in rows if "phone" in p.values},
    )
    centre_ids = set(
        (
            await session.execute(
                select(col(ServiceCentre.id)).where(col(ServiceCentre.region_id).in_(region_ids))
            )
        ).scalars()
    )

    def elder_inside(elder: Elder) -> bool:
        return elder.village_id in region_ids

    def village_ok(sheet: ParsedSheet, parsed: ParsedRow) -> bool:
        v = parsed.values
        text = v.get("village_code") or v.get("village") or ""
        candidates = network.village_candidates(text, v.get("township") or "")
        if all(c.inside for c in candidates):
            return True
        _refuse(sheet, parsed, "village_code" if v.get("village_code") else "village", OUTSIDE)
        return False

    def check(kind: RegistryKind, sheet: ParsedSheet, parsed: ParsedRow) -> bool:
        v = parsed.values
        if kind in (RegistryKind.regions, RegistryKind.centres) and not may_shape_network:
            _refuse(
                sheet, parsed, "code" if kind is RegistryKind.regions else "region", NETWORK_ONLY
            )
            return False
        if kind is RegistryKind.regions:
            code, parent = v["code"], v.get("parent") or None
            stored = network.by_code.get(code)
            # A stored region must be the operator's; a new one needs a parent that is (so no
            # operator creates a county), and a parent given must be the operator's too.
            if (stored is not None and not stored.inside) or (stored is None and parent is None):
                _refuse(sheet, parsed, "code", OUTSIDE)
                return False
            if parent is not None and not network.inside(parent):
                _refuse(sheet, parsed, "parent", OUTSIDE)
                return False
            network.by_code.setdefault(code, _Place(code, v["name"], v["level"], parent, True))
            return True
        if kind is RegistryKind.centres:
            if all(c.inside for c in network.centre_candidates(v["region"])):
                return True
            _refuse(sheet, parsed, "region", OUTSIDE)
            return False
        if kind is RegistryKind.elders:
            stored_elder = elders.get(v["code"])
            if stored_elder is not None and stored_elder.archived_at is not None:
                _refuse(sheet, parsed, "code", ELDER_ARCHIVED)
                return False
            if stored_elder is not None and not elder_inside(stored_elder):
                _refuse(sheet, parsed, "code", OUTSIDE)
                return False
            return village_ok(sheet, parsed)
        if kind is RegistryKind.devices:
            stored_device = devices.get(v["device_id"])
            if stored_device is not None:
                owner = device_elders.get(stored_device.elder_id)
                if stored_device.archived_at is not None:
                    _refuse(sheet, parsed, "device_id", DEVICE_ARCHIVED)
                    return False
                if owner is None or not elder_inside(owner):
                    _refuse(sheet, parsed, "device_id", OUTSIDE)
                    return False
            elder = elders.get(v["elder_code"])
            if elder is not None and elder.archived_at is not None:
                _refuse(sheet, parsed, "elder_code", ELDER_ARCHIVED)
                return False
            if elder is not None and not elder_inside(elder):
                _refuse(sheet, parsed, "elder_code", OUTSIDE)
                return False
            # An elder neither stored nor kept from this file: the importer refuses it itself.
            return True
        holder = phones.get(v["phone"])
        if holder is not None and not (
            holder.village_id in region_ids or holder.centre_id in centre_ids
        ):
            _refuse(sheet, parsed, "phone", OUTSIDE)
            return False
        return village_ok(sheet, parsed)

    for kind in APPLY_ORDER:
        for sheet in sheets:
            if sheet.kind is not kind:
                continue
            ordered = sheet.rows
            if kind is RegistryKind.regions:
                # Parents first, as the importer applies them.
                ordered = sorted(sheet.rows, key=lambda p: LEVEL_RANK[p.values["level"]])
            kept = {id(p) for p in ordered if check(kind, sheet, p)}
            sheet.rows = [p for p in sheet.rows if id(p) in kept]
            sheet.refused.sort(key=lambda f: (f.row is not None, f.row or 0))
