"""`anxin devices export-mosquitto` with no paths, run from a checkout: the devices' password
hashes land in the data directory, which git ignores, so `git add -A` cannot commit them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.harness import Seeded

REPO = Path(__file__).resolve().parent.parent.parent


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


async def test_export_by_default_writes_no_hash_into_the_repository(
    region: Seeded, database_url: str, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "deploy" / "mosquitto").mkdir(parents=True)
    shutil.copy(REPO / ".gitignore", checkout / ".gitignore")
    _git(checkout, "init", "-q")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANXIN_")}
    env["ANXIN_DATABASE_URL"] = database_url

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anxin.cli",
        "devices",
        "export-mosquitto",
        "--service-user",
        "anxin-platform=a-long-service-password",
        cwd=checkout,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()

    written = checkout / "var" / "broker-auth" / "passwd"
    device = region.plan.devices[0].device_id
    assert f"{device}:$7$" in written.read_text()
    assert (checkout / "var" / "broker-auth" / "acl").is_file()
    assert str(Path("var") / "broker-auth" / "passwd") in out.decode()  # it says where
    assert not any((checkout / "deploy").rglob("*.*")) and not any(
        (checkout / "deploy" / "mosquitto").iterdir()
    )
    # Nothing for git to pick up but the .gitignore itself.
    assert _git(checkout, "status", "--porcelain", "--untracked-files=all").split() == [
        "??",
        ".gitignore",
    ]
