"""What a region plan is: frozen specs of regions, centres, elders, devices, aides and
operators, as `generate_region` returns them and `seed_region` writes them."""

from __future__ import annotations

from dataclasses import dataclass

from anxin.schemas import DeviceKind, OperatorRole, RegionLevel, ResponderKind

# Roads follow rivers round mountains: well above the 1.2 of flat land.
MOUNTAIN_CIRCUITY = 1.5
RESPONSE_MINUTES = 15


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """A county, township or village (regions row); parents are referred to by code."""

    code: str
    name: str
    level: RegionLevel
    parent_code: str | None
    lat: float
    lon: float
    response_minutes: int = RESPONSE_MINUTES
    circuity: float = MOUNTAIN_CIRCUITY


@dataclass(frozen=True, slots=True)
class CentreSpec:
    """A township regional or county eldercare centre (service_centres row)."""

    region_code: str
    level: RegionLevel  # township | county
    name: str
    duty_phone: str
    lat: float
    lon: float
    has_vehicle: bool


@dataclass(frozen=True, slots=True)
class ElderSpec:
    code: str
    name: str
    village_code: str
    address: str
    lat: float
    lon: float
    living_alone: bool
    empty_nest: bool
    left_behind: bool
    disabled: bool
    advanced_age: bool
    wanders: bool
    guardian_phones: tuple[str, ...]
    consent: bool = True
    # The rest of the civil-affairs categories (探访关爱's tiers are decided by them).
    extreme_poverty: bool = False  # 特困
    low_income: bool = False  # 低保
    semi_disabled: bool = False  # 半失能
    dementia: bool = False  # 失智
    severe_disability: bool = False  # 重残
    family_planning_special: bool = False  # 计划生育特殊家庭


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    device_id: str
    kind: DeviceKind
    elder_code: str
    password: str  # plain: the simulator connects with it; the database keeps only a hash
    heartbeat_interval_s: int


@dataclass(frozen=True, slots=True)
class ResponderSpec:
    """A village aide (village_code set) or a centre's duty phone (centre_region_code set)."""

    kind: ResponderKind
    name: str
    phone: str
    village_code: str | None
    centre_region_code: str | None
    lat: float
    lon: float
    travel_mode: str
    setup_minutes: float
    on_duty: bool


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    username: str
    display_name: str
    password: str  # plain; hashed by seed_region
    role: OperatorRole
    region_code: str


@dataclass(frozen=True, slots=True)
class RegionPlan:
    seed: int
    county: RegionSpec
    townships: tuple[RegionSpec, ...]
    villages: tuple[RegionSpec, ...]
    centres: tuple[CentreSpec, ...]
    elders: tuple[ElderSpec, ...]
    devices: tuple[DeviceSpec, ...]
    aides: tuple[ResponderSpec, ...]
    centre_responders: tuple[ResponderSpec, ...]
    operators: tuple[OperatorSpec, ...]

    @property
    def regions(self) -> tuple[RegionSpec, ...]:
        """Parents before children, the order they must be inserted in."""
        return (self.county, *self.townships, *self.villages)

    @property
    def responders(self) -> tuple[ResponderSpec, ...]:
        return (*self.aides, *self.centre_responders)

    def phones(self) -> list[str]:
        """Every phone number in the plan: guardians, aides and duty phones."""
        numbers = [p for elder in self.elders for p in elder.guardian_phones]
        numbers.extend(r.phone for r in self.responders)
        return numbers
