"""Where the broker is: an `mqtt://` / `mqtts://` URL read into host, port, credentials, TLS
and protocol version. No paho here, so the device simulator and the CLI can name a broker
without loading the client."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    # MQTT 5 unless the URL says `?protocol=3.1.1` (the in-process broker speaks 3.1.1 only).
    mqtt5: bool = True

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(
                f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt:// or mqtts://)"
            )
        tls = parts.scheme in ("mqtts", "ssl")
        query = parse_qs(parts.query)
        version = (query.get("protocol") or ["5"])[0]
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            mqtt5=version not in ("3", "3.1.1", "311", "4"),
        )

    def with_credentials(self, username: str, password: str) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, username, password, self.tls, self.mqtt5)
