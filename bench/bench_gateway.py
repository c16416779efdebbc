"""Gateway throughput against its ceiling (issue 3): a benchmark, not a test.

On this machine, with a Mosquitto of its own (queues raised) and a scratch database on the
machine's Postgres (schema by Alembic, dropped afterwards), in one run:

1. ceiling: publishers push N QoS 1 events while a bare paho consumer that only acks (manual
   ack, same shared subscription, same Receive Maximum as the gateway) drains the broker;
2. gateway: the same publishers push N events through one `anxin run gateway` process
   (commit, then broker ack, then the device ack); every publisher waits for the device ack
   of each of its events and records publish → ack latency.

Reported: msg/s of each, the ratio, p50/p99 publish → device-ack latency, and the CPU time
(user + system) each consumer spent per message: on a shared machine the rates move with the
other helpers' load, the CPU per message much less. Then, optionally, a paced run at a fraction
of the measured rate for latency below saturation.

    .venv/bin/python bench/bench_gateway.py --messages 100000 --publishers 3
    .venv/bin/python bench/bench_gateway.py --messages 100000 --gateways 2   # scale-out
    .venv/bin/python bench/bench_gateway.py --sweep 500   # liveness sweeper, 500 silent devices
    .venv/bin/python bench/bench_gateway.py --messages 30000 --paced 0 --profile /tmp/gw.txt
        # py-spy (pip install py-spy) raw stacks of the gateway's GIL holder during the drain

Fairness: the ceiling and the gateway drain the same broker (same configuration) after the
same publishers filled it, so publishers are not timed in either drain. In the gateway's drain
every device ack is still published at QoS 1 and delivered at QoS 1 to a subscriber of every
device's ack topic, which PUBACKs it as a device would: `mosquitto_sub` (C), standing in for the
devices, which in the field are not on the gateway's cores. Until 2026-11 the publishers' own
paho clients received the acks, parsing each in Python on this 2-core machine: up to a third of
a core taken from the gateway under test (`--ack-listener paho` measures that way again).
Latency is measured with Python listeners that match each ack to its publish: the live and
paced runs (docs/sizing.md).

Publishers and the bare consumer use paho directly: they are load tools, not platform code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Same shape as the gateway's subscription, in a group of its own (a member of the gateway's
# group would take its share of the gateway's messages, even while offline).
SHARE_TOPIC = "$share/anxin-bench/anxin/v1/dev/+/event"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    from anxin.broker import mosquitto_conf

    port = _free_port()
    conf = mosquitto_conf(port=port, persistence_dir=None)
    if os.geteuid() == 0:
        conf += "user root\n"
    (workdir / "mosquitto.conf").write_text(conf)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (workdir / "mosquitto.log").open("ab")
    proc = subprocess.Popen([binary, "-c", str(workdir / "mosquitto.conf")], stdout=log, stderr=log)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def _paho_client(client_id: str, *, manual_ack: bool = False, receive_maximum: int = 0) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def _connect(client: Any, port: int, receive_maximum: int = 0, persistent: bool = False) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    if persistent:
        props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, 60, properties=props, clean_start=not persistent)


# -- processes --------------------------------------------------------------------------------


def bare_consumer(
    port: int, expected: int, ready: MpEvent, out: Any, receive_maximum: int, prime: bool
) -> None:
    """Only acks: the ceiling of what one Python process can drain from this broker. With
    `prime`, it only leaves its persistent session subscribed, for the broker to fill."""
    client = _paho_client("bare-consumer", manual_ack=True)
    state = {"n": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0, "cpu1": 0.0}

    def on_message(c: Any, _u: Any, msg: Any) -> None:
        c.ack(msg.mid, msg.qos)
        if state["n"] == 0:
            state["first"] = time.monotonic()
            state["cpu0"] = time.process_time()
        state["n"] += 1
        state["last"] = time.monotonic()
        state["cpu1"] = time.process_time()

    subscribed = mp.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    _connect(client, port, receive_maximum, persistent=True)
    client.subscribe(SHARE_TOPIC, 1)
    client.loop_start()
    subscribed.wait(10)
    if prime:
        client.disconnect()
        client.loop_stop()
        ready.set()
        return
    ready.set()
    deadline = time.monotonic() + 600
    while state["n"] < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    client.unsubscribe(SHARE_TOPIC)
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()
    out.put(("bare", state["n"], state["first"], state["last"], state["cpu1"] - state["cpu0"]))


def publisher(
    port: int,
    index: str,
    device_ids: list[str],
    count: int,
    wait_acks: bool,
    rate: float,
    go: MpEvent,
    ready: MpEvent,
    out: Any,
) -> None:
    """Publishes `count` events round-robin over its devices as fast as paho takes them (or at
    `rate` per second); with `wait_acks`, records the device ack of each and its latency."""
    client = _paho_client(f"pub-{index}-{uuid.uuid4().hex[:6]}")
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    state = {"acked": 0, "first_ack": 0.0, "last_ack": 0.0}

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        event_id = json.loads(msg.payload).get("event_id")
        at = sent_at.pop(event_id, None)
        if at is not None:
            now = time.monotonic()
            latencies.append(now - at)
            if not state["acked"]:
                state["first_ack"] = now
            state["acked"] += 1
            state["last_ack"] = now

    subscribed = mp.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    _connect(client, port)
    client.loop_start()
    if wait_acks:
        # One subscription per device's ack topic: what a fleet of devices would hold.
        topics = [(f"anxin/v1/dev/{d}/ack", 1) for d in device_ids]
        for start in range(0, len(topics), 100):
            subscribed.clear()
            client.subscribe(topics[start : start + 100])
            subscribed.wait(10)
    ready.set()
    go.wait()
    first = time.monotonic()
    interval = 1.0 / rate if rate else 0.0
    for n in range(count):
        device_id = device_ids[n % len(device_ids)]
        event_id = f"b{index}-{n}"
        payload = json.dumps(
            {"event_id": event_id, "type": "test", "ts": int(time.time() * 1000), "data": {}}
        ).encode()
        if wait_acks:
            sent_at[event_id] = time.monotonic()
        client.publish(f"anxin/v1/dev/{device_id}/event", payload, 1)
        if interval:
            delay = first + (n + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        elif n % 2000 == 1999:
            # Let paho's thread drain its queue now and then instead of queuing all of them.
            while len(client._out_messages) > 20_000:
                time.sleep(0.001)
    published = time.monotonic()
    out.put(("published", index))
    if wait_acks:
        deadline = time.monotonic() + 600
        while state["acked"] < count and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        while client._out_messages and time.monotonic() < published + 600:
            time.sleep(0.01)
    client.loop_stop()
    out.put(
        (
            "pub",
            index,
            state["acked"],
            first,
            published,
            state["last_ack"],
            latencies,
            state["first_ack"],
        )
    )


def cpu_seconds(pid: int, system_only: bool = False) -> float:
    """User + system CPU of a process and its descendants (py-spy runs the gateway as a child)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[12]) + (0 if system_only else int(fields[11]))) / tick
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child), system_only)
    except (OSError, IndexError, ValueError):
        pass
    return total


