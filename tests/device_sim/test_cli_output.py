"""What a tester sees on the terminal: `anxin sim run` ends with a count and prints no
traceback, and Ctrl-C stops the demo and the simulator cleanly. Real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from anxin.broker import free_port
from device_sim.harness import scratch_database
from tests.support.harness import admin_url, eventually

REPO = Path(__file__).resolve().parent.parent.parent
SCENARIOS = REPO / "device_sim" / "scenarios"


@dataclass
class Running:
    process: asyncio.subprocess.Process
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


async def _pump(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        into.append(line.decode("utf-8", "replace"))


@asynccontextmanager
async def anxin(*args: str, env: dict[str, str]) -> AsyncIterator[Running]:
    """`anxin ARGS` as a child process (stdout and stderr not a terminal, as in a CI log),
    configured by `env` alone: no ANXIN_MQTT_URL means the embedded broker a newcomer gets."""
    own = {k: v for k, v in os.environ.items() if not k.startswith("ANXIN_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anxin.cli",
        *args,
        cwd=REPO,
        env={**own, "COLUMNS": "100", **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(process)
    pumps = [
        asyncio.create_task(_pump(process.stdout, running.out)),
        asyncio.create_task(_pump(process.stderr, running.err)),
    ]
    try:
        yield running
        await asyncio.wait_for(process.wait(), 120)  # a safety net against a hang
        await asyncio.gather(*pumps)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _server() -> str:
    """The Postgres server the suite uses; the commands make their own databases on it."""
    return await asyncio.to_thread(admin_url)


async def test_sim_run_ends_with_a_count_and_no_traceback() -> None:
    """On the embedded broker (Mosquitto, or amqtt as the last resort) as a newcomer runs it."""
    env = {"ANXIN_DATABASE_URL": await _server()}
    async with anxin("sim", "run", str(SCENARIOS / "duplicate_resend.yaml"), env=env) as sim:
        pass
    output = sim.stdout + sim.stderr
    assert sim.process.returncode == 0, output
    assert "Traceback" not in output
    last = sim.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"1 passed, 0 failed \(\d+ s\)", last), output
    assert sim.stderr.strip() == ""  # no progress bar, no logs: not a terminal, nothing wrong


async def _devices_online(url: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM devices WHERE online") or 0)
    except asyncpg.PostgresError:
        return 0  # still being migrated
    finally:
        await conn.close()


async def _sim_databases(server: str) -> set[str]:
    conn = await asyncpg.connect(server.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'anxin_sim_%'")
    finally:
        await conn.close()
    return {r["datname"] for r in rows}


def _database_url(server: str, name: str) -> str:
    base, _, query = server.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")


async def test_ctrl_c_stops_a_scenario_run_cleanly_with_its_count() -> None:
    server = await _server()
    before = await _sim_databases(server)
    files = [str(SCENARIOS / "township_power_cut.yaml"), str(SCENARIOS / "duplicate_resend.yaml")]
    async with anxin("sim", "run", *files, env={"ANXIN_DATABASE_URL": server}) as sim:

        async def playing() -> bool:
            # Mid-scenario: the power cut's homes are connected to the platform it runs.
            for name in await _sim_databases(server) - before:
                if await _devices_online(_database_url(server, name)) > 0:
                    return True
            return False

        await eventually(playing, timeout=120, what="the power-cut scenario to be playing")
        sim.process.send_signal(signal.SIGINT)
    output = sim.stdout + sim.stderr
    assert sim.process.returncode == 130, output
    assert "Traceback" not in output
    assert "interrupted: 0 passed, 0 failed, 2 not run" in sim.stdout, output
    assert await _sim_databases(server) - before == set()  # its scratch database dropped


async def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    async with scratch_database(await _server(), prefix="anxin_demo") as url:
        env = {
            "ANXIN_DATABASE_URL": url,
            "ANXIN_DATA_DIR": str(tmp_path),
            "ANXIN_HTTP_PORT": str(free_port()),
        }
        async with anxin("demo", "--homes", "12", "--sos-every", "1", env=env) as demo:

            async def acked() -> bool:
                return "→ ack accepted" in demo.stdout

            await eventually(acked, timeout=120, what="the demo's first acked SOS")
            assert "http://127.0.0.1:" in demo.stdout
            demo.process.send_signal(signal.SIGINT)
    assert demo.process.returncode in (0, 130), demo.stdout + demo.stderr
    assert "Traceback" not in demo.stderr and "Traceback" not in demo.stdout, demo.stderr
