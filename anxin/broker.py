"""The embedded MQTT broker, used when no ANXIN_MQTT_URL is given.

A real Mosquitto when the machine has one (`apt-get install mosquitto`; the Makefile installs
it where it can), started as our child on a free port with the platform's own configuration
(`mosquitto_conf`: queues raised, shared subscriptions, MQTT 5). The in-process amqtt
broker (MQTT 3.1.1, no shared subscriptions) is the last resort, and it runs in a process of
its own: inside the platform's event loop it shared one core with every role, and after a
flood its QoS 1 deliveries timed out waiting for PUBACKs the busy loop had not sent yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from anxin.logging import get_logger

log = get_logger("anxin.broker")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now, as uvicorn binds (SO_REUSEADDR): the
    TIME_WAIT sockets a quick restart leaves behind do not count, a listener does. Without
    it a restart within a minute moved the console off its port (8000)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def mosquitto_conf(
    *,
    port: int,
    password_file: str | None = None,
    acl_file: str | None = None,
    persistence_dir: str | None = None,
    bind: str = "127.0.0.1",
    max_queued_messages: int = 1_000_000,
    max_inflight_messages: int = 1000,
) -> str:
    """A Mosquitto 2.0 configuration for the platform: queues raised (Debian's default of 1000
    per client drops messages under a burst), persistence for restarts, and the generated
    password file and ACL when given."""
    lines = [
        f"listener {port} {bind}",
        f"max_queued_messages {max_queued_messages}",
        "max_queued_bytes 0",
        # For MQTT 3.1.1 clients; MQTT 5 clients set their own Receive Maximum.
        f"max_inflight_messages {max_inflight_messages}",
        # Wait for the gateway rather than drop what it has not yet acknowledged.
        "persistent_client_expiration 7d",
        "set_tcp_nodelay true",
    ]
    if persistence_dir is not None:
        lines += [
            "persistence true",
            f"persistence_location {persistence_dir.rstrip('/')}/",
            "autosave_interval 1",
        ]
    else:
        lines.append("persistence false")
    if password_file is not None:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines.append("allow_anonymous true")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n"


class EmbeddedBroker(Protocol):
    """What the embedded default gives the rest of the platform: a URL, and what it can do."""

    kind: str  # "mosquitto" or "amqtt", as the demo prints it

    @property
    def url(self) -> str: ...

    @property
    def shared_subscriptions(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def mosquitto_binary() -> str | None:
    """Mosquitto's path if the machine has it (Debian installs it in /usr/sbin, off a user's PATH)."""
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        found = "/usr/sbin/mosquitto"
    return found


def _die_with_parent() -> None:
    """Run in the child before exec: SIGTERM it when we die, even by SIGKILL, so a demo killed
    hard leaves no broker holding its port and its persistence file."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class MosquittoBroker:
    """A Mosquitto of our own on a free port, with the platform's configuration."""

    kind = "mosquitto"
    shared_subscriptions = True

    def __init__(
        self,
        workdir: Path,
        *,
        binary: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        persistence: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        remove_workdir: bool = False,
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = found
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.persistence = persistence
        self.password_file = password_file
        self.acl_file = acl_file
        self.remove_workdir = remove_workdir
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = mosquitto_conf(
            port=self.port,
            bind=self.host,
            password_file=str(self.password_file) if self.password_file else None,
            acl_file=str(self.acl_file) if self.acl_file else None,
            persistence_dir=str(self.workdir) if self.persistence else None,
        )
        if os.geteuid() == 0:
            # Otherwise Mosquitto drops to the `mosquitto` user, who cannot write our directory.
            conf += "user root\n"
        self.conf.write_text(conf)
        with self.log.open("ab") as log_file:
            return subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                # Its own process group: the terminal's Ctrl-C reaches us, and we stop it last.
                start_new_session=True,
            )

    async def start(self) -> None:
        self.process = await asyncio.to_thread(self._spawn)
        for _ in range(400):
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mosquitto exited: {tail}")
            if await asyncio.to_thread(_port_open, self.host, self.port):
                log.info("embedded_broker_started", kind=self.kind, port=self.port)
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # saves its persistence file on the way out
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        if self.remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill_now(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class AmqttBroker:
    """The last resort: amqtt (MQTT 3.1.1, no shared subscriptions) in a child process of its
    own (`python -m anxin.broker PORT`), so the platform's event loop never carries it."""

    kind = "amqtt"
    shared_subscriptions = False

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}?protocol=3.1.1"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "anxin.broker",
            self.host,
            str(self.port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        for _ in range(400):
            if self.process.returncode is not None:
                raise RuntimeError("the in-process MQTT broker (amqtt) exited at start")
            if await asyncio.to_thread(_port_open, self.host, self.port):
                log.info("embedded_broker_started", kind=self.kind, port=self.port)
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the amqtt broker did not open its port")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def embedded_broker(data_dir: Path | None = None, *, persistence: bool = True) -> EmbeddedBroker:
    """Mosquitto when the machine has it, amqtt otherwise. `data_dir` keeps Mosquitto's
    persistence file (the demo's `./var/mosquitto`); without it, a temporary directory."""
    if mosquitto_binary() is not None:
        if data_dir is not None:
            return MosquittoBroker((data_dir / "mosquitto").resolve(), persistence=persistence)
        workdir = Path(tempfile.mkdtemp(prefix="anxin-mosquitto-"))
        return MosquittoBroker(workdir, persistence=persistence, remove_workdir=True)
    log.warning("embedded_broker_fallback", kind="amqtt", hint="apt-get install mosquitto")
    return AmqttBroker()


async def _serve_amqtt(host: str, port: int) -> None:
    from amqtt.broker import Broker

    # amqtt logs every connection at INFO, and at ERROR each QoS 1 redelivery timeout that the
    # devices' resends cover: this process has no output of its own.
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }
    broker = Broker(config)
    # A flood is thousands of short-lived tasks and packets a second: the default young-
    # generation threshold (700) collected every few milliseconds of it.
    gc.set_threshold(50_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    await stop.wait()
    with contextlib.suppress(Exception):
        await broker.shutdown()


if __name__ == "__main__":
    # uvloop's sockets and loop halve amqtt's cost per packet: after a 2,000-SOS flood on a
    # loaded machine the next SOS's ack went from p50 259 / p99 836 ms to 83 / 440 ms.
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_amqtt(sys.argv[1], int(sys.argv[2])))
    else:
        uvloop.run(_serve_amqtt(sys.argv[1], int(sys.argv[2])))
