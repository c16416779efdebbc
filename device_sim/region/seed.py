"""`seed_region(session, plan, ...)`: a plan written into the registry tables of
anxin.models, once: if the county's region code is already there it writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.models import Device as DeviceRow
from anxin.models import (
    Elder,
    OperatorUser,
    Region,
    Responder,
    ServiceCentre,
)
from device_sim.region.plan import RegionPlan, RegionSpec

# --- the database ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What one `seed_region` call inserted; all zero with created=False when it found the
    region already there."""

    created: bool
    regions: int = 0
    centres: int = 0
    elders: int = 0
    devices: int = 0
    aides: int = 0
    centre_responders: int = 0
    operators: int = 0


# Any constant will do; it only has to be the same in every process that seeds.
SEED_LOCK_KEY = 0x616E78696E5F7267  # "anxin_rg"


async def seed_region(
    session: AsyncSession,
    plan: RegionPlan,
    hash_device_password: Callable[[str], str],
    hash_operator_password: Callable[[str], str],
) -> SeedResult:
    """Insert `plan` into the registry, unless its county code is already there.

    Runs in the caller's transaction and does not commit: use it inside
    `anxin.db.transaction(...)`. A transaction-scoped advisory lock makes a concurrent seeder
    (a second replica starting) wait and then find the region instead of failing on a
    unique key. Bulk inserts, so 10,000 homes take seconds; `hash_device_password` is called
    once per device and must be cheap at that scale. Hashing runs in a worker thread (argon2
    for the operators takes ~0.1 s each) so the event loop keeps serving meanwhile.
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEED_LOCK_KEY})
    existing = await session.scalar(
        select(func.count()).select_from(Region).where(col(Region.code) == plan.county.code)
    )
    if existing:
        return SeedResult(created=False)

    # Only after the check: a restart that finds the region must not pay for argon2 again.
    device_hashes, operator_hashes = await asyncio.to_thread(
        _hash_passwords, plan, hash_device_password, hash_operator_password
    )
    region_ids: dict[str, int] = {}
    for level in (plan.county,), plan.townships, plan.villages:
        if level:
            region_ids.update(await _insert_regions(session, level, region_ids))

    centre_rows = await session.execute(
        insert(ServiceCentre).returning(col(ServiceCentre.id), col(ServiceCentre.region_id)),
        [
            {
                "region_id": region_ids[centre.region_code],
                "level": centre.level.value,
                "name": centre.name,
                "duty_phone": centre.duty_phone,
                "lat": centre.lat,
                "lon": centre.lon,
                "has_vehicle": centre.has_vehicle,
            }
            for centre in plan.centres
        ],
    )
    centre_id_by_region_id = {region_id: centre_id for centre_id, region_id in centre_rows}

    elder_rows = await session.execute(
        insert(Elder).returning(col(Elder.id), col(Elder.code)),
        [
            {
                "code": elder.code,
                "name": elder.name,
                "village_id": region_ids[elder.village_code],
                "address": elder.address,
                "lat": elder.lat,
                "lon": elder.lon,
                "living_alone": elder.living_alone,
                "empty_nest": elder.empty_nest,
                "left_behind": elder.left_behind,
                "disabled": elder.disabled,
                "advanced_age": elder.advanced_age,
                "wanders": elder.wanders,
                "extreme_poverty": elder.extreme_poverty,
                "low_income": elder.low_income,
                "semi_disabled": elder.semi_disabled,
                "dementia": elder.dementia,
                "severe_disability": elder.severe_disability,
                "family_planning_special": elder.family_planning_special,
                "guardian_phones": list(elder.guardian_phones),
                "consent": elder.consent,
                "night_start": "22:00",
                "night_end": "06:00",
                "thresholds": {},
            }
            for elder in plan.elders
        ],
    )
    elder_ids = {code: elder_id for elder_id, code in elder_rows}

    if plan.devices:
        await session.execute(
            insert(DeviceRow),
            [
                {
                    "id": device.device_id,
                    "kind": device.kind.value,
                    "elder_id": elder_ids[device.elder_code],
                    "password_hash": device_hashes[device.device_id],
                    "heartbeat_interval_s": device.heartbeat_interval_s,
                    "enabled": True,
                    "online": False,
                }
                for device in plan.devices
            ],
        )

    await session.execute(
        insert(Responder),
        [
            {
                "kind": responder.kind.value,
                "name": responder.name,
                "phone": responder.phone,
                "village_id": (
                    region_ids[responder.village_code] if responder.village_code else None
                ),
                "centre_id": (
                    centre_id_by_region_id[region_ids[responder.centre_region_code]]
                    if responder.centre_region_code
                    else None
                ),
                "lat": responder.lat,
                "lon": responder.lon,
                "travel_mode": responder.travel_mode,
                "setup_minutes": responder.setup_minutes,
                "on_duty": responder.on_duty,
                "lang": "zh",
            }
            for responder in plan.responders
        ],
    )

    await session.execute(
        insert(OperatorUser),
        [
            {
                "username": operator.username,
                "display_name": operator.display_name,
                "password_hash": operator_hashes[operator.username],
                "role": operator.role.value,
                "region_id": region_ids[operator.region_code],
                "lang": "zh",
                "failed_logins": 0,
            }
            for operator in plan.operators
        ],
    )
    return SeedResult(
        created=True,
        regions=len(region_ids),
        centres=len(plan.centres),
        elders=len(elder_ids),
        devices=len(plan.devices),
        aides=len(plan.aides),
        centre_responders=len(plan.centre_responders),
        operators=len(plan.operators),
    )


def _hash_passwords(
    plan: RegionPlan,
    hash_device_password: Callable[[str], str],
    hash_operator_password: Callable[[str], str],
) -> tuple[dict[str, str], dict[str, str]]:
    """(device id → hash, username → hash)."""
    devices = {d.device_id: hash_device_password(d.password) for d in plan.devices}
    operators = {o.username: hash_operator_password(o.password) for o in plan.operators}
    return devices, operators


async def _insert_regions(
    session: AsyncSession, regions: Sequence[RegionSpec], ids_so_far: dict[str, int]
) -> dict[str, int]:
    rows = await session.execute(
        insert(Region).returning(col(Region.id), col(Region.code)),
        [
            {
                "code": region.code,
                "name": region.name,
                "level": region.level.value,
                "parent_id": ids_so_far[region.parent_code] if region.parent_code else None,
                "lat": region.lat,
                "lon": region.lon,
                "response_minutes": region.response_minutes,
                "circuity": region.circuity,
                "ladder": {},
            }
            for region in regions
        ],
    )
    ids: dict[str, int] = {}
    for region_id, code in rows:
        assert region_id is not None  # RETURNING id of a row just inserted
        ids[code] = region_id
    return ids
