"""Who can be at the elder's side soonest. Pure: candidates in, ranked responders out."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Literal

EARTH_RADIUS_KM = 6371.0088
# ETAs closer than this are a tie: the estimate is not that precise, so fairness decides.
TIE_MINUTES = 0.5

ResponderKind = Literal["aide", "township_centre", "county_centre"]


@dataclass(frozen=True)
class LatLon:
    lat: float
    lon: float


class TravelMode(StrEnum):
    walking = "walking"
    ebike = "ebike"
    motorbike = "motorbike"
    car = "car"
    # Pastoral and mountain townships (Bazhou's "马背上的适老化流动服务"): by mountain tracks.
    horseback = "horseback"
    mountain_walk = "mountain_walk"

    @property
    def speed_kmh(self) -> float:
        return DEFAULT_SPEEDS_KMH[self]

    @property
    def on_tracks(self) -> bool:
        """Goes by mountain tracks, not roads: they wind more than the region's road factor."""
        return self in (TravelMode.horseback, TravelMode.mountain_walk)


# Village roads, not highways: rural averages rather than limits. A region may set its own
# (`Region.travel_speeds`, merged county → township → village by `speeds_for`).
DEFAULT_SPEEDS_KMH: Mapping[TravelMode, float] = {
    TravelMode.walking: 4.5,
    TravelMode.ebike: 15.0,
    TravelMode.motorbike: 30.0,
    TravelMode.car: 40.0,
    TravelMode.horseback: 8.0,
    TravelMode.mountain_walk: 3.0,
}
# Straight line → distance along a mountain track (switchbacks, around gullies): the track
# modes use at least this, even where the region's road circuity is lower.
TRACK_CIRCUITY = 1.8
# What a region may set a speed to (km/h): a typo of 400 must not make an aide look near.
SPEED_RANGE_KMH = (0.5, 120.0)


def speeds_for(chain: Sequence[Mapping[str, Any] | None]) -> dict[TravelMode, float]:
    """The speeds a village's responders travel at: the defaults, then the county's, the
    township's and the village's own settings (`chain` is nearest first, as region chains are).
    An unknown mode is skipped, a speed out of range clamped (the API refuses both)."""
    speeds = dict(DEFAULT_SPEEDS_KMH)
    for settings in reversed(chain):
        for mode, value in (settings or {}).items():
            low, high = SPEED_RANGE_KMH
            if mode in TravelMode.__members__ and isinstance(value, int | float):
                speeds[TravelMode(mode)] = min(max(float(value), low), high)
    return speeds


# --- seasonal locations ------------------------------------------------------------------

# The seasons are calendar days in China (one time zone, UTC+8): a summer pasture from 06-01
# to 09-30 every year, a winter at a child's home in town from 11-15 to 03-15 (across the year).
CHINA_TZ = timezone(timedelta(hours=8))
_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_month_day(text: str) -> str:
    """ "6-1", "06-01", "6月1日" → "06-01"; ValueError for anything else (e.g. "02-30")."""
    cleaned = text.strip().replace("月", "-").replace("日", "").replace("/", "-").replace(".", "-")
    parts = cleaned.split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected MM-DD, not {text!r}")
    month, day = int(parts[0]), int(parts[1])
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        raise ValueError(f"no such day {text!r}")
    return f"{month:02d}-{day:02d}"


@dataclass(frozen=True)
class Season:
    """A second place an elder lives part of each year, from `start` to `end` (MM-DD, both
    days included; `end` before `start` runs across the new year)."""

    location: LatLon
    start: str
    end: str


def season_applies(season: Season, now: datetime) -> bool:
    """Whether `now` (a China calendar day) falls in the season, every year."""
    if not (_MONTH_DAY.match(season.start) and _MONTH_DAY.match(season.end)):
        return False
    today = now.astimezone(CHINA_TZ).strftime("%m-%d")
    if season.start <= season.end:
        return season.start <= today <= season.end
    return today >= season.start or today <= season.end


def home_at(home: LatLon, season: Season | None, now: datetime) -> LatLon:
    """Where the elder is at `now`: the seasonal place while its season applies, else home."""
    return season.location if season is not None and season_applies(season, now) else home


