"""What `anxin bench` is asked to do: its options and the parsing of `--fault`,
`--replicas` and `--power-cut`."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLE_NAMES = ("gateway", "alerts", "dispatcher", "web")


@dataclass
class BenchOptions:
    homes: int = 1000
    sos_rate: float = 5.0
    duration: float = 60.0
    heartbeat_s: float = 60.0
    faults: list[str] = field(default_factory=list)
    external: bool = False
    seed: int = 2026
    spawn_roles: bool = False  # roles as subprocesses even without a fault
    drain_s: float = 60.0  # after the load, how long to wait for the last acks and SMS
    replicas: dict[str, int] = field(default_factory=dict)  # role → processes (spawns roles)
    own_services: bool = False  # a Postgres and a Mosquitto of the bench's own
    flood_rate: float = 0.0  # one home's SOS button sends this many SOS per second
    flood_s: float = 5.0  # for this many seconds (from the start of the load)
    power_cut: str | None = None  # TOWNSHIP@SECONDS: that township's homes lose mains power
    # SOS from this many other homes before the load, one a second, left out of every figure:
    # the first SOS through roles just started (new connections, cold caches) is slow whatever
    # the load, and with 100 presses a run it alone would be the p99 being compared.
    warmup: int = 0
    # Voice call-outs (issue 19): the county's voice_after_s for the run (None: the product's
    # 60 s; 0: every P1 call-out is called with its SMS, so "SOS → call placed" is measured).
    voice_after_s: float | None = None


SERVICE_FAULTS = ("mosquitto", "postgres")


def parse_fault(spec: str) -> tuple[str, float]:
    """`ROLE@SECONDS` (every replica of the role), `ROLE#N@SECONDS` (replica N), or
    `mosquitto@SECONDS` / `postgres@SECONDS` (the bench's own broker or database restarted)."""
    target, _, at = spec.partition("@")
    role, _, replica = target.partition("#")
    known = role in ROLE_NAMES or (role in SERVICE_FAULTS and not replica)
    if not known or not at or (replica and not replica.isdigit()):
        raise ValueError(
            f"--fault {spec!r}: use ROLE@SECONDS or ROLE#N@SECONDS with ROLE "
            "gateway|alerts|dispatcher|web, or mosquitto@SECONDS / postgres@SECONDS"
        )
    return target, float(at)


def parse_replicas(specs: list[str]) -> dict[str, int]:
    """`gateway=2` … → {"gateway": 2}; roles not named run once."""
    replicas: dict[str, int] = {}
    for spec in specs:
        role, _, n = spec.partition("=")
        if role not in ROLE_NAMES or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--replicas {spec!r}: use ROLE=N with ROLE {'|'.join(ROLE_NAMES)}")
        if role == "web" and int(n) > 1:
            raise ValueError("--replicas web=N: one web role per bench (it owns the HTTP port)")
        replicas[role] = int(n)
    return replicas


def parse_power_cut(spec: str) -> tuple[str, float]:
    township, _, at = spec.partition("@")
    try:
        return township, float(at or "0")
    except ValueError as exc:
        raise ValueError(f"--power-cut {spec!r}: use TOWNSHIP@SECONDS, e.g. T01@10") from exc
