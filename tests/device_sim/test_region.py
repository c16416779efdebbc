"""The demo region generator: deterministic, the promised sizes and shapes, fast at scale."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from anxin.schemas import DeviceKind, OperatorRole, RegionLevel, ResponderKind
from device_sim.region.generate import device_password, generate_region
from device_sim.region.plan import RegionPlan

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHINA_MOBILE_E164 = re.compile(r"^\+861\d{10}$")
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@pytest.fixture(scope="module")
def plan() -> RegionPlan:
    return generate_region()


@pytest.fixture(scope="module")
def big_plan() -> RegionPlan:
    return generate_region(homes=10_000)


def test_same_seed_gives_the_same_plan(plan: RegionPlan) -> None:
    assert generate_region(seed=2026) == plan
    assert generate_region(homes=120, seed=2026) == plan


def test_different_seed_gives_different_people() -> None:
    first, second = generate_region(seed=1), generate_region(seed=2)
    assert [e.name for e in first.elders] != [e.name for e in second.elders]
    assert [a.name for a in first.aides] != [a.name for a in second.aides]
    assert first.phones() != second.phones()
    assert first.devices[0].password != second.devices[0].password
    # The shape of the region does not depend on the seed.
    assert len(first.elders) == len(second.elders)
    assert [v.code for v in first.villages] == [v.code for v in second.villages]


def test_default_sizes(plan: RegionPlan) -> None:
    assert plan.county.code == "C01"
    assert plan.county.level == RegionLevel.county
    assert [t.code for t in plan.townships] == ["T01", "T02", "T03"]
    assert [v.code for v in plan.villages] == [f"V{i:02d}" for i in range(1, 13)]
    assert Counter(v.parent_code for v in plan.villages) == {"T01": 4, "T02": 4, "T03": 4}
    assert all(t.parent_code == "C01" for t in plan.townships)
    assert all(v.name.endswith("村") for v in plan.villages)
    assert len(plan.elders) == 120
    assert Counter(e.village_code for e in plan.elders) == {v.code: 10 for v in plan.villages}
    assert len(plan.aides) == 24
    assert Counter(a.village_code for a in plan.aides) == {v.code: 2 for v in plan.villages}
    assert [e.code for e in plan.elders][:2] == ["E0001", "E0002"]
    assert len({e.code for e in plan.elders}) == 120


def test_centres_one_per_township_and_county(plan: RegionPlan) -> None:
    by_region = {c.region_code: c for c in plan.centres}
    assert set(by_region) == {"C01", "T01", "T02", "T03"}
    assert by_region["C01"].level == RegionLevel.county
    assert by_region["C01"].name.endswith("县养老服务中心")
    for township in plan.townships:
        centre = by_region[township.code]
        assert centre.level == RegionLevel.township
        assert centre.name.endswith("区域养老服务中心")
        assert (centre.lat, centre.lon) == (township.lat, township.lon)
    duty = {r.centre_region_code or "": r for r in plan.centre_responders}
    assert set(duty) == set(by_region)
    for code, responder in duty.items():
        assert responder.phone == by_region[code].duty_phone
        assert responder.village_code is None
        assert responder.travel_mode == "car"
        assert responder.setup_minutes == 5
        expected = ResponderKind.county_centre if code == "C01" else ResponderKind.township_centre
        assert responder.kind == expected


def test_every_home_has_sos_and_bed_and_ids_are_valid(plan: RegionPlan) -> None:
    kinds_by_elder: dict[str, set[DeviceKind]] = {}
    for device in plan.devices:
        assert DEVICE_ID.match(device.device_id), device.device_id
        kinds_by_elder.setdefault(device.elder_code, set()).add(device.kind)
    for elder in plan.elders:
        assert {DeviceKind.sos_button, DeviceKind.bed_sensor} <= kinds_by_elder[elder.code]
    assert len({d.device_id for d in plan.devices}) == len(plan.devices)
    counts = Counter(d.kind for d in plan.devices)
    assert counts[DeviceKind.hub] == 36
    assert counts[DeviceKind.smoke] == 30
    assert counts[DeviceKind.gas] == 24
    assert counts[DeviceKind.water] == 12
    assert plan.devices[0].device_id == "sos-0001"
    assert {d.device_id.split("-")[0] for d in plan.devices} == {
        "sos",
        "bed",
        "hub",
        "smk",
        "gas",
        "wat",
    }
    assert all(
        d.heartbeat_interval_s == 60
        for d in plan.devices
        if d.kind in (DeviceKind.sos_button, DeviceKind.bed_sensor)
    )


def test_device_passwords_are_derived_from_seed_and_id(plan: RegionPlan) -> None:
    for device in plan.devices:
        assert device.password == device_password(plan.seed, device.device_id)
        assert len(device.password) == 20
    assert len({d.password for d in plan.devices}) == len(plan.devices)


def test_phones_are_distinct_chinese_mobiles(plan: RegionPlan) -> None:
    phones = plan.phones()
    assert all(CHINA_MOBILE_E164.match(p) for p in phones), phones
    assert len(set(phones)) == len(phones)
    assert all(1 <= len(e.guardian_phones) <= 2 for e in plan.elders)


def test_elders_live_near_their_village(plan: RegionPlan) -> None:
    villages = {v.code: v for v in plan.villages}
    for elder in plan.elders:
        village = villages[elder.village_code]
        assert haversine_km(elder.lat, elder.lon, village.lat, village.lon) <= 2.0
        assert elder.address.startswith(village.name)
        assert re.fullmatch(r".+村\d+组\d+号", elder.address)
        assert elder.consent
    for aide in plan.aides:
        assert aide.village_code is not None
        village = villages[aide.village_code]
        assert haversine_km(aide.lat, aide.lon, village.lat, village.lon) <= 1.0


def test_villages_string_out_from_their_township_seat(plan: RegionPlan) -> None:
    townships = {t.code: t for t in plan.townships}
    for village in plan.villages:
        assert village.parent_code is not None
        seat = townships[village.parent_code]
        assert 2.0 <= haversine_km(village.lat, village.lon, seat.lat, seat.lon) <= 13.0
    for a_index, a in enumerate(plan.villages):
        for b in plan.villages[a_index + 1 :]:
            assert haversine_km(a.lat, a.lon, b.lat, b.lon) >= 1.0, (a.code, b.code)
    for township in plan.townships:
        distance = haversine_km(township.lat, township.lon, plan.county.lat, plan.county.lon)
        assert 5.0 <= distance <= 40.0
    # Around Ankang.
    assert abs(plan.county.lat - 32.68) < 0.01 and abs(plan.county.lon - 109.03) < 0.01


def test_risk_flags_have_realistic_shares(plan: RegionPlan) -> None:
    n = len(plan.elders)

    def share(flag: str) -> float:
        return sum(bool(getattr(e, flag)) for e in plan.elders) / n

    assert share("living_alone") == pytest.approx(0.40, abs=0.05)
    assert share("empty_nest") == pytest.approx(0.30, abs=0.05)
    assert share("left_behind") == pytest.approx(0.20, abs=0.05)
    assert share("disabled") == pytest.approx(0.10, abs=0.03)
    assert share("advanced_age") == pytest.approx(0.30, abs=0.05)
    assert share("wanders") == pytest.approx(0.05, abs=0.02)
    # 独居 and 空巢 (a couple with no children at home) are different households.
    assert not any(e.living_alone and e.empty_nest for e in plan.elders)
    # The rest of the roster's categories, which the visit tiers read.
    assert share("extreme_poverty") == pytest.approx(0.05, abs=0.02)
    assert share("low_income") == pytest.approx(0.12, abs=0.03)
    assert share("dementia") == pytest.approx(0.04, abs=0.02)
    assert share("severe_disability") == pytest.approx(0.03, abs=0.02)
    assert share("family_planning_special") == pytest.approx(0.03, abs=0.02)
    assert 0 < share("semi_disabled") <= 0.08
    assert not any(e.disabled and e.semi_disabled for e in plan.elders)


def test_aides(plan: RegionPlan) -> None:
    modes = Counter(a.travel_mode for a in plan.aides)
    assert set(modes) == {"walking", "ebike", "motorbike"}
    off_duty = [a for a in plan.aides if not a.on_duty]
    assert 1 <= len(off_duty) <= 3
    on_duty_villages = {a.village_code for a in plan.aides if a.on_duty}
    assert on_duty_villages == {v.code for v in plan.villages}
    assert all(a.kind == ResponderKind.aide and a.centre_region_code is None for a in plan.aides)
    assert all(2 <= len(a.name) <= 3 for a in plan.aides)
    assert all(2 <= len(e.name) <= 3 for e in plan.elders)


def test_operators(plan: RegionPlan) -> None:
    logins = {o.username: (o.password, o.role, o.region_code) for o in plan.operators}
    assert logins == {
        "admin": ("anxin-admin", OperatorRole.admin, "C01"),
        "county": ("anxin-county", OperatorRole.county_operator, "C01"),
        "t01": ("anxin-t01", OperatorRole.township_operator, "T01"),
        "t02": ("anxin-t02", OperatorRole.township_operator, "T02"),
        "t03": ("anxin-t03", OperatorRole.township_operator, "T03"),
    }


def test_ten_thousand_homes(big_plan: RegionPlan) -> None:
    assert len(big_plan.elders) == 10_000
    assert len(big_plan.villages) == 1_000
    assert len(big_plan.aides) == 2_000
    assert len(big_plan.townships) >= 3
    assert Counter(e.village_code for e in big_plan.elders) == {
        v.code: 10 for v in big_plan.villages
    }
    assert len({d.device_id for d in big_plan.devices}) == len(big_plan.devices)
    assert all(DEVICE_ID.match(d.device_id) for d in big_plan.devices)
    sos = sum(d.kind == DeviceKind.sos_button for d in big_plan.devices)
    bed = sum(d.kind == DeviceKind.bed_sensor for d in big_plan.devices)
    assert sos == bed == 10_000
    phones = big_plan.phones()
    assert len(set(phones)) == len(phones)
    assert all(CHINA_MOBILE_E164.match(p) for p in phones)
    region_codes = [r.code for r in big_plan.regions]
    assert len(set(region_codes)) == len(region_codes)
    assert len({o.username for o in big_plan.operators}) == len(big_plan.operators)
    villages = {v.code: v for v in big_plan.villages}
    for elder in big_plan.elders:
        village = villages[elder.village_code]
        assert haversine_km(elder.lat, elder.lon, village.lat, village.lon) <= 2.0


@pytest.mark.parametrize("homes", [1, 7, 25, 95])
def test_small_and_odd_sizes(homes: int) -> None:
    plan = generate_region(homes=homes)
    assert len(plan.elders) == homes
    assert all(plan.townships)
    assert len(plan.aides) == 2 * len(plan.villages)
    assert {e.village_code for e in plan.elders} == {v.code for v in plan.villages}


def test_homes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        generate_region(homes=0)
