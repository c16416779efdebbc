"""Who no aide can reach in time. Pure: each elder's ranking (from `dispatcher.ranking`, the one
ETA there is) in, the coverage list out — the elders whose fastest on-duty aide would arrive
after the region's response minutes (or who have no aide on duty at all), and the villages with
no on-duty aide. `now` decides whether an elder's seasonal place applies.

The queries are in `alert_service/coverage_service.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dispatcher import routing


@dataclass(frozen=True)
class CoverageHome:
    """An elder as coverage sees them: where, in which township, and the response minutes."""

    elder_id: int
    code: str
    name: str
    village_id: int
    village: str
    township: str
    respond_minutes: int
    season: routing.Season | None = None


@dataclass(frozen=True)
class Village:
    village_id: int
    village: str
    township: str


@dataclass(frozen=True)
class ElderReach:
    elder_id: int
    code: str
    name: str
    village_id: int
    village: str
    township: str
    respond_minutes: int
    # The fastest on-duty aide; None when no aide of the township is on duty.
    aide_id: int | None
    aide_name: str | None
    eta_minutes: float | None
    source: str | None  # "estimate" (straight line) or "table" (imported travel time)
    seasonal: bool  # ranked at the seasonal place (it applies today)

    @property
    def covered(self) -> bool:
        return self.eta_minutes is not None and self.eta_minutes <= self.respond_minutes


@dataclass(frozen=True)
class VillageGap:
    village_id: int
    village: str
    township: str
    elders: int  # how many elders live there (registered, not archived)


@dataclass(frozen=True)
class Coverage:
    elders: list[ElderReach]
    villages_without_aide: list[VillageGap] = field(default_factory=list)

    @property
    def uncovered(self) -> list[ElderReach]:
        """Slowest first: no aide at all, then the longest estimated arrival."""
        return sorted(
            (e for e in self.elders if not e.covered),
            key=lambda e: (e.eta_minutes is not None, -(e.eta_minutes or 0.0), e.code),
        )


def fastest_aide(ranking: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The aide with the soonest arrival (the ranking may put a fairer one first in a tie)."""
    aides = [r for r in ranking if r["kind"] == "aide"]
    return min(aides, key=lambda r: (r["eta_minutes"], r["responder_id"])) if aides else None


def coverage(
    homes: Sequence[CoverageHome],
    rankings: Sequence[Sequence[Mapping[str, Any]]],
    villages: Sequence[Village],
    on_duty_aides: Mapping[int, int],
    now: datetime,
) -> Coverage:
    """Each elder's fastest on-duty aide (`rankings[i]` is `homes[i]`'s ranking, which leaves
    out aides off duty), and the `villages` with no aide on duty (`on_duty_aides`: village_id →
    how many are on duty)."""
    reaches: list[ElderReach] = []
    elders_in: dict[int, int] = {}
    for home, ranking in zip(homes, rankings, strict=True):
        best = fastest_aide(ranking)
        elders_in[home.village_id] = elders_in.get(home.village_id, 0) + 1
        reaches.append(
            ElderReach(
                elder_id=home.elder_id,
                code=home.code,
                name=home.name,
                village_id=home.village_id,
                village=home.village,
                township=home.township,
                respond_minutes=home.respond_minutes,
                aide_id=None if best is None else int(best["responder_id"]),
                aide_name=None if best is None else str(best["name"]),
                eta_minutes=None if best is None else float(best["eta_minutes"]),
                source=None if best is None else str(best["source"]),
                seasonal=home.season is not None and routing.season_applies(home.season, now),
            )
        )
    gaps = [
        VillageGap(v.village_id, v.village, v.township, elders_in.get(v.village_id, 0))
        for v in sorted(villages, key=lambda v: (v.township, v.village, v.village_id))
        if on_duty_aides.get(v.village_id, 0) == 0
    ]
    reaches.sort(key=lambda e: (e.township, e.village, e.code))
    return Coverage(elders=reaches, villages_without_aide=gaps)
