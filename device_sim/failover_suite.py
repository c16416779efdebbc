"""The fault suite's database-failover scenarios (issue 16): the loss of the database server.

The same platform as the fault suite (every role as its own processes, gateway ×2, watcher ×2,
dispatcher ×2, web; a Mosquitto of its own; 500 homes), but on a Patroni cluster
(device_sim.pg_cluster: etcd, a primary and a synchronous streaming replica) which every role
reaches with a multi-host URL (`target_session_attrs=read-write`). Mid-burst of SOS the
primary's server is lost (its Patroni, postmaster and backends SIGKILLed); the replica takes
over once the leader key expires, the devices keep resending, and the suite counts exactly as
for its other scenarios: every SOS stored once, alerted once, called out once.

* `failover` — the roles connect to the nodes directly;
* `failover-pgbouncer` — through a PgBouncer in session mode in front of each node (the
  roles LISTEN for NOTIFY; session mode keeps a client's server connection).

Also measured: the time without a primary, from the kill to the first write the new primary
commits through the roles' URL. The lost node then comes back and rejoins as the replica.

    .venv/bin/python -m device_sim.failover_suite [--pgbouncer] [--homes 500] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from anxin.logging import get_logger
from device_sim.bench.platform import raise_file_limit
from device_sim.faults.options import SuiteOptions
from device_sim.faults.report import ScenarioResult, SuiteReport, print_suite
from device_sim.faults.suite import run_scenario, start_suite_platform
from device_sim.harness import OwnMosquitto, OwnPostgres
from device_sim.pg_cluster import PatroniNode, PgCluster
from device_sim.region.generate import generate_region

log = get_logger("device_sim.failover_suite")

FAILOVER_SCENARIOS = ("failover", "failover-pgbouncer")


class PrimaryLoss(OwnPostgres):
    """The cluster in the suite's Postgres slot: its `postgres` fault (a restart) becomes the
    loss of the primary's server, measured."""

    def __init__(self, cluster: PgCluster) -> None:
        super().__init__(cluster.workdir)
        self.cluster = cluster
        self.url = cluster.url
        self.no_primary_s: float | None = None
        self.killed: PatroniNode | None = None
        self._rejoin: asyncio.Task[None] | None = None

    async def restart(self, down_s: float = 1.0) -> None:
        since = time.monotonic()
        self.killed = await self.cluster.kill_primary()
        self.no_primary_s = await self.cluster.time_to_primary_write(since)
        log.warning("failover_primary_back", no_primary_s=round(self.no_primary_s, 1))
        # The lost machine comes back a little later and follows the new primary.
        self._rejoin = asyncio.create_task(self.cluster.rejoin(self.killed))
        self.restarts += 1

    async def close(self) -> None:
        if self._rejoin is not None:
            with contextlib.suppress(Exception):
                await self._rejoin
        await self.cluster.close()


async def run_failover_suite(
    options: SuiteOptions,
    *,
    pgbouncer: bool = False,
    console: Console | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> SuiteReport:
    console = console or Console()
    started = time.monotonic()
    raise_file_limit()
    if options.fault_at == SuiteOptions.fault_at:
        # Early in the burst, while most homes have not pressed yet: their first SOS then go
        # out with no primary, and the max delay (first press → first call-out) spans it.
        options = dataclasses.replace(options, fault_at=0.1)
    plan = generate_region(options.homes, options.seed)
    name = "failover-pgbouncer" if pgbouncer else "failover"
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anxin-failover-")))
        with console.status("starting etcd, two Patroni nodes and Mosquitto…"):
            cluster = PgCluster(workdir / "cluster", pgbouncer=pgbouncer)
            mosquitto = OwnMosquitto(workdir / "mosquitto")
            stack.push_async_callback(cluster.close)
            await asyncio.gather(cluster.start(), mosquitto.start())
            postgres = PrimaryLoss(cluster)
            stack.push_async_callback(postgres.close)
            stack.push_async_callback(mosquitto.stop)
        platform = await start_suite_platform(
            stack, cluster.url, postgres, mosquitto, plan, options, console
        )
        setup_s = time.monotonic() - started
        console.print(
            f"platform up in {setup_s:.0f} s on a Patroni cluster "
            f"({'through PgBouncer, ' if pgbouncer else ''}logs in {workdir})"
        )
        # The suite's `postgres` fault, with the cluster in the Postgres slot: the primary lost.
        result = await run_scenario(platform, options, "postgres", console)
        result.scenario = name
        result.fault = (
            "the primary's server lost mid-burst (Patroni, postmaster, backends SIGKILLed); "
            "the synchronous replica promoted"
            + ("; roles through PgBouncer (session mode)" if pgbouncer else "")
        )
        if postgres.no_primary_s is not None:
            result.detail["no_primary_ms"] = round(postgres.no_primary_s * 1000)
            result.notes.append(f"no primary for {postgres.no_primary_s:.1f} s")
        members = await cluster.members()
        result.notes.append(
            "after: " + ", ".join(f"{m.get('name')} {m.get('role')}" for m in members)
        )
        if on_result is not None:
            on_result(result)
    return SuiteReport(
        homes=options.homes,
        presses_per_scenario=options.presses,
        replicas=dict(options.replicas),
        scenarios=[result],
        setup_s=round(setup_s, 1),
        wall_s=round(time.monotonic() - started, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pgbouncer", action="store_true", help="roles through PgBouncer")
    parser.add_argument("--homes", type=int, default=500)
    parser.add_argument("--presses", type=int, default=0, help="default: 4 per home")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    console = Console()
    options = SuiteOptions(homes=args.homes, presses=args.presses or args.homes * 4)
    report = asyncio.run(run_failover_suite(options, pgbouncer=args.pgbouncer, console=console))
    print_suite(report, console)
    if args.json is not None:
        args.json.write_text(report.to_json(), encoding="utf-8")
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