# -- orchestration ----------------------------------------------------------------------------


@dataclass
class RunResult:
    messages: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float = float("nan")  # of the consumer process (user + system), if measured
    system_seconds: float = float("nan")  # the system part of it

    @property
    def cpu_us_per_msg(self) -> float:
        return self.cpu_seconds / self.messages * 1e6 if self.messages else float("nan")

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def _spawn_publishers(
    port: int,
    device_ids: list[str],
    messages: int,
    publishers: int,
    wait_acks: bool,
    rate: float,
) -> tuple[list[Any], MpEvent, Any]:
    ctx = mp.get_context("fork")
    go = ctx.Event()
    out = ctx.Queue()
    procs: list[Any] = []
    readies = []
    share = messages // publishers
    # Event ids unique per run: a repeated run must be stored again, not acked as duplicates.
    run = uuid.uuid4().hex[:6]
    for i in range(publishers):
        ready = ctx.Event()
        mine = device_ids[i::publishers]
        p = ctx.Process(
            target=publisher,
            args=(
                port,
                f"{run}-{i}",
                mine,
                share,
                wait_acks,
                rate / publishers if rate else 0.0,
                go,
                ready,
                out,
            ),
            daemon=True,
        )
        p.start()
        procs.append(p)
        readies.append(ready)
    for ready in readies:
        ready.wait(60)
    return procs, go, out


