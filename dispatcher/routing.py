"""Who can be at the elder's side soonest. Pure: candidates in, ranked responders out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

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

    @property
    def speed_kmh(self) -> float:
        return DEFAULT_SPEEDS_KMH[self]


# Village roads, not highways: rural averages rather than limits.
DEFAULT_SPEEDS_KMH: Mapping[TravelMode, float] = {
    TravelMode.walking: 4.5,
    TravelMode.ebike: 15.0,
    TravelMode.motorbike: 30.0,
    TravelMode.car: 40.0,
}


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
) -> RankedResponder:
    distance_km = haversine_km(candidate.location, home)
    routed_minutes = travel_table.get(candidate.responder_id) if travel_table else None
    source: Literal["estimate", "table"]
    if routed_minutes is not None:
        # A road router knows about rivers and mountain roads; the straight line does not.
        # It gives travel time only, so setup still applies.
        travel, source = routed_minutes, "table"
    else:
        travel = distance_km * circuity / candidate.travel_mode.speed_kmh * 60.0
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
) -> list[RankedResponder]:
    """Aides who can go now, soonest first; then township and county centres, soonest first.

    `circuity` turns straight-line distance into road distance (≈1.2 on flat land, more in
    hills and along rivers). `travel_table` maps responder_id → routed minutes to this home
    and overrides the estimate for that responder.
    """
    aides = [c for c in candidates if c.kind == "aide" and c.on_duty and not c.committed_to_p1]
    # Centres have a duty phone and a vehicle: always a fallback, whatever their flags say.
    centres = [c for c in candidates if c.kind != "aide"]

    ranked_aides = sorted(
        ((c, _rank(c, home, circuity, travel_table)) for c in aides),
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
            (_rank(c, home, circuity, travel_table) for c in centres),
            key=lambda r: (r.eta_minutes, r.responder_id),
        )
    )
    return ordered


def aides_in_time(ranked: Sequence[RankedResponder], respond_within_minutes: float) -> bool:
    """Whether any aide can arrive within the window (else go straight to the centres too)."""
    return any(r.kind == "aide" and r.eta_minutes <= respond_within_minutes for r in ranked)
