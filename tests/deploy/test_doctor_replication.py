"""`anxin doctor` says which node is the primary and how far behind each replica is (issue 16):
on a real Patroni cluster (etcd, a primary and a synchronous replica) reached with the roles'
multi-host URL, before and after the primary is lost; and it warns on a single server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import SecretStr

from anxin.doctor import REPLICATION, Check, Status, run_checks
from anxin.settings import Settings
from device_sim.pg_cluster import PgCluster, cluster_tools_missing
from tests.support.harness import IN_CI, eventually

GOOD_SECRET = SecretStr("a-long-random-production-secret-0123456789")


async def _replication(database_url: str) -> Check | None:
    """The replication finding; None while doctor cannot reach a primary at all."""
    checks = await run_checks(
        lambda: Settings(database_url=SecretStr(database_url), secret_key=GOOD_SECRET)
    )
    return next((c for c in checks if c.name == REPLICATION), None)


async def test_a_single_server_is_named_and_its_missing_replica_warned(database_url: str) -> None:
    found = await _replication(database_url)
    assert found is not None and found.status is Status.warning, found
    assert "no replica" in found.en
    assert "没有备库" in found.zh


@pytest.mark.timeout(300)
async def test_doctor_follows_the_primary_through_a_failover(tmp_path: Path) -> None:
    missing = cluster_tools_missing()
    if missing:
        if IN_CI and shutil.which("apt-get"):
            pytest.fail(f"CI needs {missing}: apt-get install patroni etcd-server")
        pytest.skip(f"no {missing} on this machine")
    cluster = PgCluster(tmp_path / "cluster")
    try:
        url = await cluster.start()
        first = await cluster.wait_primary(30)
        replica = next(n for n in cluster.nodes if n is not first)

        found = await _replication(url)
        assert found is not None and found.status is Status.ok, found
        assert f"primary 127.0.0.1:{first.pg_port}" in found.en
        assert f"{replica.name} streaming/sync lag 0 B" in found.en, found.en

        killed = await cluster.kill_primary()
        await cluster.wait_primary(120)

        async def promoted() -> Check | None:
            check = await _replication(url)
            if check is None or f"primary 127.0.0.1:{replica.pg_port}" not in check.en:
                return None
            return check

        # The replica took over; with its partner gone there is nobody to replicate to.
        after = await eventually(promoted, timeout=120, what="the replica promoted")
        assert after.status is Status.warning and "no replica" in after.en, after

        await cluster.rejoin(killed)

        async def rejoined() -> Check | None:
            check = await _replication(url)
            return check if check and f"{killed.name} streaming/sync" in check.en else None

        back = await eventually(rejoined, timeout=120, what="the lost node following again")
        assert back.status is Status.ok, back
        assert f"primary 127.0.0.1:{replica.pg_port}" in back.en
    finally:
        await cluster.close()
