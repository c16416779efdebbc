"""The services every command stands on: Postgres (configured or embedded, migrated to head)
and the MQTT broker (configured or embedded). Core, not the composition root: a part's CLI may
open them without importing the roles (`anxin.runtime`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from anxin.broker import EmbeddedBroker, embedded_broker
from anxin.clock import Clock, SystemClock
from anxin.db import SessionMaker, make_engine, make_sessionmaker, migrate, resolve_database_url
from anxin.mqtt import BrokerAddress
from anxin.settings import Settings


@dataclass
class Services:
    settings: Settings
    database_url: str
    mqtt_url: str
    engine: AsyncEngine
    sessions: SessionMaker
    broker: EmbeddedBroker | None = None
    clock: Clock = field(default_factory=SystemClock)

    @property
    def mqtt(self) -> BrokerAddress:
        return BrokerAddress.parse(self.mqtt_url)

    @property
    def embedded_broker(self) -> bool:
        return self.broker is not None

    @property
    def shared_subscriptions(self) -> bool:
        """Whether the broker has shared subscriptions: a configured one is trusted to (Mosquitto
        and EMQX have them); of the embedded ones amqtt has not."""
        return self.broker is None or self.broker.shared_subscriptions


@contextlib.asynccontextmanager
async def services(
    settings: Settings,
    *,
    need_broker: bool = True,
    clock: Clock | None = None,
    application_name: str = "anxin",
) -> AsyncIterator[Services]:
    """Postgres (configured or embedded, migrated to head) and the broker (configured or in-process)."""
    database_url = await resolve_database_url(settings)
    await migrate(database_url)
    broker: EmbeddedBroker | None = None
    if settings.mqtt_url is not None:
        mqtt_url = settings.mqtt_url.get_secret_value()
    elif need_broker:
        broker = embedded_broker(settings.data_dir)
        await broker.start()
        mqtt_url = broker.url
    else:
        mqtt_url = ""
    # Named connections: pg_stat_activity says which role holds a lock or idles in a transaction.
    engine = make_engine(
        database_url, connect_args={"server_settings": {"application_name": application_name}}
    )
    try:
        yield Services(
            settings,
            database_url,
            mqtt_url,
            engine,
            make_sessionmaker(engine),
            broker,
            clock or SystemClock(),
        )
    finally:
        await engine.dispose()
        if broker is not None:
            await broker.stop()
