"""The in-process MQTT broker (amqtt, MQTT 3.1.1) used when no ANXIN_MQTT_URL is given."""

from __future__ import annotations

import logging
import socket
from typing import Any

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


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}?protocol=3.1.1"

    async def start(self) -> None:
        from amqtt.broker import Broker

        # amqtt logs every connection at INFO; keep the demo's output readable.
        # amqtt also logs at ERROR a redelivery timeout that QoS 1 and device resends cover.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded_broker_started", port=self.port)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
