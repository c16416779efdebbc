"""A watcher in its own OS process, on a clock the test moves: a file holding the time.

    python -m tests.support.watcher_process DATABASE_URL CLOCK_FILE [POLL_MS]

Prints `ready` once connected, and on SIGTERM how many due rows it handled (`handled N`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from alert_service import watcher
from anxin.db import make_engine, make_sessionmaker
from anxin.logging import configure_logging


class FileClock:
    """Every process reading the same file sees the same `now`: the test moves time for all."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        return datetime.fromisoformat(self.path.read_text().strip())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def set_time(path: Path, when: datetime) -> None:
    """Atomically: a watcher never reads half a timestamp."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(when.isoformat())
    tmp.replace(path)


async def main(url: str, clock_file: Path, poll_ms: int) -> None:
    configure_logging("warning")
    engine = make_engine(url, pool_size=3, max_overflow=0)  # LISTEN and a lane each
    sessions = make_sessionmaker(engine)
    clock = FileClock(clock_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    handled = 0
    real_urgent, real_rest = watcher.urgent_pass, watcher.non_urgent_pass

    async def counting_urgent(*args: Any, **kwargs: Any) -> tuple[int, datetime | None]:
        nonlocal handled
        n, next_due = await real_urgent(*args, **kwargs)
        handled += n
        return n, next_due

    async def counting_rest(*args: Any, **kwargs: Any) -> tuple[int, datetime | None, bool]:
        nonlocal handled
        n, next_due, more = await real_rest(*args, **kwargs)
        handled += n
        return n, next_due, more

    # The real loop (run_watcher, both lanes), counting what this process handled for the
    # test's report.
    watcher.urgent_pass, watcher.non_urgent_pass = counting_urgent, counting_rest
    async with engine.connect():
        pass
    print("ready", flush=True)
    await watcher.run_watcher(
        sessions, clock, "Asia/Shanghai", poll_seconds=poll_ms / 1000, stop=stop
    )
    print(f"handled {handled}", flush=True)
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20))
