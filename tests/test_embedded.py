"""Embedded defaults: with no ANXIN_DATABASE_URL the platform keeps its data in ANXIN_DATA_DIR,
and a second start finds it again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _anxin(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANXIN_")}
    env["ANXIN_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "anxin.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_a_second_start_finds_the_data_of_the_first(tmp_path: Path) -> None:
    first = _anxin("db", "seed", data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "demo region seeded" in first.stdout
    assert (tmp_path / "postgres" / "PG_VERSION").exists()

    second = _anxin("db", "seed", data_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "already present" in second.stdout
