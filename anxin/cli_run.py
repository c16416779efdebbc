"""Running a command's coroutine so that Ctrl-C (or SIGTERM) stops it cleanly and quietly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the command; its clean-up has already run."""


class InProcessServer(uvicorn.Server):
    """A uvicorn server that is one part of a process (the web role, the SMS sandbox), not the
    process: it leaves Ctrl-C to run_until_interrupted. uvicorn's own capture takes the signal
    while it serves and raises it again as each server stops, which cancelled the clean
    shutdown once per server, halfway (a gateway left retrying against a dropped database)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_until_interrupted(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, except that Ctrl-C/SIGTERM cancel the work (so its `finally` blocks and
    context managers shut the roles, the broker and Postgres down) and then raise Interrupted,
    instead of a KeyboardInterrupt traceback from wherever the loop happened to be."""
    signalled: list[int] = []

    async def main() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()

        def stop(sig: int) -> None:
            # Once: a second cancel would cut the clean shutdown short, halfway.
            if not signalled:
                # On a line of its own (the terminal has just echoed ^C): the roles may take a
                # few seconds to wind down.
                print("\n正在停止… stopping", file=sys.stderr, flush=True)
                task.cancel()
            signalled.append(sig)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop, sig)
        try:
            return await task
        except asyncio.CancelledError:
            if signalled:
                raise Interrupted from None
            raise

    return asyncio.run(main())
