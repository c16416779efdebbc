"""The console's port survives a quick restart: the check that picks the demo's web port binds
as uvicorn does (SO_REUSEADDR), so the TIME_WAIT sockets of the last run do not move it."""

from __future__ import annotations

import socket
from pathlib import Path

from anxin.broker import port_is_free
from tests.support.harness import eventually

TIME_WAIT = "06"  # the state column of /proc/net/tcp


def time_wait_on(port: int) -> bool:
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(
        line.split()[1].endswith(f":{port:04X}") and line.split()[3] == TIME_WAIT for line in lines
    )


async def test_a_port_with_a_time_wait_connection_is_free_and_a_listening_one_is_not() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not port_is_free(port)  # a server listens there

    # The server closes first, as a stopped web server does: its side stays in TIME_WAIT.
    accepted.close()
    client.close()
    server.close()

    async def in_time_wait() -> bool:
        return time_wait_on(port)

    await eventually(in_time_wait, what="a TIME_WAIT socket on the port")
    assert port_is_free(port)
    # And a server binding as uvicorn does can indeed listen there now.
    again = socket.socket()
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", port))
    again.listen()
    again.close()
