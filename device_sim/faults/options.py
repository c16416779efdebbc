"""What `anxin bench --fault-suite` is asked to do: its scenarios and options."""

from __future__ import annotations

from dataclasses import dataclass, field

SCENARIOS = ("baseline", "gateway", "alerts", "dispatcher", "web", "mosquitto", "postgres")
SUITE_REPLICAS = {"gateway": 2, "alerts": 2, "dispatcher": 2, "web": 1}


@dataclass
class SuiteOptions:
    homes: int = 500
    presses: int = 2000  # per scenario, spread evenly over the homes
    burst_s: float = 6.0  # the presses of one scenario go out over this many seconds
    fault_at: float = 0.35  # the fault happens this far into the burst (share of burst_s)
    accept_timeout_s: float = 8.0  # the suite region's ladder: next aide after this
    scenarios: tuple[str, ...] = SCENARIOS
    replicas: dict[str, int] = field(default_factory=lambda: dict(SUITE_REPLICAS))
    # Per scenario, a safety net rather than a pass mark: wait while the platform makes
    # progress (acks, call-outs, closings), give up after `stall_s` without any, or `settle_s`.
    settle_s: float = 900.0
    stall_s: float = 60.0
    seed: int = 2026


def valid_scenario(name: str) -> bool:
    """A scenario of SCENARIOS, or `ROLE#N`: only replica N of that role is killed."""
    role, _, replica = name.partition("#")
    return name in SCENARIOS or (role in ("gateway", "alerts", "dispatcher") and replica.isdigit())
