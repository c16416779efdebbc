"""Who gets the SMS first: the responder who can be at the elder's side soonest."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from dispatcher.routing import (
    Candidate,
    LatLon,
    TravelMode,
    aides_in_time,
    haversine_km,
    nearest_responders,
)

HOME = LatLon(30.0, 114.0)
HOME_VILLAGE = 7
KM_PER_DEGREE = 6371.0088 * math.pi / 180


def at(north_km: float, east_km: float = 0.0) -> LatLon:
    """A point this many kilometres north and east of the elder's home."""
    return LatLon(
        HOME.lat + north_km / KM_PER_DEGREE,
        HOME.lon + east_km / (KM_PER_DEGREE * math.cos(math.radians(HOME.lat))),
    )


def aide(responder_id: int, north_km: float, **fields: Any) -> Candidate:
    base = Candidate(
        responder_id=responder_id,
        kind="aide",
        name=f"aide-{responder_id}",
        village_id=HOME_VILLAGE,
        location=at(north_km),
        travel_mode=TravelMode.ebike,
        on_duty=True,
        committed_to_p1=False,
        dispatches_today=0,
    )
    return replace(base, **fields)


def centre(responder_id: int, north_km: float, kind: str = "township_centre") -> Candidate:
    return aide(responder_id, north_km, kind=kind, village_id=None, travel_mode=TravelMode.car)


def order(candidates: list[Candidate], **kwargs: Any) -> list[int]:
    return [r.responder_id for r in nearest_responders(HOME, HOME_VILLAGE, candidates, **kwargs)]


SCENARIOS: list[tuple[str, list[Candidate], dict[str, Any], list[int]]] = [
    (
        "nearest aide first, centres after every aide even when nearer",
        [centre(90, 0.2), aide(2, 3.0), aide(1, 1.0), centre(91, 20.0, "county_centre")],
        {},
        [1, 2, 90, 91],
    ),
    (
        # Aide 1 is 0.5 km away across the river; the road router says the bridge takes 25 min.
        "across the river: routed table time beats the straight line",
        [aide(1, 0.5), aide(2, -1.5)],
        {"travel_table": {1: 25.0}},
        [2, 1],
    ),
    (
        "off-duty and P1-committed aides are skipped, centres never are",
        [
            aide(1, 0.2, on_duty=False),
            aide(2, 0.3, committed_to_p1=True),
            aide(3, 4.0),
            replace(centre(90, 5.0), on_duty=False),
        ],
        {},
        [3, 90],
    ),
    (
        "equal ETA: the aide from the elder's own village first",
        [aide(1, 1.0, village_id=8), aide(2, -1.0, village_id=HOME_VILLAGE)],
        {},
        [2, 1],
    ),
    (
        "ETA within half a minute is a tie: own village still first",
        # 50 m more on an e-bike with circuity 1.4 is ~0.3 min; 200 m (below) is ~1.1 min.
        [aide(1, 1.0, village_id=8), aide(2, 1.05, village_id=HOME_VILLAGE)],
        {},
        [2, 1],
    ),
    (
        "more than half a minute apart: the nearer aide, whatever the village",
        [aide(1, 1.0, village_id=8), aide(2, 1.2, village_id=HOME_VILLAGE)],
        {},
        [1, 2],
    ),
    (
        "tie in the same village: fewer dispatches today first, then the lower id",
        [
            aide(3, 1.0, dispatches_today=1),
            aide(2, -1.0, dispatches_today=4),
            aide(1, 1.0, dispatches_today=1),
        ],
        {},
        [1, 3, 2],
    ),
    (
        "walking 0.8 km is slower than an e-bike 2 km away",
        [aide(1, 0.8, travel_mode=TravelMode.walking), aide(2, 2.0)],
        {},
        [2, 1],
    ),
    (
        "the same walker on a motorbike is first",
        [aide(1, 0.8, travel_mode=TravelMode.motorbike), aide(2, 2.0)],
        {},
        [1, 2],
    ),
    (
        "flat land (circuity 1.2): the estimated aide beats a 10-minute routed one",
        [aide(1, 1.5), aide(2, 0.5)],
        {"circuity": 1.2, "travel_table": {2: 10.0}},
        [1, 2],
    ),
    (
        "winding mountain road (circuity 2.0): the routed aide is now first",
        [aide(1, 1.5), aide(2, 0.5)],
        {"circuity": 2.0, "travel_table": {2: 10.0}},
        [2, 1],
    ),
]


@pytest.mark.parametrize(
    ("candidates", "kwargs", "expected"),
    [pytest.param(c, k, e, id=name) for name, c, k, e in SCENARIOS],
)
def test_ranking(candidates: list[Candidate], kwargs: dict[str, Any], expected: list[int]) -> None:
    assert order(candidates, **kwargs) == expected


def test_eta_is_road_distance_over_speed_plus_setup() -> None:
    (ranked,) = nearest_responders(HOME, HOME_VILLAGE, [aide(1, 3.0, setup_minutes=5.0)])
    assert ranked.distance_km == pytest.approx(3.0, abs=0.01)
    # 3 km × 1.4 = 4.2 km of road at 15 km/h = 16.8 min, plus 5 min to get going.
    assert ranked.eta_minutes == pytest.approx(21.8, abs=0.05)
    assert ranked.source == "estimate"


def test_routed_time_is_marked_as_from_the_table() -> None:
    (ranked,) = nearest_responders(HOME, HOME_VILLAGE, [aide(1, 0.5)], travel_table={1: 25.0})
    assert ranked.source == "table"
    assert ranked.eta_minutes == pytest.approx(27.0)


@pytest.mark.parametrize(
    ("candidates", "window", "in_time"),
    [
        ([aide(1, 2.0)], 15.0, True),
        ([aide(1, 8.0, travel_mode=TravelMode.walking), centre(90, 1.0)], 15.0, False),
        ([aide(1, 0.5, on_duty=False), centre(90, 1.0)], 15.0, False),
        ([], 15.0, False),
    ],
    ids=["aide nearby", "only a centre in time", "only aide off duty", "nobody"],
)
def test_aides_in_time(candidates: list[Candidate], window: float, in_time: bool) -> None:
    ranked = nearest_responders(HOME, HOME_VILLAGE, candidates)
    assert aides_in_time(ranked, window) is in_time


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_km(LatLon(30.0, 114.0), LatLon(31.0, 114.0)) == pytest.approx(111.2, abs=0.1)
    assert haversine_km(HOME, HOME) == 0.0
