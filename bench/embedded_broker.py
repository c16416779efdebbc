"""The embedded broker under a flood and a power cut: how soon is the next SOS acked?

    .venv/bin/python bench/embedded_broker.py [--broker mosquitto|amqtt|both] [--rounds 20]
                                              [--homes 120] [--flood 1000] [--flood-seconds 2]

What `make demo` and the tests outside CI run: the platform in one process (every role), the
embedded broker as `embedded_broker()` starts it (a Mosquitto child, or the amqtt fallback in a
process of its own), embedded Postgres (or ANXIN_DATABASE_URL's server). Each round: one home's
SOS button floods (`--flood` SOS a second for `--flood-seconds`, without waiting for acks), then
an SOS from another home; then a township's power cut (power_lost from every hub there, then
their connections drop without DISCONNECT), then an SOS elsewhere; the township's homes come
back before the next round. Prints the p50/p99/max of those SOS's publish → device ack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from anxin import auth
from anxin.broker import AmqttBroker, EmbeddedBroker, MosquittoBroker, mosquitto_binary
from anxin.db import make_sessionmaker, start_embedded_postgres, transaction
from anxin.logging import configure_logging
from anxin.mqtt import BrokerAddress
from device_sim.bench.disruptions import Flood, cut_power, elders_of_township
from device_sim.bench.report import Percentiles
from device_sim.harness import engine_for, run_in_process, scratch_database
from device_sim.homes import SimDevice, SimHome
from device_sim.region.generate import generate_region
from device_sim.region.plan import RegionPlan
from device_sim.region.seed import seed_region

BENCH_DATA = Path(__file__).resolve().parent.parent / "var" / "bench"


def _devices(plan: RegionPlan) -> dict[str, list[SimDevice]]:
    by_elder: dict[str, list[SimDevice]] = defaultdict(list)
    for d in plan.devices:
        by_elder[d.elder_code].append(SimDevice(d.device_id, d.kind.value, d.password))
    return by_elder


async def _reconnected(address: BrokerAddress, devices: list[SimDevice], name: str) -> SimHome:
    for _ in range(5):
        home = SimHome(address, devices, name=name)
        try:
            await home.connect()
            return home
        except ConnectionError:
            await home.close(lose_power=True)
    raise ConnectionError(f"home {name} could not reconnect")


async def _rounds(
    broker: EmbeddedBroker, server: str, args: argparse.Namespace, console: Console
) -> dict[str, list[float]]:
    plan = generate_region(args.homes)
    samples: dict[str, list[float]] = {"after a flood": [], "after a power cut": []}
    async with scratch_database(server, "anxin_bench_broker") as url, engine_for(url) as engine:
        async with transaction(make_sessionmaker(engine)) as session:
            await seed_region(session, plan, auth.hash_device_password, auth.hash_password)
        address = BrokerAddress.parse(broker.url)
        devices = _devices(plan)
        homes = {e.code: SimHome(address, devices[e.code], name=e.code) for e in plan.elders}
        townships = [t.code for t in plan.townships]
        await asyncio.gather(*(h.connect() for h in homes.values()))
        quiet = Console(quiet=True)
        try:
            async with run_in_process(url, broker.url, engine):
                for n in range(args.rounds):
                    township = townships[n % len(townships)]
                    in_cut = elders_of_township(plan, township)
                    others = [h for code, h in homes.items() if code not in in_cut]
                    flooding, first, second = others[n % len(others)], others[-1], others[-2]
                    await Flood(flooding, args.flood, args.flood_seconds).run()
                    samples["after a flood"].append((await first.press_sos()).seconds)
                    await cut_power([homes[c] for c in in_cut], 0, township, quiet)
                    samples["after a power cut"].append((await second.press_sos()).seconds)
                    # Power back: each hub connects anew, as after a reboot (amqtt now and then
                    # drops a connection mid-SUBSCRIBE under this churn: the hub tries again).
                    for c in in_cut:
                        homes[c] = await _reconnected(address, devices[c], c)
                    console.print(
                        f"{broker.kind} round {n + 1}/{args.rounds}: "
                        f"{samples['after a flood'][-1] * 1000:.0f} ms after the flood, "
                        f"{samples['after a power cut'][-1] * 1000:.0f} ms after the cut"
                    )
        finally:
            await asyncio.gather(
                *(h.close(say_offline=False) for h in homes.values() if h.powered),
                return_exceptions=True,
            )
    return samples


async def main(args: argparse.Namespace) -> None:
    configure_logging("error")
    console = Console()
    if url := os.environ.get("ANXIN_DATABASE_URL"):
        server = url.replace("postgresql+asyncpg://", "postgresql://")
    else:
        server = (await asyncio.to_thread(start_embedded_postgres, BENCH_DATA)).replace(
            "postgresql+asyncpg://", "postgresql://"
        )
    kinds = ["mosquitto", "amqtt"] if args.broker == "both" else [args.broker]
    table = Table(title=f"SOS → device ack, {args.rounds} rounds, {args.homes} homes")
    for column in ("broker", "after", "count", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column)
    for kind in kinds:
        broker: EmbeddedBroker
        if kind == "mosquitto":
            if mosquitto_binary() is None:
                console.print("mosquitto is not installed: skipped")
                continue
            workdir = Path(tempfile.mkdtemp(prefix="anxin-bench-mosquitto-"))
            broker = MosquittoBroker(workdir, persistence=False, remove_workdir=True)
        else:
            broker = AmqttBroker()
        await broker.start()
        try:
            samples = await _rounds(broker, server, args, console)
        finally:
            await broker.stop()
        for after, seconds in samples.items():
            p = Percentiles.of(seconds)
            table.add_row(kind, after, str(p.count), str(p.p50_ms), str(p.p99_ms), str(p.max_ms))
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=("mosquitto", "amqtt", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--homes", type=int, default=120)
    parser.add_argument("--flood", type=float, default=1000.0, help="flood SOS per second")
    parser.add_argument("--flood-seconds", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
