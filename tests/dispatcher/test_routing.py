"""Who gets the SMS first: the responder who can be at the elder's side soonest."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from dispatcher.routing import (
    Candidate,
    LatLon,
    Season,
    TravelMode,
    aides_in_time,
    haversine_km,
    home_at,
    nearest_responders,
    parse_month_day,
    season_applies,
    speeds_for,
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


@pytest.mark.parametrize(
    ("mode", "kwargs", "minutes"),
    [
        # 3 km straight; roads wind 1.4×, mountain tracks at least 1.8×; plus 2 min setup.
        (TravelMode.ebike, {}, 3 * 1.4 / 15 * 60 + 2),
        (TravelMode.horseback, {}, 3 * 1.8 / 8 * 60 + 2),
        (TravelMode.mountain_walk, {}, 3 * 1.8 / 3 * 60 + 2),
        # A steeper region's own circuity above the track's floor applies to tracks too.
        (TravelMode.horseback, {"circuity": 2.2}, 3 * 2.2 / 8 * 60 + 2),
        # The region's speed for the mode replaces the default.
        (TravelMode.horseback, {"speeds": speeds_for([{"horseback": 6}])}, 3 * 1.8 / 6 * 60 + 2),
        (TravelMode.ebike, {"speeds": speeds_for([{"horseback": 6}])}, 3 * 1.4 / 15 * 60 + 2),
    ],
    ids=["ebike", "horseback", "mountain walk", "steep region", "region horse speed", "others"],
)
def test_travel_modes(mode: TravelMode, kwargs: dict[str, Any], minutes: float) -> None:
    (ranked,) = nearest_responders(HOME, HOME_VILLAGE, [aide(1, 3.0, travel_mode=mode)], **kwargs)
    assert ranked.eta_minutes == pytest.approx(minutes, abs=0.05)


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ([], {}),
        ([None, {}, {"horseback": 7}], {TravelMode.horseback: 7.0}),
        # Nearest first: the village's own beats the township's, which beats the county's.
        (
            [{"horseback": 5}, {"horseback": 6, "mountain_walk": 2.5}, {"horseback": 7}],
            {TravelMode.horseback: 5.0, TravelMode.mountain_walk: 2.5},
        ),
        ([{"rocket": 900, "car": "fast"}], {}),
        ([{"walking": 0}], {TravelMode.walking: 0.5}),
    ],
    ids=["defaults", "county", "village over township over county", "unknown", "clamped"],
)
def test_speeds_for_merges_the_region_chain(
    chain: list[dict[str, Any] | None], expected: dict[TravelMode, float]
) -> None:
    speeds = speeds_for(chain)
    assert speeds[TravelMode.horseback] == expected.get(TravelMode.horseback, 8.0)
    assert speeds[TravelMode.mountain_walk] == expected.get(TravelMode.mountain_walk, 3.0)
    assert speeds[TravelMode.walking] == expected.get(TravelMode.walking, 4.5)
    assert speeds[TravelMode.car] == 40.0


SUMMER = Season(LatLon(31.0, 114.0), "06-01", "09-30")
WINTER = Season(LatLon(30.5, 114.5), "11-15", "03-15")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("season", "now", "applies"),
    [
        (SUMMER, "2026-05-31T12:00", False),
        # 16:00 UTC on 31 May is already 1 June in China.
        (SUMMER, "2026-05-31T16:00", True),
        (SUMMER, "2026-06-01T00:00", True),
        (SUMMER, "2026-09-30T15:59", True),
        (SUMMER, "2026-09-30T16:00", False),
        (SUMMER, "2027-07-15T00:00", True),
        (WINTER, "2026-12-31T00:00", True),
        (WINTER, "2027-01-10T00:00", True),
        (WINTER, "2027-03-15T10:00", True),
        (WINTER, "2027-03-16T00:00", False),
        (WINTER, "2026-11-14T00:00", False),
        (Season(LatLon(0, 0), "02-29", "02-29"), "2028-02-29T04:00", True),
        (Season(LatLon(0, 0), "bad", "09-30"), "2026-07-01T00:00", False),
    ],
)
def test_season_applies(season: Season, now: str, applies: bool) -> None:
    assert season_applies(season, utc(now)) is applies
    expected = season.location if applies else HOME
    assert home_at(HOME, season, utc(now)) == expected


def test_without_a_season_the_home_is_the_place() -> None:
    assert home_at(HOME, None, utc("2026-07-01T00:00")) == HOME


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("06-01", "06-01"),
        ("6-1", "06-01"),
        ("6月1日", "06-01"),
        ("12/31", "12-31"),
        ("2-29", "02-29"),
    ],
)
def test_parse_month_day(text: str, expected: str) -> None:
    assert parse_month_day(text) == expected


@pytest.mark.parametrize("text", ["02-30", "13-01", "0601", "2026-06-01", "", "六月一日"])
def test_parse_month_day_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_month_day(text)