def _results(out: Any, publishers: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < publishers:
        item = out.get(timeout=900)
        if item[0] == "pub":
            got.append(item)
    return got


def _wait_published(out: Any, publishers: int) -> list[Any]:
    """Until every publisher has handed all its events to the broker (PUBACKed)."""
    early = []
    done = 0
    while done < publishers:
        item = out.get(timeout=900)
        if item[0] == "published":
            done += 1
        else:
            early.append(item)
    return early


def run_ceiling(port: int, device_ids: list[str], messages: int, publishers: int) -> RunResult:
    """Fill the broker for the bare consumer's session, then time its drain alone."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    total = (messages // publishers) * publishers
    ready = ctx.Event()
    primer = ctx.Process(target=bare_consumer, args=(port, 0, ready, out, 1000, True))
    primer.start()
    ready.wait(30)
    primer.join(10)
    procs, go, pub_out = _spawn_publishers(port, device_ids, messages, publishers, False, 0.0)
    go.set()
    _results(pub_out, publishers)
    for p in procs:
        p.join(10)
    ready = ctx.Event()
    consumer = ctx.Process(target=bare_consumer, args=(port, total, ready, out, 1000, False))
    consumer.start()
    _, n, first, last, cpu = out.get(timeout=900)
    consumer.join(10)
    return RunResult(n, last - first, [], cpu)


class GatewayProcess:
    def __init__(
        self, env: dict[str, str], profile: str | None, gateway_id: str = "gw-bench"
    ) -> None:
        self.env = env
        self.profile = profile
        self.gateway_id = gateway_id
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, profile: bool = False) -> None:
        command = [
            sys.executable,
            "-m",
            "anxin.cli",
            "run",
            "gateway",
            "--gateway-id",
            self.gateway_id,
        ]
        if profile and self.profile:
            fmt = "raw" if self.profile.endswith(".txt") else "flamegraph"
            command = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-o",
                self.profile,
                "-f",
                fmt,
                "--nonblocking",
                # Only the thread holding the GIL: where the process's one core of Python goes.
                "--gil",
                "--",
                *command,
            ]
        self.proc = subprocess.Popen(command, env=self.env, cwd=REPO)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class AckListener:
    """Every device's ack topic, subscribed at QoS 1 by one `mosquitto_sub`: receives and PUBACKs
    each device ack as the devices would, at a device's CPU cost rather than a Python client's.
    Writes one line per message (receive time, topic), flushed as it comes."""

    PROBE = "anxin-bench/ack-listener-probe"

    def __init__(self, port: int, device_ids: list[str], workdir: Path) -> None:
        self.path = workdir / f"acks-{uuid.uuid4().hex[:6]}.txt"
        binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
        topics = [a for d in device_ids for a in ("-t", f"anxin/v1/dev/{d}/ack")]
        self._out = self.path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                "-p",
                str(port),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-i",
                self.path.stem,
                "-F",
                "%U %t",
                *topics,
                "-t",
                self.PROBE,
            ],
            stdout=self._out,
        )
        # Subscribed once a probe comes back (messages before the SUBACK are not delivered).
        client = _paho_client(f"probe-{self.path.stem}")
        _connect(client, port)
        client.loop_start()
        deadline = time.monotonic() + 30
        while self.path.stat().st_size == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto_sub never received its probe")
            client.publish(self.PROBE, b"p", 1)
            time.sleep(0.3)
        client.loop_stop()
        client.disconnect()

    def acks(self) -> list[float]:
        """Receive times (epoch s) of the device acks so far."""
        times = []
        for line in self.path.read_bytes().splitlines():
            stamp, _, topic = line.partition(b" ")
            if topic != self.PROBE.encode():
                times.append(float(stamp))
        return times

    def wait(self, expected: int, timeout: float = 900) -> list[float]:
        """Until `expected` acks came (counted cheaply: this runs beside the gateway)."""
        deadline = time.monotonic() + timeout
        probe = self.PROBE.encode()
        while time.monotonic() < deadline:
            data = self.path.read_bytes()
            if data.count(b"\n") - data.count(probe) >= expected:
                break
            time.sleep(0.5)
        return self.acks()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._out.close()
        self.path.unlink(missing_ok=True)


def run_gateway_drain(
    gateways: list[GatewayProcess],
    port: int,
    device_ids: list[str],
    messages: int,
    publishers: int,
    workdir: Path | None = None,
) -> RunResult:
    """The gateways' sessions are filled while they are stopped; then they start and drain them.
    Timed from the first device ack to the last, as the ceiling's drain is. With `workdir`, the
    device acks go to an `AckListener`; without, to the publishers' paho clients."""
    if workdir is not None:
        return _run_gateway_drain_listened(
            gateways, port, device_ids, messages, publishers, workdir
        )
    for gateway in gateways:
        gateway.stop()
    procs, go, out = _spawn_publishers(port, device_ids, messages, publishers, True, 0.0)
    go.set()
    early = _wait_published(out, publishers)
    for n, gateway in enumerate(gateways):
        gateway.start(profile=n == 0)
    results = early + _results(out, publishers - len(early))
    for p in procs:
        p.join(10)
    acked = sum(r[2] for r in results)
    first = min(r[7] for r in results if r[2])
    last = max(r[5] for r in results)
    expected = (messages // publishers) * publishers
    if acked != expected:
        print(f"  !! {expected - acked} events not acked", flush=True)
    return RunResult(acked, last - first, [lat for r in results for lat in r[6]])


def _run_gateway_drain_listened(
    gateways: list[GatewayProcess],
    port: int,
    device_ids: list[str],
    messages: int,
    publishers: int,
    workdir: Path,
) -> RunResult:
    for gateway in gateways:
        gateway.stop()
    listener = AckListener(port, device_ids, workdir)
    try:
        procs, go, out = _spawn_publishers(port, device_ids, messages, publishers, False, 0.0)
        go.set()
        _results(out, publishers)
        for p in procs:
            p.join(10)
        for n, gateway in enumerate(gateways):
            gateway.start(profile=n == 0)
        expected = (messages // publishers) * publishers
        times = listener.wait(expected)
    finally:
        listener.close()
    if len(times) != expected:
        print(f"  !! {expected - len(times)} events not acked", flush=True)
    return RunResult(len(times), max(times) - min(times), [])


def run_gateway_drain_quiet(
    gateways: list[GatewayProcess],
    port: int,
    device_ids: list[str],
    messages: int,
    publishers: int,
    url: str,
) -> RunResult:
    """As `run_gateway_drain`, but nobody listens to the device acks (the devices are not on
    this machine in the field): the gateway still publishes every one, and the broker drops
    them. Timed from the first committed batch to the last, by their receive times."""
    for gateway in gateways:
        gateway.stop()
    before = asyncio.run(_latest_received(url))
    procs, go, out = _spawn_publishers(port, device_ids, messages, publishers, False, 0.0)
    go.set()
    _results(out, publishers)
    for p in procs:
        p.join(10)
    for gateway in gateways:
        gateway.start()
    expected = (messages // publishers) * publishers
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        n, first, later, last = asyncio.run(_batches_since(url, before))
        if n >= expected:
            break
        time.sleep(0.5)
    if n != expected:
        print(f"  !! {expected - n} events not stored", flush=True)
    return RunResult(later, (last - first).total_seconds(), [])


async def _latest_received(url: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    value = await conn.fetchval("SELECT coalesce(max(received_at), '-infinity') FROM events")
    await conn.close()
    return value


async def _batches_since(url: str, after: Any) -> tuple[int, Any, int, Any]:
    """Events stored after `after`: their count, the first batch's receive time, how many came
    in later batches, and the last batch's receive time."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    row = await conn.fetchrow(
        """
        WITH e AS (SELECT received_at FROM events WHERE type = 'test' AND received_at > $1)
        SELECT count(*), min(received_at),
               count(*) FILTER (WHERE received_at > (SELECT min(received_at) FROM e)),
               max(received_at)
          FROM e
        """,
        after,
    )
    await conn.close()
    assert row is not None
    return int(row[0]), row[1], int(row[2]), row[3]


def run_gateway_live(
    port: int,
    device_ids: list[str],
    messages: int,
    publishers: int,
    rate: float = 0.0,
    gateway_pids: list[int] | None = None,
) -> RunResult:
    """Publishers and the running gateway at once (sharing the cores): sustained rate from the
    first publish to the last ack, and publish → device-ack latency of every event."""
    procs, go, out = _spawn_publishers(port, device_ids, messages, publishers, True, rate)
    cpu0 = sum(cpu_seconds(pid) for pid in gateway_pids or [])
    sys0 = sum(cpu_seconds(pid, True) for pid in gateway_pids or [])
    go.set()
    results = _results(out, publishers)
    cpu = sum(cpu_seconds(pid) for pid in gateway_pids or []) - cpu0
    system = sum(cpu_seconds(pid, True) for pid in gateway_pids or []) - sys0
    for p in procs:
        p.join(10)
    acked = sum(r[2] for r in results)
    first = min(r[3] for r in results)
    last = max(r[5] for r in results)
    expected = (messages // publishers) * publishers
    if acked != expected:
        print(f"  !! {expected - acked} events not acked", flush=True)
    return RunResult(
        acked,
        last - first,
        [lat for r in results for lat in r[6]],
        cpu if gateway_pids else 0.0,
        system if gateway_pids else 0.0,
    )


async def _scratch_database(admin_url: str, homes: int) -> tuple[str, str, list[str]]:
    import asyncpg

    from anxin import auth
    from anxin.db import make_engine, make_sessionmaker, migrate, transaction
    from device_sim.region.generate import generate_region
    from device_sim.region.seed import seed_region
    from gateway.broker_config import hash_device_password

    name = f"anxin_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    await migrate(url)
    plan = generate_region(homes)
    engine = make_engine(url)
    async with transaction(make_sessionmaker(engine)) as session:
        await seed_region(session, plan, hash_device_password, auth.hash_password)
    await engine.dispose()
    return name, url, [d.device_id for d in plan.devices]


async def _drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def _count_events(url: str) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    row = await conn.fetchrow(
        "SELECT count(*), count(DISTINCT (device_id, event_id)) FROM events WHERE type = 'test'"
    )
    await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait_gateway_ready(port: int, device_id: str, timeout: float = 60) -> None:
    """Publish a probe until the gateway acks it: then it is connected and subscribed."""
    client = _paho_client("probe")
    acked = mp.Event()
    client.on_message = lambda *_a: acked.set()
    _connect(client, port)
    client.loop_start()
    client.subscribe(f"anxin/v1/dev/{device_id}/ack", 1)
    deadline = time.monotonic() + timeout
    n = 0
    while not acked.is_set():
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway never acked the probe")
        n += 1
        client.publish(
            f"anxin/v1/dev/{device_id}/event",
            json.dumps({"event_id": f"probe-{n}", "type": "power_restored"}),
            1,
        )
        acked.wait(1.0)
    client.loop_stop()
    client.disconnect()


async def _sweep_bench(url: str, device_ids: list[str], n: int) -> None:
    """A township's power cut: `n` devices fall silent at once. Times the liveness sweeper
    taking them offline (each transition stored and run through the alert service's rules),
    batched as now, then one device at a time as before (same database, same rules)."""
    from datetime import timedelta

    from sqlalchemy import text

    from anxin.clock import SystemClock
    from anxin.db import make_engine, make_sessionmaker, transaction
    from anxin.schemas import Heartbeat
    from gateway import service

    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    clock = SystemClock()
    n = min(n, len(device_ids) // 2)
    # Two disjoint sets of homes (devices are listed home by home), so neither run joins the
    # device-trouble alerts the other raised.
    for label, one_by_one, ids in (
        ("batched", False, device_ids[:n]),
        ("one device at a time", True, device_ids[-n:]),
    ):
        async with transaction(sessions) as session:
            await service.record_heartbeats(
                session, {i: (Heartbeat(), clock.now()) for i in ids}, clock.now()
            )
            await session.execute(
                text(
                    "UPDATE devices SET offline_after = now() - interval '1 s' WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        started = time.monotonic()
        swept = 0
        while True:
            async with transaction(sessions) as session:
                if one_by_one:
                    batch = await _sweep_one_by_one(session, clock.now() + timedelta(seconds=1))
                else:
                    batch = await service.sweep_silent(session, clock.now() + timedelta(seconds=1))
            if not batch:
                break
            swept += len(batch)
        took = time.monotonic() - started
        print(
            f"sweeper, {label}: {swept} devices offline in {took:.2f} s = {swept / took:,.0f} "
            "devices/s (transition events stored, alert rules applied)",
            flush=True,
        )
    await engine.dispose()


async def _sweep_one_by_one(session: Any, now: Any) -> list[str]:
    """The previous sweeper: the same UPDATE, then a read, an INSERT and the rules per device."""
    from sqlalchemy import text

    from gateway import service

    result = await session.execute(
        text(
            """
            WITH due AS (
                SELECT id FROM devices
                 WHERE online AND enabled AND offline_after <= :now
                 ORDER BY offline_after LIMIT 1000 FOR UPDATE SKIP LOCKED
            )
            UPDATE devices d SET online = false FROM due WHERE d.id = due.id RETURNING d.id
            """
        ),
        {"now": now},
    )
    silent = [str(r) for r in result.scalars()]
    for device_id in silent:
        await service._transitions(session, [device_id], "offline", now, source="bench")
    return silent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=3)
    parser.add_argument("--homes", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; medians reported")
    parser.add_argument(
        "--paced",
        type=float,
        default=0.6,
        help="paced run at this share of the measured rate (0: skip)",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get(
            "ANXIN_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-ms", type=int, default=20)
    parser.add_argument("--event-workers", type=int, default=2)
    parser.add_argument(
        "--profile",
        help="write a py-spy profile of the (first) gateway's drain here (.txt: raw stacks); "
        "py-spy is a separate install (pip install py-spy)",
    )
    parser.add_argument(
        "--ack-listener",
        choices=("mosquitto_sub", "paho"),
        default="mosquitto_sub",
        help="who receives the device acks in the drains: one mosquitto_sub for all devices "
        "(default), or each publisher's paho client (as before 2026-11)",
    )
    parser.add_argument(
        "--gateways", type=int, default=1, help="gateway processes on the shared subscription"
    )
    parser.add_argument(
        "--sweep",
        type=int,
        default=0,
        help="only time the liveness sweeper taking this many silent devices offline",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="anxin-bench-"))
    broker, port = start_mosquitto(workdir)
    name, url, device_ids = asyncio.run(_scratch_database(args.database, args.homes))
    gateways: list[GatewayProcess] = []
    if args.sweep:
        try:
            asyncio.run(_sweep_bench(url, device_ids, args.sweep))
        finally:
            broker.terminate()
            broker.wait(10)
            asyncio.run(_drop_database(args.database, name))
            shutil.rmtree(workdir, ignore_errors=True)
        return
    try:
        print(
            f"machine: {os.cpu_count()} cores; mosquitto {port}; {len(device_ids)} devices; "
            f"{args.messages} QoS 1 events per run; {args.publishers} publisher processes",
            flush=True,
        )
        ceilings, ceiling_cpu = [], []
        for _ in range(args.repeat):
            ceiling = run_ceiling(port, device_ids, args.messages, args.publishers)
            ceilings.append(ceiling.rate)
            ceiling_cpu.append(ceiling.cpu_us_per_msg)
            print(
                f"ceiling (bare paho consumer, ack only): {ceiling.rate:,.0f} msg/s; "
                f"{ceiling.cpu_us_per_msg:,.0f} µs CPU per message",
                flush=True,
            )

        env = {
            **os.environ,
            "ANXIN_DATABASE_URL": url,
            "ANXIN_MQTT_URL": f"mqtt://127.0.0.1:{port}",
            "ANXIN_LOG_LEVEL": "warning",
            "ANXIN_GATEWAY_BATCH_SIZE": str(args.batch_size),
            "ANXIN_GATEWAY_BATCH_MS": str(args.batch_ms),
            "ANXIN_GATEWAY_EVENT_WORKERS": str(args.event_workers),
        }
        gateways = [
            GatewayProcess(env, args.profile, f"gw-bench-{n}") for n in range(args.gateways)
        ]
        for gateway in gateways:
            gateway.start()
        for n in range(args.gateways):
            _wait_gateway_ready(port, device_ids[n])
        drains = []
        for _ in range(args.repeat):
            drain = run_gateway_drain(
                gateways,
                port,
                device_ids,
                args.messages,
                args.publishers,
                workdir if args.ack_listener == "mosquitto_sub" else None,
            )
            drains.append(drain.rate)
            print(
                f"gateway drain (commit, broker ack, device ack to {args.ack_listener}): "
                f"{drain.rate:,.0f} msg/s",
                flush=True,
            )
        quiets = []
        for _ in range(args.repeat):
            quiet = run_gateway_drain_quiet(
                gateways, port, device_ids, args.messages, args.publishers, url
            )
            quiets.append(quiet.rate)
            print(
                f"gateway drain, nobody listening to the device acks: {quiet.rate:,.0f} msg/s",
                flush=True,
            )
        lives, p99s, live_cpu = [], [], []
        pids = [g.proc.pid for g in gateways if g.proc is not None]
        for _ in range(args.repeat):
            live = run_gateway_live(
                port, device_ids, args.messages, args.publishers, gateway_pids=pids
            )
            lives.append(live.rate)
            p99s.append(live.pct(99))
            live_cpu.append(live.cpu_us_per_msg)
            print(
                f"gateway live, publishers flat out on the same cores: {live.rate:,.0f} msg/s; "
                f"publish→device-ack p50 {live.pct(50):,.0f} ms, p99 {live.pct(99):,.0f} ms "
                f"(saturated: the queue included); gateway CPU {live.cpu_us_per_msg:,.0f} µs "
                f"per message ({live.system_seconds / max(live.messages, 1) * 1e6:,.0f} µs of "
                "it in the kernel)" + (" (py-spy's included)" if args.profile else ""),
                flush=True,
            )
        rate, ceil = statistics.median(drains), statistics.median(ceilings)
        print(
            f"RESULT gateway drain {rate:,.0f} msg/s vs bare-consumer drain {ceil:,.0f} msg/s "
            f"= {rate / ceil:.0%} (nobody listening to the acks: "
            f"{statistics.median(quiets):,.0f} msg/s = {statistics.median(quiets) / ceil:.0%}); "
            f"live {statistics.median(lives):,.0f} msg/s, saturated p99 "
            f"{statistics.median(p99s):,.0f} ms; CPU per message: gateway "
            f"{statistics.median(live_cpu):,.0f} µs, bare consumer "
            f"{statistics.median(ceiling_cpu):,.0f} µs",
            flush=True,
        )
        if args.paced:
            target = statistics.median(lives) * args.paced
            paced = run_gateway_live(
                port, device_ids, min(args.messages, int(target * 15)), args.publishers, target
            )
            print(
                f"paced at {target:,.0f} msg/s ({args.paced:.0%} of live): got {paced.rate:,.0f} "
                f"msg/s; publish→device-ack p50 {paced.pct(50):,.0f} ms, p99 {paced.pct(99):,.0f} ms",
                flush=True,
            )
        rows, distinct = asyncio.run(_count_events(url))
        print(f"stored: {rows} test events, {distinct} distinct (must be equal)", flush=True)
    finally:
        for gateway in gateways:
            gateway.stop()
        broker.terminate()
        broker.wait(10)
        asyncio.run(_drop_database(args.database, name))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
