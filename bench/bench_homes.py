"""How many homes one simulator process sustains (issue 6): homes on a Mosquitto of our own,
heartbeating, with nothing else in the process.

    .venv/bin/python bench/bench_homes.py [--homes 5000 10000 20000] [--duration 60]

For each home count: the homes of a generated region (as `anxin bench`, ~2.85 devices per
home, one MQTT connection per home) connect to a fresh `mosquitto` (device_sim.harness.
OwnMosquitto, the platform's broker configuration), then heartbeat every `--heartbeat` seconds
(each home's devices, spread evenly) for `--duration` seconds while a QoS 1 "SOS" of a random
home goes to the broker `--sos-rate` times a second. Reported per count: connect time, this
process's CPU (share of one core) over the load, its event loop's lateness (p50/p99/max of a
50 ms sleep), heartbeats sent against due, reconnects (a keepalive missed or a dropped
connection), SOS publish → broker PUBACK p99.

"Sustains" = every heartbeat sent when due, no reconnect, loop lateness p99 under 100 ms and
the process under 70 % of one core (headroom for the SOS, acks and bursts of a real run). The
broker shares the machine: its CPU is reported beside.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from anxin.mqtt import BrokerAddress
from anxin.schemas import event_json, topic
from device_sim.bench.load import CONNECT_CONCURRENCY
from device_sim.bench.platform import raise_file_limit
from device_sim.bench.probes import LoopLag, process_cpu_s
from device_sim.bench.report import Percentiles
from device_sim.harness import OwnMosquitto
from device_sim.homes import SimDevice, SimHome
from device_sim.region.generate import generate_region


async def one_count(
    homes_n: int, duration: float, heartbeat_s: float, sos_rate: float
) -> dict[str, Any]:
    plan = generate_region(homes_n, 2026)
    by_elder: dict[str, list[SimDevice]] = {}
    for d in plan.devices:
        by_elder.setdefault(d.elder_code, []).append(
            SimDevice(d.device_id, d.kind.value, d.password, int(heartbeat_s))
        )
    with tempfile.TemporaryDirectory(prefix="anxin-bench-homes-") as workdir:
        mosquitto = OwnMosquitto(Path(workdir))
        await mosquitto.start()
        try:
            address = BrokerAddress.parse(mosquitto.url)
            homes = [SimHome(address, by_elder[e.code], name=e.code) for e in plan.elders]
            semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

            async def connect(home: SimHome) -> None:
                async with semaphore:
                    await home.connect(announce=False)

            began = time.monotonic()
            await asyncio.gather(*(connect(h) for h in homes))
            connect_s = time.monotonic() - began
            # as `anxin bench` does: the homes' long-lived objects out of the GC's walks
            gc.collect()
            gc.freeze()

            stop = asyncio.Event()
            lag = LoopLag()
            home_beats = 0
            sos_latency: list[float] = []

            async def beats() -> None:
                nonlocal home_beats
                rate = len(homes) / heartbeat_s
                order = list(homes)
                random.shuffle(order)
                start = time.monotonic()
                while not stop.is_set():
                    due = int((time.monotonic() - start) * rate)
                    while home_beats < due:
                        order[home_beats % len(order)].heartbeat()
                        home_beats += 1
                    await asyncio.sleep(0.1)

            async def sos(home: SimHome, n: int) -> None:
                device = home.devices[0].device_id
                sent = time.monotonic()
                try:
                    await home.client.publish(
                        topic(device, "event"), event_json(f"hb-{n}", "sos", 0, None), 1
                    )
                except ConnectionError:
                    return
                sos_latency.append(time.monotonic() - sent)

            async def presses() -> None:
                start = time.monotonic()
                tasks = []
                n = 0
                while not stop.is_set():
                    due = int((time.monotonic() - start) * sos_rate)
                    while n < due:
                        tasks.append(asyncio.create_task(sos(random.choice(homes), n)))
                        n += 1
                    await asyncio.sleep(0.05)
                await asyncio.gather(*tasks, return_exceptions=True)

            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            broker_before = process_cpu_s(mosquitto.process.pid) if mosquitto.process else None
            load_before = os.getloadavg()[0]
            began = time.monotonic()
            runners = [asyncio.create_task(c) for c in (beats(), presses(), lag.run(stop))]
            await asyncio.sleep(duration)
            stop.set()
            elapsed = time.monotonic() - began  # heartbeats stop being due here
            await asyncio.gather(*runners)
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            broker_after = process_cpu_s(mosquitto.process.pid) if mosquitto.process else None
            cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (
                cpu_before.ru_utime + cpu_before.ru_stime
            )
            lag_p50, lag_p99, lag_max = lag.figures()
            result = {
                "homes": homes_n,
                "devices": len(plan.devices),
                "connected": sum(h.client.is_connected for h in homes),
                "connect_s": round(connect_s, 1),
                "cpu_share_of_core": round(cpu / elapsed, 3),
                "broker_cpu_share": (
                    round((broker_after - broker_before) / elapsed, 3)
                    if broker_after is not None and broker_before is not None
                    else None
                ),
                "loop_lag_ms": [lag_p50, lag_p99, lag_max],
                "home_beats_sent": home_beats,
                "home_beats_due": round(len(homes) * elapsed / heartbeat_s),
                "reconnects": sum(max(0, h.client.connect_count - 1) for h in homes),
                "sos_puback_p99_ms": Percentiles.of(sos_latency).p99_ms,
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "heartbeat_s": heartbeat_s,
                "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
            await asyncio.gather(
                *(h.close(say_offline=False) for h in homes), return_exceptions=True
            )
            return result
        finally:
            await mosquitto.stop()


def sustained(r: dict[str, Any]) -> bool:
    return (
        r["connected"] == r["homes"]
        # the last 0.2 s of beats may still be due when the load stops
        and r["home_beats_sent"] >= r["home_beats_due"] - max(1, r["homes"] / r["heartbeat_s"] / 5)
        and r["reconnects"] == 0
        and (r["loop_lag_ms"][1] or 0) < 100
        and r["cpu_share_of_core"] < 0.7
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--heartbeat", type=float, default=60.0)
    parser.add_argument("--sos-rate", type=float, default=20.0)
    args = parser.parse_args()
    limit = raise_file_limit()
    for n in args.homes:
        if n + 100 > limit:
            print(f"{n} homes: open-file limit {limit} too low, skipped")
            continue
        r = await one_count(n, args.duration, args.heartbeat, args.sos_rate)
        r["sustained"] = sustained(r)
        print(r, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
