"""Which rows of a registry file an operator may import over the API: those that stay inside
their region.

`anxin registry import` is the civil-affairs office's own tool and imports any row. The API's
import (`POST /api/registry/import`) is an operator's, scoped like the rest of the API: before
`registry.apply.apply_sheets` runs, `keep_to_scope` moves every row that would create or change
something outside the operator's region — or touch an archived elder or device — to its sheet's
refusals, with row and column, so the report says why. A row whose target cannot be placed
for certain inside the region is refused: of all the regions the importer could pick for it,
every one must be the operator's.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.models import Device, Elder, Region, Responder, ServiceCentre
from registry.columns import APPLY_ORDER, LEVEL_RANK, RegistryKind
from registry.report import Finding
from registry.schemas import RegionView
from registry.service import Regions
from registry.sheets import ParsedRow, ParsedSheet

OUTSIDE: Final = "不在您的辖区内 / not in your region"
NETWORK_ONLY: Final = (
    "仅县级管理员可导入区域和服务中心 / only county operators and admins may import regions "
    "and centres"
)
ELDER_ARCHIVED: Final = "这位老人已归档，不能导入 / this elder is archived"
DEVICE_ARCHIVED: Final = "这个设备已停用归档，不能导入 / this device is archived"


class _Network:
    """Every region (stored, and created by rows of this file kept so far, under ids below 0),
    and which of them are inside the operator's region."""

    def __init__(self, regions: list[Region], region_ids: set[int]) -> None:
        self.regions = Regions(regions)
        self.inside_ids = set(region_ids)

    def stored(self, code: str) -> RegionView | None:
        return self.regions.by_code.get(code)

    def inside(self, code: str | None) -> bool:
        place = self.regions.by_code.get(code or "")
        return place is not None and place.id in self.inside_ids

    def all_inside(self, places: list[RegionView]) -> bool:
        return all(p.id in self.inside_ids for p in places)

    def add_inside(self, code: str, name: str, level: str, parent_code: str | None) -> None:
        if code in self.regions.by_code:
            return
        parent = self.regions.by_code.get(parent_code or "")
        view = RegionView(
            id=-1 - len(self.regions.by_id),
            code=code,
            name=name,
            level=level,
            parent_id=parent.id if parent else None,
            lat=None,
            lon=None,
        )
        self.regions.add(view)
        self.inside_ids.add(view.id)

    def centre_candidates(self, text: str) -> list[RegionView]:
        """The importer finds a centre's region by code, else by a unique name: both count."""
        found = [p for p in self.regions.by_id.values() if p.name == text]
        by_code = self.regions.by_code.get(text)
        return found + ([by_code] if by_code else [])


def _refuse(sheet: ParsedSheet, parsed: ParsedRow, field: str, message: str) -> None:
    sheet.refused.append(Finding(sheet.table_name, parsed.row, parsed.columns.get(field), message))


async def _by(session: AsyncSession, model: Any, key: Any, keys: set[Any]) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    wanted = sorted(keys)
    for start in range(0, len(wanted), 5000):
        rows = await session.execute(select(model).where(key.in_(wanted[start : start + 5000])))
        found.update({getattr(r, key.key): r for r in rows.scalars()})
    return found


async def keep_to_scope(  # noqa: C901 (over the complexity budget: known debt)
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
        candidates = network.regions.village_candidates(text, v.get("township") or "")
        if network.all_inside(candidates):
            return True
        _refuse(sheet, parsed, "village_code" if v.get("village_code") else "village", OUTSIDE)
        return False

    def elder_problem(elder: Elder | None) -> str | None:
        """Why a row may not touch this stored elder (archived, or outside), if it may not."""
        if elder is None:
            return None
        if elder.archived_at is not None:
            return ELDER_ARCHIVED
        return None if elder_inside(elder) else OUTSIDE

    def check(kind: RegistryKind, sheet: ParsedSheet, parsed: ParsedRow) -> bool:
        v = parsed.values

        def refuse(field: str, message: str) -> bool:
            _refuse(sheet, parsed, field, message)
            return False

        if kind in (RegistryKind.regions, RegistryKind.centres) and not may_shape_network:
            return refuse("code" if kind is RegistryKind.regions else "region", NETWORK_ONLY)
        if kind is RegistryKind.regions:
            code, parent = v["code"], v.get("parent") or None
            stored = network.stored(code)
            # A stored region must be the operator's; a new one needs a parent that is (so no
            # operator creates a county), and a parent given must be the operator's too.
            if (stored is not None and not network.inside(code)) or (
                stored is None and parent is None
            ):
                return refuse("code", OUTSIDE)
            if parent is not None and not network.inside(parent):
                return refuse("parent", OUTSIDE)
            network.add_inside(code, v["name"], v["level"], parent)
            return True
        if kind is RegistryKind.centres:
            inside = network.all_inside(network.centre_candidates(v["region"]))
            return inside or refuse("region", OUTSIDE)
        if kind is RegistryKind.elders:
            problem = elder_problem(elders.get(v["code"]))
            return refuse("code", problem) if problem else village_ok(sheet, parsed)
        if kind is RegistryKind.devices:
            stored_device = devices.get(v["device_id"])
            if stored_device is not None:
                owner = device_elders.get(stored_device.elder_id)
                if stored_device.archived_at is not None:
                    return refuse("device_id", DEVICE_ARCHIVED)
                if owner is None or not elder_inside(owner):
                    return refuse("device_id", OUTSIDE)
            problem = elder_problem(elders.get(v["elder_code"]))
            if problem:
                return refuse("elder_code", problem)
            # An elder neither stored nor kept from this file: the importer refuses it itself.
            return True
        holder = phones.get(v["phone"])
        if holder is not None and not (
            holder.village_id in region_ids or holder.centre_id in centre_ids
        ):
            return refuse("phone", OUTSIDE)
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
