"""`generate_region(homes, seed)`: the demo county as a `RegionPlan`, pure and deterministic
(only `random.Random(seed)` streams and sha256), the same plan for the same arguments on every
machine. The plan holds plain passwords so the simulator can connect as each device and log
in as each operator; they are demo passwords, derived from the public seed."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from anxin.schemas import DeviceKind, OperatorRole, RegionLevel, ResponderKind
from device_sim.region.names import (
    AIDE_GIVEN_FEMALE,
    AIDE_GIVEN_MALE,
    ELDER_GIVEN_FEMALE,
    ELDER_GIVEN_MALE,
    MOBILE_PREFIXES,
    SHARE_AIDES_FEMALE,
    SHARE_CLAN_SURNAME,
    SHARE_ELDERS_FEMALE,
    SURNAME_WEIGHTS,
    SURNAMES,
    TOWNSHIP_FIRST,
    TOWNSHIP_SECOND,
    TOWNSHIP_SUFFIXES,
    VILLAGE_PREFIXES,
    VILLAGE_SUFFIXES,
)
from device_sim.region.plan import (
    CentreSpec,
    DeviceSpec,
    ElderSpec,
    OperatorSpec,
    RegionPlan,
    RegionSpec,
    ResponderSpec,
)
from registry.columns import AIDE_SETUP_MINUTES, CENTRE_SETUP_MINUTES, centre_responder

DEFAULT_HOMES = 120
DEFAULT_SEED = 2026
HOMES_PER_VILLAGE = 10
AIDES_PER_VILLAGE = 2
MIN_TOWNSHIPS = 3
# A real township has 10-20 villages; beyond that a larger plan gets more townships.
MAX_VILLAGES_PER_TOWNSHIP = 20

COUNTY_CODE = "C01"
COUNTY_NAME = "安岚县"
COUNTY_SEAT_LAT = 32.68
COUNTY_SEAT_LON = 109.03

# Township seats on a sunflower spiral: r = spacing * sqrt(i), so neighbours are ~24 km apart
# and each township's villages (up to 12 km out) barely overlap their neighbours'.
TOWNSHIP_SPIRAL_KM = 13.5
GOLDEN_ANGLE_RAD = math.pi * (3.0 - math.sqrt(5.0))
VILLAGE_MIN_KM = 3.0
VILLAGE_MAX_KM = 12.0
VILLAGES_PER_VALLEY = 4
# Homes string along the valley floor: an ellipse, long along the river.
HOME_SPREAD_ALONG_KM = 1.5
HOME_SPREAD_ACROSS_KM = 0.6
AIDE_SPREAD_KM = 0.5

KM_PER_DEGREE_LAT = 110.574
KM_PER_DEGREE_LON_AT_EQUATOR = 111.320

# Shares of homes; household composition is one draw, so 独居 and 空巢 (an elderly couple,
# no children at home) exclude each other, and 留守 (children away working) is among them.
SHARE_LIVING_ALONE = 0.40
SHARE_EMPTY_NEST = 0.30
SHARE_LEFT_BEHIND = 0.20
SHARE_DISABLED = 0.10
SHARE_ADVANCED_AGE = 0.30
SHARE_WANDERS = 0.05
SHARE_TWO_GUARDIANS = 0.5
# The categories the visit tiers read, roughly a mountain county's roster: 特困 (supported by
# the state), 低保, 半失能 (not also 失能), 失智, 重残, 计划生育特殊家庭.
SHARE_CATEGORIES = {
    "extreme_poverty": 0.05,
    "low_income": 0.12,
    "semi_disabled": 0.08,
    "dementia": 0.04,
    "severe_disability": 0.03,
    "family_planning_special": 0.03,
}
SHARE_HUB = 0.30
SHARE_SMOKE = 0.25
SHARE_GAS = 0.20
SHARE_WATER = 0.10
SHARE_AIDES_OFF_DUTY = 0.08
AIDE_TRAVEL_MODE_SHARES = (("walking", 0.20), ("motorbike", 0.30))  # the rest ride e-bikes

DEVICE_ID_PREFIX: dict[DeviceKind, str] = {
    DeviceKind.sos_button: "sos",
    DeviceKind.bed_sensor: "bed",
    DeviceKind.hub: "hub",
    DeviceKind.smoke: "smk",
    DeviceKind.gas: "gas",
    DeviceKind.water: "wat",
}
# Mains-powered devices poll every minute; battery detectors report less often to last years.
HEARTBEAT_S: dict[DeviceKind, int] = {
    DeviceKind.sos_button: 60,
    DeviceKind.bed_sensor: 60,
    DeviceKind.hub: 60,
    DeviceKind.smoke: 300,
    DeviceKind.gas: 300,
    DeviceKind.water: 300,
}
DEVICE_PASSWORD_CHARS = 20


# --- generation -------------------------------------------------------------------------------


@dataclass(slots=True)
class _PhoneBook:
    """Hands out distinct mobile numbers: every phone in the plan belongs to one person."""

    rng: random.Random
    used: set[str] = field(default_factory=set)

    def next_number(self) -> str:
        while True:
            number = f"+86{self.rng.choice(MOBILE_PREFIXES)}{self.rng.randrange(10**8):08d}"
            if number not in self.used:
                self.used.add(number)
                return number


@dataclass(frozen=True, slots=True)
class _VillageSite:
    spec: RegionSpec
    valley_bearing_rad: float  # homes spread along the river, in this direction


def _offset(lat: float, lon: float, east_km: float, north_km: float) -> tuple[float, float]:
    """A point `east_km`, `north_km` from (lat, lon); flat-earth is exact enough over 50 km."""
    new_lat = lat + north_km / KM_PER_DEGREE_LAT
    new_lon = lon + east_km / (KM_PER_DEGREE_LON_AT_EQUATOR * math.cos(math.radians(lat)))
    return round(new_lat, 6), round(new_lon, 6)


def _point_in_ellipse(
    rng: random.Random, along_km: float, across_km: float, bearing_rad: float
) -> tuple[float, float]:
    """A uniform point in an ellipse whose long axis points along `bearing_rad`; (east, north)."""
    radius = math.sqrt(rng.random())
    angle = rng.uniform(0.0, 2.0 * math.pi)
    along = radius * math.cos(angle) * along_km
    across = radius * math.sin(angle) * across_km
    east = along * math.sin(bearing_rad) + across * math.cos(bearing_rad)
    north = along * math.cos(bearing_rad) - across * math.sin(bearing_rad)
    return east, north


def _split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` sizes that differ by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _exact_share(rng: random.Random, population: Sequence[int], share: float) -> set[int]:
    """A random subset of exactly round(share * len) members: the shares hold at every size."""
    return set(rng.sample(population, round(share * len(population))))


def _names_cycle(rng: random.Random, names: list[str]) -> Iterator[str]:
    """Names in a shuffled order, each once before any repeats (codes stay unique regardless)."""
    rng.shuffle(names)
    while True:
        yield from names


def _township_names(rng: random.Random) -> Iterator[str]:
    bases = [a + b for a in TOWNSHIP_FIRST for b in TOWNSHIP_SECOND]
    rng.shuffle(bases)
    suffixes = [rng.choice(TOWNSHIP_SUFFIXES) for _ in bases]
    return _names_cycle(rng, [base + suffix for base, suffix in zip(bases, suffixes, strict=True)])


def _village_names(rng: random.Random) -> Iterator[str]:
    names = [
        prefix + suffix + "村"
        for prefix in VILLAGE_PREFIXES
        for suffix in VILLAGE_SUFFIXES
        if not prefix.endswith(suffix)  # no 大河河村
    ]
    return _names_cycle(rng, names)


def _plan_sizes(homes: int) -> tuple[int, int]:
    """(townships, villages) for `homes` homes: ~10 homes a village, at most 20 villages a
    township, at least three townships when there are villages enough."""
    villages = max(1, round(homes / HOMES_PER_VILLAGE))
    townships = min(villages, max(MIN_TOWNSHIPS, math.ceil(villages / MAX_VILLAGES_PER_TOWNSHIP)))
    return townships, villages


def device_password(seed: int, device_id: str) -> str:
    """The demo password of a device: derived from the seed, so the simulator can recompute it."""
    digest = hashlib.sha256(f"anxin-demo:{seed}:{device_id}".encode()).hexdigest()
    return digest[:DEVICE_PASSWORD_CHARS]


def generate_region(homes: int | None = None, seed: int = DEFAULT_SEED) -> RegionPlan:
    """The demo region with `homes` homes (default 120): 3 townships of 4 villages, 10 homes and
    2 aides per village; larger plans add villages (and townships past 20 villages each)."""
    home_count = DEFAULT_HOMES if homes is None else homes
    if home_count < 1:
        raise ValueError(f"homes must be at least 1, got {home_count}")
    # Separate streams: changing how one part is drawn does not reshuffle the others.
    geo_rng = random.Random(f"{seed}:geography")
    people_rng = random.Random(f"{seed}:people")
    phone_book = _PhoneBook(random.Random(f"{seed}:phones"))
    township_count, village_count = _plan_sizes(home_count)

    county = RegionSpec(
        COUNTY_CODE, COUNTY_NAME, RegionLevel.county, None, COUNTY_SEAT_LAT, COUNTY_SEAT_LON
    )
    townships, village_sites = _generate_geography(geo_rng, county, township_count, village_count)
    centres = _generate_centres(county, townships, phone_book)
    elders = _generate_elders(people_rng, village_sites, home_count, phone_book)
    # Drawn apart, so every other draw (names, places, aides) is what it was before.
    elders = _with_categories(random.Random(f"{seed}:categories"), elders)
    devices = _generate_devices(random.Random(f"{seed}:devices"), seed, elders)
    aides = _generate_aides(people_rng, village_sites, phone_book)
    centre_responders = tuple(_centre_responder(centre) for centre in centres)
    return RegionPlan(
        seed=seed,
        county=county,
        townships=townships,
        villages=tuple(site.spec for site in village_sites),
        centres=centres,
        elders=elders,
        devices=devices,
        aides=aides,
        centre_responders=centre_responders,
        operators=_generate_operators(county, townships),
    )


def _generate_geography(
    rng: random.Random, county: RegionSpec, township_count: int, village_count: int
) -> tuple[tuple[RegionSpec, ...], list[_VillageSite]]:
    township_names = _township_names(rng)
    village_names = _village_names(rng)
    spiral_turn = rng.uniform(0.0, 2.0 * math.pi)
    townships: list[RegionSpec] = []
    sites: list[_VillageSite] = []
    for t_index, villages_here in enumerate(_split_evenly(village_count, township_count)):
        radius_km = TOWNSHIP_SPIRAL_KM * math.sqrt(t_index + 1) * rng.uniform(0.92, 1.08)
        bearing = spiral_turn + (t_index + 1) * GOLDEN_ANGLE_RAD + rng.uniform(-0.15, 0.15)
        seat_lat, seat_lon = _offset(
            county.lat, county.lon, radius_km * math.sin(bearing), radius_km * math.cos(bearing)
        )
        township = RegionSpec(
            code=f"T{t_index + 1:02d}",
            name=next(township_names),
            level=RegionLevel.township,
            parent_code=county.code,
            lat=seat_lat,
            lon=seat_lon,
        )
        townships.append(township)
        sites.extend(_township_villages(rng, township, villages_here, len(sites), village_names))
    return tuple(townships), sites


def _township_villages(
    rng: random.Random,
    township: RegionSpec,
    count: int,
    numbered_so_far: int,
    names: Iterator[str],
) -> list[_VillageSite]:
    """`count` villages strung along valleys that radiate from the township seat."""
    if count == 0:
        return []
    valley_count = 1 if count == 1 else max(2, math.ceil(count / VILLAGES_PER_VALLEY))
    first_valley = rng.uniform(0.0, 2.0 * math.pi)
    sites: list[_VillageSite] = []
    for v_index, villages_in_valley in enumerate(_split_evenly(count, valley_count)):
        valley = first_valley + v_index * 2.0 * math.pi / valley_count + rng.uniform(-0.25, 0.25)
        bend = rng.uniform(-0.35, 0.35)  # valleys curve; the road follows
        step_km = (VILLAGE_MAX_KM - VILLAGE_MIN_KM) / villages_in_valley
        for position in range(villages_in_valley):
            along_km = VILLAGE_MIN_KM + (position + 0.5) * step_km + rng.uniform(-0.5, 0.5)
            bearing = valley + bend * along_km / VILLAGE_MAX_KM
            across_km = rng.uniform(-0.4, 0.4)
            east = along_km * math.sin(bearing) + across_km * math.cos(bearing)
            north = along_km * math.cos(bearing) - across_km * math.sin(bearing)
            lat, lon = _offset(township.lat, township.lon, east, north)
            spec = RegionSpec(
                code=f"V{numbered_so_far + len(sites) + 1:02d}",
                name=next(names),
                level=RegionLevel.village,
                parent_code=township.code,
                lat=lat,
                lon=lon,
            )
            sites.append(_VillageSite(spec, bearing))
    return sites


def _centre_responder(centre: CentreSpec) -> ResponderSpec:
    """The responder through which the dispatcher reaches a centre: the same name and kind as
    the API and the import give it."""
    name, kind = centre_responder(centre.name, centre.level)
    return ResponderSpec(
        kind=kind,
        name=name,
        phone=centre.duty_phone,
        village_code=None,
        centre_region_code=centre.region_code,
        lat=centre.lat,
        lon=centre.lon,
        travel_mode="car",
        setup_minutes=CENTRE_SETUP_MINUTES,
        on_duty=True,
    )


def _generate_centres(
    county: RegionSpec, townships: Sequence[RegionSpec], phone_book: _PhoneBook
) -> tuple[CentreSpec, ...]:
    centres = [
        CentreSpec(
            region_code=county.code,
            level=RegionLevel.county,
            name=f"{county.name}养老服务中心",
            duty_phone=phone_book.next_number(),
            lat=county.lat,
            lon=county.lon,
            has_vehicle=True,
        )
    ]
    centres.extend(
        CentreSpec(
            region_code=township.code,
            level=RegionLevel.township,
            name=f"{township.name}区域养老服务中心",
            duty_phone=phone_book.next_number(),
            lat=township.lat,
            lon=township.lon,
            has_vehicle=True,
        )
        for township in townships
    )
    return tuple(centres)


def _person_name(
    rng: random.Random,
    female_names: Sequence[str],
    male_names: Sequence[str],
    share_female: float,
    clan_surname: str | None,
) -> str:
    if clan_surname is not None and rng.random() < SHARE_CLAN_SURNAME:
        surname = clan_surname
    else:
        surname = rng.choices(SURNAMES, weights=SURNAME_WEIGHTS)[0]
    given = female_names if rng.random() < share_female else male_names
    return surname + rng.choice(given)


def _unique_person_name(
    rng: random.Random,
    taken: set[str],
    female_names: Sequence[str],
    male_names: Sequence[str],
    share_female: float,
    clan_surname: str | None,
) -> str:
    """A name not yet in `taken` (two 王秀英 in one village confuse the operator); adds it."""
    while True:
        name = _person_name(rng, female_names, male_names, share_female, clan_surname)
        if name not in taken:
            taken.add(name)
            return name


def _clan_surname(village_name: str) -> str | None:
    """黄家坪村 → 黄."""
    if len(village_name) > 2 and village_name[1] == "家" and village_name[0] in SURNAMES:
        return village_name[0]
    return None


def _generate_elders(
    rng: random.Random,
    sites: Sequence[_VillageSite],
    home_count: int,
    phone_book: _PhoneBook,
) -> tuple[ElderSpec, ...]:
    everyone = range(home_count)
    order = list(everyone)
    rng.shuffle(order)
    alone_count = round(SHARE_LIVING_ALONE * home_count)
    empty_nest_count = round(SHARE_EMPTY_NEST * home_count)
    living_alone = set(order[:alone_count])
    empty_nest = set(order[alone_count : alone_count + empty_nest_count])
    without_children = order[: alone_count + empty_nest_count]
    left_behind_count = round(SHARE_LEFT_BEHIND * home_count)
    left_behind = set(rng.sample(without_children, min(len(without_children), left_behind_count)))
    disabled = _exact_share(rng, everyone, SHARE_DISABLED)
    advanced_age = _exact_share(rng, everyone, SHARE_ADVANCED_AGE)
    wanders = _exact_share(rng, everyone, SHARE_WANDERS)
    two_guardians = _exact_share(rng, everyone, SHARE_TWO_GUARDIANS)

    elders: list[ElderSpec] = []
    for site, homes_here in zip(sites, _split_evenly(home_count, len(sites)), strict=True):
        village = site.spec
        clan = _clan_surname(village.name)
        addresses: set[str] = set()
        names: set[str] = set()
        for _ in range(homes_here):
            home = len(elders)
            name = _unique_person_name(
                rng, names, ELDER_GIVEN_FEMALE, ELDER_GIVEN_MALE, SHARE_ELDERS_FEMALE, clan
            )
            address = f"{village.name}{rng.randint(1, 8)}组{rng.randint(1, 60)}号"
            while address in addresses:
                address = f"{village.name}{rng.randint(1, 8)}组{rng.randint(1, 60)}号"
            addresses.add(address)
            east, north = _point_in_ellipse(
                rng, HOME_SPREAD_ALONG_KM, HOME_SPREAD_ACROSS_KM, site.valley_bearing_rad
            )
            lat, lon = _offset(village.lat, village.lon, east, north)
            guardian_count = 2 if home in two_guardians else 1
            elders.append(
                ElderSpec(
                    code=f"E{home + 1:04d}",
                    name=name,
                    village_code=village.code,
                    address=address,
                    lat=lat,
                    lon=lon,
                    living_alone=home in living_alone,
                    empty_nest=home in empty_nest,
                    left_behind=home in left_behind,
                    disabled=home in disabled,
                    advanced_age=home in advanced_age,
                    wanders=home in wanders,
                    guardian_phones=tuple(phone_book.next_number() for _ in range(guardian_count)),
                )
            )
    return tuple(elders)


def _with_categories(rng: random.Random, elders: tuple[ElderSpec, ...]) -> tuple[ElderSpec, ...]:
    everyone = range(len(elders))
    chosen = {flag: _exact_share(rng, everyone, share) for flag, share in SHARE_CATEGORIES.items()}
    # 半失能 and 失能 exclude each other.
    chosen["semi_disabled"] = {i for i in chosen["semi_disabled"] if not elders[i].disabled}
    return tuple(
        dataclasses.replace(
            elder,
            extreme_poverty=i in chosen["extreme_poverty"],
            low_income=i in chosen["low_income"],
            semi_disabled=i in chosen["semi_disabled"],
            dementia=i in chosen["dementia"],
            severe_disability=i in chosen["severe_disability"],
            family_planning_special=i in chosen["family_planning_special"],
        )
        for i, elder in enumerate(elders)
    )


def _generate_devices(
    rng: random.Random, seed: int, elders: Sequence[ElderSpec]
) -> tuple[DeviceSpec, ...]:
    """An SOS button and a bed sensor in every home, the other kinds in a share of homes.

    A device id carries its home's number (gas-0042 is in E0042's home), so ids of one kind
    are not contiguous.
    """
    everyone = range(len(elders))
    optional = {
        DeviceKind.hub: _exact_share(rng, everyone, SHARE_HUB),
        DeviceKind.smoke: _exact_share(rng, everyone, SHARE_SMOKE),
        DeviceKind.gas: _exact_share(rng, everyone, SHARE_GAS),
        DeviceKind.water: _exact_share(rng, everyone, SHARE_WATER),
    }
    devices: list[DeviceSpec] = []
    for home, elder in enumerate(elders):
        kinds = [DeviceKind.sos_button, DeviceKind.bed_sensor]
        kinds.extend(kind for kind, homes in optional.items() if home in homes)
        for kind in kinds:
            device_id = f"{DEVICE_ID_PREFIX[kind]}-{home + 1:04d}"
            devices.append(
                DeviceSpec(
                    device_id=device_id,
                    kind=kind,
                    elder_code=elder.code,
                    password=device_password(seed, device_id),
                    heartbeat_interval_s=HEARTBEAT_S[kind],
                )
            )
    return tuple(devices)


def _generate_aides(
    rng: random.Random, sites: Sequence[_VillageSite], phone_book: _PhoneBook
) -> tuple[ResponderSpec, ...]:
    aide_count = AIDES_PER_VILLAGE * len(sites)
    modes = [
        mode for mode, share in AIDE_TRAVEL_MODE_SHARES for _ in range(round(share * aide_count))
    ]
    modes.extend("ebike" for _ in range(aide_count - len(modes)))
    rng.shuffle(modes)
    # Off duty is always a village's second aide: every village keeps someone on call.
    off_duty_count = min(len(sites), round(SHARE_AIDES_OFF_DUTY * aide_count))
    off_duty_villages = set(rng.sample(range(len(sites)), off_duty_count))
    aides: list[ResponderSpec] = []
    for village_index, site in enumerate(sites):
        village = site.spec
        names_here: set[str] = set()
        for slot in range(AIDES_PER_VILLAGE):
            is_second_aide = slot == AIDES_PER_VILLAGE - 1
            name = _unique_person_name(
                rng, names_here, AIDE_GIVEN_FEMALE, AIDE_GIVEN_MALE, SHARE_AIDES_FEMALE, None
            )
            east, north = _point_in_ellipse(
                rng, AIDE_SPREAD_KM, AIDE_SPREAD_KM, site.valley_bearing_rad
            )
            lat, lon = _offset(village.lat, village.lon, east, north)
            aides.append(
                ResponderSpec(
                    kind=ResponderKind.aide,
                    name=name,
                    phone=phone_book.next_number(),
                    village_code=village.code,
                    centre_region_code=None,
                    lat=lat,
                    lon=lon,
                    travel_mode=modes[len(aides)],
                    setup_minutes=AIDE_SETUP_MINUTES,
                    on_duty=not (is_second_aide and village_index in off_duty_villages),
                )
            )
    return tuple(aides)


def _generate_operators(
    county: RegionSpec, townships: Sequence[RegionSpec]
) -> tuple[OperatorSpec, ...]:
    operators = [
        OperatorSpec("admin", "系统管理员", "anxin-admin", OperatorRole.admin, county.code),
        OperatorSpec(
            "county",
            f"{county.name}值班员",
            "anxin-county",
            OperatorRole.county_operator,
            county.code,
        ),
    ]
    for township in townships:
        username = township.code.lower()
        operators.append(
            OperatorSpec(
                username,
                f"{township.name}值班员",
                f"anxin-{username}",
                OperatorRole.township_operator,
                township.code,
            )
        )
    return tuple(operators)