@dataclass(frozen=True)
class Candidate:
    responder_id: int
    kind: ResponderKind
    name: str
    village_id: int | None
    location: LatLon
    travel_mode: TravelMode
    on_duty: bool
    committed_to_p1: bool
    dispatches_today: int
    # Time to put shoes on and get going, before any travel.
    setup_minutes: float = 2.0


@dataclass(frozen=True)
class RankedResponder:
    responder_id: int
    kind: ResponderKind
    name: str
    distance_km: float
    eta_minutes: float
    source: Literal["estimate", "table"]


def haversine_km(a: LatLon, b: LatLon) -> float:
    """Great-circle distance in kilometres."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    d_lat = lat2 - lat1
    d_lon = math.radians(b.lon - a.lon)
    h = math.sin(d_lat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(d_lon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _rank(
    candidate: Candidate,
    home: LatLon,
    circuity: float,
    travel_table: Mapping[int, float] | None,
    speeds: Mapping[TravelMode, float] | None,
) -> RankedResponder:
    distance_km = haversine_km(candidate.location, home)
    routed_minutes = travel_table.get(candidate.responder_id) if travel_table else None
    source: Literal["estimate", "table"]
    if routed_minutes is not None:
        # A road router knows about rivers and mountain roads; the straight line does not.
        # It gives travel time only, so setup still applies.
        travel, source = routed_minutes, "table"
    else:
        mode = candidate.travel_mode
        speed = (speeds or DEFAULT_SPEEDS_KMH).get(mode, mode.speed_kmh)
        factor = max(circuity, TRACK_CIRCUITY) if mode.on_tracks else circuity
        travel = distance_km * factor / speed * 60.0
        source = "estimate"
    return RankedResponder(
        responder_id=candidate.responder_id,
        kind=candidate.kind,
        name=candidate.name,
        distance_km=distance_km,
        eta_minutes=travel + candidate.setup_minutes,
        source=source,
    )


def nearest_responders(
    home: LatLon,
    home_village_id: int | None,
    candidates: Sequence[Candidate],
    *,
    circuity: float = 1.4,
    travel_table: Mapping[int, float] | None = None,
    speeds: Mapping[TravelMode, float] | None = None,
) -> list[RankedResponder]:
    """Aides who can go now, soonest first; then township and county centres, soonest first.

    `circuity` turns straight-line distance into road distance (≈1.2 on flat land, more in
    hills and along rivers). `travel_table` maps responder_id → routed minutes to this home
    and overrides the estimate for that responder. `speeds` (km/h per mode, `speeds_for` a
    region chain) replaces `DEFAULT_SPEEDS_KMH`.
    """
    aides = [c for c in candidates if c.kind == "aide" and c.on_duty and not c.committed_to_p1]
    # Centres have a duty phone and a vehicle: always a fallback, whatever their flags say.
    centres = [c for c in candidates if c.kind != "aide"]

    ranked_aides = sorted(
        ((c, _rank(c, home, circuity, travel_table, speeds)) for c in aides),
        key=lambda pair: (pair[1].eta_minutes, pair[0].responder_id),
    )
    ordered: list[RankedResponder] = []
    start = 0
    while start < len(ranked_aides):
        # A tie group: every aide within TIE_MINUTES of the fastest not yet placed.
        fastest = ranked_aides[start][1].eta_minutes
        end = start
        while end < len(ranked_aides) and ranked_aides[end][1].eta_minutes - fastest <= TIE_MINUTES:
            end += 1
        group = sorted(
            ranked_aides[start:end],
            key=lambda pair: (
                home_village_id is None or pair[0].village_id != home_village_id,
                pair[0].dispatches_today,
                pair[0].responder_id,
            ),
        )
        ordered.extend(ranked for _, ranked in group)
        start = end

    ordered.extend(
        sorted(
            (_rank(c, home, circuity, travel_table, speeds) for c in centres),
            key=lambda r: (r.eta_minutes, r.responder_id),
        )
    )
    return ordered


def aides_in_time(ranked: Sequence[RankedResponder], respond_within_minutes: float) -> bool:
    """Whether any aide can arrive within the window (else go straight to the centres too)."""
    return any(r.kind == "aide" and r.eta_minutes <= respond_within_minutes for r in ranked)
