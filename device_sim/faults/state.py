"""What the fault suite keeps while it runs: its platform (own Postgres and Mosquitto, the
roles as processes, the sandbox, the homes) and, per home, what it pressed and what came back."""

from __future__ import annotations

from dataclasses import dataclass, field

from anxin.db import SessionMaker
from device_sim.bench.platform import BenchSandbox, RoleProcesses
from device_sim.harness import OwnMosquitto, OwnPostgres
from device_sim.homes import SimHome
from device_sim.region.plan import RegionPlan


@dataclass
class SuitePlatform:
    postgres: OwnPostgres
    mosquitto: OwnMosquitto
    sessions: SessionMaker
    sandbox: BenchSandbox
    roles: RoleProcesses
    plan: RegionPlan
    homes: list[SimHome]
    phone_of: dict[int, str]  # responder id → phone


@dataclass
class HomeTrack:
    home: SimHome
    device_id: str
    event_ids: list[str]
    first_send: float | None = None
    acked: set[str] = field(default_factory=set)
    alert_codes: set[str] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)  # alerts an aide took (by the operator)
    resolved: bool = False
